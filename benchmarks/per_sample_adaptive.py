"""Per-sample adaptive steps (`dopri5_per_sample`) against torchdiffeq's batch-wide `dopri5`.

The problem mixes easy and hard samples: a 2-D mixture of a wide component (std 1) and a narrow one
(std 0.02); trajectories that end in the narrow mode stiffen as t -> eps and need small steps,
those that end in the wide one do not. Both solvers run on the same float64 prior draws at the same
tolerance; the path error of each is the mean distance to a float64 `ode:dopri5` solve at
rtol = atol = 1e-10 from the same draws.

Printed per tolerance: batched NFE (the calls a sample waits for), sample evaluations (score
evaluations of single samples: the compute spent), their ratio to dopri5's, the per-sample NFE
distribution (easy and hard samples apart), the path errors, and seconds. Usage:
`python benchmarks/per_sample_adaptive.py [--small]`; results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time

import torch

import diffsolve as ds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="500 samples instead of 2000")
    args = parser.parse_args()
    n = 500 if args.small else 2000
    sde = ds.VPSDE()
    gm = ds.GaussianMixture([0.5, 0.5], [[-3.0, 0.0], [3.0, 0.0]], [[1.0, 1.0], [0.02, 0.02]])
    score = gm.score_fn(sde)
    x_T = sde.prior_sample((n, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = ds.sample(score, sde, x_T=x_T, solver="ode:dopri5", rtol=1e-10, atol=1e-10).samples
    hard = ref[:, 0] > 0  # ended in the narrow mode
    print(f"mixture of N((-3, 0), 1) and N((3, 0), 0.02^2), VP, exact score, n = {n} "
          f"({int(hard.sum())} end in the narrow mode), float64, eps = 1e-3\n")  # fmt: skip
    print("| tol | solver | batched NFE | sample evaluations | vs dopri5 | per-sample NFE, easy: median (max) "
          "| hard: median (max) | path error | seconds |")  # fmt: skip
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for tol in (1e-3, 1e-5, 1e-7):
        t0 = time.perf_counter()
        batch = ds.sample(score, sde, x_T=x_T, solver="ode:dopri5", rtol=tol, atol=tol)
        t1 = time.perf_counter()
        own = ds.sample(score, sde, x_T=x_T, solver="dopri5_per_sample", rtol=tol, atol=tol)
        t2 = time.perf_counter()
        err_b = float((batch.samples - ref).norm(dim=1).mean())
        err_o = float((own.samples - ref).norm(dim=1).mean())
        evals_b = batch.nfe * n
        evals_o = own.settings["sample_evaluations"]
        k = own.nfe_per_sample.double()
        print(f"| {tol:g} | `ode:dopri5` | {batch.nfe} | {evals_b} | 1.00 | {batch.nfe} ({batch.nfe}) | "
              f"{batch.nfe} ({batch.nfe}) | {err_b:.2e} | {t1 - t0:.2f} |")  # fmt: skip
        print(f"| {tol:g} | `dopri5_per_sample` | {own.nfe} | {evals_o} | {evals_o / evals_b:.2f} | "
              f"{k[~hard].median():.0f} ({k[~hard].max():.0f}) | {k[hard].median():.0f} ({k[hard].max():.0f}) | "
              f"{err_o:.2e} | {t2 - t1:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
