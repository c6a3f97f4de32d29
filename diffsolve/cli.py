"""The `diffsolve` command.

diffsolve compare      the main job: many samplers on one score; table, CSV/JSON/Markdown, plots
diffsolve sample       draw samples with any solver; NFE, seconds, quality; writes .npy
diffsolve likelihood   log-likelihoods by the probability-flow ODE; nats and bits/dim
diffsolve convergence  measured order of convergence of one solver; table and log-log plot
diffsolve train        train a score network and save a checkpoint
diffsolve demo         sample ring2d with two solvers; NFE, seconds and distances to exact samples
diffsolve solvers      list every solver with its family, order, adaptivity and cost per step
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show an option's default in its help, except for flags and None ("not given": the help says what then)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action, argparse._StoreTrueAction):
            return action.help
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffsolve",
        description="Score-based diffusion models as differential equations: sample, compare and check "
        "solvers against closed-form Gaussian-mixture marginals.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"diffsolve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="sample ring2d (8 Gaussians on a circle, VP SDE, exact score) with Euler–Maruyama and dopri5",
        description="Sample the ring2d mixture under the VP SDE with its exact score, once with "
        "Euler–Maruyama on the reverse SDE and once with dopri5 on the probability-flow ODE, from the "
        "same prior draws. Prints, per solver: NFE, seconds, the sliced-W2 distance to an independent "
        "exact sample (with the exact-vs-exact spread over 10 pairs, and the z-score against it), the "
        "mean log p_eps gap in nats with its standard error, and the component-weight total variation.",
        formatter_class=_HelpFormatter,
    )
    demo.add_argument("--n", type=_positive_int, default=20_000, help="number of samples per solver")
    demo.add_argument("--steps", type=_positive_int, default=1000, help="Euler–Maruyama steps")
    demo.add_argument("--tol", type=_positive_float, default=1e-5, help="dopri5 rtol and atol")
    demo.add_argument("--eps", type=_positive_float, default=1e-3, help="final time of the reverse solve")
    demo.add_argument("--seed", type=int, default=0, help="seed of the prior draws and the Brownian path")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")

    tr = sub.add_parser(
        "train",
        help="train a ScoreMLP by denoising score matching and save a checkpoint directory",
        description="Train a ScoreMLP score network (eps parameterisation) on a dataset by continuous-time "
        "denoising score matching, with Adam, gradient clipping and an EMA of the weights. Checkpoints "
        "(safetensors + JSON) are written atomically to --out every --checkpoint-every steps and at the end; "
        "--resume continues an interrupted run exactly where it stopped. Datasets: the 2-D toy sets, the "
        "analytic mixtures (sampled), and the 8x8 digits (needs scikit-learn; scaled to [-1, 1] and "
        "dequantised).",
        formatter_class=_HelpFormatter,
    )
    tr.add_argument("--dataset", required=True, help="one of: " + ", ".join(_dataset_names()))
    tr.add_argument("--sde", choices=["vp", "subvp", "ve"], default="vp", help="forward SDE")
    tr.add_argument("--steps", type=_positive_int, required=True, help="optimisation steps in total")
    tr.add_argument("--out", required=True, help="checkpoint directory")
    tr.add_argument(
        "--weighting", choices=["eps", "likelihood"], default="eps", help="loss weighting lambda(t)"
    )
    tr.add_argument(
        "--importance-sampling",
        action="store_true",
        help="with --weighting likelihood: sample t with density proportional to g^2 / sigma^2",
    )
    tr.add_argument("--batch-size", type=_positive_int, default=256, help="samples per step")
    tr.add_argument("--lr", type=_positive_float, default=2e-3, help="Adam learning rate")
    tr.add_argument("--width", type=_positive_int, default=256, help="hidden width of the ScoreMLP")
    tr.add_argument("--depth", type=_positive_int, default=3, help="residual blocks of the ScoreMLP")
    tr.add_argument(
        "--n-data", type=_positive_int, default=50_000, help="points drawn for toy sets and mixtures"
    )
    tr.add_argument("--checkpoint-every", type=_positive_int, default=1000, help="steps between checkpoints")
    tr.add_argument(
        "--seed", type=int, default=0, help="seed of the data draw, the initial weights and training"
    )
    tr.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    tr.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    cmp = sub.add_parser(
        "compare",
        help="the main job: compare samplers on one score by NFE, seconds and accuracy; tables and plots",
        description="Run every solver at several budgets on one score, all from the same prior draws "
        "(and, for stochastic solvers, one Brownian path per seed), and measure cost (NFE counted by a "
        "wrapper around the score, wall-clock seconds) and accuracy: the paired path error against a "
        "reference solve from the same x_T, two-sample distances (sliced W2, MMD, energy) with z-scores "
        "against the exact-vs-exact null, and, on analytic problems, the mean log p_eps gap and the "
        "component-weight TV. With no arguments: ring2d, VP SDE, exact score, ten samplers. Prints the "
        "table and what NFE each solver needs; writes results.csv, results.json, results.md, "
        "work_precision.png and samples.png to --out (each file atomically).",
        formatter_class=_HelpFormatter,
    )
    _problem_args(cmp)
    cmp.add_argument(
        "--solvers", default=None, help="comma-separated solver names (default: the ten of the main job)"
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
    cmp.add_argument("--n", type=_positive_int, default=5000, help="samples per solve")
    cmp.add_argument("--eps", type=_positive_float, default=1e-3, help="final time of every solve")
    cmp.add_argument("--out", default="diffsolve-out", help="output directory")
    cmp.add_argument("--no-likelihood", action="store_true", help="skip the likelihood rows")
    cmp.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    smp = sub.add_parser(
        "sample",
        help="draw samples with any solver; print NFE, seconds and quality; save them as .npy",
        description="Draw samples with `diffsolve.sample` and report NFE and seconds; on analytic "
        "problems also the mean log p_eps gap and the component-weight TV against the exact marginal. "
        "Samples are saved (atomically) as a NumPy .npy array of shape (n, *event).",
        formatter_class=_HelpFormatter,
    )
    _problem_args(smp)
    smp.add_argument("--solver", default="sde:euler", help="a name from `diffsolve solvers`")
    smp.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="steps of a fixed-step solver (default 1000 for sde:* and pc, 100 for ode:*, 50 for the "
        "diffusion samplers)",
    )
    smp.add_argument(
        "--rtol",
        type=_positive_float,
        default=None,
        help="relative tolerance of an adaptive solver (default 1e-5; adaptive_sde: 0.05)",
    )
    smp.add_argument(
        "--atol",
        type=_positive_float,
        default=None,
        help="absolute tolerance of an adaptive solver (default 1e-5; adaptive_sde: 0.0078)",
    )
    smp.add_argument("--n", type=_positive_int, default=10_000, help="number of samples")
    smp.add_argument("--eps", type=_positive_float, default=1e-3, help="final time of the solve")
    smp.add_argument("--seed", type=int, default=0, help="seed of the prior draws and the Brownian path")
    smp.add_argument("--out", default="samples.npy", help="where to save the samples (.npy)")
    smp.add_argument(
        "--plot", default=None, help="also save a scatter plot of the first two coordinates here"
    )
    smp.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    lik = sub.add_parser(
        "likelihood",
        help="log-likelihoods of data by the probability-flow ODE (exact or Hutchinson divergence)",
        description="Evaluate log p_eps of points with `diffsolve.log_likelihood`: by default of n exact "
        "draws of p_eps (analytic problems, where the analytic value is printed beside it) or of the "
        "held-out data of a checkpoint's dataset; or of the points in --data (.npy). Prints the mean "
        "negative log-likelihood in nats and bits/dim, its standard error, NFE and seconds.",
        formatter_class=_HelpFormatter,
    )
    _problem_args(lik)
    lik.add_argument("--data", default=None, help="a .npy array (N, *event) of points to evaluate")
    lik.add_argument("--n", type=_positive_int, default=1000, help="points to evaluate (without --data)")
    lik.add_argument(
        "--divergence", choices=["auto", "exact", "hutchinson"], default="auto", help="divergence estimator"
    )
    lik.add_argument("--probes", type=_positive_int, default=1, help="Hutchinson probes per point")
    lik.add_argument("--solver", default="dopri5", help="a torchdiffeq method")
    lik.add_argument("--rtol", type=_positive_float, default=1e-5, help="relative tolerance")
    lik.add_argument("--atol", type=_positive_float, default=1e-5, help="absolute tolerance")
    lik.add_argument("--eps", type=_positive_float, default=1e-5, help="time of the evaluated density p_eps")
    lik.add_argument("--seed", type=int, default=0, help="seed of the points and the probes")

    conv = sub.add_parser(
        "convergence",
        help="measure a solver's order of convergence (strong, weak or ODE error); table and log-log plot",
        description="Measure how one fixed-step solver's error falls as its step count doubles, and fit the "
        "order on the resolved range (diffsolve.analysis.convergence_order). strong: mean distance to a fine "
        "solve on the same Brownian path (reverse-SDE solvers); weak: error in E|x|^2 against its exact value "
        "under p_eps (analytic problems); ode: mean distance to float64 dopri8 at 1e-12 (deterministic "
        "solvers). Writes convergence.md and convergence.png to --out (atomically).",
        formatter_class=_HelpFormatter,
    )
    _problem_args(conv)
    conv.add_argument("--solver", required=True, help="a fixed-step solver from `diffsolve solvers`")
    conv.add_argument("--kind", choices=["strong", "weak", "ode"], required=True, help="which error")
    conv.add_argument(
        "--steps", default="16,32,64,128", help="comma-separated step counts, increasing (>= 3)"
    )
    conv.add_argument("--n", type=_positive_int, default=1000, help="sample paths (weak: use 10^5 or more)")
    conv.add_argument("--eps", type=_positive_float, default=1e-3, help="final time of every solve")
    conv.add_argument("--seed", type=int, default=0, help="seed of the prior draws and the Brownian path")
    conv.add_argument("--out", default="diffsolve-out", help="output directory")

    sub.add_parser(
        "solvers",
        help="list every solver name with its family, order, adaptivity and NFE per step",
        description="List every solver that `sample` and the other commands accept.",
    )
    return parser


def _demo(args: argparse.Namespace) -> int:
    import torch

    from . import VPSDE, GaussianMixture, metrics, sample

    gm, sde = GaussianMixture.ring2d(), VPSDE()
    if not 0 < args.eps < sde.T:
        print(f"diffsolve demo: error: --eps must lie in (0, {sde.T}), got {args.eps}", file=sys.stderr)
        return 2
    score = gm.score_fn(sde)
    exact = gm.marginal(args.eps, sde)
    x_T = sde.prior_sample((args.n, 2), generator=torch.Generator().manual_seed(args.seed))
    print(f"ring2d (8 Gaussians, radius 4, std 0.3), VPSDE, exact score, n = {args.n}, eps = {args.eps:g}")
    null = metrics.null_distribution(
        lambda a, b: metrics.sliced_wasserstein(a, b),
        lambda s: exact.sample(args.n, seed=10_000 + s),
        pairs=10,
    )
    reference = exact.sample(args.n, seed=args.seed + 1)
    runs = [("sde:euler", {"steps": args.steps}), ("ode:dopri5", {"rtol": args.tol, "atol": args.tol})]
    header = (
        f"{'solver':<11} {'setting':<14} {'NFE':>6} {'seconds':>8} {'sliced W2':>10} {'z':>6} "
        f"{'log p gap (nats)':>18} {'weight TV':>16}"
    )
    rows = []
    for solver, kwargs in runs:
        res = sample(
            score,
            sde,
            x_T=x_T,
            solver=solver,
            eps=args.eps,
            seed=args.seed,
            progress=not args.no_progress,
            **kwargs,
        )
        sw = metrics.sliced_wasserstein(res.samples, reference)
        gap = metrics.log_prob_gap(res.samples, gm, args.eps, sde)
        tv = metrics.weight_tv(res.samples, gm, args.eps, sde)
        setting = f"steps={args.steps}" if "steps" in kwargs else f"tol={args.tol:g}"
        rows.append(
            f"{solver:<11} {setting:<14} {res.nfe:>6} {res.seconds:>8.2f} {sw:>10.4f} "
            f"{(sw - null.value) / null.se:>6.1f} {gap.value:>+9.4f} ± {gap.se:.4f} "
            f"{tv.value:>7.4f} ± {tv.se:.4f}"
        )
    print(header)
    print("\n".join(rows))
    print(f"exact vs exact sliced W2 over 10 pairs: {null.value:.4f} ± {null.se:.4f} (z counts these stds)")
    return 0


def _dataset_names() -> list[str]:
    from .datasets import MIXTURES, TOY_DATASETS

    return [*TOY_DATASETS, *MIXTURES, "digits"]


def _train(args: argparse.Namespace) -> int:
    import torch

    from . import VESDE, VPSDE, ScoreModel, SubVPSDE, datasets, dequantize
    from .nn import ScoreMLP
    from .training import train

    if args.dataset not in _dataset_names():
        print(
            f"diffsolve train: error: --dataset must be one of {', '.join(_dataset_names())}; "
            f"got {args.dataset!r}",
            file=sys.stderr,
        )
        return 2
    sde = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}[args.sde]()
    meta: dict = {"dataset": args.dataset}
    if args.dataset == "digits":
        x = datasets.digits("train", scale="[-1, 1]")
        data = dequantize(
            x,
            bins=datasets.DIGITS_LEVELS,
            low=-1.0,
            high=1.0,
            generator=torch.Generator().manual_seed(args.seed),
        )
        meta["data"] = {"scale": "[-1, 1]", "bins": datasets.DIGITS_LEVELS, "dequantized": True}
    elif args.dataset in datasets.MIXTURES:
        data = datasets.mixture(args.dataset).sample(args.n_data, seed=args.seed, dtype=torch.float32)
    else:
        data = datasets.toy2d(args.dataset, args.n_data, seed=args.seed)
    torch.manual_seed(args.seed)
    net = ScoreMLP(data[0].numel(), width=args.width, depth=args.depth)
    model = ScoreModel(net, sde, "eps")
    res = train(
        model,
        data,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weighting=args.weighting,
        importance_sampling=args.importance_sampling,
        seed=args.seed,
        checkpoint_dir=args.out,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        progress=not args.no_progress,
        metadata=meta,
    )
    tail = res.losses[-100:]
    print(
        f"reached step {res.steps} ({res.steps - res.resumed_from} in this run, {res.seconds:.1f} s); "
        f"mean loss over the last {len(tail)} steps {sum(tail) / len(tail):.4f}"
    )
    print(f"checkpoint (EMA weights): {args.out}")
    return 0


def _problem_args(p: argparse.ArgumentParser) -> None:
    from .datasets import MIXTURES

    p.add_argument(
        "--problem",
        default=None,
        help=f"analytic problem with its exact score: one of {', '.join(MIXTURES)} (default ring2d)",
    )
    p.add_argument(
        "--sde",
        choices=["vp", "subvp", "ve"],
        default=None,
        help="forward SDE of an analytic problem (default vp)",
    )
    p.add_argument(
        "--model", default=None, help="a checkpoint directory from `diffsolve train` (replaces --problem)"
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


class _Problem:
    """The score, SDE and reference (a GaussianMixture or held-out data) a command works on."""

    def __init__(self, args: argparse.Namespace, command: str) -> None:
        import torch

        from . import VESDE, VPSDE, SubVPSDE, checkpoint, datasets, dequantize

        self.device = torch.device(args.device)
        if args.model is not None:
            if args.problem is not None or args.sde is not None:
                raise _UsageError(command, "--model carries its own data and SDE: drop --problem and --sde")
            model = checkpoint.load(args.model, device=self.device)
            self.score, self.sde = model, model.sde
            meta = model.checkpoint_config.get("metadata", {})
            dataset = meta.get("dataset")
            self.name = f"checkpoint {args.model} ({dataset or 'unknown data'})"
            if dataset in datasets.MIXTURES:
                self.reference: Any = datasets.mixture(dataset)
            elif dataset in datasets.TOY_DATASETS:
                self.reference = datasets.toy2d(dataset, 20_000, seed=987_654)  # not the training seed
            elif dataset == "digits":
                x = datasets.digits("test", scale="[-1, 1]")
                g = torch.Generator().manual_seed(987_654)
                self.reference = dequantize(x, bins=datasets.DIGITS_LEVELS, low=-1.0, high=1.0, generator=g)
            else:
                raise _UsageError(
                    command, f"the checkpoint does not say which data it was trained on ({dataset!r})"
                )
            self.event_shape = (
                (self.reference.dim,) if self.reference_is_mixture() else tuple(self.reference.shape[1:])
            )
        else:
            name = args.problem or "ring2d"
            if name not in datasets.MIXTURES:
                raise _UsageError(
                    command, f"--problem must be one of {', '.join(datasets.MIXTURES)}; got {name!r}"
                )
            self.sde = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}[args.sde or "vp"]()
            self.reference = datasets.mixture(name)
            self.score = self.reference.score_fn(self.sde)
            self.event_shape = (self.reference.dim,)
            self.name = f"{name}, exact score"
        self.analytic = self.reference_is_mixture()

    def reference_is_mixture(self) -> bool:
        from .analytic import GaussianMixture

        return isinstance(self.reference, GaussianMixture)


class _UsageError(Exception):
    def __init__(self, command: str, message: str) -> None:
        super().__init__(f"diffsolve {command}: error: {message}")


def _parse_list(text: str, what: str, command: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise _UsageError(command, f"{what} is empty")
    return items


def _parse_budgets(text: str, solvers: list[str], command: str) -> dict[str, list[float]]:
    from .samplers import get_solver

    steps, tols = [], []
    for item in _parse_list(text, "--budgets", command):
        try:
            value = float(item)
        except ValueError:
            raise _UsageError(command, f"--budgets: {item!r} is not a number") from None
        if value.is_integer() and value >= 1 and "e" not in item.lower() and "." not in item:
            steps.append(int(value))
        elif 0 < value < 1:
            tols.append(value)
        else:
            raise _UsageError(
                command,
                f"--budgets: {item!r} is neither a step count (integer >= 1) nor a tolerance in (0, 1)",
            )
    out = {}
    for s in solvers:
        chosen = tols if get_solver(s).adaptive else steps
        if not chosen:
            kind = "tolerances (e.g. 1e-3)" if get_solver(s).adaptive else "step counts (integers)"
            raise _UsageError(command, f"no budget in --budgets fits {s}: it takes {kind}")
        out[s] = chosen
    return out


def _compare(args: argparse.Namespace) -> int:
    import torch

    from . import log_likelihood
    from .compare import DEFAULT_SOLVERS, compare
    from .plotting import sample_grid, save_figure, work_precision
    from .samplers import get_solver

    prob = _Problem(args, "compare")
    solvers = _parse_list(args.solvers, "--solvers", "compare") if args.solvers else list(DEFAULT_SOLVERS)
    for s in solvers:
        try:
            get_solver(s)
        except ValueError as err:
            raise _UsageError("compare", f"--solvers: {err}") from None
    budgets = _parse_budgets(args.budgets, solvers, "compare") if args.budgets else None
    try:
        seeds = [int(s) for s in _parse_list(args.seeds, "--seeds", "compare")]
    except ValueError:
        raise _UsageError(
            "compare", f"--seeds must be comma-separated integers, got {args.seeds!r}"
        ) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reference = prob.reference if prob.analytic else prob.reference.to(prob.device)
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
    )
    table = result.to_markdown()
    if not args.no_likelihood:
        table += "\n" + _likelihood_rows(prob, args, log_likelihood, torch)
    print(table)
    result.to_csv(out / "results.csv")
    result.to_json(out / "results.json")
    _atomic_bytes(out / "results.md", table.encode())
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


def _likelihood_rows(prob: _Problem, args: argparse.Namespace, log_likelihood: Any, torch: Any) -> str:
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
    for name, kwargs in (
        ("exact", {"divergence": "exact"}),
        ("hutchinson, 4 probes", {"divergence": "hutchinson", "probes": 4}),
    ):
        res = log_likelihood(prob.score, prob.sde, x, eps=eps, seed=0, **kwargs)
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


def _sample(args: argparse.Namespace) -> int:
    import numpy as np

    from . import metrics, sample

    prob = _Problem(args, "sample")
    res = sample(
        prob.score,
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
    )
    x = res.samples
    print(
        f"{prob.name}, {prob.sde!r}: {res.settings['solver']}, n = {args.n}, NFE {res.nfe}, {res.seconds:.2f} s"
    )
    if prob.analytic:
        gap = metrics.log_prob_gap(x, prob.reference, args.eps, prob.sde)
        tv = metrics.weight_tv(x, prob.reference, args.eps, prob.sde)
        print(f"mean log p_eps gap {gap} nats; component-weight TV {tv} (the ± is the sampling-noise scale)")
    buf = io.BytesIO()
    np.save(buf, x.cpu().numpy())
    _atomic_bytes(Path(args.out), buf.getvalue())
    print(f"samples: {args.out}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .plotting import OKABE_ITO, save_figure

        fig, ax = plt.subplots(figsize=(4.5, 4.5), layout="constrained")
        p = x.flatten(1)[:5000].cpu()
        ax.scatter(p[:, 0], p[:, 1 if p.shape[1] > 1 else 0], s=1, alpha=0.4, color=OKABE_ITO[0])
        ax.set_title(f"{res.settings['solver']}, NFE {res.nfe}", fontsize=10)
        ax.set_aspect("equal")
        save_figure(fig, args.plot)
        plt.close(fig)
        print(f"plot: {args.plot}")
    return 0


def _atomic_bytes(path: Path, data: bytes) -> None:
    from .io import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def _likelihood(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from . import bits_per_dim, log_likelihood

    prob = _Problem(args, "likelihood")
    truth = None
    if args.data is not None:
        try:
            arr = np.load(args.data, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise _UsageError(
                "likelihood", f"--data {args.data!r} is not a readable .npy array ({err})"
            ) from None
        x = torch.as_tensor(arr, dtype=torch.float32)
        if tuple(x.shape[1:]) != tuple(prob.event_shape):
            raise _UsageError(
                "likelihood",
                f"--data has shape {tuple(x.shape)}; expected (N, {', '.join(map(str, prob.event_shape))})",
            )
    elif prob.analytic:
        x = prob.reference.marginal(args.eps, prob.sde).sample(args.n, seed=args.seed, dtype=torch.float32)
        truth = prob.reference.log_prob_t(x.double(), args.eps, prob.sde)
    else:
        x = prob.reference[: args.n]
    res = log_likelihood(
        prob.score,
        prob.sde,
        x.to(prob.device),
        divergence=args.divergence,
        probes=args.probes,
        solver=args.solver,
        rtol=args.rtol,
        atol=args.atol,
        eps=args.eps,
        seed=args.seed,
    )
    lp = res.log_prob.double().cpu()
    d = x[0].numel()
    se = float(lp.std() / lp.numel() ** 0.5) if lp.numel() > 1 else float("nan")
    print(
        f"{prob.name}, {prob.sde!r}: {x.shape[0]} points, divergence {res.settings['divergence']}, {args.solver}"
    )
    nll = float(-lp.mean())
    print(f"mean NLL {nll:.4f} ± {se:.4f} nats ({nll / d:.4f} nats/dim); NFE {res.nfe}, {res.seconds:.2f} s")
    if res.std_error is not None:
        probe_se = float(res.std_error.double().pow(2).mean().sqrt() / lp.numel() ** 0.5)
        print(f"Hutchinson (probe) standard error of the mean: {probe_se:.4f} nats")
    if truth is not None:
        print(
            f"analytic NLL {float(-truth.mean()):.4f}; mean |error| {float((lp - truth).abs().mean()):.2e} nats"
        )
    meta = getattr(prob.score, "checkpoint_config", {}).get("metadata", {}).get("data", {})
    if meta.get("dequantized"):
        bpd = bits_per_dim(lp, d, bins=meta["bins"], scale=2.0 if meta.get("scale") == "[-1, 1]" else 1.0)
        print(f"bits/dim (dequantised, {meta['bins']} levels): {float(bpd.mean()):.4f}")
    return 0


def _convergence(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .analysis import convergence_order
    from .plotting import convergence, save_figure

    prob = _Problem(args, "convergence")
    try:
        steps = [int(v) for v in _parse_list(args.steps, "--steps", "convergence")]
    except ValueError:
        raise _UsageError(
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
    )
    table = f"{prob.name}, {prob.sde!r}, n = {args.n}, eps = {args.eps:g}\n\n" + res.to_markdown()
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _atomic_bytes(out / "convergence.md", table.encode())
    fig = convergence(res)
    save_figure(fig, out / "convergence.png")
    plt.close(fig)
    print(f"wrote {out / 'convergence.md'}, {out / 'convergence.png'}")
    return 0


def _solvers() -> int:
    from .samplers import solvers

    print(f"{'name':<20} {'family':<10} {'order':<28} {'adaptive':>8}  {'NFE per step':<40} description")
    for s in solvers():
        print(
            f"{s.name:<20} {s.family:<10} {s.orders_text():<28} {'yes' if s.adaptive else 'no':>8}  "
            f"{s.nfe_text():<40} {s.description}"
        )
    print(
        "\norders marked (unverified) are stated, not yet measured by the test suite (docs/choosing-a-sampler.md)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `diffsolve` console script.

    Args:
        argv: The arguments after the program name; None reads `sys.argv`.

    Returns:
        The exit status: 0 on success, 2 on a usage error (after printing what was wrong).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    commands = {
        "compare": _compare,
        "sample": _sample,
        "likelihood": _likelihood,
        "convergence": _convergence,
    }
    if args.command in commands:
        try:
            return commands[args.command](args)
        except _UsageError as err:
            print(err, file=sys.stderr)
            return 2
        except (ValueError, TypeError) as err:
            print(f"diffsolve {args.command}: error: {err}", file=sys.stderr)
            return 2
    if args.command == "demo":
        return _demo(args)
    if args.command == "solvers":
        return _solvers()
    if args.command == "train":
        return _train(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
