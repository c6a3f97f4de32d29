r"""Jolicoeur-Martineau et al.'s adaptive reverse-SDE solver ("Gotta Go Fast").

References:
    Jolicoeur-Martineau, Li, Piché-Taillefer, Kachman, Mitliagkas, "Gotta Go Fast When Generating
    Data with Score-Based Models", 2021 (Algorithm 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from ..adapters import KeyedNoise
from ..errors import NonFiniteError, StepSizeError
from ..scores import Score
from ..sde import SDE
from .base import ScoreLedger, SolveOutput, SolveRequest
from .noise import NOISE_REMOVAL
from .registry import SOLVERS, Solver

__all__ = ["adaptive_sde"]

# Gotta Go Fast's own tolerances (Jolicoeur-Martineau et al. 2021, Section 4): an order-1
# stochastic solver at 1e-5 would take millions of steps.
DEFAULT_RTOL, DEFAULT_ATOL = 0.05, 0.0078


def adaptive_sde(
    score: Score,
    sde: SDE,
    x_T: Tensor,
    *,
    eps: float,
    noise: KeyedNoise,
    rtol: float,
    atol: float,
    h_init: float = 0.01,
    safety: float = 0.9,
    exponent: float = 0.9,
    return_trajectory: bool = False,
    callback: Callable[[Tensor], None] | None = None,
    noise_removal: bool = False,
) -> SolveOutput:
    r"""Jolicoeur-Martineau et al.'s adaptive reverse-SDE solver ("Gotta Go Fast", Algorithm 1).

    From forward time $t$ to $t - h$, with one Brownian increment $\Delta W$ for both stages:
    $x' = x + h\,b(x, t) + g(t)\Delta W$ (Euler–Maruyama), $\tilde x = x + h\,b(x', t - h) + g(t - h)\Delta W$,
    $x'' = (x' + \tilde x)/2$ (improved Euler), where $b = g^2 s - f x$ is the reverse drift.
    The error $E = \mathrm{RMS}\big((x' - x'')/\delta\big)$, $\delta = \max(\text{atol},
    \text{rtol}\cdot\max(|x'|, |x'_{\text{prev}}|))$, is taken over the whole batch (one step size for
    all samples, so that they all follow one Brownian path); the step is accepted when $E \le 1$ and
    the state becomes $x''$. The next step is $h \leftarrow \min(t - \epsilon,\ \theta h E^{-r})$
    with $\theta$ = `safety` and $r$ = `exponent`. The increments come from one
    Brownian path (`adapters.ReverseBrownian`, the path of the `sde:` solvers), so a rejected step's smaller
    retry queries the same path: rejection does not change the noise the solution sees.

    With `noise_removal` a step that ends at $\epsilon$ takes $\Delta W = 0$: the run ends with the
    noise-free mean of its last step (samplers/noise.py). It is off by default here, unlike the
    fixed-step samplers: the error control makes the last step long (ring2d, rtol = atol = 0.02: from
    t = 0.0215 to 0.001), and dropping that much noise over-concentrates the samples (mean log p_eps
    gap +0.077 ± 0.007 nats with it, +0.013 ± 0.007 without; n = 20 000).

    Cost: 2 NFE per accepted step, 1 per rejected one (the score at $(x, t)$ is kept for the retry).
    Strong and weak order 1.

    Args:
        score: A `Score`, called as `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE.
        x_T: Initial state at $T$, `(B, *event)`.
        eps: Final forward time.
        noise: The solve's randomness (`KeyedNoise(seed, row_start)`): the Brownian path at `x_T`'s
            global rows, so chunks and ranks never share noise.
        rtol: Relative tolerance (Jolicoeur-Martineau et al. use 0.05 for images).
        atol: Absolute tolerance, in the data's units.
        h_init: First step size, in $t$.
        safety: The factor $\theta$ of the step-size update.
        exponent: The exponent $r$ of the step-size update.
        return_trajectory: Also keep the state after every accepted step.
        callback: Called with each forward time the score is evaluated at.
        noise_removal: End with the noise-free mean of the last step (off by default: see above).

    Returns:
        A `SolveOutput` (its `times` are those of the accepted steps).

    Raises:
        StepSizeError: If the step size collapses.
        NonFiniteError: If the state becomes non-finite.
    """
    path = noise.path(x_T, sde, eps)
    ledger = ScoreLedger(score, sde, callback)
    T = sde.T
    accepted = rejected = 0

    def drift(x: Tensor, t: float, s: Tensor) -> Tensor:
        # reverse_drift is f x - g^2 s in forward time; stepping down in t negates it
        return -sde.reverse_drift(x, torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device), s)

    def g(t: float) -> float:
        return math.sqrt(float(sde.g2(t)))

    x, t, h = x_T, T, min(h_init, T - eps)
    x_prev = x_T
    s_x = ledger(x, t)
    traj, times = ([x], [t]) if return_trajectory else (None, None)
    while t > eps:
        if h < 1e-10 * T:
            raise StepSizeError(t, "adaptive_sde")
        t_next = eps if t - h <= eps * (1 + 1e-12) else t - h
        h = t - t_next
        dw = 0.0 if noise_removal and t_next == eps else path.increment(t, t_next)
        x1 = x + h * drift(x, t, s_x) + g(t) * dw
        s1 = ledger(x1, t_next)
        x_tilde = x + h * drift(x1, t_next, s1) + g(t_next) * dw
        x2 = (x1 + x_tilde) / 2
        delta = (rtol * torch.maximum(x1.abs(), x_prev.abs())).clamp_min(atol)
        err = float(((x1 - x2) / delta).square().mean().sqrt())
        if not math.isfinite(err):
            raise NonFiniteError("the state", t_next)
        if err <= 1.0:
            accepted += 1
            x, x_prev, t = x2, x1, t_next
            if t > eps:
                s_x = ledger(x, t)
            if traj is not None:
                traj.append(x)
                times.append(t)
        else:
            rejected += 1
        h = min(t - eps, safety * h * max(err, 1e-10) ** -exponent) if t > eps else 0.0
    return SolveOutput(
        samples=x,
        nfe=ledger.nfe,
        sample_evaluations=ledger.rows,
        trajectory=torch.stack(traj) if traj is not None else None,
        times=torch.tensor(times, dtype=torch.float64) if times is not None else None,
        accepted=accepted,
        rejected=rejected,
    )


def _run(req: SolveRequest) -> SolveOutput:
    return adaptive_sde(
        req.score, req.sde, req.x_T, eps=req.eps, noise=req.noise, rtol=req.rtol, atol=req.atol,
        return_trajectory=req.return_trajectory, callback=req.callback,
        noise_removal=req.options["noise_removal"],
    )  # fmt: skip


SOLVERS["adaptive_sde"] = Solver(
    "adaptive_sde", "diffusion", _run, nfe_per_step=2, nfe_per_rejected_step=1, strong_order=1.0,
    adaptive=True, stochastic=True, options={"noise_removal": replace(NOISE_REMOVAL, default=False)},
    default_rtol=DEFAULT_RTOL, default_atol=DEFAULT_ATOL,
    budgets=(0.5, 0.2, 0.1, 0.05, 0.02),
    description="Jolicoeur-Martineau et al.'s adaptive reverse-SDE solver (EM / improved Euler pair, error "
    "control, one Brownian path)",
)  # fmt: skip
