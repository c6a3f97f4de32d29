"""The NFE each sampler needs, with its default grid and with an optimised one, on three mixtures.

For every sampler of `diffsolve compare`'s default list, on ring2d, a 3-D and a 16-D mixture
(`GaussianMixture.random(dim, 8, seed=0)`), VP SDE, exact score, eps = 1e-3, n = 5000 per seed and
seeds 0, 1, 2: (a) the NFE from which the samples are indistinguishable from exact ones (every test
of `compare`'s battery — mean log p gap, weight TV, sliced W2 / MMD / energy, KS of log p, tail mass,
C2ST — every seed, at that budget and every larger one tried) and (b) the NFE from which the
paired path error is <= 1e-2. Then, on ring2d, the best grid-based samplers again with grids from
`analysis.optimize_grid` (fitted on 512 held-out pilot draws, a separate seed), judged the same way
(each fit takes about 30 s, so the optimised columns cover ring2d and three samplers).

    python benchmarks/nfe_table.py                 # about 25 minutes on 2 cores
    python benchmarks/nfe_table.py --small         # ring2d only, one seed, no optimised grids
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import diffsolve as ds
from diffsolve.analysis import optimize_grid
from diffsolve.compare import DEFAULT_SOLVERS, compare

OPTIMISED = ("unipc", "deis", "ipndm")
OPT_BUDGETS = (6, 8, 10, 12, 15)


PROBLEMS = {
    "ring2d": lambda: ds.GaussianMixture.ring2d(),
    "3": lambda: ds.GaussianMixture.random(3, 8, seed=0),
    "16": lambda: ds.GaussianMixture.random(16, 8, seed=0),
}


def problems(small: bool, only: str | None):
    names = ["ring2d"] if small else [only] if only else list(PROBLEMS)
    return [(name if name == "ring2d" else f"{name}-D mixture", PROBLEMS[name]()) for name in names]


def fmt(v) -> str:
    return "-" if v is None else f"{v:g}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="ring2d only, one seed, no optimised grids")
    parser.add_argument("--problem", choices=list(PROBLEMS), help="one problem only (default: all three)")
    parser.add_argument("--out", help="a folder for each comparison's JSON (rows, nulls, settings)")
    args = parser.parse_args()
    seeds = [0] if args.small else [0, 1, 2]
    sde = ds.VPSDE()
    for label, mixture in problems(args.small, args.problem):
        start = time.perf_counter()
        score = mixture.score_fn(sde)
        default = compare(score, sde, reference=mixture, n=5000, seeds=seeds, progress=False)
        best = {}
        if label == "ring2d" and not args.small:
            grids = {s: {b: optimize_grid(score, sde, s, b).grid for b in OPT_BUDGETS} for s in OPTIMISED}
            budgets = {s: list(OPT_BUDGETS) for s in OPTIMISED}
            opt = compare(
                score, sde, reference=mixture, solvers=list(OPTIMISED), budgets=budgets, n=5000, seeds=seeds,
                progress=False, grids=grids,
            )  # fmt: skip
            best = {r["solver"]: r for r in opt.nfe_needed()}
        print(default.to_markdown())
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            default.to_json(Path(args.out) / f"{label.split()[0]}_default.json")
            if best:
                opt.to_json(Path(args.out) / f"{label.split()[0]}_optimised.json")
        print(f"\n{label}: seeds {seeds}, n = 5000 ({time.perf_counter() - start:.0f} s)\n")
        print("| sampler | (a) default grid | (a) optimised grid | (b) default grid | (b) optimised grid |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for row in default.nfe_needed():
            o = best.get(row["solver"], {})
            print(
                f"| `{row['solver']}` | {fmt(row['nfe_indistinguishable'])} | {fmt(o.get('nfe_indistinguishable'))} "
                f"| {fmt(row['nfe_path_error'])} | {fmt(o.get('nfe_path_error'))} |"
            )
    print(f"\ndefault solvers: {', '.join(DEFAULT_SOLVERS)}; optimised budgets {OPT_BUDGETS}")


if __name__ == "__main__":
    main()
