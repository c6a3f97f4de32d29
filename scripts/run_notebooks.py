"""Execute the notebooks in place at full budget, so the committed outputs show full-size results.

    python scripts/run_notebooks.py [notebooks/NAME.ipynb ...]

CI runs them at a small budget instead (tests/test_notebooks.py, with DIFFSOLVE_SMALL=1) and does
not write them back.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from diffsolve.io import atomic_write

ROOT = Path(__file__).resolve().parents[1]


def run(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    env_small = os.environ.pop("DIFFSOLVE_SMALL", None)
    try:
        NotebookClient(
            nb, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
        ).execute()
    finally:
        if env_small is not None:
            os.environ["DIFFSOLVE_SMALL"] = env_small
    # Atomic write (with the umask's mode): a failed or interrupted run never leaves a half-written notebook.
    atomic_write(path, lambda tmp: nbformat.write(nb, str(tmp)))
    print(f"executed {path.relative_to(ROOT)}")


if __name__ == "__main__":
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted((ROOT / "notebooks").glob("*.ipynb"))
    for p in paths:
        run(p)
