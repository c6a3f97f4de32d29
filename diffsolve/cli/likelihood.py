"""`diffsolve likelihood`: log-likelihoods by the probability-flow ODE, in nats and bits/dim."""

from __future__ import annotations

import argparse

from ._common import (
    HelpFormatter,
    UsageError,
    add_batch_size,
    add_problem_args,
    positive_float,
    positive_int,
    problem_from_args,
    seed_int,
    time_in_0_T,
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
        default="auto",
        help="divergence: exact trace, or an estimator (auto: exact up to 64 dimensions, hutchinson above)",
    )
    lik.add_argument("--probes", type=positive_int, default=1, help="Hutchinson probes per point")
    add_batch_size(lik)
    lik.add_argument("--no-progress", action="store_true", help="hide the progress bar over the points")
    lik.add_argument("--solver", default="dopri5", help="a torchdiffeq method")
    lik.add_argument("--rtol", type=positive_float, default=1e-5, help="relative tolerance")
    lik.add_argument("--atol", type=positive_float, default=1e-5, help="absolute tolerance")
    lik.add_argument("--eps", type=time_in_0_T, default=1e-5, help="time of the evaluated density p_eps")
    lik.add_argument("--seed", type=seed_int, default=0, help="seed of the points and the probes")
    return lik


def run(args: argparse.Namespace) -> int:
    """Run `diffsolve likelihood`; returns the exit status."""
    import numpy as np
    import torch

    from .. import bits_per_dim, log_likelihood

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
            rtol=args.rtol,
            atol=args.atol,
            eps=args.eps,
            seed=args.seed,
            batch_size=args.batch_size,
            progress=not args.no_progress,
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
