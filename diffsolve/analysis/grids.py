r"""Optimised time grids: the N-step grid on which a sampler's paired path error is smallest.

`optimize_grid` chooses the grid empirically, not from a bound: on a pilot set of prior draws it
minimises the RMS distance between the sampler's solve on the grid and a float64 adaptive reference
solve from the same draws (`ode:dopri5` at rtol = atol = 1e-9), the same paired path error that
`compare` reports. The grid is parametrised by its log-SNR increments,
$\lambda_i = \lambda_T + (\lambda_\epsilon - \lambda_T)\sum_{j<i} \mathrm{softmax}(\theta)_j$, so every
candidate is a valid grid from T to eps, and $\theta$ is searched coordinate by coordinate with a
shrinking step (a pattern search: the samplers' coefficients are not differentiable in the grid as
written, and each evaluation costs N score calls on the pilot set). The result is only as good as the
pilot set is representative: `compare` judges it on fresh draws (held out from the pilot set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .. import memory
from .._validation import check_positive, check_seed
from ..samplers.grids import GRIDS, log_snr, t_of_log_snr, time_grid
from ..samplers.registry import get_solver
from ..sampling import prior_draws, sample
from ..scores import Score, check_problem
from ..sde import SDE

__all__ = ["GridResult", "optimize_grid"]


@dataclass
class GridResult:
    """What `optimize_grid` returns.

    Attributes:
        grid: The optimised grid, float64, `steps + 1` times from T down to eps; pass it to
            `sample(..., time_grid=grid)`.
        error: Its RMS path error on the pilot set.
        initial_error: The error of the starting grid (the solver's default kind) on the same set.
        initial_kind: The kind of the starting grid.
        evaluations: Solves on the pilot set the search made.
        history: The best error after each sweep over the coordinates.
    """

    grid: Tensor
    error: float
    initial_error: float
    initial_kind: str
    evaluations: int
    history: list[float] = field(default_factory=list)


def _grid_from(theta: Tensor, lam_T: float, lam_eps: float, sde: SDE, eps: float) -> Tensor:
    weights = torch.softmax(theta, dim=0)
    lam = lam_T + (lam_eps - lam_T) * torch.cat([weights.new_zeros(1), weights.cumsum(0)])
    grid = t_of_log_snr(sde, lam, lo=eps, hi=float(sde.T))
    grid[0], grid[-1] = float(sde.T), eps
    return grid


def optimize_grid(
    score: Score,
    sde: SDE,
    solver: str,
    steps: int,
    *,
    x_T: Tensor | None = None,
    n: int = 512,
    eps: float = 1e-3,
    seed: int = 1_000_003,
    init: str | None = None,
    sweeps: int = 12,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    **options: object,
) -> GridResult:
    """The `steps`-step grid that minimises `solver`'s paired path error on a pilot set (see the module).

    Args:
        score: The score.
        sde: The forward SDE.
        solver: A deterministic, fixed-step solver that takes a time grid (e.g. `"ipndm"`, `"unipc"`).
        steps: Number of steps N.
        x_T: The pilot prior draws (default: `n` draws with `seed`, in `dtype` on `device`).
        n: Pilot draws when `x_T` is not given.
        eps: Final time.
        seed: Seed of the pilot draws (default: one no `compare` run uses, so it judges held-out draws).
        init: The starting grid kind (default: the solver's own).
        sweeps: Passes over the N coordinates; each halves the step once it stops improving.
        dtype: dtype of the pilot draws (float64 by default, for the reference solve).
        device: Where the pilot solves run (a network score's device).
        **options: The solver's own options.

    Returns:
        A `GridResult`.

    Raises:
        ValueError: For a stochastic, adaptive or grid-less solver, or a bad `steps`/`n`/`sweeps`.
    """
    info = get_solver(solver)
    if info.stochastic or not info.takes_grid:
        raise ValueError(
            f"optimize_grid needs a deterministic fixed-step solver that takes a time grid, got {info.name!r}"
        )
    check_positive(steps, "steps", integer=True)
    check_positive(n, "n", integer=True)
    check_positive(sweeps, "sweeps", integer=True)
    seed = check_seed(seed)
    check_problem(score, sde, eps)
    info.check_budget(steps, None, None)  # MAX_STEPS
    info.check_options(options)  # a bad option is the caller's error, not an infinite error of every grid
    if x_T is None and getattr(score, "event_shape", None):
        memory.check_solve(
            f"optimize_grid(n={n})",
            n,
            math.prod(score.event_shape),
            dtype,
            device,
            adaptive=True,
            stochastic=False,
            stored_states=2,
        )
    kind = init or info.time_grid
    if kind not in GRIDS:
        raise ValueError(f"init must be one of {', '.join(GRIDS)}, got {kind!r}")
    if x_T is None:
        shape = (n, *score.event_shape) if getattr(score, "event_shape", None) else None
        if shape is None:
            raise ValueError("optimize_grid needs x_T or a score with an event_shape")
        x_T = prior_draws(sde, shape, seed, dtype=dtype, device=device)
    ref = sample(score, sde, x_T=x_T, solver="ode:dopri5", rtol=1e-9, atol=1e-9, eps=eps).samples
    count = 0

    def error(grid: Tensor, strict: bool = False) -> float:
        nonlocal count
        count += 1
        try:
            out = sample(
                score, sde, x_T=x_T, solver=info.name, time_grid=grid, eps=eps, progress=False, **options
            ).samples
        except (ArithmeticError, RuntimeError, ValueError):
            if strict:  # the starting grid must solve: its failure is the caller's to see
                raise
            return math.inf
        e = float((out - ref).flatten(1).square().sum(1).mean().sqrt())
        return e if math.isfinite(e) else math.inf

    start = time_grid(sde, steps, eps, kind)
    lam = log_snr(sde, start)
    lam_T, lam_eps = float(lam[0]), float(lam[-1])
    theta = lam.diff().clamp_min(1e-12).log()
    best = error(start, strict=True)
    initial = best
    history = [best]
    delta = 0.5
    for _ in range(sweeps):
        improved = False
        for j in range(steps):
            for sign in (1.0, -1.0):
                trial = theta.clone()
                trial[j] += sign * delta
                e = error(_grid_from(trial, lam_T, lam_eps, sde, eps))
                if e < best:
                    best, theta, improved = e, trial, True
                    break
        history.append(best)
        if not improved:
            delta /= 2
    grid = _grid_from(theta, lam_T, lam_eps, sde, eps) if best < initial else start
    return GridResult(grid, min(best, initial), initial, kind, count, history)
