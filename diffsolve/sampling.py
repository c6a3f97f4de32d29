"""`sample()`: one entry point for every sampler, with one NFE and time ledger."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import distributed, memory
from ._keyed import fresh_seed, normal_rows, stream
from ._validation import (
    append_dims,
    check_batched,
    check_bool,
    check_device,
    check_positive,
    check_seed,
    describe,
    seed_or_generator,
)  # fmt: skip
from .errors import FiniteGuard, NonFiniteError
from .samplers.base import SolveOutput, SolveRequest
from .samplers.grids import GRIDS
from .samplers.grids import time_grid as make_time_grid
from .samplers.registry import Solver, get_solver, solvers
from .scores import Score, check_output, check_problem, evaluate_score
from .sde import SDE

__all__ = ["SampleResult", "sample"]


@dataclass
class SampleResult:
    """What `sample` returns.

    Attributes:
        samples: The state at `eps` (denoised when `denoise=True`), shape `(n, *event)`, no autograd graph.
        nfe: Score evaluations it really cost (one call on a batch is one), including denoising.
        seconds: Wall-clock time of the solve.
        settings: Solver, steps or tolerances, eps, seed, dtype, device and the sampler's own options.
        x_T: The prior draw the solve started from.
        trajectory: States at `times`, shape `(len(times), n, *event)`, when asked for.
        times: Forward times of `trajectory`, from T down to eps.
        steps_taken: Steps the solver took (accepted steps of an adaptive one).
        steps_rejected: Steps an adaptive solver's error control rejected (0 for fixed-step ones).
        nfe_per_sample: Each sample's own NFE, for solvers whose samples take their own steps
            (`dopri5_per_sample`). `settings["sample_evaluations"]` counts the rows of every score
            call (the compute actually spent): `nfe` times the batch for a batched solver, their sum
            for a per-sample one.
    """

    samples: Tensor
    nfe: int
    seconds: float
    settings: dict[str, Any]
    x_T: Tensor
    trajectory: Tensor | None = None
    times: Tensor | None = field(default=None)
    steps_taken: int | None = None
    steps_rejected: int = 0
    nfe_per_sample: Tensor | None = None

    def __repr__(self) -> str:
        return (
            f"SampleResult(samples={describe(self.samples)}, nfe={self.nfe}, seconds={self.seconds:.3g}, "
            f"settings={self.settings})"
        )


def prior_draws(
    sde: SDE,
    shape: tuple[int, ...],
    seed: int,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    row_start: int = 0,
) -> Tensor:
    """The prior draws `sample(..., seed=seed)` starts from: rows `row_start, ...` of the keyed prior.

    `compare`, the analysis tools and the CLI draw their $x_T$ here, so `compare(seeds=[s])` and
    `sample(seed=s)` start from the same points, whatever the batch or chunk.

    Args:
        sde: The forward SDE (its prior standard deviation).
        shape: `(n, *event)`.
        seed: The user's seed.
        dtype: dtype (default: torch's default dtype).
        device: Device (default CPU).
        row_start: Global index of the first row.
    """
    z = normal_rows(
        stream(check_seed(seed), "prior"), row_start, shape[0], math.prod(shape[1:]),
        dtype=dtype or torch.get_default_dtype(), device=device or "cpu",
    )  # fmt: skip
    return sde.prior_std * z.view(shape)


def sample(
    score: Score,
    sde: SDE,
    n: int | None = None,
    *,
    x_T: Tensor | None = None,
    solver: str | Solver = "sde:euler",
    steps: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    eps: float = 1e-3,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    event_shape: tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    denoise: bool = False,
    return_trajectory: bool = False,
    time_grid: str | Tensor | None = None,
    progress: bool = True,
    batch_size: int | None = None,
    gather: str = "all",
    **options: Any,
) -> SampleResult:
    r"""Draw samples by integrating from the prior at T down to `eps` with any registered solver.

    Fixed-step solvers take `steps` (each solver's default: 1000 for `sde:`/`pc`, 100 for `ode:`,
    50 for `ddim`, `dpm_solver*`, `edm_heun`) and refuse `rtol`/`atol`; adaptive ones take
    `rtol`/`atol` (default 1e-5; `adaptive_sde`: 0.05 and 0.0078, as in its paper) and refuse
    `steps`. Stochastic solvers are driven by the Brownian path that `seed` names, the same path
    at every step count. `solvers()` lists the names, their defaults and their options.

    Args:
        score: A `Score`, `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE the score belongs to.
        n: Number of samples drawn from the prior (needs `event_shape`, or a score that has one).
        x_T: Start from these prior draws instead, shape `(n, *event)`; dtype and device follow it.
        solver: A name from `solvers()` (e.g. `"sde:euler"`, `"ode:dopri5"`, `"pc"`), or a `Solver`.
        steps: Number of solver steps (never NFE) for fixed-step solvers.
        rtol: Relative tolerance of adaptive solvers.
        atol: Absolute tolerance of adaptive solvers.
        eps: Final forward time in (0, T); samples are the state there. 0 with an explicit `time_grid`
            that ends there, for solvers that can step to sigma = 0.
        seed: Seeds the prior draw, the Brownian path and the corrector; None picks one (in `settings`).
        generator: A `torch.Generator` instead of `seed`, as torch and diffusers take one: the seed is drawn
            from it (advancing it), and `settings["seed"]` reproduces the call.
        event_shape: Shape of one sample, when drawing `n` from the prior.
        dtype: dtype of the prior draw (default: torch's default dtype); ignored with `x_T`.
        device: Device of the prior draw; ignored with `x_T`.
        denoise: Add Tweedie's one-step denoising $\hat x_0 = (x + \sigma^2 s)/\alpha$ at eps (+1 NFE).
        return_trajectory: Also return states along the way (every step for fixed-step solvers,
            101 equally spaced times for adaptive ones).
        time_grid: The time grid of solvers that offer a choice: a kind (`"uniform"` in t, `"logsnr"`,
            `"karras"`, `"quadratic"`; `Solver.time_grid` is the default) or an explicit tensor of
            times decreasing to `eps` (then `steps` defaults to its length - 1), such as the grid
            `analysis.optimize_grid` or `interop.scheduler_times` returns. It may start below T
            (img2img / SDEdit: `x_T` is then the state at its first time; prior draws if not given,
            as a diffusers "leading" loop starts from noise) and end at 0 (`eps=0`) for solvers that
            can step to sigma = 0 (`Solver.clean_end`); a repeated time (a zero-length step) is dropped.
        progress: Show a progress bar over forward time (T down to eps) with the running NFE, or
            with `batch_size`, over the samples, chunk by chunk. On by default, as on every entry
            point; hidden where stderr is not a terminal (logs, CI), and then it costs nothing.
        batch_size: Solve in chunks of at most this many samples, in bounded memory. Every random
            draw is keyed by the sample's global index, so fixed-step solvers give the same samples
            (bit for bit on the CPU) as one batch; adaptive solvers choose their steps per chunk.
            `nfe` is then the largest chunk's; `settings["nfe_per_chunk"]` has each chunk's and
            `settings["score_calls"]` their sum.
        gather: Under `torch.distributed` (see `diffsolve.distributed`): each rank solves its shard
            of the n samples and the result is gathered on every rank (`"all"`) or on rank 0 only
            (`"rank0"`; the others get their shard). Equal to the single-process result, bit for bit
            on the CPU for fixed-step solvers.
        **options: The solver's own options (`Solver.options`), e.g. `snr=0.16, corrector_steps=1`
            for `pc`; any other solver refuses them.

    Returns:
        A `SampleResult`.

    Raises:
        ValueError, TypeError: On bad arguments, naming the argument, what was given and what was expected.
        NonFiniteError: If the score or the state becomes NaN/Inf; names t and the solver.
    """
    method = get_solver(solver)
    explicit, steps, eps, time_grid = _check_problem_and_grid(method, score, sde, time_grid, steps, eps)
    steps, rtol, atol = method.check_budget(steps, rtol, atol)
    options = _check_options(method, options, time_grid)
    seed = seed_or_generator(seed, generator)
    if seed is None and (method.stochastic or x_T is None):
        seed = fresh_seed()  # echoed in settings
    if device is not None and x_T is None:
        device = check_device(device)
    _check_flags(denoise=denoise, return_trajectory=return_trajectory, progress=progress, dtype=dtype)
    event_shape = _check_event_shape(score, event_shape)
    batch_size = _check_batch_size(batch_size)
    _check_memory(method, score, n, batch_size, x_T, event_shape, dtype, device, steps, return_trajectory)
    given = x_T is not None
    if given:
        x_T = _initial_state(score, sde, n, x_T, event_shape, seed, dtype, device)
        total = x_T.shape[0]
    else:
        _initial_state(score, sde, n, None, event_shape, seed, dtype, device, rows=0)  # checks n, event_shape
        total = int(n)
        event_shape = tuple(event_shape if event_shape is not None else score.event_shape)
    gather = distributed.check_gather(gather)
    chunks, ranks = distributed.local_chunks(total, batch_size, f"n={total}")
    if method.warning:
        warnings.warn(method.warning, UserWarning, stacklevel=2)

    dtype = x_T.dtype if given else dtype or torch.get_default_dtype()
    device = x_T.device if given else torch.device(device or "cpu")
    settings: dict[str, Any] = {
        "solver": method.name, "family": method.family, "steps": steps, "rtol": rtol, "atol": atol,
        "eps": eps, "seed": seed, "dtype": str(dtype).removeprefix("torch."), "device": str(device),
        "denoise": denoise, "sde": repr(sde), **options,
    }  # fmt: skip
    if batch_size is not None:
        settings["batch_size"] = batch_size
    if ranks > 1:
        settings["ranks"] = ranks
    if explicit is not None:
        settings["time_grid_times"] = explicit.tolist()  # so that the settings reproduce the solve
    grid_kind = options.pop("time_grid", None)
    if explicit is not None:
        grid = explicit.to(device)
    else:
        grid = None if steps is None else make_time_grid(sde, steps, eps, grid_kind or "uniform").to(device)
    chunk_bar = _ChunkProgress(total, method.name) if progress and len(chunks) > 1 else None
    parts: list[SolveOutput] = []
    starts: list[Tensor] = []
    nfes: list[int] = []
    seconds = 0.0
    for r0, r1 in chunks:
        x0 = (
            x_T[r0:r1]
            if given
            else _initial_state(score, sde, r1 - r0, None, event_shape, seed, dtype, device, r0)
        )
        bar = _Progress.shown(sde.T, eps, method.name) if progress and chunk_bar is None else None
        request = SolveRequest(
            score, sde, x0, eps, method.name, steps, rtol, atol, seed if method.stochastic else None, grid,
            options, return_trajectory, bar, grid_kind, row_start=r0,
        )  # fmt: skip
        out, nfe, chunk_seconds = _solve_chunk(method, request, denoise)
        seconds += chunk_seconds
        parts.append(out)
        starts.append(x0)
        nfes.append(nfe)
        if chunk_bar is not None:
            chunk_bar.update(r1 - r0, nfe)
    if chunk_bar is not None:
        chunk_bar.close()
    result = _assemble(parts, starts, nfes, seconds, settings)
    return result if ranks == 1 else _gather(result, total, gather, nfes)


def _check_flags(*, dtype: torch.dtype | None, **flags: object) -> None:
    """The boolean switches are booleans, and `dtype` is a floating-point dtype or None."""
    for name, value in flags.items():
        check_bool(value, name)
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch dtype or None, got {dtype!r}")


def _gather(result: SampleResult, total: int, gather: str, nfes: list[int]) -> SampleResult:
    """The whole run's result from every rank's shard (the only collective of a distributed solve)."""
    device = result.samples.device
    result.samples = distributed.gather_rows(result.samples, total, gather)
    result.x_T = distributed.gather_rows(result.x_T, total, gather)
    if result.trajectory is not None:
        result.trajectory = distributed.gather_rows(
            result.trajectory.transpose(0, 1), total, gather
        ).transpose(0, 1)
    per_rank = distributed.gather_numbers([max(nfes), sum(nfes), result.seconds], device)
    result.nfe = int(max(r[0] for r in per_rank))
    result.seconds = max(r[2] for r in per_rank)
    result.settings["nfe_per_rank"] = [int(r[0]) for r in per_rank]
    result.settings["score_calls"] = int(sum(r[1] for r in per_rank))
    return result


def _solve_chunk(method: Solver, request: SolveRequest, denoise: bool) -> tuple[SolveOutput, int, float]:
    """Run the solver on one chunk (and Tweedie's denoising step): the output, its NFE, its seconds."""
    device = request.x_T.device
    _sync(device)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            out = _checked_output(method, request, method.run(request))
            nfe = out.nfe
            if denoise:
                out.samples, nfe = _tweedie(request.score, request.sde, out.samples, request.eps), nfe + 1
    except NonFiniteError as err:
        raise err.with_solver(method.name) from None
    finally:
        if request.callback is not None:
            request.callback.close()
    _sync(device)
    return out, nfe, time.perf_counter() - start


def _checked_output(method: Solver, request: SolveRequest, out: object) -> SolveOutput:
    """A runner's output, checked as a stranger's (a registered plugin's runner is one): a `SolveOutput`
    whose samples have the request's shape, dtype and device and are finite, with a non-negative NFE."""
    who = f"solver {method.name!r}'s runner"
    if not isinstance(out, SolveOutput):
        raise TypeError(f"{who} must return a SolveOutput, got {describe(out)}")
    x = request.x_T
    check_output(out.samples, x, f"{who} (its samples)")
    if isinstance(out.nfe, bool) or not isinstance(out.nfe, int) or out.nfe < 0:
        raise ValueError(f"{who} reported nfe={out.nfe!r}; expected a non-negative integer")
    if not bool(torch.isfinite(out.samples).all()):
        raise NonFiniteError("the samples the runner returned", request.eps, method.name)
    return out


def _assemble(
    parts: list[SolveOutput], starts: list[Tensor], nfes: list[int], seconds: float, settings: dict[str, Any]
) -> SampleResult:
    """One `SampleResult` from the chunks' outputs (a single chunk is returned as it is)."""
    one = len(parts) == 1
    samples = parts[0].samples if one else torch.cat([p.samples for p in parts])
    x_T = starts[0] if one else torch.cat(starts)
    trajectory = None
    if parts[0].trajectory is not None:
        same_times = all(p.times is not None and torch.equal(p.times, parts[0].times) for p in parts)
        if same_times:  # fixed-step solvers; adaptive chunks stop at their own times
            trajectory = parts[0].trajectory if one else torch.cat([p.trajectory for p in parts], dim=1)
    if not one:
        settings["nfe_per_chunk"] = nfes
        settings["score_calls"] = sum(nfes)
    accepted = [p.accepted for p in parts]
    own = None
    if parts[0].nfe_per_sample is not None:
        own = torch.cat([p.nfe_per_sample for p in parts])
    if all(p.sample_evaluations is not None for p in parts):
        settings["sample_evaluations"] = sum(p.sample_evaluations for p in parts)
    return SampleResult(
        samples=samples.detach(), nfe=max(nfes), seconds=seconds, settings=settings, x_T=x_T,
        trajectory=None if trajectory is None else trajectory.detach(), times=parts[0].times if trajectory is not None else None,
        steps_taken=None if None in accepted else max(accepted), steps_rejected=sum(p.rejected for p in parts),
        nfe_per_sample=own,
    )  # fmt: skip


def _check_batch_size(batch_size: object) -> int | None:
    if batch_size is None:
        return None
    check_positive(batch_size, "batch_size", integer=True)
    return int(batch_size)


def _check_options(method: Solver, options: Mapping[str, Any], time_grid: str | None) -> dict[str, Any]:
    """The solver's options with defaults filled in (and `time_grid` where it offers a choice)."""
    checked = method.check_options(options)
    if method.time_grid is not None:
        time_grid = method.time_grid if time_grid is None else time_grid
        if time_grid not in GRIDS and time_grid != "explicit":
            raise ValueError(
                f"time_grid must be one of {', '.join(GRIDS)} or a tensor of times; got {describe(time_grid)}"
            )
        checked["time_grid"] = time_grid
    elif time_grid is not None:
        offer = ", ".join(s.name for s in solvers() if s.time_grid is not None)
        raise ValueError(f"time_grid applies to {offer}; {method.name!r} steps uniformly in t or adaptively")
    return checked


def _check_problem_and_grid(method: Solver, score: Score, sde: SDE, time_grid: object, steps, eps):
    """`check_problem`, and an explicit `time_grid` checked against the solver: `(grid or None, steps, eps,
    time_grid kind)`. With a grid, `eps` may be its last time as a tensor, or 0 (the clean data) for a
    solver that can step there."""
    if isinstance(sde, SDE) and sde.zero_terminal_snr and not method.velocity:
        can = ", ".join(s.name for s in solvers() if s.velocity)
        raise ValueError(
            f"{method.name} cannot start on {sde!r}, which ends at zero signal (alpha_T = 0, where the score "
            f"does not determine the velocity); the solvers that can, on a velocity model: {can}. Or end the "
            "path before (RectifiedFlow() has T = 0.999)"
        )
    if not isinstance(time_grid, Tensor):
        check_problem(score, sde, eps, velocity_solver=method.velocity)
        return None, steps, eps, time_grid
    if isinstance(eps, Tensor) and eps.numel() == 1:  # eps=time_grid[-1]
        eps = float(eps)
    # eps = 0 is checked with the grid
    check_problem(score, sde, sde.T / 2 if _is_zero(eps) else eps, velocity_solver=method.velocity)
    explicit, steps = _check_explicit_grid(method, time_grid, steps, sde, eps)
    return explicit, steps, float(explicit[-1]), "explicit"


def _is_zero(eps: object) -> bool:
    """Whether `eps` is the number 0 (a grid that ends at the clean data)."""
    return isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps == 0


def _check_explicit_grid(
    method: Solver, grid: Tensor, steps: int | None, sde: SDE, eps: float
) -> tuple[Tensor, int]:
    """An explicit time grid, as schedulers give them: 1-D, finite, non-increasing within [0, T], starting at
    T or below (img2img: `x_T` is then the state at the grid's first time), ending at `eps` (0 for a solver
    that can step to sigma = 0). Zero-length steps (a repeated last time) are dropped: they move nothing."""
    if not method.takes_grid:
        offer = ", ".join(s.name for s in solvers() if s.takes_grid)
        raise ValueError(f"an explicit time_grid applies to {offer}; not to {method.name!r}")
    if grid.dim() != 1 or grid.numel() < 2 or not grid.dtype.is_floating_point:
        raise ValueError(f"time_grid must be a 1-D float tensor of >= 2 times, got {describe(grid)}")
    times = grid.detach().to("cpu", torch.float64).tolist()  # checked in Python floats: grids are short
    steps_of = list(zip(times[:-1], times[1:], strict=True))
    if not all(math.isfinite(v) for v in times) or any(b > a for a, b in steps_of):
        raise ValueError(f"time_grid must be finite and decreasing, got {times}")
    times = times[:1] + [b for a, b in steps_of if b < a]  # drop zero-length steps
    T = float(sde.T)
    if len(times) < 2 or times[-1] < 0 or times[0] > T * (1 + 1e-9):
        raise ValueError(f"time_grid must decrease within [0, T = {T}], got {times[0]} to {times[-1]}")
    if abs(times[-1] - eps) > 1e-9 * T:
        raise ValueError(f"time_grid must end at eps = {eps}, got {times[-1]} (pass eps=time_grid[-1])")
    g = torch.tensor(times, dtype=torch.float64)  # ends are snapped below: never the caller's tensor
    if _is_zero(eps) and not method.clean_end:
        can = ", ".join(s.name for s in solvers() if s.clean_end)
        raise ValueError(
            f"{method.name} cannot step to t = 0 (sigma = 0, the clean data); the solvers that can: {can}. "
            "Or end the grid at a small eps > 0"
        )
    if steps is not None and steps != g.numel() - 1:
        raise ValueError(f"steps = {steps} does not match the time_grid's {g.numel() - 1} intervals")
    if abs(float(g[0]) - T) <= 1e-9 * T:
        g[0] = T
    g[-1] = eps
    return g, g.numel() - 1


def _initial_state(
    score: Score,
    sde: SDE,
    n: int | None,
    x_T: Tensor | None,
    event_shape: tuple[int, ...] | None,
    seed: int | None,
    dtype: torch.dtype | None,
    device: torch.device | str | None,
    row_start: int = 0,
    rows: int | None = None,
) -> Tensor | None:
    """The given `x_T` (checked against `n` and `event_shape`), or `n` prior draws from `seed`, keyed
    by global row index from `row_start` (`rows=0`: only check `n` and `event_shape`)."""
    if x_T is not None:
        x_T = check_batched(x_T, "x_T")
        if not bool(torch.isfinite(x_T).all()):
            raise ValueError("x_T must be finite; it holds NaN or Inf")
        own = getattr(score, "event_shape", None)
        if own is not None and math.prod(x_T.shape[1:]) != math.prod(own):
            raise ValueError(
                f"x_T must hold {math.prod(own)} values per sample for this score (event shape {tuple(own)}), "
                f"got shape {tuple(x_T.shape)}"
            )
        if n is not None and n != x_T.shape[0]:
            raise ValueError(f"n={n!r} disagrees with x_T's batch size {x_T.shape[0]}; give one or the other")
        if event_shape is not None and tuple(event_shape) != tuple(x_T.shape[1:]):
            raise ValueError(
                f"event_shape={tuple(event_shape)} disagrees with x_T's shape {tuple(x_T.shape)}"
            )
        return x_T
    if n is None:
        raise ValueError("give n (the number of samples) or x_T (the prior draws to start from)")
    check_positive(n, "n", integer=True)
    if event_shape is None:
        event_shape = getattr(score, "event_shape", None)
    if event_shape is None:
        raise ValueError("event_shape is needed to draw n samples from the prior: this score does not say")
    if rows == 0:
        return None
    return prior_draws(sde, (int(n), *event_shape), seed, dtype=dtype, device=device, row_start=row_start)


def _check_event_shape(score: Score, event_shape: object) -> tuple[int, ...] | None:
    """`event_shape` as a tuple of positive ints (numpy integers too), agreeing with the score's own."""
    if event_shape is None:
        return None
    if isinstance(event_shape, (str, bytes)) or not isinstance(event_shape, (tuple, list, torch.Size)):
        raise TypeError(f"event_shape must be a tuple of positive integers, got {event_shape!r}")
    if not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k > 0 for k in event_shape):
        raise ValueError(f"event_shape must be a tuple of positive integers, got {tuple(event_shape)!r}")
    event_shape = tuple(int(k) for k in event_shape)
    own = getattr(score, "event_shape", None)
    if own is not None and math.prod(own) != math.prod(event_shape):
        raise ValueError(f"event_shape={event_shape} disagrees with the score's event shape {tuple(own)}")
    return event_shape


def _check_memory(
    method, score, n, batch_size, x_T, event_shape, dtype, device, steps, return_trajectory
) -> None:
    """Refuse, before the prior draw, a solve whose state, working copies and trajectory do not fit."""
    if isinstance(x_T, Tensor):
        n, event_shape, dtype, device = x_T.shape[0], x_T.shape[1:], x_T.dtype, x_T.device
    event_shape = event_shape if event_shape is not None else getattr(score, "event_shape", None)
    if n is None or event_shape is None or isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        return  # _initial_state says what is missing
    try:
        numel = math.prod(int(k) for k in event_shape)
    except (TypeError, ValueError):
        return
    work = int(n) if batch_size is None else min(int(n), batch_size)
    trajectory = (101 if steps is None else steps + 1) if return_trajectory else 0
    itemsize = torch.empty((), dtype=dtype or torch.get_default_dtype()).element_size()
    copies = memory.working_copies(method.adaptive, method.stochastic)
    per_point = numel * itemsize
    memory.check_chunked(
        f"sample(n={n}, solver={method.name!r}{'' if batch_size is None else f', batch_size={batch_size}'})",
        int(n), batch_size, per_point * copies, per_point * (2 + trajectory), device=device or "cpu",
        detail=f"{work:,} points at a time x {numel:,} values x {itemsize} bytes x {copies} working states, "
        f"plus {2 + trajectory} stored states of all {int(n):,} points",  # samples, x_T, trajectory
        too_many="ask for fewer points" + (" or return_trajectory=False" if trajectory else ""),
    )  # fmt: skip


def _tweedie(score: Score, sde: SDE, x: Tensor, eps: float) -> Tensor:
    t = torch.full((x.shape[0],), eps, dtype=x.dtype, device=x.device)
    alpha, sigma = sde.marginal(t)
    s = evaluate_score(score, x, t)
    out = (x + append_dims(sigma**2, x.dim()) * s) / append_dims(alpha, x.dim())
    guard = FiniteGuard("the denoised state")
    guard.check(out, eps)
    guard.raise_if_failed()
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _ChunkProgress:
    """A tqdm bar over the samples of a chunked solve, one update per chunk, with the NFE."""

    def __init__(self, total: int, name: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=name, unit="sample", leave=False, dynamic_ncols=True, disable=None)

    def update(self, done: int, nfe: int) -> None:
        self.bar.update(done)
        self.bar.set_postfix_str(f"nfe={nfe} per chunk", refresh=False)

    def close(self) -> None:
        self.bar.close()


class _Progress:
    """A tqdm bar over forward time from `start` to `end` (T down to eps for sampling, eps up to T
    for a likelihood), fed by the adapters' callback after every score evaluation."""

    def __init__(self, start: float, end: float, name: str) -> None:
        from tqdm.auto import tqdm

        self.start, self.end = start, end
        self.nfe = 0
        self.done = 0.0
        self.bar = tqdm(
            total=1000,
            desc=name,
            leave=False,
            dynamic_ncols=True,
            disable=None,  # no bar when stderr is not a terminal (CI logs)
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}",
        )

    @classmethod
    def shown(cls, start: float, end: float, name: str) -> _Progress | None:
        """A bar, or None where tqdm would hide it (stderr not a terminal): then no callback is
        attached, so a hidden bar costs nothing (not a host sync per score call)."""
        bar = cls(start, end, name)
        if bar.bar.disable:
            bar.close()
            return None
        return bar

    def __call__(self, t: Tensor) -> None:
        self.nfe += 1
        # Adaptive solvers probe back and forth: show the furthest point reached.
        frac = min(max((float(t) - self.start) / (self.end - self.start), self.done), 1.0)
        self.bar.update(round(1000 * frac) - round(1000 * self.done))
        self.done = frac
        self.bar.set_postfix_str(f"t={float(t):.4f} nfe={self.nfe}", refresh=False)

    def close(self) -> None:
        self.bar.close()
