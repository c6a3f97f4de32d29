"""Euler–Maruyama at the cost of a score call: wall / (NFE x score) for diffsolve and two baselines.

Three ways to run the same 1000-step Euler–Maruyama solve of the reverse SDE (VP, exact mixture
score, float32, one thread), timed in one run, each next to a fresh median of score calls:

- `diffsolve sde:euler`: our loop on the seed's `BrownianPath` (the same path at every step count),
  with last-step noise removal;
- `score_sde loop`: Song et al.'s Euler–Maruyama predictor as their code writes it (a fresh
  `torch.randn` per step, `x_mean` at the end): no path, so no strong-error or paired studies;
- `torchsde + BrownianInterval`: torchsde's `euler` on the `BrownianInterval` diffsolve used before
  (halfway tree, tol 1e-9).

A ratio of 1 means the solve costs nothing beyond its score calls.

    python benchmarks/euler_maruyama.py            # about 2 minutes on 2 cores
    python benchmarks/euler_maruyama.py --small    # 200 steps, one repetition (CI-sized)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchsde
from overhead import (
    score_seconds,  # the same timing as benchmarks/overhead.py (run from benchmarks/ or the root)
)

import diffsolve as ds
from diffsolve.adapters import BROWNIAN_TOL, ReverseSDE, uniform_grid


def score_sde_loop(
    score, sde, x_T: torch.Tensor, steps: int, eps: float, seed: int
) -> tuple[torch.Tensor, float]:
    """Song et al.'s reverse-diffusion Euler–Maruyama (`EulerMaruyamaPredictor`), as their sampler loops it."""
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    x = x_T
    grid = torch.linspace(sde.T, eps, steps)
    dt = -(sde.T - eps) / steps
    for t in grid:
        vec_t = torch.full((x.shape[0],), float(t))
        drift = sde.reverse_drift(x, vec_t, score(x, vec_t))
        x_mean = x + drift * dt
        g = sde.g2(vec_t).sqrt()[:, None]
        x = x_mean + g * (-dt) ** 0.5 * torch.randn(x.shape, generator=gen)
    return x_mean, time.perf_counter() - start


def torchsde_interval(score, sde, x_T: torch.Tensor, steps: int, eps: float, seed: int) -> float:
    rsde = ReverseSDE(score, sde, eps)
    start = time.perf_counter()
    bm = torchsde.BrownianInterval(
        t0=0.0, t1=rsde.s_end, size=tuple(x_T.shape), dtype=x_T.dtype, entropy=seed, halfway_tree=True,
        tol=BROWNIAN_TOL,
    )  # fmt: skip
    ts = uniform_grid(0.0, rsde.s_end, steps)[[0, -1]]
    torchsde.sdeint(rsde, x_T, ts, bm=bm, method="euler", dt=rsde.s_end / steps * (1 + 1e-12))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="200 steps, one repetition (CI-sized)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per row (median reported)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps, reps = (200, 1) if args.small else (1000, args.reps)
    sde, eps = ds.VPSDE(), 1e-3
    problems = [
        ("16-D mixture, batch 500", ds.GaussianMixture.random(16, 8, seed=0), 500),
        ("ring2d, batch 20 000", ds.GaussianMixture.ring2d(), 20_000),
    ]
    print(f"Euler–Maruyama, {steps} steps, VP, exact score, float32, one thread; median of {reps}\n")
    print(
        "| problem | score call (ms) | diffsolve sde:euler | score_sde loop | torchsde + BrownianInterval |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, mixture, batch in problems:
        score = mixture.score_fn(sde)
        x_T = sde.prior_sample((batch, mixture.dim), generator=torch.Generator().manual_seed(0))
        ours, peer, interval, t_score = [], [], [], []
        for rep in range(reps):
            t_score.append(score_seconds(score, x_T, 30))
            res = ds.sample(score, sde, x_T=x_T, solver="sde:euler", steps=steps, seed=rep, eps=eps)
            ours.append(res.seconds / (res.nfe * t_score[-1]))
            _, sec = score_sde_loop(score, sde, x_T, steps, eps, rep)
            peer.append(sec / (steps * t_score[-1]))
            interval.append(torchsde_interval(score, sde, x_T, steps, eps, rep) / (steps * t_score[-1]))
        print(
            f"| {label} | {statistics.median(t_score) * 1e3:.2f} | {statistics.median(ours):.2f} "
            f"| {statistics.median(peer):.2f} | {statistics.median(interval):.2f} |"
        )


if __name__ == "__main__":
    main()
