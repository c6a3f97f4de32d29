"""Wall time per NFE of diffsolve's loop against each diffusers scheduler's own loop, on the same model.

    python benchmarks/diffusers_overhead.py [--small]

For every deterministic scheduler `interop.match_scheduler` reproduces, both loops call the same
network from the same noise: diffusers' `scheduler.step` loop, and `ds.sample(score, score.sde,
x_T=x, **match_scheduler(scheduler, k))` with `score = interop.from_diffusers(net, scheduler)`. Two
networks: ring2d's exact eps-model written as a diffusers-style module (`net(x, timestep).sample`),
batch 5000, where the loop's own overhead shows; and a small random `UNet2DModel` on 1x8x8 images,
batch 1, where per-call costs show. Printed: the median wall time of 31 runs of each (the two loops
alternating, after one untimed round), per NFE, and the median over rounds of each round's ratio
(ours / theirs, the two runs back to back), all measured in this run on this machine.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from types import SimpleNamespace

import torch
from torch import nn

import diffsolve as ds
from diffsolve.interop import from_diffusers, match_scheduler


class ExactEps(nn.Module):
    """ring2d's exact eps-model in diffusers' terms: timestep n at t = (n + 1)/N, eps = -sigma_t s(x, t)."""

    def __init__(self, sde: ds.DiscreteVPSDE) -> None:
        super().__init__()
        self.sde, self.score = sde, ds.GaussianMixture.ring2d().score_fn(sde)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> SimpleNamespace:
        # One timestep for the batch, whether it comes 0-d (diffusers' loop) or expanded over the batch
        # (diffsolve's): the mixture's score then computes its moments once, as a UNet embeds it once.
        timestep = torch.as_tensor(timestep)
        if timestep.dim() == 1 and timestep.stride(0) == 0:
            timestep = timestep[:1]
        t = ((timestep.to(torch.float64) + 1) / self.sde.N).reshape(-1).expand(x.shape[0])
        _, sigma = self.sde.marginal(t)
        return SimpleNamespace(sample=(-sigma[:, None] * self.score(x.double(), t)).to(x.dtype))


def their_loop(net: nn.Module, scheduler, x: torch.Tensor, steps: int) -> torch.Tensor:
    """The scheduler's own loop (what its pipeline does)."""
    scheduler.set_timesteps(steps)
    x = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(net(scheduler.scale_model_input(x, t), t).sample, t, x).prev_sample
    return x


def timed(fns, runs: int) -> list[list[float]]:
    """The wall times of each function over `runs` rounds, the functions alternating within a round,
    so that a slow spell of a shared machine falls on both loops alike (after one untimed round)."""
    times = [[] for _ in fns]
    for round_ in range(runs + 1):
        for fn, out in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            if round_:
                out.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="two schedulers, 10 steps, 3 runs each")
    args = parser.parse_args()
    import diffusers

    schedulers = {
        "DDIM": lambda: diffusers.DDIMScheduler(clip_sample=False),
        "Euler": lambda: diffusers.EulerDiscreteScheduler(),
        "DPMSolverMultistep 2M": lambda: diffusers.DPMSolverMultistepScheduler(),
        "DPMSolverMultistep 3M": lambda: diffusers.DPMSolverMultistepScheduler(solver_order=3),
        "UniPCMultistep": lambda: diffusers.UniPCMultistepScheduler(),
    }
    if args.small:
        schedulers = dict(list(schedulers.items())[:2])
    steps, runs = (10, 3) if args.small else (25, 31)
    sde = ds.DiscreteVPSDE()
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()  # fmt: skip
    cases = [
        ("ring2d exact eps-model, batch 5000", ExactEps(sde), torch.randn(5000, 2, generator=torch.Generator().manual_seed(0))),
        ("UNet2DModel 1x8x8, batch 1", unet, torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))),
    ]  # fmt: skip
    print(f"{steps} steps, median of {runs} runs, torch threads {torch.get_num_threads()}\n")
    print(
        "| network | scheduler | diffusers (ms / NFE) | diffsolve (ms / NFE) | ratio | max rel. difference |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    with torch.no_grad():
        for label, net, x in cases:
            for name, make in schedulers.items():
                score = from_diffusers(net, make())
                kw = match_scheduler(make(), steps)
                scheduler = make()
                theirs = their_loop(net, scheduler, x, steps)
                ours = ds.sample(score, score.sde, x_T=x, progress=False, **kw)
                diff = float((ours.samples - theirs).abs().max() / theirs.abs().max())
                solve = functools.partial(ds.sample, score, score.sde, x_T=x, progress=False, **kw)
                theirs_s, ours_s = timed(
                    [functools.partial(their_loop, net, scheduler, x, steps), solve], runs
                )
                # the ratio of each round's two times (a pair run back to back), its median over rounds
                ratio = statistics.median(
                    (o / ours.nfe) / (t / steps) for o, t in zip(ours_s, theirs_s, strict=True)
                )
                t_theirs, t_ours = statistics.median(theirs_s) / steps, statistics.median(ours_s) / ours.nfe
                print(
                    f"| {label} | {name} | {1e3 * t_theirs:.3f} | {1e3 * t_ours:.3f} | {ratio:.3f} | {diff:.1e} |"
                )


if __name__ == "__main__":
    main()
