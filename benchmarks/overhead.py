"""Solver overhead: wall time / (NFE x one score evaluation), measured in one run.

A ratio of 1 means the solver costs nothing beyond its score calls. The last column runs the same
solve on a free score (`-x`): the solver's own cost per evaluation, in microseconds. The score is the exact score
of a 16-D, 8-component Gaussian mixture under VP at batch 500 (float32, one thread). Each solve is
timed next to a fresh median of 50 score calls on the same batch, five times; the median ratio is
reported. The last rows time torchdiffeq's dopri5 on a free function (dy/dt = -y), which is the
floor any `ode:` solver through torchdiffeq pays per evaluation.

    python benchmarks/overhead.py            # about 1 minute on 2 cores
    python benchmarks/overhead.py --small    # a few seconds (CI-sized)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchdiffeq

import diffsolve as ds

CASES = [
    ("ddim", {"steps": 50}),
    ("dpm_solver++2m", {"steps": 50}),
    ("ode:dopri5", {"rtol": 1e-4, "atol": 1e-4}),
    ("ode:rk4", {"steps": 20}),
    ("edm_heun", {"steps": 25}),
    ("sde:euler", {"steps": 200}),
]


def score_seconds(score, x: torch.Tensor, calls: int) -> float:
    t = torch.full((x.shape[0],), 0.5)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        score(x, t)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="one repetition, fewer steps (CI-sized)")
    parser.add_argument("--batch", type=int, default=500, help="batch size (default 500)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    mixture, sde = ds.GaussianMixture.random(16, 8, seed=0), ds.VPSDE()
    score = mixture.score_fn(sde)
    x = sde.prior_sample((args.batch, 16), generator=torch.Generator().manual_seed(0))
    reps = 1 if args.small else 5
    score_seconds(score, x, 20)  # warm up
    print(f"batch {args.batch} x 16, exact mixture score, one thread; median of {reps} solves\n")
    print(
        "| solver | budget | NFE | score call (us) | wall / (NFE x score) | overhead per NFE, free score (us) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, budget in CASES:
        if args.small and "steps" in budget:
            budget = {"steps": max(budget["steps"] // 5, 2)}
        ratios, t_score, nfe = [], 0.0, 0
        for _ in range(reps):
            t_score = score_seconds(score, x, 50)
            res = ds.sample(score, sde, x_T=x, solver=name, seed=0, **budget)
            nfe = res.nfe
            ratios.append(res.seconds / (res.nfe * t_score))
        # The same solve on a free score (-x): what the solver itself costs per evaluation, which
        # machine noise in the score's timing does not blur.
        free = []
        for _ in range(reps):
            res = ds.sample(lambda x, t: -x, sde, x_T=x, solver=name, seed=0, **budget)
            free.append(res.seconds / res.nfe)
        text = ", ".join(f"{k}={v:g}" for k, v in budget.items())
        print(
            f"| {name} | {text} | {nfe} | {t_score * 1e6:.0f} | {statistics.median(ratios):.2f} "
            f"| {statistics.median(free) * 1e6:.0f} |"
        )

    class Free(torch.nn.Module):
        nfe = 0

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            self.nfe += 1
            return -y

    per_eval = []
    for _ in range(reps):
        func = Free()
        start = time.perf_counter()
        torchdiffeq.odeint(func, x, torch.tensor([1.0, 1e-3]), method="dopri5", rtol=1e-4, atol=1e-4)
        per_eval.append((time.perf_counter() - start) / func.nfe)
    t_score = score_seconds(score, x, 50)
    floor = statistics.median(per_eval)
    print(
        f"\ntorchdiffeq dopri5 on dy/dt = -y: {floor * 1e6:.0f} us per evaluation = "
        f"{floor / t_score:.2f} score calls: its floor ratio here is about {1 + floor / t_score:.2f}"
    )


if __name__ == "__main__":
    main()
