r"""Flow matching's own samplers: Euler and Heun in t on the velocity $dx/dt = v(x, t)$.

What diffusers' `FlowMatchEulerDiscreteScheduler` and `FlowMatchHeunDiscreteScheduler` run for SD3 and
FLUX. They step on the velocity itself (`ScoreModel.velocity`: a flow-matching network's own output),
so they start at $t = 1$ on `RectifiedFlow(T=1)`, where $\alpha = 0$ and the score does not determine
the velocity; on any other path or score the velocity is the probability-flow drift. They also step
to $t = 0$ (the last step of each is Euler, which never evaluates the velocity at its end).

On the straight path, Euler in t on the velocity is DDIM: $(1 - t')\hat x_0 + t'\hat\epsilon = x + (t' -
t)v$ (`tests/test_flow.py`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ..scores import Score
from ..sde import SDE
from .base import ScoreLedger, SolveOutput, run_on_grid
from .diffusion import _on_grid
from .registry import SOLVERS, Solver

__all__ = ["flow_euler", "flow_heun"]


def flow_euler(
    score: Score,
    sde: SDE,
    x_T: Tensor,
    grid: Tensor,
    *,
    return_trajectory: bool = False,
    callback: Callable[[Tensor], None] | None = None,
) -> SolveOutput:
    r"""Euler in t on the velocity: $x_{t'} = x_t + (t' - t)\,v(x_t, t)$. Order 1, 1 NFE per step.

    Args:
        score: A `Score`; one with a `velocity(x, t)` method (`ScoreModel`) is stepped on that.
        sde: The forward SDE or path.
        x_T: Initial state at the grid's first time, `(B, *event)`.
        grid: Decreasing times (`grids.time_grid`, `grids.shifted_grid`, or a scheduler's, ending at 0).
        return_trajectory: Also keep the state at every grid time.
        callback: Called with each forward time `t` (0-d tensor) the velocity is evaluated at.

    Returns:
        A `SolveOutput`.
    """
    ledger = ScoreLedger(score, sde, callback)
    times = grid.tolist()

    def step(x: Tensor, i: int) -> Tensor:
        return x + (times[i + 1] - times[i]) * ledger.velocity(x, times[i])

    return run_on_grid(step, x_T, grid, ledger, return_trajectory)


def flow_heun(
    score: Score,
    sde: SDE,
    x_T: Tensor,
    grid: Tensor,
    *,
    return_trajectory: bool = False,
    callback: Callable[[Tensor], None] | None = None,
) -> SolveOutput:
    r"""Heun in t on the velocity (the trapezoidal corrector of an Euler predictor). Order 2, 2 NFE per
    step; a step to $t = 0$ is Euler (1 NFE), as in diffusers' `FlowMatchHeunDiscreteScheduler`.

    Args:
        score: A `Score`; one with a `velocity(x, t)` method (`ScoreModel`) is stepped on that.
        sde: The forward SDE or path.
        x_T: Initial state at the grid's first time, `(B, *event)`.
        grid: Decreasing times.
        return_trajectory: Also keep the state at every grid time.
        callback: Called with each forward time `t` (0-d tensor) the velocity is evaluated at.

    Returns:
        A `SolveOutput`.
    """
    ledger = ScoreLedger(score, sde, callback)
    times = grid.tolist()

    def step(x: Tensor, i: int) -> Tensor:
        dt = times[i + 1] - times[i]
        v = ledger.velocity(x, times[i])
        x_euler = x + dt * v
        if times[i + 1] == 0:
            return x_euler
        return x + dt * (v + ledger.velocity(x_euler, times[i + 1])) / 2

    return run_on_grid(step, x_T, grid, ledger, return_trajectory)


for _solver in [
    Solver("flow_euler", "diffusion", _on_grid(flow_euler), 1, order=1, default_steps=50, time_grid="uniform",
           budgets=(10, 20, 30, 50, 75, 100, 150, 200, 300), verified=True, clean_end=True, velocity=True,
           description="Euler in t on the velocity (flow matching; FlowMatchEulerDiscreteScheduler's step)"),
    Solver("flow_heun", "diffusion", _on_grid(flow_heun), 2, order=2, default_steps=25, time_grid="uniform",
           budgets=(5, 10, 15, 20, 30, 40, 50, 75, 100), verified=True, clean_end=True, velocity=True,
           description="Heun in t on the velocity (flow matching; FlowMatchHeunDiscreteScheduler's step)"),
]:  # fmt: skip
    SOLVERS[_solver.name] = _solver
