"""Regenerate the committed figures and tables that the README and the docs site show.

    python scripts/regenerate_figures.py              # the main job's table and plots (about 1 minute)
    python scripts/regenerate_figures.py --all        # also the likelihood work-precision benchmark

What it writes:
- docs/compare/: results.{csv,json,md}, work_precision.png, samples.png, from `diffsolve compare`
  with its defaults and seeds 0, 1, 2 (the README's main job, ring2d, VP SDE, exact score);
- docs/img/numerical_analysis_*.png, copied from the committed (full-size) outputs of
  notebooks/numerical_analysis.ipynb (re-execute it first with scripts/run_notebooks.py to refresh);
- with --all, docs/img/likelihood_work_precision.png from benchmarks/likelihood_work_precision.py.

Every file is written atomically. The numbers quoted in README.md and docs/*.md are not edited
here: compare them with the new docs/compare/results.md and update the text by hand.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, cwd=ROOT, check=True, env={**os.environ, "MPLBACKEND": "Agg"})


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--all", action="store_true", help="also rerun the likelihood work-precision benchmark"
    )
    args = parser.parse_args()
    py = sys.executable
    run(py, "-m", "diffsolve.cli", "compare", "--out", "docs/compare", "--no-progress", "--seeds", "0,1,2")
    run(py, "scripts/export_notebook_figures.py", "notebooks/numerical_analysis.ipynb")
    if args.all:
        run(py, "benchmarks/likelihood_work_precision.py", "--out", "docs/img/likelihood_work_precision.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
