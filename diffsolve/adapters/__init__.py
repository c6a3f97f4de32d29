"""The only code that speaks torchsde and torchdiffeq.

`ReverseSDE` owns the change of variable $s = T - t$ and the flattening `(B, *event) <-> (B, D)` that
torchsde needs; `ProbabilityFlowODE` is a torchdiffeq `func(t, x)` in forward time. `odeint` and
`sdeint` are the one wrapper of each library that the rest of diffsolve calls: they hold the
libraries' quirks (see docs/architecture.md).
"""

from .brownian import BrownianPath
from .grid import fixed_step_grid, uniform_grid
from .torchdiffeq import LikelihoodODE, OdeintOutput, ProbabilityFlowODE, odeint
from .torchsde import (
    BROWNIAN_TOL,
    STRATONOVICH_METHODS,
    KeyedNoise,
    ReverseBrownian,
    ReverseSDE,
    ZeroBrownian,
    brownian_motion,
    sdeint,
)

__all__ = [
    "BROWNIAN_TOL",
    "BrownianPath",
    "STRATONOVICH_METHODS",
    "KeyedNoise",
    "LikelihoodODE",
    "OdeintOutput",
    "ProbabilityFlowODE",
    "ReverseBrownian",
    "ReverseSDE",
    "ZeroBrownian",
    "brownian_motion",
    "fixed_step_grid",
    "odeint",
    "sdeint",
    "uniform_grid",
]
