"""The only code that speaks torchsde and torchdiffeq.

`ReverseSDE` owns the change of variable $s = T - t$ and the flattening `(B, *event) <-> (B, D)` that
torchsde needs; `ProbabilityFlowODE` is a torchdiffeq `func(t, x)` in forward time.
"""

from .torchdiffeq import LikelihoodODE, ProbabilityFlowODE
from .torchsde import BROWNIAN_TOL, ReverseSDE

__all__ = ["BROWNIAN_TOL", "LikelihoodODE", "ProbabilityFlowODE", "ReverseSDE"]
