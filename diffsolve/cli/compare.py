"""`diffsolve compare`, the main job: samplers on one score by NFE, seconds and accuracy."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ..problems import Problem
from ._common import (
    HelpFormatter,
    UsageError,
    add_batch_size,
    add_problem_args,
    check_device,
    output_dir,
    parse_budgets,
    parse_list,
    positive_int,
    positive_time,
    problem_from_args,
    write_file,
)

NAME = "compare"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `diffsolve compare` and its options."""
    cmp = sub.add_parser(
        "compare",
        help="the main job: compare samplers on one score by NFE, seconds and accuracy; tables and plots",
        description="Run every solver at several budgets on one score, all from the same prior draws "
        "(and, for stochastic solvers, one Brownian path per seed), and measure cost (NFE counted by a "
        "wrapper around the score, wall-clock seconds) and accuracy: the paired path error against a "
        "reference solve from the same x_T, two-sample distances (sliced W2, MMD, energy) with z-scores "
        "against the exact-vs-exact null, a kNN classifier two-sample test (C2ST), and, on analytic "
        "problems, the mean log p_eps gap, the component-weight TV, a KS test of log p_eps and the tail "
        "mass below its exact 0.2% quantile; a solver is indistinguishable from a budget on where every "
        "test passes at every seed and every larger budget. With no arguments: ring2d, VP SDE, exact score, "
        "fourteen samplers. Prints the "
        "table and what NFE each solver needs; writes results.csv, results.json, results.md, "
        "work_precision.png and samples.png to --out (each file atomically).",
        formatter_class=HelpFormatter,
    )
    add_problem_args(cmp)
    cmp.add_argument(
        "--solvers", default=None, help="comma-separated solver names (default: the fourteen of the main job)"
    )
    cmp.add_argument(
        "--budgets",
        default=None,
        help="comma-separated budgets for every solver: integers are steps (fixed-step solvers), numbers "
        "below 1 such as 1e-3 are tolerances (adaptive ones); default: each solver's own list",
    )
    cmp.add_argument(
        "--seeds", default="0", help="comma-separated seeds (one row per solver, budget and seed)"
    )
    cmp.add_argument(
        "--n",
        "--n-samples",
        dest="n",
        type=positive_int,
        default=5000,
        help="samples per solve (--n-samples is the same, for torchrun, which takes --n for its own options)",
    )
    add_batch_size(cmp)
    cmp.add_argument("--eps", type=positive_time, default=1e-3, help="final time of every solve, in (0, T)")
    cmp.add_argument("--out", default="diffsolve-out", help="output directory")
    cmp.add_argument(
        "--reference",
        choices=("problem", "converged"),
        default="problem",
        help="what samples are judged against: the problem's own (the exact mixture, or a checkpoint's "
        "held-out data) or 'converged', 2n samples of a float64 dopri5 solve of the same score at 1e-8 "
        "(1e-5 for a float32 network) (for a trained model: the samplers' error alone, without the model's)",
    )
    cmp.add_argument(
        "--diffusers",
        default=None,
        metavar="DIR",
        help="a local diffusers model directory (UNet2DModel and scheduler, from save_pretrained): its "
        "scheduler's own loop runs beside diffsolve's samplers (default: the scheduler, the solver "
        "match_scheduler pairs it with, ipndm, deis, unipc, dpm_solver++2m), all judged against a "
        "converged solve of the same model",
    )
    cmp.add_argument("--no-likelihood", action="store_true", help="skip the likelihood rows")
    cmp.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return cmp


def run(args: argparse.Namespace) -> int:
    """Run `diffsolve compare`; returns the exit status."""
    from ..compare import DEFAULT_SOLVERS
    from ..samplers import unregister_solver

    registered: list[str] = []
    if args.diffusers is not None:
        prob, default_solvers, registered = _diffusers_problem(args)
        args.reference, args.no_likelihood = "converged", True
    else:
        prob, default_solvers = problem_from_args(args, "compare"), list(DEFAULT_SOLVERS)
    try:
        return _run(args, prob, default_solvers)
    finally:
        for name in registered:
            unregister_solver(name)


def _run(args: argparse.Namespace, prob: Problem, default_solvers: list[str]) -> int:
    import torch

    from .. import distributed, log_likelihood
    from ..compare import compare
    from ..plotting import sample_grid, save_figure, work_precision
    from ..samplers import get_solver

    solvers = parse_list(args.solvers, "--solvers", "compare") if args.solvers else default_solvers
    for s in solvers:
        try:
            get_solver(s)
        except ValueError as err:
            raise UsageError("compare", f"--solvers: {err}") from None
    budgets = parse_budgets(args.budgets, solvers, "compare") if args.budgets else None
    try:
        seeds = [int(s) for s in parse_list(args.seeds, "--seeds", "compare")]
    except ValueError:
        raise UsageError("compare", f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    out = output_dir(args.out, NAME)
    reference = prob.reference if prob.analytic else prob.reference.to(prob.device)
    if args.reference == "converged":
        reference = "converged"
    result = compare(
        prob.score,
        prob.sde,
        reference=reference,
        solvers=solvers,
        budgets=budgets,
        n=args.n,
        seeds=seeds,
        eps=args.eps,
        problem=prob.name,
        device=prob.device,
        progress=not args.no_progress,
        batch_size=args.batch_size,
        event_shape=prob.event_shape,
    )
    table = result.to_markdown()
    if not args.no_likelihood:
        table += "\n" + _likelihood_rows(prob, args, log_likelihood, torch)
    if not distributed.is_main():
        return 0  # rank 0 reports and writes
    print(table)
    result.to_csv(out / "results.csv")
    result.to_json(out / "results.json")
    write_file(out / "results.md", table.encode())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = "path_error"
    fig = work_precision(result, metric, target=1e-2)
    save_figure(fig, out / "work_precision.png")
    plt.close(fig)
    fig = sample_grid(result)
    save_figure(fig, out / "samples.png")
    plt.close(fig)
    files = ("results.csv", "results.json", "results.md", "work_precision.png", "samples.png")
    print(f"wrote {', '.join(str(out / f) for f in files)}")
    return 0


def _diffusers_problem(args: argparse.Namespace) -> tuple[Problem, list[str], list[str]]:
    """The model of `--diffusers DIR` as a problem, the default solvers, and the solvers registered for it."""
    import torch

    from ..interop import from_diffusers, match_scheduler
    from ..samplers import register_scheduler

    if args.model is not None or args.problem is not None or args.sde is not None:
        raise UsageError(NAME, "--diffusers carries its own model and SDE: drop --model, --problem and --sde")
    try:
        score = from_diffusers(args.diffusers)
    except (OSError, ValueError, ImportError) as err:
        raise UsageError(NAME, f"--diffusers {args.diffusers!r}: {err}") from None
    scheduler, config = score.scheduler, score.net.unet.config  # type: ignore[union-attr]
    size = config.sample_size if isinstance(config.sample_size, int) else tuple(config.sample_size)[0]
    event = (int(config.in_channels), int(size), int(size))
    device = check_device(args.device, NAME) or torch.device("cpu")
    if score.sde.zero_terminal_snr:  # a flow-matching model
        return _flow_problem(args, score, event, device)
    solvers, registered = [], []
    # The judge compares at eps = 1/N (timestep 0); a loop that ends at the clean data (t = 0) is made to
    # end there too (DDIM's set_alpha_to_one=False, the multistep schedulers' final_sigmas_type="sigma_min").
    end = {
        k: v
        for k, v in (("set_alpha_to_one", False), ("final_sigmas_type", "sigma_min"))
        if k in scheduler.config
    }
    args.eps = 1 / int(scheduler.config.num_train_timesteps)
    try:
        solver = register_scheduler(lambda: type(scheduler).from_config(scheduler.config, **end))
        solvers.append(solver.name)
        registered.append(solver.name)
    except ValueError as err:  # a stochastic scheduler: its noise is not keyed by sample
        print(f"diffsolve compare: {err}; it is left out")
    try:
        solvers.append(match_scheduler(type(scheduler).from_config(scheduler.config), 10)["solver"])
    except ValueError:
        pass
    solvers += [s for s in ("ipndm", "deis", "unipc", "dpm_solver++2m") if s not in solvers]
    score = score.to(device)
    empty = torch.empty((0, *event), device=device)
    prob = Problem(f"diffusers model {args.diffusers}", score, score.sde, empty, event, device)
    return prob, solvers, registered


def _flow_problem(args: argparse.Namespace, score: Any, event: tuple[int, ...], device: Any) -> tuple:
    """A flow-matching model's comparison: on `RectifiedFlow()` (T = 0.999), where every solver starts (its
    scheduler starts at t = 1, where only the velocity solvers can; `match_scheduler` reproduces it there)."""
    import torch

    from ..scores import ScoreModel
    from ..sde import RectifiedFlow

    print(
        "diffsolve compare: a flow-matching model; the comparison runs on RectifiedFlow() (T = 0.999), where "
        "every solver starts (its scheduler's loop from t = 1 is flow_euler / flow_heun: match_scheduler)"
    )
    args.eps = 1 / int(score.scheduler.config.num_train_timesteps)
    on_path = ScoreModel(score.net, RectifiedFlow(), "velocity").to(device)
    empty = torch.empty((0, *event), device=device)
    prob = Problem(
        f"diffusers flow-matching model {args.diffusers}", on_path, on_path.sde, empty, event, device
    )
    return prob, ["flow_euler", "flow_heun", "ipndm", "deis", "unipc", "dpm_solver++2m"], []


EXACT_TRACE_MAX_DIM = 16
"""The likelihood rows of a trained model take the exact trace up to this many dimensions only."""


def _likelihood_rows(prob: Problem, args: argparse.Namespace, log_likelihood: Any, torch: Any) -> str:
    """Exact vs Hutchinson divergence (vs the analytic value when there is one) on 500 points."""
    eps = 1e-5
    if prob.analytic:
        x = prob.reference.marginal(eps, prob.sde).sample(500, seed=4242, dtype=torch.float32).to(prob.device)
        truth = prob.reference.log_prob_t(x.double(), eps, prob.sde)
    else:
        x = prob.reference[:500].to(prob.device)
        truth = None
    lines = [
        f"Likelihood of {x.shape[0]} points of p_eps (eps = {eps:g}), dopri5, rtol = atol = 1e-5:",
        "",
        "| divergence | mean log p (nats) | SE | mean abs error vs analytic | NFE | seconds |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    runs = [
        ("exact", {"divergence": "exact"}),
        ("hutchinson, 4 probes", {"divergence": "hutchinson", "probes": 4}),
    ]
    d = math.prod(prob.event_shape)
    if not prob.analytic and d > EXACT_TRACE_MAX_DIM:  # d backward passes per step: minutes for a U-Net
        runs = runs[1:]
        lines[0] += (
            f" (the exact trace is left out at d = {d}, {d} backward passes per step; "
            "`diffsolve likelihood --divergence exact` computes it)"
        )
    for name, kwargs in runs:
        with torch.no_grad():  # an evaluation: no graph through a checkpoint's parameters
            res = log_likelihood(prob.score, prob.sde, x, eps=eps, seed=0, progress=False, **kwargs)
        lp = res.log_prob.double()
        se = float(lp.std() / lp.numel() ** 0.5)
        err = "-" if truth is None else f"{float((lp.cpu() - truth.cpu()).abs().mean()):.2e}"
        lines.append(
            f"| {name} | {float(lp.mean()):.4f} | {se:.4f} | {err} | {res.nfe} | {res.seconds:.2f} |"
        )
    if truth is not None:
        lines.append(
            f"| analytic | {float(truth.mean()):.4f} | {float(truth.std() / truth.numel() ** 0.5):.4f} | 0 | - | - |"
        )
    return "\n".join(lines) + "\n"
