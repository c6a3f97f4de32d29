"""The hot path on a GPU: sampling, likelihood and a short training run of `ScoreUNet` at 3x32x32.

Printed for each: wall time, wall / (NFE x one score call) — the solver's overhead over the network
it calls, 1.00 meaning none — and samples (or points, or training images) per second. One score call
is timed on the same batch with CUDA synchronisation around it. The network is untrained: speed
does not depend on the weights.

Usage: `python benchmarks/gpu.py` on a CUDA machine (`--device cpu --small` runs the same code on the
CPU in about a minute, to check it). Results in docs/benchmarks.md when a session has a GPU.
"""

from __future__ import annotations

import argparse
import time

import torch

import diffsolve as ds
from diffsolve.nn import ScoreUNet
from diffsolve.training import train


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score_seconds(model, x: torch.Tensor, calls: int = 10) -> float:
    """Median seconds of one score call on `x` (after a warm-up call)."""
    t = torch.full((x.shape[0],), 0.5, device=x.device, dtype=x.dtype)
    with torch.no_grad():
        model(x, t)
        times = []
        for _ in range(calls):
            _sync(x.device)
            start = time.perf_counter()
            model(x, t)
            _sync(x.device)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="torch device (default cuda)")
    parser.add_argument("--small", action="store_true", help="small batches and budgets (a smoke run)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    sde = ds.VPSDE()
    net = ScoreUNet(channels=3, base=32 if args.small else 64)
    model = ds.ScoreModel(net, sde, "eps").to(device).eval()
    batch = 16 if args.small else 256
    shape = (3, 32, 32)
    x = torch.randn(batch, *shape, device=device)
    one = score_seconds(model, x)
    print(
        f"ScoreUNet(3x32x32, base {net.config['base']}), batch {batch}, {device}: one score call {one * 1e3:.2f} ms\n"
    )
    print("| job | budget | NFE | wall (s) | wall / (NFE x score) | per second |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for solver, steps in (("ddim", 10 if args.small else 50), ("sde:euler", 10 if args.small else 100),
                          ("dpm_solver++2m", 10 if args.small else 20)):  # fmt: skip
        ds.sample(
            model, sde, batch, event_shape=shape, solver=solver, steps=2, seed=0, device=device
        )  # warm-up
        _sync(device)
        start = time.perf_counter()
        res = ds.sample(
            model, sde, batch, event_shape=shape, solver=solver, steps=steps, seed=0, device=device
        )
        _sync(device)
        wall = time.perf_counter() - start
        print(f"| sample `{solver}` | {steps} steps | {res.nfe} | {wall:.2f} | {wall / (res.nfe * one):.2f} | "
              f"{batch / wall:.1f} samples |")  # fmt: skip
    points = x[: max(batch // 4, 4)].clamp(-1, 1)
    start = time.perf_counter()
    with torch.no_grad():  # an evaluation: no graph through the network's parameters
        lik = ds.log_likelihood(model, sde, points, divergence="hutchinson", solver="rk4",
                                steps=10 if args.small else 50, seed=0)  # fmt: skip
    _sync(device)
    wall = time.perf_counter() - start
    per = score_seconds(model, points)
    print(f"| likelihood, Hutchinson, 1 probe | rk4, {lik.settings['steps']} steps | {lik.nfe} | {wall:.2f} | "
          f"{wall / (lik.nfe * per):.2f} (a VJP each) | {points.shape[0] / wall:.1f} points |")  # fmt: skip
    data = torch.rand(512 if args.small else 4096, *shape, device=device) * 2 - 1
    steps = 5 if args.small else 50
    train_model = ds.ScoreModel(ScoreUNet(channels=3, base=net.config["base"]), sde, "eps").to(device)
    _sync(device)
    start = time.perf_counter()
    res = train(train_model, data, steps=steps, batch_size=batch // 2, progress=False)
    _sync(device)
    wall = time.perf_counter() - start
    print(f"| train (DSM, Adam, EMA) | {steps} steps, batch {batch // 2} | - | {wall:.2f} | - | "
          f"{steps * (batch // 2) / wall:.1f} images |")  # fmt: skip
    if device.type == "cuda":
        print(f"\npeak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
