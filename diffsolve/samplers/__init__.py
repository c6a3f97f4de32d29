"""Samplers: the registry, shared time grids, the generic `sde:`/`ode:` solvers and diffusion-specific ones.

Each solver module registers its own solvers when imported; importing this package registers all
the built-ins, in the order `solvers()` lists them.
"""

from . import generic  # noqa: I001, F401  (each module registers its solvers: this is the listing order)
from . import diffusion, singlestep, multistep, ancestral, adaptive_sde, pc, onestep, per_sample  # noqa: I001, F401
from . import flow, inverse  # noqa: I001, F401
from .base import ScoreLedger, SolveOutput, SolveRequest
from .scheduler import register_scheduler
from .registry import (
    ENTRY_POINT_GROUP,
    SOLVERS,
    Option,
    Solver,
    SolverInfo,
    get_solver,
    register_solver,
    solvers,
    unregister_solver,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "SOLVERS",
    "Option",
    "ScoreLedger",
    "SolveOutput",
    "SolveRequest",
    "Solver",
    "SolverInfo",
    "get_solver",
    "register_scheduler",
    "register_solver",
    "solvers",
    "unregister_solver",
]
