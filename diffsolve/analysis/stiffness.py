r"""Stiffness and step-size diagnostics: where adaptive PF-ODE solvers spend their steps, and the
spectrum of the drift's Jacobian along trajectories."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .. import memory
from .._validation import check_positive, check_seed
from ..adapters import ProbabilityFlowODE, odeint
from ..samplers.registry import solvers
from ..sampling import prior_draws
from ..scores import Score, check_problem
from ..sde import SDE

__all__ = ["StepDiagnostics", "step_diagnostics", "JacobianSpectrum", "jacobian_spectrum"]


@dataclass
class StepDiagnostics:
    """Where an adaptive PF-ODE solve spends its steps (from torchdiffeq's step callbacks).

    Attributes:
        accepted: `(t0, h)` of every accepted step, forward time t0 at the step's start, h > 0.
        rejected: `(t0, h)` of every rejected attempt.
        nfe: Score evaluations of the solve.
        settings: solver, rtol, atol, eps, n.
    """

    accepted: list[tuple[float, float]]
    rejected: list[tuple[float, float]]
    nfe: int
    settings: dict[str, Any]

    def attempts_per_unit_time(self, bins: Sequence[float]) -> list[float]:
        """Attempted steps (accepted and rejected) starting in each bin `[bins[i], bins[i+1])`, per
        unit of t (bins increasing; the last bin includes its right end)."""
        counts = []
        for lo, hi in zip(bins, bins[1:], strict=False):
            k = sum(
                1 for t, _ in self.accepted + self.rejected if lo <= t < hi or (hi == bins[-1] and t == hi)
            )
            counts.append(k / (hi - lo))
        return counts

    def nfe_per_unit_time(self, bins: Sequence[float]) -> list[float]:
        """Score evaluations per unit of t in each bin: the solve's NFE shared out in proportion to the
        attempted steps that start in the bin (each attempt of an explicit RK method costs the same)."""
        attempts = len(self.accepted) + len(self.rejected)
        return [a * self.nfe / attempts for a in self.attempts_per_unit_time(bins)] if attempts else []


def step_diagnostics(
    score: Score,
    sde: SDE,
    *,
    solver: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    n: int = 1000,
    seed: int = 0,
    eps: float = 1e-3,
    event_shape: tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
) -> StepDiagnostics:
    r"""Solve the probability-flow ODE with an adaptive torchdiffeq method and record every step.

    torchdiffeq's `callback_accept_step` / `callback_reject_step` hooks record the start time and
    size of each accepted and rejected step, so the result shows where the solver spends its work.

    Args:
        score: A `Score`, called as `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE.
        solver: An adaptive Runge–Kutta method of torchdiffeq: `"dopri5"`, `"dopri8"`, `"bosh3"`,
            `"fehlberg2"` or `"adaptive_heun"`.
        rtol: Relative tolerance.
        atol: Absolute tolerance.
        n: Prior draws in the batch (torchdiffeq takes one step size for the whole batch).
        seed: Seed of the prior draws.
        eps: Final forward time.
        event_shape: Shape of one sample; taken from the score when it says it (`AnalyticScore` does).
        dtype: dtype of the solve (default: torch's default dtype).
        device: Where the solve runs (a network score's device).

    Returns:
        A `StepDiagnostics`.

    Raises:
        ValueError: If `solver` is not an adaptive Runge–Kutta method of torchdiffeq.
    """
    valid = [s.name.removeprefix("ode:") for s in solvers() if s.adaptive and s.backend == "torchdiffeq"]
    solver = solver.removeprefix("ode:") if isinstance(solver, str) else solver
    if solver not in valid:
        raise ValueError(
            f"solver must be an adaptive torchdiffeq method ({', '.join(valid)}), got {solver!r}"
        )
    check_positive(rtol, "rtol")
    check_positive(atol, "atol")
    if not rtol < 1:
        raise ValueError(f"rtol must lie in (0, 1), got {rtol!r}")
    event_shape = _check_common(score, sde, n, seed, eps, event_shape, "step_diagnostics", 16)

    class _Recording(ProbabilityFlowODE):
        def __init__(self) -> None:
            super().__init__(score, sde, eps)
            self.accepted_steps: list[tuple[float, float]] = []
            self.rejected_steps: list[tuple[float, float]] = []

        def callback_accept_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
            super().callback_accept_step(t0, y0, dt)
            self.accepted_steps.append((float(t0), abs(float(dt))))

        def callback_reject_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
            super().callback_reject_step(t0, y0, dt)
            self.rejected_steps.append((float(t0), abs(float(dt))))

    ode = _Recording()
    x_T = prior_draws(sde, (n, *event_shape), seed, dtype=dtype, device=device)
    with torch.no_grad():
        odeint(ode, x_T, torch.tensor([sde.T, eps], device=x_T.device), method=solver, rtol=rtol, atol=atol)
    settings = {"solver": solver, "rtol": rtol, "atol": atol, "eps": eps, "n": n, "seed": seed}
    return StepDiagnostics(ode.accepted_steps, ode.rejected_steps, ode.nfe, settings)


@dataclass
class JacobianSpectrum:
    """Eigenvalues of the PF-ODE drift's Jacobian along trajectories.

    Attributes:
        times: Forward times, from T down to eps, shape `(m,)`.
        spectral_radius: Per time, the median over paths of max |lambda|, shape `(m,)`.
        min_real: Per time, the median over paths of the most negative real part, shape `(m,)`.
        max_real: Per time, the median over paths of the largest real part, shape `(m,)`.
    """

    times: Tensor
    spectral_radius: Tensor
    min_real: Tensor
    max_real: Tensor


def _check_common(
    score: Score, sde: SDE, n: int, seed: int, eps: float, event_shape: object, what: str, states: int
) -> tuple[int, ...]:
    """The checks both diagnostics make before any work; returns the event shape."""
    check_problem(score, sde, eps)
    check_positive(n, "n", integer=True)
    check_seed(seed)
    event_shape = tuple(event_shape or getattr(score, "event_shape", None) or ())
    if not event_shape:
        raise ValueError("event_shape is needed: this score does not say its event shape")
    memory.check_solve(
        f"{what}(n={n})",
        n,
        math.prod(event_shape),
        torch.float64,
        "cpu",
        adaptive=True,
        stochastic=False,
        stored_states=states,
    )
    return event_shape


def jacobian_spectrum(
    score: Score,
    sde: SDE,
    *,
    n: int = 64,
    points: int = 60,
    seed: int = 0,
    eps: float = 1e-3,
    event_shape: tuple[int, ...] | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> JacobianSpectrum:
    r"""Eigenvalues of $\partial f_{PF}/\partial x$, $f_{PF}(x, t) = f(t)x - \tfrac12 g(t)^2 s(x, t)$,
    along `n` float64 PF-ODE trajectories at `points` times spaced uniformly in log t from T to eps.

    The full Jacobian is formed (d vector-Jacobian products per point), so this is for small d.
    Reads where the problem stiffens: as t -> 0 the score's Jacobian grows like
    $-1/(\alpha_t^2 s^2 + \sigma_t^2)$ for a component of width s.

    Args:
        score: A `Score`, called as `score(x, t)` with `t` of shape `(B,)`; differentiable in `x`.
        sde: The forward SDE.
        n: Number of trajectories (prior draws).
        points: Number of times, log-spaced from T down to eps.
        seed: Seed of the prior draws.
        eps: The last time.
        event_shape: Shape of one sample; taken from the score when it says it.
        dtype: dtype of the trajectories and Jacobians (float64 resolves the stiff end best).
        device: Where they are computed (a network score's device).

    Returns:
        A `JacobianSpectrum`.

    Raises:
        ValueError: If the event shape is unknown or has more than 256 dimensions.
    """
    check_positive(points, "points", integer=True)
    event_shape = _check_common(score, sde, n, seed, eps, event_shape, "jacobian_spectrum", 16 + points)
    d = math.prod(event_shape)
    if d > 256:
        raise ValueError(f"jacobian_spectrum forms the full d x d Jacobian; d = {d} is too large (<= 256)")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch dtype, got {dtype!r}")
    times = torch.logspace(math.log10(sde.T), math.log10(eps), points, dtype=torch.float64)
    x_T = prior_draws(sde, (n, *event_shape), seed, dtype=dtype, device=device)
    ode = ProbabilityFlowODE(score, sde, eps)
    with torch.no_grad():
        states = odeint(ode, x_T, times, method="dopri5", rtol=1e-8, atol=1e-8).ys
    rad, lo, hi = [], [], []
    for t, x in zip(times, states, strict=True):
        xf = x.reshape(n, d).clone().requires_grad_(True)
        tb = torch.full((n,), float(t), dtype=x.dtype, device=x.device)
        with torch.enable_grad():
            s = score(xf.reshape(n, *event_shape), tb).reshape(n, d)
            drift = sde.pf_drift(xf, tb, s)
            rows = [torch.autograd.grad(drift[:, i].sum(), xf, retain_graph=i < d - 1)[0] for i in range(d)]
        jac = torch.stack(rows, 1)  # (n, d, d): jac[b, i, j] = d drift_i / d x_j
        ev = torch.linalg.eigvals(jac)
        rad.append(ev.abs().max(1).values.median())
        lo.append(ev.real.min(1).values.median())
        hi.append(ev.real.max(1).values.median())
    return JacobianSpectrum(times, *(torch.stack(v).cpu().double() for v in (rad, lo, hi)))
