"""Per-sample adaptive steps: `dopri5_per_sample` against torchdiffeq's batch-wide `dopri5`, and
`adaptive_sde_per_sample` against the batch-wide `adaptive_sde`.

The problem mixes easy and hard samples: a 2-D mixture of a wide component (std 1) and a narrow one
(std 0.02); trajectories that end in the narrow mode stiffen as t -> eps and need small steps,
those that end in the wide one do not. Both solvers run on the same float64 prior draws at the same
tolerance; the path error of each is the mean distance to a float64 `ode:dopri5` solve at
rtol = atol = 1e-10 from the same draws.

Printed per tolerance: batched NFE (the calls a sample waits for), sample evaluations (score
evaluations of single samples: the compute spent), their ratio to dopri5's, the per-sample NFE
distribution (easy and hard samples apart), the path errors, and seconds.

The SDE part runs both reverse-SDE solvers from the same draws with seed 1. Each follows its own
Brownian path (`BrownianPath` for `adaptive_sde`, the per-sample `RowBrownian` for the other), so
each path error is read against Euler–Maruyama on that solver's own path: `sde:euler` at 20 000
steps, and Euler–Maruyama at 8000 steps written here on the `RowBrownian`. Usage:
`python benchmarks/per_sample_adaptive.py [--small]`; results in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time

import torch

import diffsolve as ds
from diffsolve.adapters.brownian import RowBrownian

EPS = 1e-3


def euler_on_row_path(score, sde, x_T: torch.Tensor, seed: int, steps: int) -> torch.Tensor:
    """Euler–Maruyama on the `RowBrownian` path `adaptive_sde_per_sample` queries for this seed."""
    n = x_T.shape[0]
    path = RowBrownian((n, x_T[0].numel()), seed=seed, s_end=sde.T - EPS, dtype=x_T.dtype)
    times = torch.linspace(sde.T, EPS, steps + 1, dtype=torch.float64)
    x, w = x_T.clone(), torch.zeros_like(x_T)
    for t, t_next in zip(times[:-1], times[1:], strict=True):
        w_next = path.value(torch.full((n,), float(sde.T - t_next), dtype=torch.float64))
        tb = torch.full((n,), float(t), dtype=x_T.dtype)
        drift = sde.g2(t) * score(x, tb) - sde._f(t) * x
        x = x + float(t - t_next) * drift + float(sde.g2(t).sqrt()) * (w_next - w)
        w = w_next
    return x


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

    n_sde = n // 2
    x_T = x_T[:n_sde]
    print(
        f"\nreverse SDE, n = {n_sde}, seed 1; path errors against Euler–Maruyama on each solver's own path\n"
    )
    ref_b = ds.sample(score, sde, x_T=x_T, solver="sde:euler", steps=20_000, seed=1, eps=EPS).samples
    ref_o = euler_on_row_path(score, sde, x_T, seed=1, steps=8000)
    hard = ref_b[:, 0] > 0
    print("| tol | solver | batched NFE | sample evaluations | vs adaptive_sde | per-sample NFE, easy: median (max) "
          "| hard: median (max) | path error | seconds |")  # fmt: skip
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for tol in (0.05, 0.02, 0.005, 0.001):
        t0 = time.perf_counter()
        batch = ds.sample(score, sde, x_T=x_T, solver="adaptive_sde", rtol=tol, atol=tol, seed=1, eps=EPS)
        t1 = time.perf_counter()
        own = ds.sample(
            score, sde, x_T=x_T, solver="adaptive_sde_per_sample", rtol=tol, atol=tol, seed=1, eps=EPS
        )
        t2 = time.perf_counter()
        err_b = float((batch.samples - ref_b).norm(dim=1).mean())
        err_o = float((own.samples - ref_o).norm(dim=1).mean())
        evals_b, evals_o = batch.nfe * n_sde, own.settings["sample_evaluations"]
        k = own.nfe_per_sample.double()
        print(f"| {tol:g} | `adaptive_sde` | {batch.nfe} | {evals_b} | 1.00 | {batch.nfe} ({batch.nfe}) | "
              f"{batch.nfe} ({batch.nfe}) | {err_b:.2e} | {t1 - t0:.2f} |")  # fmt: skip
        print(f"| {tol:g} | `adaptive_sde_per_sample` | {own.nfe} | {evals_o} | {evals_o / evals_b:.2f} | "
              f"{k[~hard].median():.0f} ({k[~hard].max():.0f}) | {k[hard].median():.0f} ({k[hard].max():.0f}) | "
              f"{err_o:.2e} | {t2 - t1:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
