"""diffsolve's `ddim` on a diffusers scheduler's own steps against the scheduler's loop: agreement and time.

    python benchmarks/diffusers_ddim.py [--small]

A randomly initialised diffusers `UNet2DModel` (weights seeded; nothing is downloaded) is read back
by `interop.from_diffusers` from a `save_pretrained` directory. For each prediction type and step
count, both loops start from the same noise: diffusers' `DDIMScheduler` (eta = 0,
`clip_sample=False`) calling `unet(x, t).sample` and `scheduler.step`, and
`samplers.diffusion.ddim(score, score.sde, x, interop.scheduler_times(scheduler, k))`. Printed: the
largest difference relative to the largest sample value, and the wall time of both loops (median
of 3 runs, measured in this run), with their ratio.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time

import torch

from diffsolve.interop import from_diffusers, scheduler_times
from diffsolve.samplers.diffusion import ddim


def scheduler_loop(unet, scheduler, x: torch.Tensor, steps: int) -> torch.Tensor:
    """diffusers' own DDIM loop (what DDIMPipeline does at eta = 0)."""
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t).sample, t, x).prev_sample
    return x


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="8x8 images only, fewer steps")
    args = parser.parse_args()
    from diffusers import DDIMScheduler, UNet2DModel

    shapes = [(1, 8)] if args.small else [(1, 8), (3, 32)]
    step_counts = [10] if args.small else [10, 50]
    print(
        "| image | prediction | steps | max diff / max value | diffusers loop (s) | diffsolve ddim (s) | ratio |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for channels, size in shapes:
        torch.manual_seed(0)
        unet = UNet2DModel(
            sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=1,
            block_out_channels=(32, 64), down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8,
        ).eval()  # fmt: skip
        x = torch.randn(32, channels, size, size, generator=torch.Generator().manual_seed(1))
        for prediction in ("epsilon", "v_prediction", "sample"):
            scheduler = DDIMScheduler(clip_sample=False, prediction_type=prediction)
            with tempfile.TemporaryDirectory() as d:
                unet.save_pretrained(d)
                scheduler.save_pretrained(d)
                score = from_diffusers(d)
            for steps in step_counts:
                runs = {
                    "theirs": functools.partial(scheduler_loop, unet, scheduler, x, steps),
                    "ours": functools.partial(ddim, score, score.sde, x, scheduler_times(scheduler, steps)),
                }
                times: dict[str, list[float]] = {"theirs": [], "ours": []}
                outs: dict[str, torch.Tensor] = {}
                with torch.no_grad():
                    for _ in range(3):
                        for name, fn in runs.items():
                            start = time.perf_counter()
                            out = fn()
                            times[name].append(time.perf_counter() - start)
                            outs[name] = getattr(out, "samples", out)
                diff = ((outs["ours"] - outs["theirs"]).abs().max() / outs["theirs"].abs().max()).item()
                t_theirs, t_ours = statistics.median(times["theirs"]), statistics.median(times["ours"])
                print(
                    f"| {channels}x{size}x{size} | {prediction} | {steps} | {diff:.1e} | {t_theirs:.3f} | "
                    f"{t_ours:.3f} | {t_ours / t_theirs:.2f} |"
                )


if __name__ == "__main__":
    main()
