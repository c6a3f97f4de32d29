"""Samplers: the registry, shared time grids, the generic `sde:`/`ode:` solvers and diffusion-specific ones."""

from .registry import SOLVERS, SolverInfo, get_solver, solvers

__all__ = ["SOLVERS", "SolverInfo", "get_solver", "solvers"]
