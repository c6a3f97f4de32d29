"""How classifier-free guidance stiffens the probability-flow ODE, and what it costs each sampler.

The problem: ring2d's eight components labelled alternately 0 and 1 (`LabeledMixture`), so the
two classes interleave around the ring; the guided score for class 1 is exact,
$(1 + w)\\,s(x, t \\mid 1) - w\\,s(x, t)$ (tests/test_guidance.py). For each guidance weight w:

- stiffness: the spectral radius of the PF-ODE drift's Jacobian, median over 32 trajectories, at
  eps and at its largest along the path (`analysis.jacobian_spectrum`, float64);
- cost: each sampler's NFE to a mean path error of 1e-2 against a float64 dopri5 solve at 1e-8
  from the same draws (`compare(..., metrics=["path_error"])` and `Comparison.nfe_needed`), over
  the budgets listed; one NFE of a guided score is two score evaluations.

Usage: `python benchmarks/guidance.py [--small]`; results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse

import diffsolve as ds
from diffsolve.analysis import jacobian_spectrum
from diffsolve.compare import compare

SOLVERS = ["ddim", "dpm_solver++2m", "unipc", "edm_heun", "ode:rk4"]
BUDGETS = [5, 8, 10, 12, 15, 20, 25, 30, 40, 50, 70, 100, 140, 200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="fewer weights, samples and budgets")
    args = parser.parse_args()
    sde, ring = ds.VPSDE(), ds.GaussianMixture.ring2d()
    lab = ds.LabeledMixture(ring, [0, 1] * 4)
    score = lab.score_fn(sde)
    weights = (0.0, 2.0) if args.small else (0.0, 1.0, 2.0, 4.0, 8.0)
    n = 200 if args.small else 1000
    budgets = BUDGETS[::3] if args.small else BUDGETS
    print(f"ring2d, classes alternating around the ring, class 1, VP, n = {n}, eps = 1e-3\n")
    print(
        "| w | spectral radius at eps | largest along the path | "
        + " | ".join(f"`{s}`" for s in SOLVERS)
        + " |"
    )
    print("| ---: | ---: | ---: | " + " | ".join("---:" for _ in SOLVERS) + " |")
    for w in weights:
        g = ds.guided(ds.Conditional(score, 1), ds.Conditional(score, None), w)
        spec = jacobian_spectrum(g, sde, n=32, points=40)
        res = compare(
            g, sde, reference=lab.conditional(1), solvers=SOLVERS, budgets=budgets, n=n,
            metrics=["path_error"], progress=False,
        )  # fmt: skip
        needed = {row["solver"]: row["nfe_path_error"] for row in res.nfe_needed(path_tol=1e-2)}
        cells = [("-" if needed[s] is None else f"{needed[s]:.0f}") for s in SOLVERS]
        print(
            f"| {w:g} | {float(spec.spectral_radius[-1]):.1f} | {float(spec.spectral_radius.max()):.1f} | "
            + " | ".join(cells)
            + " |"
        )
    print("\nA dash: no budget up to the largest tried reaches a path error of 1e-2.")


if __name__ == "__main__":
    main()
