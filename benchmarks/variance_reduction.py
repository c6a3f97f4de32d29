"""Hutch++ and the deflated estimator against Hutchinson at the same number of vector-Jacobian
products, on the likelihood ODE.

For a 64-D and a 256-D Gaussian mixture (`GaussianMixture.random(d, 8, seed=0)`, VP, exact score),
n points from p_eps; each estimator's per-point log-likelihood error against the exact-trace solve
of the same points (same solver and tolerance, so only the estimator differs). Hutchinson with 3k
Rademacher probes, Hutch++ and `"deflated"` with sketch size k cost the same 3k VJPs per evaluation. Printed:
the per-point error's standard deviation (RMS), the variance ratio, the VJPs and seconds.

A third problem has no closed form and no mixture structure: `ScoreUNet` at 1x8x8 with random
weights (seed 0, float64) on 8 N(0, I) points, whose Jacobian is dense; its ODE is stiff near eps,
so it is solved with rk4 in 20 fixed steps (the same path for every estimator). The last column is variance x
seconds against Hutchinson's: below 1 means more accuracy per unit of time.

Usage: `python benchmarks/variance_reduction.py [--small]`; results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time

import torch

import diffsolve as ds
from diffsolve.nn import ScoreUNet


def problems(small: bool, sde: ds.SDE, eps: float):
    """(name, score, points) for each problem."""
    n = 32 if small else 100
    for d in (64,) if small else (64, 256):
        gm = ds.GaussianMixture.random(d, 8, seed=0)
        yield f"{d}-D mixture", gm.score_fn(sde), gm.marginal(eps, sde).sample(n, seed=1)
    torch.manual_seed(0)
    unet = ds.ScoreModel(ScoreUNet(channels=1, base=16), sde, parameterization="eps").double().eval()
    for p in unet.parameters():
        p.requires_grad_(False)
    x = torch.randn(
        16 if small else 32, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    yield "ScoreUNet 1x8x8", unet, x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="64-D mixture and the U-Net only, fewer points")
    parser.add_argument("--only", default=None, help="run only the problems whose name contains this")
    args = parser.parse_args()
    sde, eps = ds.VPSDE(), 1e-3
    print(f"dopri5 at rtol = atol = 1e-4 (the U-Net: rk4, 20 steps), eps = {eps:g}, float64\n")
    print("| problem | n | estimator | VJPs per evaluation | error SD (nats) | variance vs Hutchinson | seconds "
          "| variance x seconds vs Hutchinson |")  # fmt: skip
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, score, x in problems(args.small, sde, eps):
        if args.only is not None and args.only not in name:
            continue
        # The random-weight U-Net's ODE is stiff near eps (an adaptive exact-trace solve did not
        # finish in 15 minutes): fixed rk4 steps, the same for every estimator, so only it differs.
        kw = dict(solver="rk4", steps=20, eps=eps) if "UNet" in name else dict(rtol=1e-4, atol=1e-4, eps=eps)
        exact = ds.log_likelihood(score, sde, x, divergence="exact", **kw).log_prob
        for k in (2, 8):
            rows = []
            for label, div, probes in (
                (f"Hutchinson (3k = {3 * k})", "hutchinson", 3 * k),
                (f"Hutch++ (k = {k})", "hutch++", k),
                (f"deflated (k = {k})", "deflated", k),
            ):
                start = time.perf_counter()
                res = ds.log_likelihood(score, sde, x, divergence=div, probes=probes, seed=0, **kw)
                seconds = time.perf_counter() - start
                err = (res.log_prob - exact).double()
                rows.append((label, float(err.square().mean().sqrt()), seconds))
            base, base_s = rows[0][1] ** 2, rows[0][2]
            for label, sd, seconds in rows:
                print(f"| {name} | {x.shape[0]} | {label} | {3 * k} | {sd:.3g} | {sd**2 / base:.3g} | {seconds:.1f} | "
                      f"{sd**2 * seconds / (base * base_s):.3g} |")  # fmt: skip


if __name__ == "__main__":
    main()
