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
do the same when calling `odeint` yourself (`options=pf.odeint_options()`), or call this module's
`odeint`, the one wrapper every part of diffsolve integrates with: it holds every torchdiffeq quirk
(`step_t` for adaptive methods, an equal-step `grid_constructor` for fixed-step ones, and the
translation of torchdiffeq's `AssertionError("underflow in dt")` into `StepSizeError`).

Finiteness is checked once per solver step (torchdiffeq's `callback_step`) and at the end, never
per score call, so a solve on a GPU makes no host sync per NFE (see `errors.FiniteGuard`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torchdiffeq
from torch import Tensor, nn

from ..divergence import ESTIMATORS, exact_divergence
from ..errors import FiniteGuard, NonFiniteError, StepSizeError
from ..scores import CountedCalls, Score, ScoreCalls, check_problem
from ..sde import SDE
from .grid import fixed_step_grid

__all__ = ["ProbabilityFlowODE", "LikelihoodODE", "odeint", "OdeintOutput"]


class ProbabilityFlowODE(CountedCalls, nn.Module):
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
        self.calls = ScoreCalls(score)
        self.last_t: Tensor | None = None
        self.guard = FiniteGuard()
        self.last_out: Tensor | None = None
        self.accepted = 0
        self.rejected = 0
        self.step_start: tuple[Tensor, Tensor] | None = None  # (t, x) at the start of the last step
        self.step_state_of: Callable[[Tensor], Tensor] | None = None  # x from torchdiffeq's state

    def reset(self) -> None:
        """Zero the NFE and step counters."""
        self.calls.reset()
        self.accepted = self.rejected = 0

    def callback_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        """torchdiffeq calls this before every step: the once-per-step finiteness check."""
        self.guard.check(y0, t0)
        self.step_start = (t0, y0 if self.step_state_of is None else self.step_state_of(y0))

    def failure(self) -> tuple[str, float]:
        """What failed, and when, after a step size collapsed on a non-finite stage: the score itself
        if it is non-finite at the last step's start (re-evaluated once, here, not on every call),
        else the drift; the time is the last finite one (a collapsing step's own time may be NaN)."""
        t = self.last_t
        if self.step_start is not None:
            t0, x0 = self.step_start
            t = t0 if t is None or not bool(torch.isfinite(t)) else t
            ts = torch.as_tensor(t0, dtype=x0.dtype, device=x0.device).clamp(self.eps, self.sde.T)
            with torch.no_grad():
                score = self.score(x0.reshape(-1, *x0.shape[1:]), ts.expand(x0.shape[0]))
            if isinstance(score, Tensor) and not bool(torch.isfinite(score).all()):
                return "the score s(x, t)", float(ts)
        return "the drift", float(t) if t is not None else math.nan

    def callback_accept_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        """torchdiffeq calls this after an adaptive step is accepted."""
        self.accepted += 1

    def callback_reject_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        """torchdiffeq calls this after an adaptive step is rejected."""
        self.rejected += 1

    def odeint_options(self) -> dict[str, Tensor]:
        """Options for torchdiffeq's adaptive solvers that make a step end exactly at eps and at T."""
        return {"step_t": torch.tensor([self.eps, self.sde.T], dtype=torch.float64)}

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        return self.drift_and(t, x)[0]

    def drift_and(self, t: Tensor, x: Tensor, with_divergence: bool = False) -> tuple[Tensor, Tensor | None]:
        """The drift at `(t, x)` (one NFE), and with `with_divergence` the score's divergence from
        the same call (`score.score_and_divergence(x, t)`, e.g. `AnalyticScore`'s closed form)."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).clamp(self.eps, self.sde.T)
        self.last_t = t
        tb = t.expand(x.shape[0])
        divs: list[Tensor] = []
        score_only = None
        if with_divergence:

            def score_only(x_: Tensor, t_: Tensor) -> Tensor:  # evaluate_score's checks on the score part
                value, div_ = self.score.score_and_divergence(x_, t_)  # type: ignore[attr-defined]
                divs.append(div_)
                return value

        score = self.calls.evaluate(x, tb, t, score_only)
        out = self.sde.pf_drift(x, t, score)  # a 0-d t: the coefficients are scalars, not (B,) vectors
        self.last_out = out  # kept (not checked) so that a collapsed step can be traced to a NaN
        return out, divs[0] if divs else None


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

    The exact trace: a score with a `score_and_divergence(x, t)` method (the analytic mixtures'
    `AnalyticScore`) gives $\operatorname{tr}\nabla s$ in closed form with the score, in one call;
    any other score takes D vector-Jacobian products
    (`divergence.exact_divergence`). Wrap a score in a plain function to force the second route.

    Args:
        score: A `Score`, `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE.
        divergence: `"exact"`, `"hutchinson"`, `"hutch++"` or `"deflated"` (see `diffsolve.divergence`).
        probes: For the estimators, fixed probe vectors (see `divergence.make_probes`): `(K, B, *event)`
            for Hutchinson, `(2k, B, *event)` for `"hutch++"` and `"deflated"` (sketch, then residual).
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
        if divergence != "exact" and divergence not in ESTIMATORS:
            names = ", ".join(repr(k) for k in ESTIMATORS)
            raise ValueError(f"divergence must be 'exact', {names}, got {divergence!r}")
        if divergence != "exact" and probes is None:
            raise ValueError(f"divergence={divergence!r} needs probes: see diffsolve.divergence.make_probes")
        self.pf = ProbabilityFlowODE(score, sde, eps)
        self.divergence = divergence
        # A score that knows its own divergence (the analytic mixtures' `score_and_divergence`): the
        # exact trace from the score call itself instead of D vector-Jacobian products.
        self.closed_form = callable(getattr(score, "score_and_divergence", None))
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

    @property
    def guard(self) -> FiniteGuard:
        return self.pf.guard

    def odeint_options(self) -> dict[str, Tensor]:
        """Options for torchdiffeq's adaptive solvers that make a step end exactly at eps and at T."""
        return self.pf.odeint_options()

    def callback_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        """torchdiffeq calls this before every step (flat or as the tuple): the finiteness check."""
        if isinstance(y0, tuple):
            x = y0[0]
            self.pf.step_state_of = lambda _: x  # x, for the diagnosis of a failed step
            y0 = torch.cat([y.reshape(-1) for y in y0])
        self.pf.callback_step(t0, y0, dt)

    def callback_accept_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        """Counts accepted adaptive steps."""
        self.pf.callback_accept_step(t0, y0, dt)

    def callback_reject_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        """Counts rejected adaptive steps."""
        self.pf.callback_reject_step(t0, y0, dt)

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x = state[0]

        def drift(z: Tensor) -> Tensor:
            return self.pf(t, z)

        if self.divergence == "exact" and self.closed_form:
            f, score_div = self.pf.drift_and(t, x, with_divergence=True)
            tb, sde = self.pf.last_t, self.pf.sde  # the clamped time the drift saw
            div = x[0].numel() * sde._f(tb).to(x.dtype) - 0.5 * sde.g2(tb).to(x.dtype) * score_div
        elif self.divergence == "exact":
            f, div = exact_divergence(drift, x)
            self.vjps += x[0].numel()
        else:
            estimator = ESTIMATORS[self.divergence]
            f, div = estimator.fn(drift, x, self.probes)
            self.vjps += estimator.vjps(self.probes.shape[0] // estimator.probe_sets, x[0].numel())
        return f, div


@dataclass
class OdeintOutput:
    """What `odeint` returns.

    Attributes:
        ys: The solution at each output time (a tuple of tensors for a tuple state).
        accepted: Steps taken (accepted steps of an adaptive method).
        rejected: Rejected steps of an adaptive method (0 for fixed-step methods).
    """

    ys: Tensor | tuple[Tensor, ...]
    accepted: int
    rejected: int


def _on(grid: Tensor) -> Callable[[Any, Tensor, Tensor], Tensor]:
    """A torchdiffeq `grid_constructor` that steps on `grid` (negated when torchdiffeq integrates backwards)."""

    def grid_constructor(func: Any, y0: Tensor, t: Tensor) -> Tensor:
        sign = 1.0 if float(t[0]) == float(grid[0]) else -1.0
        return (sign * grid).to(device=t.device, dtype=t.dtype)

    return grid_constructor


def odeint(
    func: ProbabilityFlowODE | LikelihoodODE,
    y0: Tensor | tuple[Tensor, ...],
    t: Tensor,
    *,
    method: str,
    steps: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    adjoint: bool = False,
    adjoint_params: Sequence[Tensor] | None = None,
    solver: str | None = None,
    grid: Tensor | None = None,
) -> OdeintOutput:
    """Integrate `func` with torchdiffeq: the one recipe `sample`, `log_likelihood` and `analysis` use.

    A fixed-step method (`steps` given) steps on `steps` equal intervals between `t[0]` and `t[-1]`,
    whatever the output times; an adaptive one (`rtol`/`atol` given) is told to end a step exactly
    at eps and at T (`step_t`). The state is checked for NaN/Inf once per step.

    Args:
        func: A `ProbabilityFlowODE` or `LikelihoodODE`.
        y0: The initial state (a tuple for `LikelihoodODE`).
        t: Output times, monotone (decreasing from T to sample, increasing to encode).
        method: A torchdiffeq method name (`"dopri5"`, `"rk4"`, ...).
        steps: Number of equal steps of a fixed-step method.
        rtol: Relative tolerance of an adaptive method.
        atol: Absolute tolerance of an adaptive method.
        adjoint: Use `torchdiffeq.odeint_adjoint` (gradients by the adjoint ODE).
        adjoint_params: The parameters the adjoint differentiates (default: the score's, if a module).
        solver: The name errors report (default `"ode:<method>"`).
        grid: The step grid of a fixed-step method (from `t[0]` to `t[-1]`), instead of `steps`
            equal intervals.

    Returns:
        An `OdeintOutput`.

    Raises:
        StepSizeError: If an adaptive step size underflows (torchdiffeq's "underflow in dt").
        NonFiniteError: If the state becomes NaN/Inf; names the step's t and the solver.
    """
    name = solver or f"ode:{method}"
    pf = func.pf if isinstance(func, LikelihoodODE) else func
    kwargs: dict[str, Any] = {}
    if steps is not None:
        options: dict[str, Any] = {"grid_constructor": fixed_step_grid(steps) if grid is None else _on(grid)}
    else:
        kwargs = {"rtol": rtol, "atol": atol}
        options = {} if method == "scipy_solver" else pf.odeint_options()
    if adjoint:
        integrate = torchdiffeq.odeint_adjoint
        kwargs["adjoint_params"] = (
            tuple(func.parameters()) if adjoint_params is None else tuple(adjoint_params)
        )
    else:
        integrate = torchdiffeq.odeint
    pf.accepted = pf.rejected = 0
    try:
        with warnings.catch_warnings():
            # Fixed-step methods have no accept/reject callbacks; torchdiffeq warns that they are unused.
            warnings.filterwarnings("ignore", message="Solver .* does not support callbacks")
            ys = integrate(func, y0, t, method=method, options=options, **kwargs)
        last = ys[-1] if isinstance(ys, Tensor) else torch.cat([y[-1].reshape(-1) for y in ys])
        pf.guard.check(last, t[-1])
        pf.guard.raise_if_failed()
    except NonFiniteError as err:
        raise err.with_solver(name) from None
    except AssertionError as err:  # torchdiffeq reports a collapsed step size by assertion
        if "underflow in dt" not in str(err) or pf.last_t is None:
            raise
        try:
            pf.guard.raise_if_failed()
        except NonFiniteError as bad:
            raise bad.with_solver(name) from None
        if pf.last_out is not None and not bool(torch.isfinite(pf.last_out).all()):
            # A non-finite stage fails every attempt until the step size collapses: name the cause.
            raise NonFiniteError(*pf.failure(), name) from None
        raise StepSizeError(float(pf.last_t), name) from err
    accepted = pf.accepted if steps is None else steps
    return OdeintOutput(ys, accepted, pf.rejected)
