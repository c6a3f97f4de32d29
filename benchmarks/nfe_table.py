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

import diffsolve as ds
from diffsolve.analysis import optimize_grid
from diffsolve.compare import DEFAULT_SOLVERS, compare

OPTIMISED = ("unipc", "deis", "ipndm")
OPT_BUDGETS = (6, 8, 10, 12, 16)


def problems(small: bool):
    out = [("ring2d", ds.GaussianMixture.ring2d())]
    if not small:
        out += [("3-D mixture", ds.GaussianMixture.random(3, 8, seed=0))]
        out += [("16-D mixture", ds.GaussianMixture.random(16, 8, seed=0))]
    return out


def fmt(v) -> str:
    return "-" if v is None else f"{v:g}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="ring2d only, one seed, no optimised grids")
    args = parser.parse_args()
    seeds = [0] if args.small else [0, 1, 2]
    sde = ds.VPSDE()
    for label, mixture in problems(args.small):
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
