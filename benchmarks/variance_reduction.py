"""Hutch++ against Hutchinson at the same number of vector-Jacobian products, on the likelihood ODE.

For a 64-D and a 256-D Gaussian mixture (`GaussianMixture.random(d, 8, seed=0)`, VP, exact score),
n points from p_eps; each estimator's per-point log-likelihood error against the exact-trace solve
of the same points (same solver and tolerance, so only the estimator differs). Hutchinson with 3k
Rademacher probes and Hutch++ with sketch size k cost the same 3k VJPs per evaluation. Printed:
the per-point error's standard deviation (RMS), the variance ratio, the VJPs and seconds.

Usage: `python benchmarks/variance_reduction.py [--small]`; results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time

import diffsolve as ds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="64-D only, fewer points")
    args = parser.parse_args()
    sde, eps = ds.VPSDE(), 1e-3
    n = 32 if args.small else 100
    kw = dict(rtol=1e-4, atol=1e-4, eps=eps)
    print(f"n = {n} points per problem, dopri5 at rtol = atol = 1e-4, eps = {eps:g}, float64\n")
    print("| d | estimator | VJPs per evaluation | error SD (nats) | variance vs Hutchinson | seconds |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for d in (64,) if args.small else (64, 256):
        gm = ds.GaussianMixture.random(d, 8, seed=0)
        score = gm.score_fn(sde)
        x = gm.marginal(eps, sde).sample(n, seed=1)
        exact = ds.log_likelihood(score, sde, x, divergence="exact", **kw).log_prob
        for k in (2, 8):
            rows = []
            for name, div, probes in (("Hutchinson", "hutchinson", 3 * k), ("Hutch++", "hutch++", k)):
                start = time.perf_counter()
                res = ds.log_likelihood(score, sde, x, divergence=div, probes=probes, seed=0, **kw)
                seconds = time.perf_counter() - start
                err = (res.log_prob - exact).double()
                rows.append((name, float(err.square().mean().sqrt()), seconds))
            base = rows[0][1] ** 2
            for name, sd, seconds in rows:
                print(f"| {d} | {name} ({'3k' if name == 'Hutchinson' else 'k'} = "
                      f"{3 * k if name == 'Hutchinson' else k}) | {3 * k} | {sd:.3f} | {sd**2 / base:.3f} | "
                      f"{seconds:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
