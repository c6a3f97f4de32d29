"""Measured convergence orders on ring2d (VP SDE, exact score, eps = 1e-3) against theory.

    python benchmarks/convergence_orders.py [--quick]

Strong errors of reverse-SDE solvers on one Brownian path, the weak error of Euler–Maruyama in
E|x|^2 against its exact value under p_eps, and the global error of fixed-step PF-ODE solvers
against float64 dopri8 at 1e-12. Prints each `ConvergenceResult` table and a summary. The step
counts are the asymptotic range: a first run over 4..256 steps (recorded in docs/benchmarks.md)
showed each method approaching its order from below at coarse steps (e.g. rk4 3.6, 3.8, 3.9; the
weak error 2.0, 1.6, 1.1, 1.0).
"""

from __future__ import annotations

import argparse

import diffsolve as ds
from diffsolve.analysis import convergence_order

CASES = [
    ("ode:euler", "ode", 1.0, [32, 64, 128, 256], 500),
    ("ode:midpoint", "ode", 2.0, [32, 64, 128, 256], 500),
    ("ode:heun2", "ode", 2.0, [32, 64, 128, 256], 500),
    ("ode:heun3", "ode", 3.0, [32, 64, 128, 256], 500),
    ("ode:rk4", "ode", 4.0, [32, 64, 128, 256], 500),
    ("sde:euler", "strong", 1.0, [32, 64, 128, 256], 2000),
    ("sde:srk", "strong", 1.5, [16, 32, 64, 128], 8000),
    ("sde:euler", "weak", 1.0, [16, 32, 64, 128], 100_000),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a tenth of the paths")
    args = parser.parse_args()
    gm, sde = ds.GaussianMixture.ring2d(), ds.VPSDE()
    score = gm.score_fn(sde)
    summary = [
        "| solver | kind | theory | measured order | 95% interval | steps in fit |",
        "| --- | --- | ---: | ---: | --- | --- |",
    ]
    for solver, kind, theory, steps, n in CASES:
        n = max(n // 10, 100) if args.quick else n
        res = convergence_order(
            score, sde, solver, steps=steps, kind=kind, reference=gm, n=n, seed=0, bootstrap=200
        )
        print(res.to_markdown())
        used = ", ".join(str(res.steps[i]) for i in res.used)
        summary.append(
            f"| {solver} | {kind} | {theory:g} | {res.order:.3f} | [{res.order_ci[0]:.3f}, {res.order_ci[1]:.3f}] | {used} |"
        )
    print("\n".join(summary))


if __name__ == "__main__":
    main()
