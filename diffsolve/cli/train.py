"""`diffsolve train`: train a score network (an MLP or the digits U-Net) and save a resumable checkpoint."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..problems import SDES, dataset_names
from ._common import (
    HelpFormatter,
    UsageError,
    check_device,
    output_dir,
    positive_float,
    positive_int,
    seed_int,
)

NAME = "train"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `diffsolve train` and its options."""
    tr = sub.add_parser(
        "train",
        help="train a score network (--model mlp or unet) by denoising score matching and save a checkpoint directory",
        description="Train a ScoreMLP score network (eps parameterisation) on a dataset by continuous-time "
        "denoising score matching, with Adam, gradient clipping and an EMA of the weights. Checkpoints "
        "(safetensors + JSON) are written atomically to --out every --checkpoint-every steps and at the end; "
        "--resume continues an interrupted run exactly where it stopped. Datasets: the 2-D toy sets, the "
        "analytic mixtures (sampled), and the 8x8 digits (needs scikit-learn; scaled to [-1, 1] and "
        "dequantised).",
        formatter_class=HelpFormatter,
    )
    tr.add_argument("--dataset", required=True, help="one of: " + ", ".join(dataset_names()))
    tr.add_argument(
        "--sde",
        "--path",
        choices=list(SDES),
        default="vp",
        help="forward SDE or path; rectified: flow matching's path (1 - t) x0 + t eps, its network predicting the "
        "velocity (with --weighting velocity, flow matching's own loss)",
    )
    tr.add_argument(
        "--steps",
        type=positive_int,
        default=6000,
        help="optimisation steps in total (the cosine schedule's length; 6000 take ~3 min on 2 cores for ring2d)",
    )
    tr.add_argument(
        "--minutes",
        type=positive_float,
        default=None,
        help="wall-clock budget: stop (and checkpoint) after the step that crosses it, even before --steps",
    )
    tr.add_argument(
        "--model",
        choices=["mlp", "unet"],
        default="mlp",
        help="the network: ScoreMLP (--width, --depth), or ScoreUNet for image datasets (digits; --width is its base channels)",
    )
    tr.add_argument(
        "--conditional",
        action="store_true",
        help="class-conditional: train on the labels (digits: the digit; mixtures: the component) with "
        "label dropout, so that one network gives both scores of classifier-free guidance",
    )
    tr.add_argument(
        "--label-dropout",
        type=float,
        default=0.1,
        help="with --conditional: the fraction of each batch trained with the 'no label' entry",
    )
    tr.add_argument("--device", default="cpu", help="torch device to train on, e.g. cpu or cuda")
    tr.add_argument("--out", required=True, help="checkpoint directory")
    tr.add_argument(
        "--weighting",
        choices=["eps", "likelihood", "velocity"],
        default="eps",
        help="loss weighting lambda(t): eps (sigma^2), likelihood (g^2), velocity (flow matching's velocity MSE, g^4/4)",
    )
    tr.add_argument(
        "--importance-sampling",
        action="store_true",
        help="with --weighting likelihood: sample t with density proportional to g^2 / sigma^2",
    )
    tr.add_argument("--batch-size", type=positive_int, default=512, help="samples per step")
    tr.add_argument("--lr", type=positive_float, default=2e-3, help="Adam's peak learning rate")
    tr.add_argument(
        "--lr-schedule",
        choices=["cosine", "constant"],
        default="cosine",
        help="learning rate over the run: cosine decay from --lr to 0 at --steps, or constant",
    )
    tr.add_argument(
        "--ema-decay",
        type=float,
        default=0.999,
        help="decay of the weights' exponential moving average (saved), once warmed up",
    )
    tr.add_argument(
        "--no-ema-warmup",
        action="store_true",
        help="no EMA warm-up: the average starts from the initial weights and needs ~1/(1 - decay) steps to "
        "forget them (by default it warms up as k-diffusion's and diffusers' do: decay min(d, 1 - (1 + k)^-2/3))",
    )
    tr.add_argument(
        "--width",
        type=positive_int,
        default=None,
        help="hidden width of the ScoreMLP (default 256), or the ScoreUNet's base channels (default 32: "
        "0.58 M weights, the recipe of the 2.03 bits/dim digits model)",
    )
    tr.add_argument("--depth", type=positive_int, default=3, help="residual blocks of the ScoreMLP")
    tr.add_argument(
        "--n-data", type=positive_int, default=50_000, help="points drawn for toy sets and mixtures"
    )
    tr.add_argument("--checkpoint-every", type=positive_int, default=1000, help="steps between checkpoints")
    tr.add_argument(
        "--seed", type=seed_int, default=0, help="seed of the data draw, the initial weights and training"
    )
    tr.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in --out; every other option must be the saved run's (a usage error "
        "lists what differs) unless --allow-change names it",
    )
    tr.add_argument(
        "--allow-change",
        action="append",
        choices=["steps"],
        default=[],
        help="with --resume: let this option differ from the saved run (steps: train further or stop "
        "earlier; needs --lr-schedule constant, so that nothing else changes)",
    )
    tr.add_argument(
        "--overwrite", action="store_true", help="start a new run in an --out that already holds one"
    )
    tr.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return tr


def run(args: argparse.Namespace) -> int:
    """Run `diffsolve train`; returns the exit status."""
    import torch

    from .. import RectifiedFlow, ScoreModel
    from ..datasets import TOY_DATASETS
    from ..nn import ScoreMLP, ScoreUNet
    from ..problems import dataset_names, make_sde, training_data
    from ..training import TRAIN_STATE, train

    if args.dataset not in dataset_names():
        print(
            f"diffsolve train: error: --dataset must be one of {', '.join(dataset_names())}; "
            f"got {args.dataset!r}",
            file=sys.stderr,
        )
        return 2
    if args.width is None:  # the U-Net's base channels are not an MLP's width: 256 would make it 36 M weights
        args.width = 32 if args.model == "unet" else 256
    shaping = {  # the options that shape the run; --resume checks them against the saved run
        "dataset": args.dataset, "sde": args.sde, "steps": args.steps, "weighting": args.weighting,
        "importance_sampling": args.importance_sampling, "batch_size": args.batch_size, "lr": args.lr,
        "lr_schedule": args.lr_schedule, "ema_decay": args.ema_decay, "model": args.model,
        "width": args.width, "depth": args.depth, "n_data": args.n_data, "seed": args.seed,
        "conditional": args.conditional, "label_dropout": args.label_dropout,
        "ema_warmup": not args.no_ema_warmup,
    }  # fmt: skip
    device = check_device(args.device, NAME)
    if args.allow_change and args.lr_schedule == "cosine":
        raise UsageError(
            NAME, "--allow-change steps needs --lr-schedule constant: the cosine schedule's length is --steps"
        )
    if not 0.0 <= args.ema_decay < 1.0:
        raise UsageError(NAME, f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    if not 0.0 <= args.label_dropout < 1.0:
        raise UsageError(NAME, f"--label-dropout must be in [0, 1), got {args.label_dropout}")
    if args.conditional and args.dataset in TOY_DATASETS:
        raise UsageError(
            NAME,
            f"--conditional needs a labelled dataset (digits or a mixture); --dataset {args.dataset} has no labels",
        )
    output_dir(args.out, NAME)
    if args.resume:
        _check_resume(Path(args.out), shaping, args.allow_change)
    elif not args.overwrite and (Path(args.out) / TRAIN_STATE).is_file():
        raise UsageError(
            NAME,
            f"--out {args.out!r} already holds a training run; --resume continues it, --overwrite starts again",
        )
    sde = make_sde(args.sde)
    if args.conditional:
        data, labels, meta = training_data(args.dataset, args.n_data, args.seed, with_labels=True)
        classes = meta["num_classes"]
    else:
        data, meta = training_data(args.dataset, args.n_data, args.seed)
        labels, classes = None, None
    dequantize = meta.pop("dequantize", None)
    meta = {**meta, "cli": {k: v for k, v in shaping.items() if k != "steps"}}
    torch.manual_seed(args.seed)
    if args.model == "unet":
        if data.dim() != 4:
            raise UsageError(
                NAME,
                f"--model unet needs image data (N, C, H, W); --dataset {args.dataset} is {tuple(data.shape[1:])}",
            )
        net = ScoreUNet(channels=data.shape[1], base=args.width, num_classes=classes)
    else:
        net = ScoreMLP(data[0].numel(), width=args.width, depth=args.depth, num_classes=classes)
    model = ScoreModel(net, sde, "velocity" if isinstance(sde, RectifiedFlow) else "eps").to(device)
    res = train(
        model,
        data.to(device),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        ema_decay=args.ema_decay,
        ema_warmup=not args.no_ema_warmup,
        max_seconds=None if args.minutes is None else 60.0 * args.minutes,
        weighting=args.weighting,
        importance_sampling=args.importance_sampling,
        seed=args.seed,
        checkpoint_dir=args.out,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        progress=not args.no_progress,
        metadata=meta,
        allow_changes=args.allow_change,
        overwrite=args.overwrite,
        dequantize=None if dequantize is None else tuple(dequantize),
        labels=None if labels is None else labels.to(device),
        label_dropout=args.label_dropout,
    )
    _report(res, args)
    return 0


def _report(res, args: argparse.Namespace) -> None:
    """What the run saved: how far it got, the EMA's state, the loss; a warning when it is unlikely usable."""
    from ..training import ema_decay_at, ema_initial_share

    tail = res.losses[-100:]
    head = res.losses[: min(100, len(res.losses))]
    warm = not args.no_ema_warmup
    decay = ema_decay_at(max(res.steps - 1, 0), args.ema_decay, warm)
    initial = ema_initial_share(res.steps, args.ema_decay, warm)
    print(
        f"reached step {res.steps} of {args.steps} ({res.steps - res.resumed_from} in this run, {res.seconds:.1f} s); "
        f"mean loss over the last {len(tail)} steps {sum(tail) / len(tail):.4f} (first {len(head)}: "
        f"{sum(head) / len(head):.4f})"
    )
    print(
        f"EMA: decay {decay:.4g} at the last step ({'warmed up' if decay >= args.ema_decay else 'warming up'}; "
        f"it averages over ~{1 / max(1 - decay, 1e-12):.0f} steps), initial weights' share {initial:.1%}"
    )
    print(f"checkpoint (EMA weights): {args.out}")
    if res.steps < args.steps:
        stop = f"--minutes {args.minutes:g}" if args.minutes is not None else "the run"
        usable = initial < 0.05 and res.steps >= 0.1 * args.steps
        print(
            f"warning: {stop} stopped the run at step {res.steps} of {args.steps}: the checkpoint holds a model "
            + ("trained for part of its schedule" if usable else "that is unlikely to be usable yet")
            + f"; continue it with diffsolve train ... --out {args.out} --resume",
            file=sys.stderr,
        )


def _check_resume(out: Path, shaping: dict, allowed: list[str]) -> None:
    """A usage error listing every option that differs from the run saved in `out` (before any work)."""
    from ..checkpoint import CheckpointError
    from ..training import saved_run

    try:
        header = saved_run(out)
    except CheckpointError as err:
        raise UsageError(NAME, f"--resume: {err}") from None
    # options added later than the run may be missing from its record: those runs used the defaults
    saved = {
        "conditional": False,
        "label_dropout": 0.1,
        "ema_warmup": False,
        **header["metadata"].get("cli", {}),
    }
    saved["steps"] = header["settings"]["steps"]
    changed = [
        f"--{k.replace('_', '-')} (saved {saved.get(k)!r}, given {v!r})"
        for k, v in shaping.items()
        if saved.get(k) != v and k not in allowed
    ]
    if changed:
        hint = " (or --allow-change steps)" if any(c.startswith("--steps ") for c in changed) else ""
        raise UsageError(
            NAME,
            f"--resume with options that differ from the run saved in {str(out)!r}: {'; '.join(changed)}; "
            f"give the saved values{hint}",
        )
