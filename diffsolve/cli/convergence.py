"""`diffsolve convergence`: a solver's measured order of convergence; table and plot."""

from __future__ import annotations

import argparse

from ._common import (
    HelpFormatter,
    UsageError,
    add_problem_args,
    output_dir,
    parse_list,
    positive_int,
    positive_time,
    problem_from_args,
    seed_int,
    write_file,
)

NAME = "convergence"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `diffsolve convergence` and its options."""
    conv = sub.add_parser(
        "convergence",
        help="measure a solver's order of convergence (strong, weak or ODE error); table and log-log plot",
        description="Measure how one fixed-step solver's error falls as its step count doubles, and fit the "
        "order on the resolved range (diffsolve.analysis.convergence_order). strong: mean distance to a fine "
        "solve on the same Brownian path (reverse-SDE solvers); weak: error in E|x|^2 against its exact value "
        "under p_eps (analytic problems); ode: mean distance to float64 dopri8 at 1e-12 (deterministic "
        "solvers). Writes convergence.md and convergence.png to --out (atomically).",
        formatter_class=HelpFormatter,
    )
    add_problem_args(conv)
    conv.add_argument("--solver", required=True, help="a fixed-step solver from `diffsolve solvers`")
    conv.add_argument("--kind", choices=["strong", "weak", "ode"], required=True, help="which error")
    conv.add_argument(
        "--steps", default="16,32,64,128", help="comma-separated step counts, increasing (>= 3)"
    )
    conv.add_argument(
        "--n",
        "--n-samples",
        dest="n",
        type=positive_int,
        default=1000,
        help="sample paths (weak: use 10^5 or more) (--n-samples is the same, for torchrun, which takes --n for its own options)",
    )
    conv.add_argument("--eps", type=positive_time, default=1e-3, help="final time of every solve, in (0, T)")
    conv.add_argument(
        "--seed", type=seed_int, default=0, help="seed of the prior draws and the Brownian path"
    )
    conv.add_argument("--out", default="diffsolve-out", help="output directory")
    conv.add_argument("--no-progress", action="store_true", help="hide the progress bar over the solves")
    return conv


def run(args: argparse.Namespace) -> int:
    """Run `diffsolve convergence`; returns the exit status."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..analysis import convergence_order
    from ..plotting import convergence, save_figure

    prob = problem_from_args(args, "convergence")
    try:
        steps = [int(v) for v in parse_list(args.steps, "--steps", "convergence")]
    except ValueError:
        raise UsageError(
            "convergence", f"--steps must be comma-separated integers, got {args.steps!r}"
        ) from None
    res = convergence_order(
        prob.score,
        prob.sde,
        args.solver,
        steps=steps,
        kind=args.kind,
        reference=prob.reference if prob.analytic else None,
        n=args.n,
        seed=args.seed,
        eps=args.eps,
        event_shape=prob.event_shape,
        device=args.device,
        progress=not args.no_progress,
    )
    from .. import distributed

    if not distributed.is_main():
        return 0  # rank 0 reports and writes
    table = f"{prob.name}, {prob.sde!r}, n = {args.n}, eps = {args.eps:g}\n\n" + res.to_markdown()
    print(table)
    out = output_dir(args.out, NAME)
    write_file(out / "convergence.md", table.encode())
    fig = convergence(res)
    save_figure(fig, out / "convergence.png")
    plt.close(fig)
    print(f"wrote {out / 'convergence.md'}, {out / 'convergence.png'}")
    return 0
