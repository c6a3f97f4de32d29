"""`diffsolve likelihood`: log-likelihoods by the probability-flow ODE, in nats and bits/dim."""

from __future__ import annotations

import argparse
import math

from ._common import (
    HelpFormatter,
    UsageError,
    add_batch_size,
    add_problem_args,
    positive_float,
    positive_int,
    positive_time,
    problem_from_args,
    seed_int,
)

NAME = "likelihood"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `diffsolve likelihood` and its options."""
    lik = sub.add_parser(
        "likelihood",
        help="log-likelihoods of data by the probability-flow ODE (exact or Hutchinson divergence)",
        description="Evaluate log p_eps of points with `diffsolve.log_likelihood`: by default of n exact "
        "draws of p_eps (analytic problems, where the analytic value is printed beside it) or of the "
        "held-out data of a checkpoint's dataset; or of the points in --data (.npy). Prints the mean "
        "negative log-likelihood in nats and bits/dim, its standard error, NFE and seconds.",
        formatter_class=HelpFormatter,
    )
    add_problem_args(lik)
    lik.add_argument("--data", default=None, help="a .npy array (N, *event) of points to evaluate")
    lik.add_argument(
        "--n",
        "--n-points",
        dest="n",
        type=positive_int,
        default=1000,
        help="points to evaluate (without --data) (--n-points is the same, for torchrun, which takes --n for its own options)",
    )
    lik.add_argument(
        "--divergence",
        choices=["auto", "exact", "hutchinson", "hutch++", "deflated"],
        default="exact",
        help="divergence: the exact trace (the default, as in the library's log_likelihood), an estimator, or "
        "auto (exact up to 64 dimensions, hutchinson above: the exact trace costs one product per dimension)",
    )
    lik.add_argument(
        "--probes",
        type=positive_int,
        default=1,
        help="Hutchinson probes per point (the sketch size k for hutch++ and deflated); 2 or more give "
        "the estimator's standard error",
    )
    lik.add_argument(
        "--target-se",
        type=positive_float,
        default=None,
        help="with hutchinson or deflated: add rounds of --probes probes until each point's standard error "
        "is at most this many nats (or --max-probes are used)",
    )
    lik.add_argument(
        "--max-probes",
        type=positive_int,
        default=1024,
        help="the most probes a point may use with --target-se",
    )
    add_batch_size(lik)
    lik.add_argument("--no-progress", action="store_true", help="hide the progress bar over the points")
    lik.add_argument(
        "--solver",
        default="dopri5",
        help="a torchdiffeq method (dopri5, rk4, ...; the ode: prefix is accepted)",
    )
    lik.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="steps of a fixed-step solver such as rk4 (which needs them); adaptive ones take --rtol/--atol",
    )
    lik.add_argument("--rtol", type=positive_float, default=1e-5, help="relative tolerance")
    lik.add_argument("--atol", type=positive_float, default=1e-5, help="absolute tolerance")
    lik.add_argument(
        "--eps", type=positive_time, default=1e-5, help="time of the evaluated density p_eps, in (0, T)"
    )
    lik.add_argument("--seed", type=seed_int, default=0, help="seed of the points and the probes")
    return lik


def run(args: argparse.Namespace) -> int:
    """Run `diffsolve likelihood`; returns the exit status."""
    import numpy as np
    import torch

    from .. import bits_per_dim, log_likelihood
    from ..likelihood import standard_errors

    _check_budget(args)
    prob = problem_from_args(args, "likelihood")
    truth = None
    if args.data is not None:
        try:
            arr = np.load(args.data, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise UsageError(
                "likelihood", f"--data {args.data!r} is not a readable .npy array ({err})"
            ) from None
        x = torch.as_tensor(arr, dtype=torch.float32)
        if tuple(x.shape[1:]) != tuple(prob.event_shape):
            raise UsageError(
                "likelihood",
                f"--data has shape {tuple(x.shape)}; expected (N, {', '.join(map(str, prob.event_shape))})",
            )
    elif prob.analytic:
        x = prob.reference.marginal(args.eps, prob.sde).sample(args.n, seed=args.seed, dtype=torch.float32)
        truth = prob.reference.log_prob_t(x.double(), args.eps, prob.sde)
    else:
        x = prob.reference[: args.n]
    with torch.no_grad():  # an evaluation: no graph through a checkpoint's parameters
        res = log_likelihood(
            prob.score,
            prob.sde,
            x.to(prob.device),
            divergence=args.divergence,
            probes=args.probes,
            solver=args.solver,
            steps=args.steps,
            rtol=args.rtol,
            atol=args.atol,
            eps=args.eps,
            seed=args.seed,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            target_se=args.target_se,
            max_probes=args.max_probes,
        )
    lp = res.log_prob.double().cpu()
    d, n = x[0].numel(), lp.numel()
    se, data_se, est_se = standard_errors(lp, res)  # nats: data sampling and estimator noise

    def split(scale: float, unit: str) -> str:
        if est_se is None:
            return f"± {se * scale:.4f} {unit} (data and estimator together; --probes 2 or more splits them)"
        return f"± {se * scale:.4f} {unit} (data ± {data_se * scale:.4f}, estimator ± {est_se * scale:.4f})"

    print(f"{prob.name}, {prob.sde!r}: {n} points, divergence {res.settings['divergence']}, {args.solver}")
    nll = float(-lp.mean())
    print(f"mean NLL {nll:.4f} {split(1.0, 'nats')}; NFE {res.nfe}, {res.seconds:.2f} s")
    if res.probes_used is not None:
        used = res.probes_used.double()
        print(
            f"--target-se {args.target_se:g}: {used.mean():.1f} probes per point on average (at most {used.max():.0f})"
        )
    if truth is not None:
        print(
            f"analytic NLL {float(-truth.mean()):.4f}; mean |error| {float((lp - truth).abs().mean()):.2e} nats"
        )
    meta = getattr(prob.score, "checkpoint_config", {}).get("metadata", {}).get("data", {})
    if meta.get("dequantized"):
        bpd = bits_per_dim(lp, d, bins=meta["bins"], scale=2.0 if meta.get("scale") == "[-1, 1]" else 1.0)
        per_bit = 1.0 / (d * math.log(2))
        print(
            f"bits/dim (dequantised, {meta['bins']} levels): {float(bpd.mean()):.4f} {split(per_bit, 'bits/dim')}"
        )
    return 0


def _check_budget(args: argparse.Namespace) -> None:
    """--steps for a fixed-step solver, --rtol/--atol for an adaptive one, said in the CLI's own words."""
    from ..samplers import get_solver

    name = "ode:" + args.solver.removeprefix("ode:")
    try:
        info = get_solver(name)
    except ValueError as err:
        raise UsageError("likelihood", f"--solver: {err}") from None
    if not info.adaptive and args.steps is None:
        raise UsageError("likelihood", f"--solver {args.solver} is a fixed-step solver: give --steps N")
    if info.adaptive and args.steps is not None:
        raise UsageError(
            "likelihood", f"--steps is for fixed-step solvers; {args.solver} is adaptive: use --rtol/--atol"
        )
