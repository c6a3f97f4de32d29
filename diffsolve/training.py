r"""Continuous-time denoising score matching, resumable bit for bit.

For $t \sim U(\epsilon, T)$, $x_t = \alpha_t x_0 + \sigma_t z$, the loss per sample is

$$\lambda(t)\,\big\|s_\theta(x_t, t) + z/\sigma_t\big\|^2 \quad(\text{summed over the event}),$$

whose minimiser is the true score (Vincent 2011). Weightings: `"eps"`, $\lambda = \sigma_t^2$ (the
usual noise-prediction loss $\|\hat\epsilon - z\|^2$ for an eps-network); `"likelihood"`,
$\lambda = g(t)^2$, which makes the loss an upper bound on the negative log-likelihood up to a
constant (Song et al. 2021); `"velocity"`, flow matching's loss $\|\hat v - (\dot\alpha_t x_0 +
\dot\sigma_t z)\|^2$ on the model's velocity (`ScoreModel.velocity`; $\|\hat v - (z - x_0)\|^2$ on the
straight path), which is $\lambda = g(t)^4/4$ (Lipman et al. 2023; Liu et al. 2023). With
`importance_sampling=True` the likelihood weighting draws $t$ with density $\propto g^2/\sigma^2$
instead (tabulated on a fine grid and inverted), which keeps the same expectation at a much lower
variance.

All randomness comes from one `torch.Generator` seeded by `seed`; a checkpoint stores the weights,
the EMA weights, the optimiser state and that generator's state, so a run resumed from it continues
exactly as the uninterrupted run would have.

References:
    Vincent, "A connection between score matching and denoising autoencoders", 2011.
    Lipman, Chen, Ben-Hamu, Nickel, Le, "Flow Matching for Generative Modeling", ICLR 2023.
    Liu, Gong, Liu, "Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow", ICLR 2023.
    Song, Durkan, Murray, Ermon, "Maximum Likelihood Training of Score-Based Diffusion Models", NeurIPS 2021.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import numbers
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import checkpoint, distributed, memory
from ._keyed import generator_on, sequential
from ._validation import append_dims, check_batched, check_bool, check_positive, check_seed, describe
from .datasets import dequantize as dequantize_data
from .io import atomic_write_bytes, directory_lock, remove_stale_temporaries
from .scores import ScoreModel
from .sde import AffinePath

__all__ = [
    "TrainResult", "train", "dsm_loss", "saved_run", "ResumeError", "SAFE_CHANGES", "ema_decay_at", "ema_initial_share",
]  # fmt: skip

TRAIN_STATE = "train_state.safetensors"
SAFE_CHANGES = ("steps",)
"""Settings `train(resume=True, allow_changes=...)` may change: the total steps, with a constant
learning rate (a cosine schedule is a function of it)."""


@dataclass
class TrainResult:
    """What `train` returns: the EMA model (the one to sample from), the raw model, and the loss history.

    Attributes:
        model: The trained model (its last weights).
        ema_model: The exponential moving average of the weights: sample and evaluate this one.
        losses: The loss at every step, from step 1 (a resumed run includes the earlier ones).
        steps: Steps completed.
        seconds: Wall-clock seconds of this call (not of earlier, resumed parts).
        settings: Every argument that shaped the run (lr, schedule, weighting, seed, ...).
        resumed_from: The step this call started from (0 for a fresh run).
    """

    model: ScoreModel
    ema_model: ScoreModel
    losses: list[float]
    steps: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    resumed_from: int = 0


def ema_decay_at(step: int, ema_decay: float, warmup: bool = True) -> float:
    """The EMA's decay at optimisation step `step` (0-based): `ema_decay`, or with warm-up
    min(ema_decay, 1 - (1 + k)^(-2/3)) (diffusers' `EMAModel` warm-up, inv_gamma = 1, power = 2/3).

    Args:
        step: The step's index (0 for the first update).
        ema_decay: The decay once warmed up.
        warmup: Whether the average warms up.
    """
    return min(ema_decay, 1.0 - (1.0 + step) ** (-2.0 / 3.0)) if warmup else ema_decay


def ema_initial_share(steps: int, ema_decay: float, warmup: bool = True) -> float:
    """The weight the EMA still gives the initial weights after `steps` updates: the product of the decays.

    Args:
        steps: Updates done.
        ema_decay: The decay once warmed up.
        warmup: Whether the average warms up (then the share is 0: the first update copies the weights).
    """
    share = 1.0
    for k in range(steps):
        share *= ema_decay_at(k, ema_decay, warmup)
        if share == 0.0:
            break
    return share


class _TimeSampler:
    """Draws t in [eps, T]: uniformly, or with density proportional to g^2 / sigma^2 (importance sampling)."""

    def __init__(self, sde, eps: float, importance: bool, dtype: torch.dtype) -> None:
        self.sde, self.eps, self.importance = sde, eps, importance
        if importance:
            grid = torch.linspace(eps, sde.T, 20_001, dtype=torch.float64)
            dens = sde.g2(grid) / sde.marginal(grid)[1] ** 2
            cdf = torch.cat(
                [torch.zeros(1, dtype=torch.float64), torch.cumsum((dens[1:] + dens[:-1]) / 2, 0)]
            )
            # Z / (T - eps), Z = int g^2/sigma^2 dt: the weight that keeps the uniform loss's expectation.
            self.norm = float(cdf[-1]) * float(grid[1] - grid[0]) / (sde.T - eps)
            self.grid, self.cdf = grid, cdf / cdf[-1]

    def __call__(self, n: int, gen: torch.Generator) -> Tensor:
        u = torch.rand(n, generator=gen, dtype=torch.float64)
        if not self.importance:
            return self.eps + (self.sde.T - self.eps) * u
        idx = torch.searchsorted(self.cdf, u).clamp(1, len(self.grid) - 1)
        c0, c1 = self.cdf[idx - 1], self.cdf[idx]
        w = (u - c0) / (c1 - c0).clamp_min(1e-300)
        return self.grid[idx - 1] + w * (self.grid[idx] - self.grid[idx - 1])


def dsm_loss(
    model: ScoreModel,
    x0: Tensor,
    t: Tensor,
    z: Tensor,
    weighting: str,
    importance_norm: float | None = None,
    y: Tensor | None = None,
) -> Tensor:
    r"""Mean over the batch of the weighted denoising score-matching loss (see the module docstring).

    Args:
        model: The `ScoreModel` being trained (its `sde` gives $\alpha_t$, $\sigma_t$, $g^2$).
        x0: Clean data `(B, *event)`.
        t: Times `(B,)`.
        z: The standard normal noise that perturbs `x0`, shaped like it.
        weighting: `"eps"` ($\lambda = \sigma_t^2$), `"likelihood"` ($\lambda = g(t)^2$) or `"velocity"`
            (flow matching's velocity regression, $\lambda = g(t)^4/4$).
        importance_norm: With `"likelihood"` and `t` drawn from the importance density, the
            constant that makes the estimate unbiased; None for uniform `t`.
        y: Labels `(B,)` for a class-conditional model, or None.

    Returns:
        A scalar tensor.
    """
    sde = model.sde
    t = t.to(x0.dtype)
    alpha, sigma = sde.marginal(t)
    a, s = append_dims(alpha, x0.dim()), append_dims(sigma, x0.dim())
    xt = a * x0 + s * z
    if weighting == "velocity":
        # the target d/dt (alpha x0 + sigma z) = alpha' x0 + sigma' z, with alpha' = f alpha and
        # sigma' = (2 f sigma^2 + g^2) / (2 sigma) (z - x0 on the straight path)
        if isinstance(sde, AffinePath):  # its own derivatives: no cancellation where f and g^2 are large
            d_alpha, d_sigma = (
                append_dims(d(t.double()).to(t.dtype), x0.dim()) for d in (sde._d_alpha, sde._d_sigma)
            )
        else:
            f, g2 = append_dims(sde._f(t), x0.dim()), append_dims(sde.g2(t), x0.dim())
            d_alpha, d_sigma = f * a, (2 * f * s**2 + g2) / (2 * s)
        target = d_alpha * x0 + d_sigma * z
        v = model.velocity(xt, t) if y is None else model.velocity(xt, t, y)
        return (v - target).flatten(1).square().sum(1).mean()
    # s_theta * sigma + z: the residual in units of the noise, well scaled at every t.
    out = model(xt, t) if y is None else model(xt, t, y)
    resid = (out * s + z).flatten(1).square().sum(1)
    if weighting == "eps":
        return resid.mean()
    g2_over_s2 = sde.g2(t) / sigma**2
    if importance_norm is not None:
        # t was drawn with density (g^2/sigma^2) / Z: the weight g^2/sigma^2 over (T - eps) times that density.
        return (resid * importance_norm).mean()
    return (resid * g2_over_s2).mean()


def train(
    model: ScoreModel,
    data: Tensor,
    *,
    steps: int,
    batch_size: int = 256,
    lr: float = 2e-3,
    lr_schedule: str = "constant",
    warmup_steps: int = 0,
    weighting: str = "eps",
    importance_sampling: bool = False,
    eps: float = 1e-5,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    grad_clip: float | None = 1.0,
    ema_decay: float = 0.999,
    ema_warmup: bool = True,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1000,
    resume: bool = False,
    progress: bool = True,
    metadata: dict[str, Any] | None = None,
    max_seconds: float | None = None,
    dequantize: tuple[int, float, float] | None = None,
    allow_changes: Sequence[str] = (),
    overwrite: bool = False,
    labels: Tensor | None = None,
    label_dropout: float = 0.1,
) -> TrainResult:
    """Train `model` by denoising score matching on `data` (`(N, *event)`), on `data`'s device.

    Args:
        model: A `ScoreModel`; its network is updated in place.
        data: Training data `(N, *event)`; batches are drawn with replacement.
        steps: Total optimisation steps (a resumed run continues up to this number).
        batch_size: Samples per step.
        lr: Peak learning rate.
        lr_schedule: `"constant"` or `"cosine"` (from `lr` down to 0 at step `steps`).
        warmup_steps: Steps of linear warm-up from 0 to `lr` before the schedule.
        weighting: `"eps"` (lambda = sigma^2), `"likelihood"` (lambda = g^2) or `"velocity"` (flow
            matching's velocity regression, lambda = g^4/4).
        importance_sampling: With `"likelihood"`, draw t with density proportional to g^2/sigma^2.
        eps: Smallest training time.
        optimizer: `"adam"` or `"adamw"`.
        weight_decay: Weight decay (AdamW's decoupled one for `"adamw"`).
        grad_clip: Max global gradient norm, or None.
        ema_decay: Decay of the exponential moving average of the weights (its value once warmed up).
        ema_warmup: Warm the average up, as k-diffusion's `EMAWarmup` and diffusers'
            `EMAModel(use_ema_warmup=True)` do: at step k the decay is
            min(ema_decay, 1 - (1 + k)^(-2/3)) (`ema_decay_at`), so the average follows the
            weights early on instead of remembering the initial ones (at 94 steps a 0.999 average
            without warm-up is still 91% the initial weights; with it, 0%).
        seed: Seeds every random draw of the run.
        checkpoint_dir: Where to save checkpoints (every `checkpoint_every` steps and at the end). The
            run holds a lock on it (a second run on the same directory is refused) and writes the
            training state, then the EMA checkpoint, each atomically; the training state alone
            resumes the run, so a kill at any point loses at most the steps since the last save.
        checkpoint_every: Steps between checkpoints.
        resume: Continue from the training state in `checkpoint_dir`. Every setting and `metadata`
            must equal the saved run's (else `ResumeError` lists what differs), except those named
            in `allow_changes`.
        progress: Show a progress bar with the loss.
        metadata: Extra JSON-serialisable facts stored with the checkpoint (data scaling, dataset name).
        max_seconds: Stop after the step that crosses this wall-clock budget (and checkpoint there);
            `TrainResult.steps` says how far it got. A resumed run continues from that step.
        dequantize: `(bins, low, high)`: `data` holds quantised values (levels on [low, high]) and
            every batch is dequantised afresh (`diffsolve.dequantize`, drawing from the run's
            generator), so the model never sees the same dequantisation noise twice.
        allow_changes: Settings that may differ from the saved run's on resume; only those in
            `SAFE_CHANGES` (`"steps"`, with a constant learning rate).
        overwrite: Start a new run in a `checkpoint_dir` that holds one (otherwise refused).
        labels: Class labels `(N,)` of `data` for a class-conditional model (its network takes
            `net(x, t, y)`, e.g. `ScoreMLP(num_classes=C)`); None trains an unconditional model.
        label_dropout: With `labels`: the probability that a training example's label is replaced
            by "no label" (class C), so that one network learns the conditional and the
            unconditional score that classifier-free guidance combines (Ho & Salimans use 0.1-0.2).

    Raises:
        ValueError: On bad arguments, or a NaN/Inf loss (naming the step and suggesting a lower lr).
        ResumeError: If `resume=True` and settings differ from the saved run's.
        DirectoryInUseError: If another run holds `checkpoint_dir`.
        CheckpointError: If the training state to resume is missing or damaged.

    Bit-identical resumption needs the same thread count (`torch.get_num_threads()`), which the
    state records: resuming under another one warns.
    """
    seed = check_seed(seed)
    check_bool(ema_warmup, "ema_warmup")
    check_bool(overwrite, "overwrite")
    check_bool(resume, "resume")
    data, dequantize = _check_arguments(
        model, data, steps, batch_size, checkpoint_every, lr, eps, lr_schedule, warmup_steps, weighting,
        importance_sampling, optimizer, ema_decay, grad_clip, resume, checkpoint_dir, max_seconds, dequantize,
    )  # fmt: skip
    check_positive(weight_decay, "weight_decay", allow_zero=True)
    allow_changes = _check_allowed(allow_changes, lr_schedule)
    conditioning = _check_labels(model, data, labels, label_dropout)
    plan = _TrainPlan(  # numpy numbers are accepted, and stored as Python ones (the settings are JSON)
        steps=int(steps), batch_size=int(batch_size), lr=float(lr), lr_schedule=lr_schedule,
        warmup_steps=int(warmup_steps), weighting=weighting, importance_sampling=importance_sampling, eps=float(eps),
        optimizer=optimizer, weight_decay=float(weight_decay), grad_clip=None if grad_clip is None else float(grad_clip),
        ema_decay=float(ema_decay), ema_warmup=ema_warmup, seed=seed, checkpoint_every=int(checkpoint_every),
        progress=progress, metadata=metadata, max_seconds=None if max_seconds is None else float(max_seconds),
        dequantize=dequantize, allow_changes=allow_changes, conditioning=conditioning,
        data_digest=_digest(data, None if conditioning is None else conditioning[0]),
    )  # fmt: skip
    if checkpoint_dir is None:
        return _train(model, data, plan, None, resume=False)
    directory = Path(checkpoint_dir)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"checkpoint_dir {str(directory)!r} is a file, not a directory")
    rank, ranks = distributed.world()
    if batch_size % ranks:
        raise ValueError(
            f"batch_size={batch_size} must be a multiple of the number of ranks ({ranks}): each rank takes an "
            "equal slice of the global batch"
        )
    # Rank 0 holds the lock and writes; the others only read the training state to resume.
    with directory_lock(directory, "checkpoint_dir") if rank == 0 else contextlib.nullcontext():
        if rank == 0:
            remove_stale_temporaries(directory, (TRAIN_STATE, checkpoint.WEIGHTS, checkpoint.CONFIG))
        state = directory / TRAIN_STATE
        if resume and not state.is_file():
            raise checkpoint.CheckpointError(
                f"cannot resume: {str(directory)!r} holds no training state ({TRAIN_STATE}); start without resume"
            )
        if not resume and not overwrite and state.is_file():
            raise ValueError(
                f"checkpoint_dir {str(directory)!r} already holds a training run; pass resume=True to continue "
                "it, overwrite=True to start again, or another directory"
            )
        return _train(model, data, plan, directory, resume=resume)


def _check_allowed(allow_changes: object, lr_schedule: str) -> tuple[str, ...]:
    if isinstance(allow_changes, str) or not all(isinstance(k, str) for k in allow_changes):
        raise TypeError(f"allow_changes must be a sequence of setting names, got {allow_changes!r}")
    unsafe = [k for k in allow_changes if k not in SAFE_CHANGES]
    if unsafe:
        raise ValueError(
            f"allow_changes may name only {SAFE_CHANGES} (the others change the run's random numbers or its "
            f"update rule), got {unsafe}"
        )
    if "steps" in allow_changes and lr_schedule != "constant":
        raise ValueError(
            f"allow_changes=('steps',) needs lr_schedule='constant': the {lr_schedule!r} schedule depends on steps"
        )
    return tuple(allow_changes)


def _check_labels(
    model: ScoreModel, data: Tensor, labels: object, label_dropout: object
) -> tuple[Tensor, float, int] | None:
    """`(labels on data's device, label_dropout, classes)` for a conditional run, None otherwise."""
    if labels is None:
        return None
    if (
        not isinstance(labels, Tensor)
        or labels.dim() != 1
        or labels.is_floating_point()
        or labels.dtype == torch.bool
        or labels.is_complex()
    ):
        raise TypeError(
            f"labels must be a 1-D integer tensor, one class per data point, got {describe(labels)}"
        )
    if labels.shape[0] != data.shape[0]:
        raise ValueError(f"labels holds {labels.shape[0]} labels for {data.shape[0]} data points")
    classes = getattr(model.net, "num_classes", None)
    if classes is None:
        raise ValueError(
            "labels need a class-conditional network (e.g. ScoreMLP(num_classes=C)); this one takes none"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(
            f"labels must lie in [0, {classes}) (the network's num_classes), got {int(labels.min())}..{int(labels.max())}"
        )
    if (
        isinstance(label_dropout, bool)
        or not isinstance(label_dropout, (int, float))
        or not 0.0 <= float(label_dropout) < 1.0
    ):
        raise ValueError(f"label_dropout must be a probability in [0, 1), got {label_dropout!r}")
    return labels.to(device=data.device, dtype=torch.int64), float(label_dropout), int(classes)


@dataclass(frozen=True)
class _TrainPlan:
    """A validated `train` call: every setting the loop and each optimisation step read.

    `conditioning` is `(labels, label_dropout, classes)` for a class-conditional run, else None.
    """

    steps: int
    batch_size: int
    lr: float
    lr_schedule: str
    warmup_steps: int
    weighting: str
    importance_sampling: bool
    eps: float
    optimizer: str
    weight_decay: float
    grad_clip: float | None
    ema_decay: float
    ema_warmup: bool
    seed: int
    checkpoint_every: int
    progress: bool
    metadata: dict[str, Any] | None
    max_seconds: float | None
    dequantize: tuple[int, float, float] | None
    allow_changes: tuple[str, ...]
    conditioning: tuple[Tensor, float, int] | None
    data_digest: dict[str, Any]

    def settings(self, model: ScoreModel) -> dict[str, Any]:
        """The settings a checkpoint records (and a resume checks)."""
        out = {
            "steps": self.steps, "batch_size": self.batch_size, "lr": self.lr, "lr_schedule": self.lr_schedule,
            "warmup_steps": self.warmup_steps, "weighting": self.weighting,
            "importance_sampling": self.importance_sampling, "eps": self.eps, "optimizer": self.optimizer,
            "weight_decay": self.weight_decay, "grad_clip": self.grad_clip, "ema_decay": self.ema_decay,
            "ema_warmup": self.ema_warmup,
            "seed": self.seed, "dequantize": None if self.dequantize is None else list(self.dequantize),
            "model": {
                "architecture": type(model.net).__name__, "config": getattr(model.net, "config", None),
                "parameterization": model.parameterization,
                "sde": {"name": type(model.sde).__name__, "params": model.sde.params()},
            },
        }  # fmt: skip
        if self.conditioning is not None:  # recorded (and checked on resume) only for conditional runs
            out["label_dropout"] = self.conditioning[1]
            out["classes"] = self.conditioning[2]
        out["data"] = self.data_digest  # a resume on other data (or labels) is refused
        return out


def _digest(data: Tensor, labels: Tensor | None) -> dict[str, Any]:
    """The training data's fingerprint: shape, dtype and a SHA-256 of the bytes (and of the labels)."""
    out: dict[str, Any] = {"shape": list(data.shape), "dtype": str(data.dtype).removeprefix("torch.")}
    for name, t in (("sha256", data), ("labels_sha256", labels)):
        if t is not None:
            raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
            out[name] = hashlib.sha256(raw.tobytes()).hexdigest()
    return out


def _train(
    model: ScoreModel, data: Tensor, plan: _TrainPlan, checkpoint_dir: Path | None, *, resume: bool
) -> TrainResult:
    params = list(model.net.parameters())
    opt_cls = torch.optim.Adam if plan.optimizer == "adam" else torch.optim.AdamW
    opt = opt_cls(params, lr=plan.lr, weight_decay=plan.weight_decay)
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    gen = sequential(plan.seed, "training")
    losses: list[float] = []
    step = 0
    settings = plan.settings(model)
    metadata = plan.metadata
    if resume:
        step, losses = _restore(checkpoint_dir, model, ema, opt, gen, settings, metadata, plan.allow_changes)
    first = step

    times = _TimeSampler(model.sde, plan.eps, plan.importance_sampling, data.dtype)
    steps, max_seconds = plan.steps, plan.max_seconds
    rank, ranks = distributed.world()
    if plan.batch_size % ranks:
        raise ValueError(f"batch_size={plan.batch_size} must be a multiple of the number of ranks ({ranks})")
    net = _Replicated(model, ranks)
    bar = None
    if plan.progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=step, desc="train", dynamic_ncols=True, disable=None)
    start = time.perf_counter()
    model.train()
    while step < steps:
        loss = _optimisation_step(net, ema, opt, params, data, gen, times, step, plan)
        step += 1
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        out_of_time = max_seconds is not None and time.perf_counter() - start >= max_seconds
        if max_seconds is not None and ranks > 1:  # every rank stops at the same step
            flag = torch.tensor([float(out_of_time)], device=data.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            out_of_time = bool(flag.item())
        saving = step % plan.checkpoint_every == 0 or step == steps or out_of_time
        if checkpoint_dir is not None and saving and rank == 0:
            _save(checkpoint_dir, model, ema, opt, gen, step, losses, settings, metadata)
        if out_of_time:
            break
    if bar is not None:
        bar.close()
    model.eval()
    ema.eval()
    return TrainResult(model, ema, losses, step, time.perf_counter() - start, settings, resumed_from=first)


def _optimisation_step(
    model: _Replicated, ema: ScoreModel, opt: torch.optim.Optimizer, params: list[Tensor], data: Tensor,
    gen: torch.Generator, times: _TimeSampler, step: int, plan: _TrainPlan,
) -> Tensor:  # fmt: skip
    """One step: draw a batch, t and noise from `gen` (in this order, so a resumed run draws the
    same numbers), take the loss's gradient, clip, step the optimiser, update the EMA."""
    batch_size, dequantize, conditioning = plan.batch_size, plan.dequantize, plan.conditioning
    norm = times.norm if plan.importance_sampling else None
    idx = torch.randint(0, data.shape[0], (batch_size,), generator=gen)
    x0 = data[idx.to(data.device)]
    if dequantize is not None:
        x0 = dequantize_data(x0, bins=dequantize[0], low=dequantize[1], high=dequantize[2], generator=gen)
    t = times(batch_size, gen)
    # The noise, the bulk of the draws, comes from a generator on the data's device, reseeded every
    # step from the run's generator (whose state the checkpoint keeps): resumable, and no copy.
    noise_gen = generator_on(x0.device)
    noise_gen.manual_seed(int(torch.randint(0, 2**62, (), generator=gen)))
    z = torch.randn(x0.shape, generator=noise_gen, dtype=x0.dtype, device=x0.device)
    y = None
    if conditioning is not None:  # drawn last: an unconditional run's numbers are unchanged
        labels, dropout, classes = conditioning
        drop = torch.rand(batch_size, generator=gen) < dropout
        y = torch.where(drop.to(labels.device), classes, labels[idx.to(labels.device)])
    # Every rank draws the whole global batch from the same generator (so the generator's state, and a
    # resume, do not depend on the number of ranks) and trains on its slice; DDP averages the gradients.
    lo, hi = model.slice(batch_size)
    loss = dsm_loss(
        model,
        x0[lo:hi],
        t[lo:hi].to(x0.device),
        z[lo:hi],
        plan.weighting,
        norm,
        None if y is None else y[lo:hi],
    )
    reported = model.mean(loss.detach())
    if not bool(torch.isfinite(reported)):
        raise ValueError(
            f"the loss became {reported.item()} at step {step + 1}; try a lower learning rate (lr={plan.lr:g}) "
            "or a larger eps"
        )
    for group in opt.param_groups:
        group["lr"] = _lr_at(step, plan.lr, plan.lr_schedule, plan.warmup_steps, plan.steps)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if plan.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, plan.grad_clip)
    opt.step()
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), model.module.parameters(), strict=True):
            pe.lerp_(p, 1 - ema_decay_at(step, plan.ema_decay, plan.ema_warmup))
    return reported


class _Replicated:
    """The model as `_optimisation_step` calls it: itself in one process, wrapped in PyTorch's
    `DistributedDataParallel` when a process group is initialised (gradients averaged across ranks)."""

    def __init__(self, model: ScoreModel, ranks: int) -> None:
        self.module, self.sde, self.ranks = model, model.sde, ranks
        self.rank = distributed.world()[0]
        if ranks > 1:
            from torch.nn.parallel import DistributedDataParallel

            device = next(model.parameters()).device
            self.ddp = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
        else:
            self.ddp = model

    def __call__(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self.ddp(x, t) if y is None else self.ddp(x, t, y)

    def velocity(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """`ScoreModel.velocity` through the wrapper (so that DDP averages its gradients)."""
        return self.ddp(x, t, y, velocity=True)

    def slice(self, batch_size: int) -> tuple[int, int]:
        """This rank's rows of the global batch."""
        return distributed.shard(batch_size, self.rank, self.ranks)

    def mean(self, loss: Tensor) -> Tensor:
        """The global batch's mean loss (every rank's slice is the same size)."""
        if self.ranks > 1:
            loss = loss.clone()
            torch.distributed.all_reduce(loss)
            loss = loss / self.ranks
        return loss


def _check_arguments(
    model: object, data: object, steps: int, batch_size: int, checkpoint_every: int, lr: float, eps: float,
    lr_schedule: str, warmup_steps: int, weighting: str, importance_sampling: bool, optimizer: str,
    ema_decay: float, grad_clip: float | None, resume: bool, checkpoint_dir: object, max_seconds: float | None,
    dequantize: object,
) -> tuple[Tensor, tuple[int, float, float] | None]:  # fmt: skip
    """Every check `train` makes before any work; returns the data and the normalised `dequantize`."""
    if not isinstance(model, ScoreModel):
        raise TypeError(f"model must be a ScoreModel, got {type(model).__name__}")
    data = check_batched(data, "data", min_dim=2)
    if not bool(torch.isfinite(data).all()):
        raise ValueError("data must be finite; it holds NaN or Inf")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
        check_positive(value, name, integer=True)
    check_positive(lr, "lr")
    check_positive(eps, "eps")
    if not eps < model.sde.T:
        raise ValueError(f"eps must lie in (0, T) = (0, {model.sde.T}), got {eps!r}")
    if grad_clip is not None:
        check_positive(grad_clip, "grad_clip")  # 0 would freeze the weights; give None for no clipping
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
    if (
        isinstance(warmup_steps, bool)
        or not isinstance(warmup_steps, numbers.Integral)
        or not 0 <= warmup_steps < steps
    ):
        raise ValueError(f"warmup_steps must be an integer in [0, steps), got {warmup_steps!r}")
    if weighting not in ("eps", "likelihood", "velocity"):
        raise ValueError(f"weighting must be 'eps', 'likelihood' or 'velocity', got {weighting!r}")
    if importance_sampling and weighting != "likelihood":
        raise ValueError("importance_sampling applies to weighting='likelihood' only")
    if optimizer not in ("adam", "adamw"):
        raise ValueError(f"optimizer must be 'adam' or 'adamw', got {optimizer!r}")
    if not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay!r}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir")
    if max_seconds is not None:
        check_positive(max_seconds, "max_seconds")
    memory.check_solve(
        f"train(batch_size={batch_size})",
        batch_size,
        data[0].numel(),
        data.dtype,
        data.device,
        adaptive=True,
        stochastic=False,  # x0, z, x_t, t, the output and its gradient, Adam's moments: 16 copies
    )
    if dequantize is not None:
        if not (isinstance(dequantize, (tuple, list)) and len(dequantize) == 3):
            raise ValueError(f"dequantize must be (bins, low, high), got {dequantize!r}")
        bins, low, high = dequantize
        check_positive(bins, "dequantize's bins", integer=True)  # an integer, not True, 256.7 or "256"
        for value, what in ((low, "low"), (high, "high")):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"dequantize's {what} must be a number, got {value!r}")
        try:
            dequantize = (int(bins), float(low), float(high))
            dequantize_data(
                data, bins=dequantize[0], low=dequantize[1], high=dequantize[2]
            )  # checks the range
        except (TypeError, ValueError) as err:
            raise type(err)(f"dequantize={tuple(dequantize)!r}: {err}") from None
    return data, dequantize


def _lr_at(step: int, lr: float, schedule: str, warmup: int, steps: int) -> float:
    """The learning rate of step `step` (0-based): linear warm-up, then constant or cosine to 0."""
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "cosine":
        return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
    return lr


def saved_run(directory: str | Path) -> dict[str, Any]:
    """What the training state in `directory` records: step, settings, metadata, thread count.

    Args:
        directory: A `checkpoint_dir` that `train` wrote.

    Returns:
        The header of its training state: `step`, `settings` (the arguments that shape the run),
        `metadata` (what the caller stored, e.g. the CLI's dataset and architecture), `threads`.

    Raises:
        CheckpointError: If there is no training state, or it is truncated or corrupted.
    """
    file = Path(directory) / TRAIN_STATE
    if not file.is_file():
        raise checkpoint.CheckpointError(
            f"{str(directory)!r} holds no training run ({TRAIN_STATE} is missing)"
        )
    header, _ = checkpoint.read_safetensors(file)
    return header


def _save(directory, model, ema, opt, gen, step, losses, settings, metadata) -> None:
    """Write the training state, then the EMA checkpoint, each atomically.

    The training state alone is enough to resume (raw and EMA weights, optimiser, generator, losses,
    all at one step), so a run killed between the two writes resumes from the state and never pairs
    weights from two different steps; the checkpoint is a copy of the EMA weights for sampling.
    """
    from safetensors.torch import save as st_save

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.net.state_dict().items()})
    state = opt.state_dict()
    for i, s in state["state"].items():
        for k, v in s.items():
            tensors[f"opt.{i}.{k}"] = v.detach().cpu().contiguous()
    tensors["rng"] = gen.get_state()
    tensors["losses"] = torch.tensor(losses, dtype=torch.float64)
    header = {
        "step": step, "settings": settings, "param_groups": state["param_groups"],
        "metadata": metadata or {}, "threads": torch.get_num_threads(),
    }  # fmt: skip
    atomic_write_bytes(directory / TRAIN_STATE, st_save(tensors, metadata={"diffsolve": json.dumps(header)}))
    _save_checkpoint(directory, ema, step, settings, metadata)


def _save_checkpoint(directory, ema, step, settings, metadata) -> None:
    meta = {**(metadata or {}), "training": {"step": step, "settings": settings}}
    checkpoint.save(directory, ema, metadata=meta)  # the EMA model is the one to sample from


def _changes(saved: dict[str, Any], given: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The keys whose values differ, as `{key: (saved, given)}` (JSON round trip: tuples are lists)."""
    given = json.loads(json.dumps(given))
    return {k: (saved.get(k), v) for k, v in given.items() if saved.get(k) != v}


def _restore(
    directory: Path, model, ema, opt, gen, settings, metadata, allow_changes
) -> tuple[int, list[float]]:
    header, tensors = checkpoint.read_safetensors(directory / TRAIN_STATE)
    if not any(k.startswith("ema.") for k in tensors):
        raise checkpoint.CheckpointError(
            f"the training state in {str(directory)!r} was written by an older diffsolve (no EMA weights "
            "in it); start a new run"
        )
    saved = header["settings"]
    # a state written before the data's fingerprint was recorded cannot be checked for it
    changes = _changes(saved, {k: v for k, v in settings.items() if k != "data" or "data" in saved})
    changes.update(
        {f"metadata.{k}": v for k, v in _changes(header.get("metadata", {}), metadata or {}).items()}
    )
    refused = {k: v for k, v in changes.items() if k not in allow_changes}
    if refused:
        raise ResumeError(refused)
    if header.get("threads") not in (None, torch.get_num_threads()):
        warnings.warn(
            f"resuming with {torch.get_num_threads()} threads; the run was saved with {header['threads']}: "
            "the weights will not be bit-identical to an uninterrupted run (torch's CPU kernels sum in "
            "an order that depends on the thread count); torch.set_num_threads restores it",
            stacklevel=3,
        )
    _check_state(directory, header, tensors, model, settings)
    try:
        model.net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    except RuntimeError as err:
        raise checkpoint.CheckpointError(
            f"the model does not fit the run saved in {str(directory)!r}: {err}"
        ) from err
    opt_state: dict[int, dict[str, Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            opt_state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": opt_state, "param_groups": header["param_groups"]})
    gen.set_state(tensors["rng"])
    step = int(header["step"])
    try:
        saved_step = checkpoint.read_config(directory)[0]["metadata"]["training"]["step"]
    except (checkpoint.CheckpointError, KeyError, TypeError):
        saved_step = None
    if saved_step != step and distributed.is_main():  # killed between the writes: the checkpoint lags
        _save_checkpoint(directory, ema, step, settings, metadata)
    return step, tensors["losses"].tolist()


def _check_state(
    directory: Path, header: dict, tensors: dict[str, Tensor], model: ScoreModel, settings: dict
) -> None:
    """The training state read as strictly as a stranger's file (we wrote it, but a disk, a script or a
    person may have changed it since): every weight of the model's own dtype and shape (no silent cast of
    an int32 tensor), a step counter within the run, one finite loss per step, a generator state."""
    bad = f"the training state in {str(directory)!r} is damaged"
    own = model.net.state_dict()
    for prefix in ("model.", "ema."):
        for name, ref in own.items():
            v = tensors.get(prefix + name)
            if v is None or v.dtype != ref.dtype or v.shape != ref.shape:
                got = "missing" if v is None else f"{v.dtype} {tuple(v.shape)}"
                raise checkpoint.CheckpointError(
                    f"{bad}: {prefix}{name} is {got}; the model's is {ref.dtype} {tuple(ref.shape)}"
                )
    step, limit = header.get("step"), max(settings["steps"], header.get("settings", {}).get("steps", 0))
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= limit:
        raise checkpoint.CheckpointError(
            f"{bad}: its step counter is {step!r}, not an integer in [0, {limit}]"
        )
    losses = tensors.get("losses")
    if (
        losses is None
        or losses.dim() != 1
        or losses.numel() != step
        or not bool(torch.isfinite(losses).all())
    ):
        raise checkpoint.CheckpointError(
            f"{bad}: it does not hold one finite loss for each of its {step} steps"
        )
    if "rng" not in tensors or tensors["rng"].dtype != torch.uint8:
        raise checkpoint.CheckpointError(f"{bad}: its random generator state is missing or not bytes")


class ResumeError(ValueError):
    """`train(resume=True)` was given settings that differ from the saved run's.

    Attributes:
        changes: `{setting: (saved, given)}` for every setting that differs.
    """

    def __init__(self, changes: dict[str, tuple[Any, Any]]) -> None:
        self.changes = changes
        listed = "; ".join(f"{k}: saved {a!r}, given {b!r}" for k, (a, b) in changes.items())
        safe = [k for k in changes if k in SAFE_CHANGES]
        hint = f", or allow_changes={tuple(safe)!r} (safe to change)" if safe else ""
        super().__init__(
            f"cannot resume with other settings than the saved run's ({listed}); pass the saved values{hint}"
        )
