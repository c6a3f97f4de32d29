r"""The probability-flow ODE as a `func(t, x)` that `torchdiffeq.odeint` accepts as it is.

$$\frac{dx}{dt} = f(t)x - \tfrac12 g(t)^2 s(x, t)$$

in forward time $t$: torchdiffeq integrates from $T$ down to $\epsilon$ when given decreasing times,
and from $\epsilon$ up to $T$ for encoding, so no reversal happens here. The state keeps its shape
`(B, *event)`.

torchdiffeq's adaptive solvers may probe times outside the output interval: the initial step
selection evaluates at $t_0 + h_0$, and the last step steps past the final time and interpolates
back. Below $\epsilon$ the score may be undefined (VP's $\sigma_t$ is NaN for $t < 0$), so the time
the score sees is clamped into $[\epsilon, T]$. `sample()` and `log_likelihood()` also pass
`step_t` so that the last step ends exactly at $\epsilon$ and the clamp never changes a result;
do the same when calling `odeint` yourself (`options=pf.odeint_options()`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .._validation import check_positive, describe
from ..errors import NonFiniteError
from ..scores import Score, evaluate_score
from ..sde import SDE

__all__ = ["ProbabilityFlowODE"]


class ProbabilityFlowODE(nn.Module):
    """The probability-flow ODE of `sde` driven by `score`, ready for `torchdiffeq.odeint`.

    Args:
        score: A `Score`, `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE.
        eps: The smallest time the score may see; calls at $t < \\epsilon$ use $t = \\epsilon$.

    Attributes:
        nfe: Score evaluations so far (one call on a batch is one). Reset with `reset()`.
        callback: If set, called with the forward time `t` (0-d tensor) after each score evaluation.
    """

    def __init__(self, score: Score, sde: SDE, eps: float = 1e-3) -> None:
        super().__init__()
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a diffsolve SDE, got {describe(sde)}")
        if not callable(score):
            raise TypeError(f"score must be callable as score(x, t), got {describe(score)}")
        check_positive(eps, "eps")
        if not eps < sde.T:
            raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps!r}")
        self.score = score
        self.sde = sde
        self.eps = float(eps)
        self.nfe = 0
        self.callback: Callable[[Tensor], None] | None = None

    def reset(self) -> None:
        """Zero the NFE counter."""
        self.nfe = 0

    def odeint_options(self) -> dict[str, Tensor]:
        """Options for torchdiffeq's adaptive solvers that make a step end exactly at eps and at T."""
        return {"step_t": torch.tensor([self.eps, self.sde.T], dtype=torch.float64)}

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=x.device).to(x.dtype).clamp(self.eps, self.sde.T)
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError("the state", float(t))
        tb = t.expand(x.shape[0])
        score = evaluate_score(self.score, x, tb)
        self.nfe += 1
        if self.callback is not None:
            self.callback(t)
        return self.sde.pf_drift(x, tb, score)
