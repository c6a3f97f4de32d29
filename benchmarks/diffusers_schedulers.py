"""The NFE each diffusers scheduler and each diffsolve sampler needs under the distribution judge.

    python benchmarks/diffusers_schedulers.py [--small] [--out DIR] [--ours A,B] [--schedulers X,Y]

ring2d's exact score on the DDPM schedule (`DiscreteVPSDE`: linear betas 1e-4..0.02, 1000 steps).
Every deterministic diffusers scheduler runs its own loop (`samplers.register_scheduler`: the
scheduler's `step`, the model called through the exact score), at its defaults except the betas,
which are DDPM's for all (Heun and KDPM2 default to Stable Diffusion's); diffsolve's samplers run
on their own default grids. `compare` judges every row against exact samples of p_eps (eps = 1e-3,
timestep 0: the schedulers that end at sigma = 0 are judged against p_eps too, a variance 0.1% off
for ring2d's components), seeds 0, 1, 2, n = 5000, and `Comparison.nfe_needed` gives the smallest
NFE from which every larger budget passes on every seed. `--small`: one seed, n = 2000, four
solvers.
"""

from __future__ import annotations

import argparse
import functools
import os
import warnings

import diffsolve as ds
from diffsolve.compare import compare
from diffsolve.samplers import register_scheduler, unregister_solver

OURS = ["ipndm", "deis", "unipc", "dpm_solver++2m"]
BUDGETS = [10, 15, 20, 25, 30, 40, 50, 75, 100]


def schedulers():
    import diffusers

    ddpm = {"beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear"}
    return {
        "diffusers:LMS": functools.partial(diffusers.LMSDiscreteScheduler, **ddpm),
        "diffusers:DEIS": functools.partial(diffusers.DEISMultistepScheduler, **ddpm),
        "diffusers:Heun": functools.partial(diffusers.HeunDiscreteScheduler, **ddpm),
        "diffusers:KDPM2": functools.partial(diffusers.KDPM2DiscreteScheduler, **ddpm),
        "diffusers:DPM++2M": functools.partial(diffusers.DPMSolverMultistepScheduler, **ddpm),
        "diffusers:DPM++3M": functools.partial(diffusers.DPMSolverMultistepScheduler, solver_order=3, **ddpm),
        "diffusers:DPM++2S": functools.partial(diffusers.DPMSolverSinglestepScheduler, **ddpm),
        "diffusers:UniPC": functools.partial(diffusers.UniPCMultistepScheduler, **ddpm),
        "diffusers:Euler": functools.partial(diffusers.EulerDiscreteScheduler, **ddpm),
        "diffusers:DDIM": functools.partial(diffusers.DDIMScheduler, clip_sample=False, **ddpm),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="one seed, n = 2000, four solvers, four budgets")
    parser.add_argument("--out", default=None, help="also write the comparison's CSV/JSON/Markdown here")
    parser.add_argument(
        "--ours",
        default=",".join(OURS),
        help=f"diffsolve's samplers, comma-separated (default: {','.join(OURS)})",
    )
    parser.add_argument(
        "--schedulers", default=None,
        help="diffusers' schedulers, comma-separated names after 'diffusers:' (default: all; '' for none)",
    )  # fmt: skip
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    made = schedulers()
    if args.schedulers is not None:
        wanted = {f"diffusers:{name}" for name in args.schedulers.split(",") if name}
        unknown = wanted - set(made)
        if unknown:
            parser.error(f"--schedulers: unknown {sorted(unknown)}; known: {', '.join(sorted(made))}")
        made = {name: make for name, make in made.items() if name in wanted}
    if args.small:
        made = dict(list(made.items())[:2])
    names = [register_scheduler(make, name).name for name, make in made.items()]
    try:
        ours = [name for name in args.ours.split(",") if name]
        ours = ours[:2] if args.small else ours
        sde, ring = ds.DiscreteVPSDE(), ds.GaussianMixture.ring2d()
        budgets = [10, 20, 40, 75] if args.small else BUDGETS
        table = compare(
            ring.score_fn(sde), sde, reference=ring, solvers=ours + names, budgets=budgets,
            seeds=(0,) if args.small else (0, 1, 2), n=2000 if args.small else 5000, problem="ring2d, DDPM schedule",
        )  # fmt: skip
    finally:
        for name in names:
            unregister_solver(name)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        table.to_csv(os.path.join(args.out, "results.csv"))
        table.to_json(os.path.join(args.out, "results.json"))
        table.to_markdown(os.path.join(args.out, "results.md"))
    print("| sampler | NFE to be indistinguishable |")
    print("| --- | ---: |")
    for row in sorted(
        table.nfe_needed(),
        key=lambda r: (r["nfe_indistinguishable"] is None, r["nfe_indistinguishable"] or 0),
    ):
        nfe = row["nfe_indistinguishable"]
        print(f"| {row['solver']} | {'-' if nfe is None else f'{nfe:.0f}'} |")


if __name__ == "__main__":
    main()
