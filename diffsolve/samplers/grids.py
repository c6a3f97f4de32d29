"""Time grids shared by the fixed-step samplers."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["uniform_grid"]


def uniform_grid(t_start: float, t_end: float, steps: int, *, device: torch.device | None = None) -> Tensor:
    """`steps + 1` equally spaced times from `t_start` to `t_end` (either direction), in float64.

    The end points are exact, so a solver stepping on this grid ends exactly at `t_end`.
    """
    grid = torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64, device=device)
    grid[0], grid[-1] = t_start, t_end
    return grid
