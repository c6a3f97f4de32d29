"""`diffsolve sample`: draw samples with any solver and save them as .npy."""

from __future__ import annotations

import argparse
import io

from ..samplers.grids import GRIDS
from ._common import (
    HelpFormatter,
    UsageError,
    add_batch_size,
    add_problem_args,
    output_file,
    parse_options,
    positive_float,
    positive_int,
    positive_time,
    problem_from_args,
    seed_int,
    write_file,
)

NAME = "sample"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `diffsolve sample` and its options."""
    smp = sub.add_parser(
        "sample",
        help="draw samples with any solver; print NFE, seconds and quality; save them as .npy",
        description="Draw samples with `diffsolve.sample` and report NFE and seconds; on analytic "
        "problems also the mean log p_eps gap and the component-weight TV against the exact marginal. "
        "Samples are saved (atomically) as a NumPy .npy array of shape (n, *event).",
        formatter_class=HelpFormatter,
    )
    add_problem_args(smp)
    smp.add_argument("--solver", default="sde:euler", help="a name from `diffsolve solvers`")
    smp.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="steps of a fixed-step solver (default: the solver's own, listed by `diffsolve solvers`; "
        "for dpm_solver_fast, the NFE budget)",
    )
    smp.add_argument(
        "--time-grid",
        choices=GRIDS,
        default=None,
        help="time grid of a grid-based solver (default: the solver's own, listed by `diffsolve solvers`)",
    )
    smp.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a solver's own option, repeatable: e.g. --option noise_removal=false, --option snr=0.1 for "
        "pc, --option variant=bh1 for unipc (`diffsolve solvers` lists each solver's options)",
    )
    smp.add_argument(
        "--rtol",
        type=positive_float,
        default=None,
        help="relative tolerance of an adaptive solver (default 1e-5; adaptive_sde: 0.05)",
    )
    smp.add_argument(
        "--atol",
        type=positive_float,
        default=None,
        help="absolute tolerance of an adaptive solver (default 1e-5; adaptive_sde: 0.0078)",
    )
    smp.add_argument(
        "--n",
        "--n-samples",
        dest="n",
        type=positive_int,
        default=10_000,
        help="number of samples (--n-samples is the same, for torchrun, which takes --n for its own options)",
    )
    add_batch_size(smp)
    smp.add_argument("--eps", type=positive_time, default=1e-3, help="final time of the solve, in (0, T)")
    smp.add_argument("--seed", type=seed_int, default=0, help="seed of the prior draws and the Brownian path")
    smp.add_argument("--out", default="samples.npy", help="where to save the samples (.npy)")
    smp.add_argument(
        "--plot",
        default=None,
        help="also save a plot here: a scatter of the first two coordinates, or a grid of images for image data",
    )
    smp.add_argument(
        "--class",
        dest="label",
        type=int,
        default=None,
        help="with a class-conditional checkpoint (diffsolve train --conditional): sample this class "
        "(unconditional samples otherwise)",
    )
    smp.add_argument(
        "--guidance",
        type=float,
        default=0.0,
        help="with --class: the classifier-free guidance weight w, (1 + w) s(x, t | class) - w s(x, t)",
    )
    smp.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return smp


def _conditioned(prob, args: argparse.Namespace):
    """The problem's score conditioned on `--class` (and guided by `--guidance`), or unchanged."""
    if args.label is None:
        if args.guidance != 0.0:
            raise UsageError(NAME, "--guidance needs --class: guidance steers towards a class")
        return prob.score
    from ..guidance import Conditional, guided

    classes = getattr(getattr(prob.score, "net", None), "num_classes", None)
    if classes is None:
        raise UsageError(
            NAME, "--class needs a class-conditional checkpoint (trained with diffsolve train --conditional)"
        )
    if not 0 <= args.label < classes:
        raise UsageError(
            NAME, f"--class must be in 0..{classes - 1} (the checkpoint's classes), got {args.label}"
        )
    if not (0.0 <= args.guidance < float("inf")):
        raise UsageError(NAME, f"--guidance must be a finite number >= 0, got {args.guidance}")
    cond = Conditional(prob.score, args.label)
    return cond if args.guidance == 0.0 else guided(cond, Conditional(prob.score, None), args.guidance)


def _sample(sample, score, prob, args: argparse.Namespace, options: dict):
    return sample(
        score,
        prob.sde,
        args.n,
        solver=args.solver,
        steps=args.steps,
        rtol=args.rtol,
        atol=args.atol,
        eps=args.eps,
        seed=args.seed,
        event_shape=prob.event_shape,
        device=prob.device,
        progress=not args.no_progress,
        time_grid=args.time_grid,
        batch_size=args.batch_size,
        **options,
    )


def run(args: argparse.Namespace) -> int:
    """Run `diffsolve sample`; returns the exit status."""
    import numpy as np

    from .. import distributed, metrics, sample

    prob = problem_from_args(args, "sample")
    out = output_file(args.out, NAME)
    options = parse_options(args.option, "sample")
    score = _conditioned(prob, args)  # usage errors before any work
    try:
        res = _sample(sample, score, prob, args, options)
    except (TypeError, ValueError) as err:
        raise UsageError("sample", str(err)) from None
    if not distributed.is_main():
        return 0  # rank 0 reports and writes
    x = res.samples
    label = "" if args.label is None else f", class {args.label}, guidance w = {args.guidance:g}"
    print(
        f"{prob.name}{label}, {prob.sde!r}: {res.settings['solver']}, n = {args.n}, NFE {res.nfe}, "
        f"{res.seconds:.2f} s"
    )
    if prob.analytic and args.label is None:  # the reference is the whole mixture, not one class
        gap = metrics.log_prob_gap(x, prob.reference, args.eps, prob.sde)
        tv = metrics.weight_tv(x, prob.reference, args.eps, prob.sde)
        print(f"mean log p_eps gap {gap} nats; component-weight TV {tv} (the ± is the sampling-noise scale)")
    buf = io.BytesIO()
    np.save(buf, x.cpu().numpy())
    write_file(out, buf.getvalue())
    print(f"samples: {args.out}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from ..plotting import OKABE_ITO, image_grid, save_figure

        title = f"{res.settings['solver']}, NFE {res.nfe}"
        if x.dim() == 4 and x.shape[1] in (1, 3):  # images: a grid of the first 64
            fig = image_grid(x[:64], title=title)
        else:
            fig, ax = plt.subplots(figsize=(4.5, 4.5), layout="constrained")
            p = x.flatten(1)[:5000].cpu()
            ax.scatter(p[:, 0], p[:, 1 if p.shape[1] > 1 else 0], s=1, alpha=0.4, color=OKABE_ITO[0])
            ax.set_title(title, fontsize=10)
            ax.set_aspect("equal")
        save_figure(fig, args.plot)
        plt.close(fig)
        print(f"plot: {args.plot}")
    return 0
