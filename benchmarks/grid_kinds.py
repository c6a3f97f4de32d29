"""Path error of the multistep samplers on each kind of time grid, at 6 to 12 steps.

    python benchmarks/grid_kinds.py [--problem ring2d|3|16]     # about 1 minute on 2 cores

2000 prior draws in float64, VP SDE, exact score, eps = 1e-3; the reference is float64 dopri5 at
rtol = atol = 1e-9 from the same draws. Each cell is the RMS path error / the mean log p_eps gap
(nats; negative: samples too spread) at that step count.
"""

from __future__ import annotations

import argparse

import torch

import diffsolve as ds
from diffsolve import metrics
from diffsolve.samplers.grids import GRIDS

SAMPLERS = ("deis", "ipndm", "unipc", "dpm_solver++3m", "dpm_solver++2m")
STEPS = (6, 8, 10, 12)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--problem", default="ring2d", help="ring2d, or a dimension for GaussianMixture.random"
    )
    args = parser.parse_args()
    if args.problem == "ring2d":
        gm = ds.GaussianMixture.ring2d()
    else:
        gm = ds.GaussianMixture.random(int(args.problem), 8, seed=0)
    sde, eps = ds.VPSDE(), 1e-3
    score = gm.score_fn(sde)
    x_T = sde.prior_sample((2000, gm.dim), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = ds.sample(score, sde, x_T=x_T, solver="ode:dopri5", rtol=1e-9, atol=1e-9, eps=eps).samples
    print(f"{args.problem}: RMS path error / mean log p_eps gap (nats)\n")
    print("| sampler | grid | " + " | ".join(f"{s} steps" for s in STEPS) + " |")
    print("| --- | --- | " + " | ".join("---:" for _ in STEPS) + " |")
    for name in SAMPLERS:
        for kind in GRIDS:
            cells = []
            for steps in STEPS:
                out = ds.sample(
                    score, sde, x_T=x_T, solver=name, steps=steps, eps=eps, time_grid=kind
                ).samples
                gap = metrics.log_prob_gap(out, gm, eps, sde).value
                cells.append(f"{metrics.path_error(out, ref):.3f} / {gap:+.2f}")
            default = " (default)" if kind == ds.get_solver(name).time_grid else ""
            print(f"| {name} | {kind}{default} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
