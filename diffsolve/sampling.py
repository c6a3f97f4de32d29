"""`sample()`: one entry point for every sampler, with one NFE and time ledger."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._validation import append_dims, check_batched, check_positive, check_problem, describe
from .errors import NonFiniteError
from .samplers import diffusion
from .samplers.generic import solve_pf_ode, solve_reverse_sde
from .samplers.grids import GRIDS
from .samplers.grids import time_grid as make_time_grid
from .samplers.pc import pc_sampler
from .samplers.registry import get_solver
from .scores import Score, evaluate_score
from .sde import SDE

__all__ = ["SampleResult", "sample"]

_DEFAULT_STEPS = {"sde": 1000, "ode": 100, "diffusion": 1000}
_DEFAULT_TOL = 1e-5
# Gotta Go Fast's own tolerances (Jolicoeur-Martineau et al. 2021, Section 4): an order-1
# stochastic solver at 1e-5 would take millions of steps.
_DEFAULT_TOL_ADAPTIVE_SDE = (0.05, 0.0078)
_GRID_SAMPLERS = {
    "ddim": (diffusion.ddim, "logsnr"),
    "dpm_solver2": (diffusion.dpm_solver2, "logsnr"),
    "dpm_solver3": (diffusion.dpm_solver3, "logsnr"),
    "dpm_solver++2m": (diffusion.dpm_solver_pp_2m, "logsnr"),
    "edm_heun": (diffusion.edm_heun, "karras"),
}


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
    """

    samples: Tensor
    nfe: int
    seconds: float
    settings: dict[str, Any]
    x_T: Tensor
    trajectory: Tensor | None = None
    times: Tensor | None = field(default=None)

    def __repr__(self) -> str:
        return (
            f"SampleResult(samples={describe(self.samples)}, nfe={self.nfe}, seconds={self.seconds:.3g}, "
            f"settings={self.settings})"
        )


def _seeds(seed: int) -> tuple[int, int]:
    """Independent 31-bit seeds for the prior draw and the Langevin corrector, derived from `seed`."""
    prior, corrector = np.random.SeedSequence(seed).generate_state(2)
    return int(prior) & 0x7FFFFFFF, int(corrector) & 0x7FFFFFFF


def sample(
    score: Score,
    sde: SDE,
    n: int | None = None,
    *,
    x_T: Tensor | None = None,
    solver: str = "sde:euler",
    steps: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    eps: float = 1e-3,
    seed: int | None = None,
    event_shape: tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    denoise: bool = False,
    return_trajectory: bool = False,
    snr: float = 0.16,
    corrector_steps: int = 1,
    time_grid: str | None = None,
    progress: bool = False,
) -> SampleResult:
    r"""Draw samples by integrating from the prior at T down to `eps` with any registered solver.

    Fixed-step solvers take `steps` (default 1000 for `sde:`/`pc`, 100 for `ode:`, 50 for the
    diffusion samplers `ddim`, `dpm_solver*`, `edm_heun`) and refuse `rtol`/`atol`; adaptive ones
    take `rtol`/`atol` (default 1e-5; `adaptive_sde`: rtol 0.05, atol 0.0078 as in its paper) and
    refuse `steps`. Stochastic
    solvers are driven by the Brownian path `ReverseSDE.brownian_motion(..., seed)`, the same path at
    every step count. See `solvers()` for the names.

    Args:
        score: A `Score`, `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE the score belongs to.
        n: Number of samples drawn from the prior (needs `event_shape`, or a score that has one).
        x_T: Start from these prior draws instead, shape `(n, *event)`; dtype and device follow it.
        solver: A name from `solvers()`, e.g. `"sde:euler"`, `"ode:dopri5"`, `"pc"`.
        steps: Number of solver steps (never NFE) for fixed-step solvers.
        rtol: Relative tolerance of adaptive solvers.
        atol: Absolute tolerance of adaptive solvers.
        eps: Final forward time in (0, T); samples are the state there.
        seed: Seeds the prior draw, the Brownian path and the corrector; None picks one (in `settings`).
        event_shape: Shape of one sample, when drawing `n` from the prior.
        dtype: dtype of the prior draw (default: torch's default dtype); ignored with `x_T`.
        device: Device of the prior draw; ignored with `x_T`.
        denoise: Add Tweedie's one-step denoising $\hat x_0 = (x + \sigma^2 s)/\alpha$ at eps (+1 NFE).
        return_trajectory: Also return states along the way (every step for fixed-step solvers,
            101 equally spaced times for adaptive ones).
        snr: Signal-to-noise ratio of the `pc` corrector.
        corrector_steps: Langevin steps per `pc` step.
        time_grid: Grid of `ddim`, `dpm_solver2`, `dpm_solver3`, `dpm_solver++2m` and `edm_heun`:
            `"uniform"` in t, `"logsnr"` (their default) or `"karras"` (`edm_heun`'s default).
        progress: Show a progress bar over forward time (T down to eps) with the running NFE.

    Returns:
        A `SampleResult`.

    Raises:
        ValueError, TypeError: On bad arguments, naming the argument, what was given and what was expected.
        NonFiniteError: If the score or the state becomes NaN/Inf; names t and the solver.
    """
    info = get_solver(solver)
    if info.name == "ode:explicit_adams":
        warnings.warn(
            "ode:explicit_adams is unstable in torchdiffeq 0.2.5 (its error grows as steps shrink); "
            "prefer ode:implicit_adams or ode:rk4",
            UserWarning,
            stacklevel=2,
        )
    check_problem(score, sde, eps)

    if info.adaptive:
        if steps is not None:
            raise ValueError(
                f"steps is for fixed-step solvers; {solver!r} is adaptive: give rtol/atol instead"
            )
        default_rtol, default_atol = (
            _DEFAULT_TOL_ADAPTIVE_SDE if info.name == "adaptive_sde" else (_DEFAULT_TOL, _DEFAULT_TOL)
        )
        rtol = default_rtol if rtol is None else rtol
        atol = default_atol if atol is None else atol
        check_positive(rtol, "rtol")
        check_positive(atol, "atol")
    else:
        if rtol is not None or atol is not None:
            raise ValueError(
                f"rtol/atol are for adaptive solvers; {solver!r} is fixed-step: give steps instead"
            )
        default = 50 if info.name in _GRID_SAMPLERS else _DEFAULT_STEPS[info.family]
        steps = default if steps is None else steps
        check_positive(steps, "steps", integer=True)
    if info.name in _GRID_SAMPLERS:
        time_grid = _GRID_SAMPLERS[info.name][1] if time_grid is None else time_grid
        if time_grid not in GRIDS:
            raise ValueError(f"time_grid must be one of {', '.join(GRIDS)}; got {time_grid!r}")
    elif time_grid is not None:
        raise ValueError(
            f"time_grid applies to {', '.join(_GRID_SAMPLERS)}; {solver!r} steps uniformly in t or adaptively"
        )
    if info.name == "pc":
        check_positive(snr, "snr")
        check_positive(corrector_steps, "corrector_steps", integer=True, allow_zero=True)

    if seed is None:
        if info.stochastic or x_T is None:
            # Drawn here and echoed in `settings`, so that the run can be repeated.
            seed = int(np.random.SeedSequence().generate_state(1)[0]) & 0x7FFFFFFF
    elif isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    seed = None if seed is None else int(seed)
    prior_seed, corrector_seed = _seeds(seed) if seed is not None else (0, 0)

    if x_T is not None:
        x_T = check_batched(x_T, "x_T")
        if n is not None and n != x_T.shape[0]:
            raise ValueError(f"n={n!r} disagrees with x_T's batch size {x_T.shape[0]}; give one or the other")
        if event_shape is not None and tuple(event_shape) != tuple(x_T.shape[1:]):
            raise ValueError(
                f"event_shape={tuple(event_shape)} disagrees with x_T's shape {tuple(x_T.shape)}"
            )
    else:
        if n is None:
            raise ValueError("give n (the number of samples) or x_T (the prior draws to start from)")
        check_positive(n, "n", integer=True)
        if event_shape is None:
            event_shape = getattr(score, "event_shape", None)
        if event_shape is None:
            raise ValueError(
                "event_shape is needed to draw n samples from the prior: this score does not say"
            )
        gen = torch.Generator().manual_seed(prior_seed)
        x_T = sde.prior_sample((n, *event_shape), dtype=dtype, generator=gen).to(device or "cpu")

    settings: dict[str, Any] = {
        "solver": info.name,
        "family": info.family,
        "steps": steps,
        "rtol": rtol,
        "atol": atol,
        "eps": eps,
        "seed": seed,
        "dtype": str(x_T.dtype).removeprefix("torch."),
        "device": str(x_T.device),
        "denoise": denoise,
        "sde": repr(sde),
    }
    if info.name == "pc":
        settings.update(snr=snr, corrector_steps=corrector_steps)
    if time_grid is not None:
        settings["time_grid"] = time_grid

    bar = _Progress(sde.T, eps, info.name) if progress else None
    _sync(x_T.device)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            if info.family == "sde":
                out = solve_reverse_sde(
                    score,
                    sde,
                    x_T,
                    method=info.name.removeprefix("sde:"),
                    steps=steps,
                    eps=eps,
                    seed=seed,
                    return_trajectory=return_trajectory,
                    callback=bar,
                )
            elif info.family == "ode":
                out = solve_pf_ode(
                    score,
                    sde,
                    x_T,
                    method=info.name.removeprefix("ode:"),
                    adaptive=info.adaptive,
                    steps=steps,
                    rtol=rtol,
                    atol=atol,
                    eps=eps,
                    return_trajectory=return_trajectory,
                    callback=bar,
                )
            elif info.name in _GRID_SAMPLERS:
                grid = make_time_grid(sde, steps, eps, time_grid)
                out = _GRID_SAMPLERS[info.name][0](
                    score, sde, x_T, grid, return_trajectory=return_trajectory, callback=bar
                )
            elif info.name == "adaptive_sde":
                out = diffusion.adaptive_sde(
                    score,
                    sde,
                    x_T,
                    eps=eps,
                    seed=seed,
                    rtol=rtol,
                    atol=atol,
                    return_trajectory=return_trajectory,
                    callback=bar,
                )
            else:
                out = pc_sampler(
                    score,
                    sde,
                    x_T,
                    steps=steps,
                    eps=eps,
                    seed=seed,
                    corrector_seed=corrector_seed,
                    snr=snr,
                    corrector_steps=corrector_steps,
                    return_trajectory=return_trajectory,
                    callback=bar,
                )
            samples, nfe = out.samples, out.nfe
            if denoise:
                samples = _tweedie(score, sde, samples, eps)
                nfe += 1
    except NonFiniteError as err:
        raise err.with_solver(info.name) from None
    finally:
        if bar is not None:
            bar.close()
    _sync(x_T.device)
    seconds = time.perf_counter() - start
    return SampleResult(
        samples=samples.detach(),
        nfe=nfe,
        seconds=seconds,
        settings=settings,
        x_T=x_T,
        trajectory=None if out.trajectory is None else out.trajectory.detach(),
        times=out.times,
    )


def _tweedie(score: Score, sde: SDE, x: Tensor, eps: float) -> Tensor:
    t = torch.full((x.shape[0],), eps, dtype=x.dtype, device=x.device)
    alpha, sigma = sde.marginal(t)
    s = evaluate_score(score, x, t)
    return (x + append_dims(sigma**2, x.dim()) * s) / append_dims(alpha, x.dim())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Progress:
    """A tqdm bar over forward time, fed by the adapters' callback after every score evaluation."""

    def __init__(self, T: float, eps: float, name: str) -> None:
        from tqdm.auto import tqdm

        self.T, self.eps = T, eps
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

    def __call__(self, t: Tensor) -> None:
        self.nfe += 1
        # Adaptive solvers probe back and forth: show the furthest point reached.
        frac = min(max((self.T - float(t)) / (self.T - self.eps), self.done), 1.0)
        self.bar.update(round(1000 * frac) - round(1000 * self.done))
        self.done = frac
        self.bar.set_postfix_str(f"t={float(t):.4f} nfe={self.nfe}", refresh=False)

    def close(self) -> None:
        self.bar.close()
