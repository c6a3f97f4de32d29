"""User-defined one-step methods on the probability-flow ODE, run on a time grid (`register_solver`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from .base import SolveOutput, SolveRequest, run_on_grid

__all__ = ["one_step_runner"]


def one_step_runner(step: Callable[..., Any], nfe_per_step: int) -> Callable[[SolveRequest], SolveOutput]:
    """The runner of a one-step method `step(f, x, t, t_next)` on the PF-ODE drift `f(x, t)`.

    Every call of `f` is one NFE through the shared ledger; a step that calls `f` another number of
    times than it declared is reported, since every table would otherwise misstate its cost.

    Args:
        step: The method: returns the state at `t_next` from the state `x` at `t` (floats, t > t_next).
        nfe_per_step: The calls of `f` per step it declared.

    Returns:
        A runner for `Solver.run`.
    """

    def run(req: SolveRequest) -> SolveOutput:
        ledger = req.ledger()
        times = req.grid.tolist()

        def update(x: Tensor, i: int) -> Tensor:
            before = ledger.nfe
            out = step(ledger.pf_drift, x, times[i], times[i + 1])
            if ledger.nfe - before != nfe_per_step:
                raise RuntimeError(
                    f"solver {req.solver!r} declared nfe_per_step={nfe_per_step} but its step called "
                    f"f {ledger.nfe - before} times"
                )
            if not isinstance(out, Tensor) or out.shape != x.shape:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise TypeError(f"solver {req.solver!r}: step must return a tensor shaped like x, got {got}")
            return out

        return run_on_grid(update, req.x_T, req.grid, ledger, req.return_trajectory)

    return run
