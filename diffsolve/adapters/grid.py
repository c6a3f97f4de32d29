"""Uniform time grids, and the torchdiffeq `grid_constructor` that steps on one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["uniform_grid", "fixed_step_grid"]


def uniform_grid(t_start: float, t_end: float, steps: int, *, device: torch.device | None = None) -> Tensor:
    """`steps + 1` equally spaced times from `t_start` to `t_end` (either direction), in float64.

    The end points are exact, so a solver stepping on this grid ends exactly at `t_end`.

    Args:
        t_start: First time.
        t_end: Last time.
        steps: Number of intervals.
        device: Where the grid lives.
    """
    grid = torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64, device=device)
    grid[0], grid[-1] = t_start, t_end
    return grid


def fixed_step_grid(steps: int) -> Callable[[Any, Tensor, Tensor], Tensor]:
    """A torchdiffeq `grid_constructor` that steps on exactly `steps` equal intervals.

    torchdiffeq's default for fixed-step methods is one step per output time (its issue #137);
    this replaces it. `t` arrives negated when integrating backwards, which `uniform_grid` handles.

    Args:
        steps: Number of equal intervals between the first and last requested times.

    Returns:
        A `grid_constructor(func, y0, t)` for `torchdiffeq.odeint(..., options=...)`.
    """

    def grid_constructor(func: Any, y0: Tensor, t: Tensor) -> Tensor:  # torchdiffeq's signature
        return uniform_grid(float(t[0]), float(t[-1]), steps, device=t.device).to(t.dtype)

    return grid_constructor
