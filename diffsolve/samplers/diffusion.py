r"""The diffusion-specific samplers people compare against: DDIM, DPM-Solver, DPM-Solver++, EDM, Gotta Go Fast.

All of them use the marginal $x_t = \alpha_t x_0 + \sigma_t z$ of the forward SDE, its half
log-SNR $\lambda_t = \log(\alpha_t/\sigma_t)$, and the score only through

$$\hat\epsilon(x, t) = -\sigma_t\, s(x, t), \qquad \hat x_0(x, t) = (x + \sigma_t^2 s(x, t))/\alpha_t.$$

They hold for every SDE here (VP, sub-VP, VE): each has a linear drift $f(t)x$ and
$g^2 = \mathrm{d}\sigma^2/\mathrm{d}t - 2f\sigma^2$, so the probability-flow ODE is, in
$\tilde x = x/\alpha$ against $\tilde\sigma = \sigma/\alpha = e^{-\lambda}$,
$\mathrm{d}\tilde x/\mathrm{d}\tilde\sigma = \hat\epsilon$ (Karras et al. 2022, eq. 4; Lu et al. 2022, eq. 3.4).
Each sampler runs on a grid $T = t_0 > \dots > t_N = \epsilon$ from `grids.time_grid`; one score
call on the batch is one NFE.

| sampler | update from $s = t_i$ to $t = t_{i+1}$, $h = \lambda_t - \lambda_s$ | order | NFE/step |
| --- | --- | ---: | ---: |
| `ddim` | $x_t = \frac{\alpha_t}{\alpha_s} x_s - \sigma_t (e^h - 1)\,\hat\epsilon(x_s, s)$ | 1 | 1 |
| `dpm_solver2` | DPM-Solver-2, intermediate point at $\lambda_s + h/2$ | 2 | 2 |
| `dpm_solver3` | DPM-Solver-3, intermediate points at $\lambda_s + h/3$, $\lambda_s + 2h/3$ | 3 | 3 |
| `dpm_solver++2m` | multistep, $x_t = \frac{\sigma_t}{\sigma_s} x_s - \alpha_t (e^{-h} - 1) D$ | 2 | 1 |
| `edm_heun` | Heun's method on $\mathrm{d}\tilde x/\mathrm{d}\tilde\sigma = \hat\epsilon$ | 2 | 2 |
| `adaptive_sde` | embedded Euler–Maruyama / improved Euler pair on the reverse SDE | 1 | 2 per attempt |

References:
    Song, Meng, Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
    Lu, Zhou, Bao, Chen, Li, Zhu, "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model
    Sampling in Around 10 Steps", NeurIPS 2022 (Algorithms 1 and 2).
    Lu et al., "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
    2022 (Algorithm 2, 2M).
    Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based Generative
    Models", NeurIPS 2022 (Algorithm 1).
    Jolicoeur-Martineau, Li, Piché-Taillefer, Kachman, Mitliagkas, "Gotta Go Fast When Generating
    Data with Score-Based Models", 2021 (Algorithm 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..adapters import ReverseSDE
from ..errors import NonFiniteError, StepSizeError
from ..scores import Score
from ..sde import SDE
from .generic import ScoreLedger, SolveOutput
from .grids import log_snr, t_of_log_snr

__all__ = ["ddim", "dpm_solver2", "dpm_solver3", "dpm_solver_pp_2m", "edm_heun", "adaptive_sde"]


def _run(
    step: Callable[[Tensor, int], Tensor],
    x_T: Tensor,
    grid: Tensor,
    ledger: ScoreLedger,
    return_trajectory: bool,
) -> SolveOutput:
    x = x_T
    traj = [x] if return_trajectory else None
    for i in range(len(grid) - 1):
        x = step(x, i)
        if traj is not None:
            traj.append(x)
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError("the state", float(grid[-1]))
    return SolveOutput(
        samples=x,
        nfe=ledger.nfe,
        trajectory=torch.stack(traj) if traj is not None else None,
        times=grid if return_trajectory else None,
    )


def ddim(
    score: Score,
    sde: SDE,
    x_T: Tensor,
    grid: Tensor,
    *,
    return_trajectory: bool = False,
    callback: Callable[[Tensor], None] | None = None,
) -> SolveOutput:
    r"""Deterministic DDIM (= DPM-Solver-1), the exponential Euler step of the PF-ODE in $\lambda$.

    $x_t = (\alpha_t/\alpha_s)\,x_s - \sigma_t\,(e^{h} - 1)\,\hat\epsilon(x_s, s)$. Order 1, 1 NFE per step.

    Args:
        score: A `Score`, called as `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE; only its $\alpha_t$ and $\sigma_t$ are used.
        x_T: Initial state at the grid's first time, `(B, *event)`.
        grid: Decreasing times $T = t_0 > \dots > t_N = \epsilon$ (`grids.time_grid`).
        return_trajectory: Also keep the state at every grid time.
        callback: Called with each forward time `t` (0-d tensor) the score is evaluated at.

    Returns:
        A `SolveOutput`: the samples at $\epsilon$, the NFE, and the trajectory if asked for.
    """
    ledger = ScoreLedger(score, sde, callback)
    lam = log_snr(sde, grid)

    def step(x: Tensor, i: int) -> Tensor:
        s, t = float(grid[i]), float(grid[i + 1])
        (a_s, _), (a_t, sig_t) = ledger.coefficients(s), ledger.coefficients(t)
        h = float(lam[i + 1] - lam[i])
        return (a_t / a_s) * x - sig_t * math.expm1(h) * ledger.eps(x, s)

    return _run(step, x_T, grid, ledger, return_trajectory)


def dpm_solver2(
    score: Score,
    sde: SDE,
    x_T: Tensor,
    grid: Tensor,
    *,
    return_trajectory: bool = False,
    callback: Callable[[Tensor], None] | None = None,
) -> SolveOutput:
    r"""Single-step DPM-Solver-2 (Lu et al. 2022, Algorithm 1, $r_1 = 1/2$). Order 2, 2 NFE per step.

    With $s_1$ at $\lambda_s + h/2$:
    $u = \frac{\alpha_{s_1}}{\alpha_s} x_s - \sigma_{s_1}(e^{h/2} - 1)\hat\epsilon_s$,
    $x_t = \frac{\alpha_t}{\alpha_s} x_s - \sigma_t (e^h - 1)\,\hat\epsilon(u, s_1)$.

    Args:
        score: A `Score`, called as `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE; only its $\alpha_t$ and $\sigma_t$ are used.
        x_T: Initial state at the grid's first time, `(B, *event)`.
        grid: Decreasing times $T = t_0 > \dots > t_N = \epsilon$ (`grids.time_grid`).
        return_trajectory: Also keep the state at every grid time.
        callback: Called with each forward time `t` (0-d tensor) the score is evaluated at.

    Returns:
        A `SolveOutput`: the samples at $\epsilon$, the NFE, and the trajectory if asked for.
    """
    ledger = ScoreLedger(score, sde, callback)
    lam = log_snr(sde, grid)
    mids = t_of_log_snr(sde, (lam[:-1] + lam[1:]) / 2, lo=float(grid[-1]), hi=float(grid[0]))

    def step(x: Tensor, i: int) -> Tensor:
        s, s1, t = float(grid[i]), float(mids[i]), float(grid[i + 1])
        (a_s, _), (a_1, sig_1), (a_t, sig_t) = (ledger.coefficients(v) for v in (s, s1, t))
        h = float(lam[i + 1] - lam[i])
        e_s = ledger.eps(x, s)
        u = (a_1 / a_s) * x - sig_1 * math.expm1(h / 2) * e_s
        return (a_t / a_s) * x - sig_t * math.expm1(h) * ledger.eps(u, s1)

    return _run(step, x_T, grid, ledger, return_trajectory)


def dpm_solver3(
    score: Score,
    sde: SDE,
    x_T: Tensor,
    grid: Tensor,
    *,
    return_trajectory: bool = False,
    callback: Callable[[Tensor], None] | None = None,
) -> SolveOutput:
    r"""Single-step DPM-Solver-3 (Lu et al. 2022, Algorithm 2, $r_1 = 1/3$, $r_2 = 2/3$). Order 3, 3 NFE per step.

    With $\phi_1(z) = (e^z - 1)/z$ and $D_k = \hat\epsilon(u_k, s_k) - \hat\epsilon_s$:
    $u_1 = \frac{\alpha_{s_1}}{\alpha_s}x_s - \sigma_{s_1}(e^{r_1 h} - 1)\hat\epsilon_s$;
    $u_2 = \frac{\alpha_{s_2}}{\alpha_s}x_s - \sigma_{s_2}(e^{r_2 h} - 1)\hat\epsilon_s
    - \frac{\sigma_{s_2} r_2}{r_1}(\phi_1(r_2 h) - 1) D_1$;
    $x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t(e^h - 1)\hat\epsilon_s - \frac{\sigma_t}{r_2}(\phi_1(h) - 1) D_2$.

    Args:
        score: A `Score`, called as `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE; only its $\alpha_t$ and $\sigma_t$ are used.
        x_T: Initial state at the grid's first time, `(B, *event)`.
        grid: Decreasing times $T = t_0 > \dots > t_N = \epsilon$ (`grids.time_grid`).
        return_trajectory: Also keep the state at every grid time.
        callback: Called with each forward time `t` (0-d tensor) the score is evaluated at.

    Returns:
        A `SolveOutput`: the samples at $\epsilon$, the NFE, and the trajectory if asked for.
    """
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    ledger = ScoreLedger(score, sde, callback)
    lam = log_snr(sde, grid)
    lo, hi = float(grid[-1]), float(grid[0])
    s1s = t_of_log_snr(sde, lam[:-1] + r1 * (lam[1:] - lam[:-1]), lo=lo, hi=hi)
    s2s = t_of_log_snr(sde, lam[:-1] + r2 * (lam[1:] - lam[:-1]), lo=lo, hi=hi)

    def phi1(z: float) -> float:
        return math.expm1(z) / z

    def step(x: Tensor, i: int) -> Tensor:
        s, s1, s2, t = float(grid[i]), float(s1s[i]), float(s2s[i]), float(grid[i + 1])
        (a_s, _), (a_1, sig_1), (a_2, sig_2), (a_t, sig_t) = (ledger.coefficients(v) for v in (s, s1, s2, t))
        h = float(lam[i + 1] - lam[i])
        e_s = ledger.eps(x, s)
        u1 = (a_1 / a_s) * x - sig_1 * math.expm1(r1 * h) * e_s
        d1 = ledger.eps(u1, s1) - e_s
        u2 = (a_2 / a_s) * x - sig_2 * math.expm1(r2 * h) * e_s - (sig_2 * r2 / r1) * (phi1(r2 * h) - 1) * d1
        d2 = ledger.eps(u2, s2) - e_s
        return (a_t / a_s) * x - sig_t * math.expm1(h) * e_s - (sig_t / r2) * (phi1(h) - 1) * d2

    return _run(step, x_T, grid, ledger, return_trajectory)


def dpm_solver_pp_2m(
    score: Score,
    sde: SDE,
    x_T: Tensor,
    grid: Tensor,
    *,
    return_trajectory: bool = False,
    callback: Callable[[Tensor], None] | None = None,
) -> SolveOutput:
    r"""Multistep DPM-Solver++(2M) in data prediction (Lu et al. 2022b, Algorithm 2). Order 2, 1 NFE per step.

    $x_t = \frac{\sigma_t}{\sigma_s} x_s - \alpha_t (e^{-h} - 1)\,D$ with
    $D = (1 + \tfrac{1}{2r})\hat x_0(x_s, s) - \tfrac{1}{2r}\hat x_0^{\text{prev}}$, $r = h_{\text{prev}}/h$;
    the first step uses $D = \hat x_0(x_s, s)$ (first order).

    Args:
        score: A `Score`, called as `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE; only its $\alpha_t$ and $\sigma_t$ are used.
        x_T: Initial state at the grid's first time, `(B, *event)`.
        grid: Decreasing times $T = t_0 > \dots > t_N = \epsilon$ (`grids.time_grid`).
        return_trajectory: Also keep the state at every grid time.
        callback: Called with each forward time `t` (0-d tensor) the score is evaluated at.

    Returns:
        A `SolveOutput`: the samples at $\epsilon$, the NFE, and the trajectory if asked for.
    """
    ledger = ScoreLedger(score, sde, callback)
    lam = log_snr(sde, grid)
    prev: list[tuple[Tensor, float]] = []

    def step(x: Tensor, i: int) -> Tensor:
        s, t = float(grid[i]), float(grid[i + 1])
        (_, sig_s), (a_t, sig_t) = ledger.coefficients(s), ledger.coefficients(t)
        h = float(lam[i + 1] - lam[i])
        d = ledger.x0(x, s)
        if prev:
            x0_prev, h_prev = prev[0]
            r = h_prev / h
            big_d = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * x0_prev
        else:
            big_d = d
        prev[:] = [(d, h)]
        return (sig_t / sig_s) * x - a_t * math.expm1(-h) * big_d

    return _run(step, x_T, grid, ledger, return_trajectory)


def edm_heun(
    score: Score,
    sde: SDE,
    x_T: Tensor,
    grid: Tensor,
    *,
    return_trajectory: bool = False,
    callback: Callable[[Tensor], None] | None = None,
) -> SolveOutput:
    r"""Karras et al.'s deterministic Heun sampler (EDM, Algorithm 1). Order 2, 2 NFE per step.

    In $\tilde x = x/\alpha_t$ against $\tilde\sigma = \sigma_t/\alpha_t$ the PF-ODE is
    $\mathrm{d}\tilde x/\mathrm{d}\tilde\sigma = \hat\epsilon(x, t)$; each step is Heun's method
    (explicit trapezoid) on it. Every step, the last included, takes the Heun correction (the run
    ends at eps > 0, never at $\tilde\sigma = 0$). Use it with the Karras grid (`"karras"`, rho = 7).

    Args:
        score: A `Score`, called as `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE; only its $\alpha_t$ and $\sigma_t$ are used.
        x_T: Initial state at the grid's first time, `(B, *event)`.
        grid: Decreasing times $T = t_0 > \dots > t_N = \epsilon$ (`grids.time_grid`).
        return_trajectory: Also keep the state at every grid time.
        callback: Called with each forward time `t` (0-d tensor) the score is evaluated at.

    Returns:
        A `SolveOutput`: the samples at $\epsilon$, the NFE, and the trajectory if asked for.
    """
    ledger = ScoreLedger(score, sde, callback)
    alpha, sigma = sde.marginal(grid)
    sig_tilde = sigma / alpha

    def step(x: Tensor, i: int) -> Tensor:
        s, t = float(grid[i]), float(grid[i + 1])
        a_s, a_t = float(alpha[i]), float(alpha[i + 1])
        ds = float(sig_tilde[i + 1] - sig_tilde[i])
        xt = x / a_s
        d = ledger.eps(x, s)
        x_euler = xt + ds * d
        d_next = ledger.eps(a_t * x_euler, t)
        return a_t * (xt + ds * (d + d_next) / 2)

    return _run(step, x_T, grid, ledger, return_trajectory)


def adaptive_sde(
    score: Score,
    sde: SDE,
    x_T: Tensor,
    *,
    eps: float,
    seed: int,
    rtol: float,
    atol: float,
    h_init: float = 0.01,
    safety: float = 0.9,
    exponent: float = 0.9,
    return_trajectory: bool = False,
    callback: Callable[[Tensor], None] | None = None,
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
    `torchsde.BrownianInterval` (`ReverseSDE.brownian_motion(seed)`), so a rejected step's smaller
    retry queries the same path: rejection does not change the noise the solution sees.

    Cost: 2 NFE per attempt, 1 for a retry after a rejection (the score at $(x, t)$ is kept).
    Strong and weak order 1.

    Args:
        score: A `Score`, called as `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE.
        x_T: Initial state at $T$, `(B, *event)`.
        eps: Final forward time.
        seed: Entropy of the Brownian path.
        rtol: Relative tolerance (Jolicoeur-Martineau et al. use 0.05 for images).
        atol: Absolute tolerance, in the data's units.
        h_init: First step size, in $t$.
        safety: The factor $\theta$ of the step-size update.
        exponent: The exponent $r$ of the step-size update.
        return_trajectory: Also keep the state after every accepted step.
        callback: Called with each forward time the score is evaluated at.

    Returns:
        A `SolveOutput` (its `times` are those of the accepted steps).

    Raises:
        StepSizeError: If the step size collapses.
        NonFiniteError: If the state becomes non-finite.
    """
    b = x_T.shape[0]
    rev = ReverseSDE(score, sde, eps)
    bm = rev.brownian_motion(x_T.reshape(b, -1), seed)
    ledger = ScoreLedger(score, sde, callback)
    T = sde.T

    def drift(x: Tensor, t: float, s: Tensor) -> Tensor:
        # reverse_drift is f x - g^2 s in forward time; stepping down in t negates it
        return -sde.reverse_drift(x, torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device), s)

    def g(t: float) -> float:
        return float(sde.diffusion(t))

    x, t, h = x_T, T, min(h_init, T - eps)
    x_prev = x_T
    s_x = ledger(x, t)
    traj, times = ([x], [t]) if return_trajectory else (None, None)
    while t > eps:
        if h < 1e-10 * T:
            raise StepSizeError(t, "adaptive_sde")
        t_next = eps if t - h <= eps * (1 + 1e-12) else t - h
        h = t - t_next
        dw = bm(T - t, T - t_next).reshape(x.shape)
        x1 = x + h * drift(x, t, s_x) + g(t) * dw
        s1 = ledger(x1, t_next)
        x_tilde = x + h * drift(x1, t_next, s1) + g(t_next) * dw
        x2 = (x1 + x_tilde) / 2
        delta = (rtol * torch.maximum(x1.abs(), x_prev.abs())).clamp_min(atol)
        err = float(((x1 - x2) / delta).square().mean().sqrt())
        if not math.isfinite(err):
            raise NonFiniteError("the state", t_next)
        if err <= 1.0:
            x, x_prev, t = x2, x1, t_next
            if t > eps:
                s_x = ledger(x, t)
            if traj is not None:
                traj.append(x)
                times.append(t)
        h = min(t - eps, safety * h * max(err, 1e-10) ** -exponent) if t > eps else 0.0
    return SolveOutput(
        samples=x,
        nfe=ledger.nfe,
        trajectory=torch.stack(traj) if traj is not None else None,
        times=torch.tensor(times, dtype=torch.float64) if times is not None else None,
    )
