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

from .._validation import check_problem
from ..divergence import exact_divergence, hutchinson_divergence
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
        last_t: The (clamped) time of the last evaluation, a 0-d tensor.
    """

    def __init__(self, score: Score, sde: SDE, eps: float = 1e-3) -> None:
        super().__init__()
        check_problem(score, sde, eps)
        self.score = score
        self.sde = sde
        self.eps = float(eps)
        self.nfe = 0
        self.callback: Callable[[Tensor], None] | None = None
        self.last_t: Tensor | None = None

    def reset(self) -> None:
        """Zero the NFE counter."""
        self.nfe = 0

    def odeint_options(self) -> dict[str, Tensor]:
        """Options for torchdiffeq's adaptive solvers that make a step end exactly at eps and at T."""
        return {"step_t": torch.tensor([self.eps, self.sde.T], dtype=torch.float64)}

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=x.device).to(x.dtype).clamp(self.eps, self.sde.T)
        self.last_t = t
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError("the state", float(t))
        tb = t.expand(x.shape[0])
        score = evaluate_score(self.score, x, tb)
        self.nfe += 1
        if self.callback is not None:
            self.callback(t)
        return self.sde.pf_drift(x, tb, score)


class LikelihoodODE(nn.Module):
    r"""The probability-flow ODE augmented with the log-density change, for `torchdiffeq.odeint(_adjoint)`.

    The state is the tuple `(x, delta)`: `x` of shape `(B, *event)` and `delta` of shape `(B,)`
    (exact divergence) or `(B, K)` (K Hutchinson probes, one estimate each). Integrated from
    $\epsilon$ up to $T$,

    $$\frac{dx}{dt} = f(x, t), \qquad \frac{d\,\delta}{dt} = \nabla\cdot f(x, t),
    \qquad \log p_\epsilon(x_\epsilon) = \log p_T(x_T) + \delta(T).$$

    Step control: torchdiffeq's default norm for a tuple state is the maximum of the RMS norms of
    its parts, so `delta` takes part in step control on its own footing. That is deliberate: the
    log-density is the output, and a 1-D `delta` would be drowned in a joint norm over a 3072-D `x`.

    Args:
        score: A `Score`, `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE.
        divergence: `"exact"` or `"hutchinson"`.
        probes: For Hutchinson, fixed probe vectors `(K, B, *event)` (see `divergence.make_probes`).
        eps: The smallest time the score may see (calls outside $[\epsilon, T]$ are clamped).

    Attributes:
        nfe: Forward score evaluations (K Hutchinson probes share one). `vjps`: vector-Jacobian
            products taken for the divergence. Reset with `reset()`.
    """

    def __init__(
        self,
        score: Score,
        sde: SDE,
        divergence: str = "exact",
        *,
        probes: Tensor | None = None,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if divergence not in ("exact", "hutchinson"):
            raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")
        if divergence == "hutchinson" and probes is None:
            raise ValueError("divergence='hutchinson' needs probes: see diffsolve.divergence.make_probes")
        self.pf = ProbabilityFlowODE(score, sde, eps)
        self.divergence = divergence
        self.probes = probes
        self.vjps = 0

    @property
    def nfe(self) -> int:
        return self.pf.nfe

    @property
    def last_t(self) -> Tensor | None:
        return self.pf.last_t

    def reset(self) -> None:
        """Zero the NFE and VJP counters."""
        self.pf.reset()
        self.vjps = 0

    def odeint_options(self) -> dict[str, Tensor]:
        """Options for torchdiffeq's adaptive solvers that make a step end exactly at eps and at T."""
        return self.pf.odeint_options()

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x = state[0]

        def drift(z: Tensor) -> Tensor:
            return self.pf(t, z)

        if self.divergence == "exact":
            f, div = exact_divergence(drift, x)
            self.vjps += x[0].numel()
        else:
            f, div = hutchinson_divergence(drift, x, self.probes)
            self.vjps += self.probes.shape[0]
        return f, div
