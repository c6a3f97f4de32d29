r"""The diffusion-specific samplers people compare against: DDIM, DPM-Solver, DPM-Solver++, EDM.

All of them use the marginal $x_t = \alpha_t x_0 + \sigma_t z$ of the forward SDE, its half
log-SNR $\lambda_t = \log(\alpha_t/\sigma_t)$, and the score only through

$$\hat\epsilon(x, t) = -\sigma_t\, s(x, t), \qquad \hat x_0(x, t) = (x + \sigma_t^2 s(x, t))/\alpha_t.$$

They hold for every SDE here (VP, sub-VP, VE): each has a linear drift $f(t)x$ and
$g^2 = \mathrm{d}\sigma^2/\mathrm{d}t - 2f\sigma^2$, so the probability-flow ODE is, in
$\tilde x = x/\alpha$ against $\tilde\sigma = \sigma/\alpha = e^{-\lambda}$,
$\mathrm{d}\tilde x/\mathrm{d}\tilde\sigma = \hat\epsilon$ (Karras et al. 2022, eq. 4; Lu et al. 2022, eq. 3.4).
Each sampler runs on a grid $T = t_0 > \dots > t_N = \epsilon$ from `grids.time_grid`; one score
call on the batch is one NFE. The coefficients $\alpha, \sigma, \lambda$ on the grid are computed
once, in float64, before the first step, and the first-order exponential update that DDIM,
DPM-Solver and DPM-Solver++ share is written once (`first_order_update`).

| sampler | update from $s = t_i$ to $t = t_{i+1}$, $h = \lambda_t - \lambda_s$ | order | NFE/step |
| --- | --- | ---: | ---: |
| `ddim` | $x_t = \frac{\alpha_t}{\alpha_s} x_s - \sigma_t (e^h - 1)\,\hat\epsilon(x_s, s)$ | 1 | 1 |
| `dpm_solver2` | DPM-Solver-2, intermediate point at $\lambda_s + h/2$ | 2 | 2 |
| `dpm_solver3` | DPM-Solver-3, intermediate points at $\lambda_s + h/3$, $\lambda_s + 2h/3$ | 3 | 3 |
| `dpm_solver++2m` | multistep, $x_t = \frac{\sigma_t}{\sigma_s} x_s - \alpha_t (e^{-h} - 1) D$ | 2 | 1 |
| `edm_heun` | Heun's method on $\mathrm{d}\tilde x/\mathrm{d}\tilde\sigma = \hat\epsilon$ | 2 | 2 |
| `kdpm2` | the midpoint method on it, the midpoint at $\lambda_s + h/2$ | 2 | 2 |

References:
    Song, Meng, Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
    Lu, Zhou, Bao, Chen, Li, Zhu, "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model
    Sampling in Around 10 Steps", NeurIPS 2022 (Algorithms 1 and 2).
    Lu et al., "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
    2022 (Algorithm 2, 2M).
    Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based Generative
    Models", NeurIPS 2022 (Algorithm 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .._validation import check_bool
from ..scores import Score
from ..sde import SDE
from .base import ScoreLedger, SolveOutput, SolveRequest, prediction, run_on_grid
from .registry import SOLVERS, Option, Solver

__all__ = [
    "ddim",
    "dpm_solver_pp_2m",
    "edm_heun",
    "first_order_update",
    "kdpm2",
    "prediction",
]


def _schedule(sde: SDE, times: Tensor) -> tuple[list[float], list[float], list[float]]:
    r"""$\alpha_t$, $\sigma_t$ and $\lambda_t = \log(\alpha_t/\sigma_t)$ at `times`, as float64 Python lists.

    Kept per SDE and grid (a loop that samples batch after batch on one grid computes them once)."""
    key = tuple(times.tolist())
    cache = sde.__dict__.setdefault("_schedules", {})
    if key not in cache:
        log_alpha, sigma = sde.log_alpha_sigma(times.double())
        if len(cache) >= 64:
            cache.clear()
        cache[key] = (log_alpha.exp().tolist(), sigma.tolist(), (log_alpha - sigma.log()).tolist())
    alpha, sigma, lam = cache[key]
    return list(alpha), list(sigma), list(lam)


def first_order_update(
    x: Tensor,
    pred: Tensor,
    *,
    a_s: float,
    sig_s: float,
    a_t: float,
    sig_t: float,
    h: float,
    data: bool = False,
) -> Tensor:
    r"""The exponential-Euler step from $s$ to $t$ (DDIM = DPM-Solver-1 = DPM-Solver++(1)), $h = \lambda_t - \lambda_s$.

    Noise prediction $\hat\epsilon$: $x_t = \frac{\alpha_t}{\alpha_s} x_s - \sigma_t (e^{h} - 1)\,\hat\epsilon$;
    data prediction $\hat x_0$ (`data=True`): $x_t = \frac{\sigma_t}{\sigma_s} x_s - \alpha_t (e^{-h} - 1)\,\hat x_0$.

    Args:
        x: The state at $s$.
        pred: $\hat\epsilon$ or $\hat x_0$ (or a multistep combination of them).
        a_s: $\alpha_s$.
        sig_s: $\sigma_s$.
        a_t: $\alpha_t$.
        sig_t: $\sigma_t$.
        h: $\lambda_t - \lambda_s$ (> 0 when stepping towards the data).
        data: Whether `pred` predicts the data (DPM-Solver++) rather than the noise.

    References:
        Lu et al. 2022, eq. (3.7) (`dpm_solver_first_update` in their code); Lu et al. 2022b, eq. (9).
    """
    # x * c + pred * (-k) as two fused operations: this update runs once per NFE.
    if data:
        return torch.mul(x, sig_t / sig_s).add_(pred, alpha=-a_t * math.expm1(-h))
    # sigma_t (e^h - 1) = a_t sigma_s / a_s - sigma_t: its limit at sigma_t = 0 (h = inf), the step
    # to the clean data that a discrete schedule's last DDIM step takes.
    k = sig_t * math.expm1(h) if sig_t > 0 else a_t * sig_s / a_s
    return torch.mul(x, a_t / a_s).add_(pred, alpha=-k)


def _refuse_clean_end(sigma: list[float], name: str) -> None:
    """A single-step solver's intermediate points lie at finite log-SNR: a step to sigma = 0 has none."""
    if sigma[-1] == 0:
        raise ValueError(
            f"{name} cannot step to sigma = 0 (the grid ends at the clean data): its intermediate points sit "
            "halfway in log-SNR, which is infinite there; end the grid at t > 0, or use ddim, dpm_solver++2m, "
            "dpm_solver++3m, unipc, deis or ipndm, whose last step to sigma = 0 is first order"
        )


def _phi1(z: float) -> float:
    return math.expm1(z) / z


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
    times = grid.tolist()
    alpha, sigma, lam = _schedule(sde, grid)

    def step(x: Tensor, i: int) -> Tensor:
        # zero terminal SNR: the data-prediction form with h = inf, x_t = sigma_t x_s + alpha_t x0
        if alpha[i] == 0:
            x0_hat = ledger.data(x, times[i], alpha=alpha[i], sigma=sigma[i])
            kw = {"a_s": alpha[i], "sig_s": sigma[i], "a_t": alpha[i + 1], "sig_t": sigma[i + 1]}
            return first_order_update(x, x0_hat, h=math.inf, data=True, **kw)
        eps_hat = ledger.noise(x, times[i], sigma=sigma[i])
        return first_order_update(
            x,
            eps_hat,
            a_s=alpha[i],
            sig_s=sigma[i],
            a_t=alpha[i + 1],
            sig_t=sigma[i + 1],
            h=lam[i + 1] - lam[i],
        )

    return run_on_grid(step, x_T, grid, ledger, return_trajectory)


def dpm_solver_pp_2m(
    score: Score,
    sde: SDE,
    x_T: Tensor,
    grid: Tensor,
    *,
    return_trajectory: bool = False,
    callback: Callable[[Tensor], None] | None = None,
    lower_order_final: bool = True,
    solver_type: str = "midpoint",
    euler_at_final: bool = False,
) -> SolveOutput:
    r"""Multistep DPM-Solver++(2M) in data prediction (Lu et al. 2022b, Algorithm 2). Order 2, 1 NFE per step.

    $x_t = \frac{\sigma_t}{\sigma_s} x_s - \alpha_t (e^{-h} - 1)\,D$ with
    $D = (1 + \tfrac{1}{2r})\hat x_0(x_s, s) - \tfrac{1}{2r}\hat x_0^{\text{prev}}$, $r = h_{\text{prev}}/h$
    ("midpoint"; "heun" weighs the difference $D_1 = (\hat x_0 - \hat x_0^{\text{prev}})/r$ by
    $\varphi_2 = (e^{-h} - 1)/h + 1$ instead, as diffusers' `solver_type="heun"`); the first step uses
    $D = \hat x_0(x_s, s)$ (first order), and so does the last with `lower_order_final` on grids of
    fewer than 15 steps (samplers/multistep.py), or with `euler_at_final` on every grid.

    Args:
        score: A `Score`, called as `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE; only its $\alpha_t$ and $\sigma_t$ are used.
        x_T: Initial state at the grid's first time, `(B, *event)`.
        grid: Decreasing times $T = t_0 > \dots > t_N = \epsilon$ (`grids.time_grid`).
        return_trajectory: Also keep the state at every grid time.
        callback: Called with each forward time `t` (0-d tensor) the score is evaluated at.
        lower_order_final: Take the last step at first order on grids of fewer than 15 steps.
        solver_type: The second-order term's form, "midpoint" or "heun" (diffusers' names).
        euler_at_final: Take the last step at first order on every grid.

    Returns:
        A `SolveOutput`: the samples at $\epsilon$, the NFE, and the trajectory if asked for.
    """
    ledger = ScoreLedger(score, sde, callback)
    times = grid.tolist()
    alpha, sigma, lam = _schedule(sde, grid)
    first_order_last = (lower_order_final and len(times) - 1 < 15) or euler_at_final
    old_x0: Tensor | None = None  # the previous step's data prediction (k-diffusion's old_denoised)
    h_prev = 0.0

    def step(x: Tensor, i: int) -> Tensor:
        nonlocal old_x0, h_prev
        h = lam[i + 1] - lam[i]
        x0_hat = ledger.data(x, times[i], alpha=alpha[i], sigma=sigma[i])
        # (from alpha = 0, the next step's r is infinite: it is first order too)
        # The last step to sigma = 0 is first order whatever the grid (h = inf there, as in diffusers).
        if old_x0 is None or sigma[i + 1] == 0 or (first_order_last and i == len(times) - 2):
            d = x0_hat
        elif solver_type == "heun":  # -alpha_t phi_1 D = -alpha_t phi_1 x0_hat + alpha_t phi_2 D_1
            d1 = (x0_hat - old_x0) / (h_prev / h)
            d = x0_hat - ((math.expm1(-h) / h + 1.0) / math.expm1(-h)) * d1
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * old_x0
        old_x0, h_prev = x0_hat, h
        return first_order_update(
            x, d, a_s=alpha[i], sig_s=sigma[i], a_t=alpha[i + 1], sig_t=sigma[i + 1], h=h, data=True
        )

    return run_on_grid(step, x_T, grid, ledger, return_trajectory)


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
    (explicit trapezoid) on it. Every step to $\tilde\sigma > 0$ takes the Heun correction; a last step
    to $\tilde\sigma = 0$ (a grid ending at the clean data) is Euler's, 1 NFE, as in EDM's Algorithm 1
    (its $\hat\epsilon$ there is $0 \cdot \infty$). Use it with the Karras grid (`"karras"`, rho = 7).

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
    times = grid.tolist()
    alpha, sigma, _ = _schedule(sde, grid)
    sigma_tilde = [s / a for a, s in zip(alpha, sigma, strict=True)]

    def step(x: Tensor, i: int) -> Tensor:
        t_cur, t_next = times[i], times[i + 1]
        d_sigma = sigma_tilde[i + 1] - sigma_tilde[i]
        x_tilde = x / alpha[i]
        d = ledger.noise(x, t_cur, sigma=sigma[i])  # d x_tilde / d sigma_tilde = eps_hat
        x_tilde_euler = x_tilde + d_sigma * d
        if sigma[i + 1] == 0:
            return alpha[i + 1] * x_tilde_euler
        d_prime = ledger.noise(alpha[i + 1] * x_tilde_euler, t_next, sigma=sigma[i + 1])
        return alpha[i + 1] * (x_tilde + d_sigma * (d + d_prime) / 2)

    return run_on_grid(step, x_T, grid, ledger, return_trajectory)


def kdpm2(
    score: Score,
    sde: SDE,
    x_T: Tensor,
    grid: Tensor,
    *,
    return_trajectory: bool = False,
    callback: Callable[[Tensor], None] | None = None,
) -> SolveOutput:
    r"""k-diffusion's DPM-2 (`sample_dpm_2`, diffusers' `KDPM2DiscreteScheduler`). Order 2, 2 NFE per step.

    The midpoint method on $\mathrm{d}\tilde x/\mathrm{d}\tilde\sigma = \hat\epsilon$ with the midpoint
    halfway in $\lambda$, $\tilde\sigma_m = \sqrt{\tilde\sigma_i\tilde\sigma_{i+1}}$ (`SDE.log_snr_midpoints`):
    $\tilde x_m = \tilde x_i + (\tilde\sigma_m - \tilde\sigma_i)\hat\epsilon(x_i, t_i)$,
    $\tilde x_{i+1} = \tilde x_i + (\tilde\sigma_{i+1} - \tilde\sigma_i)\hat\epsilon(x_m, t_m)$. A last step to
    $\tilde\sigma = 0$ is Euler's, 1 NFE, as theirs.

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
    times = grid.tolist()
    alpha, sigma, _ = _schedule(sde, grid)
    mid_times = sde.log_snr_midpoints(grid).nan_to_num(times[0])  # (no midpoint on a last step to 0)
    alpha_m, sigma_m, _ = _schedule(sde, mid_times)
    mids = mid_times.tolist()
    sigma_tilde = [s / a for a, s in zip(alpha, sigma, strict=True)]

    def step(x: Tensor, i: int) -> Tensor:
        x_tilde = x / alpha[i]
        d = ledger.noise(x, times[i], sigma=sigma[i])  # d x_tilde / d sigma_tilde = eps_hat
        if sigma[i + 1] == 0:
            return x_tilde.add_(d, alpha=-sigma_tilde[i]).mul_(alpha[i + 1])
        x_mid = torch.add(x_tilde, d, alpha=sigma_m[i] / alpha_m[i] - sigma_tilde[i]).mul_(alpha_m[i])
        d_mid = ledger.noise(x_mid, mids[i], sigma=sigma_m[i])
        return x_tilde.add_(d_mid, alpha=sigma_tilde[i + 1] - sigma_tilde[i]).mul_(alpha[i + 1])

    return run_on_grid(step, x_T, grid, ledger, return_trajectory)


def _check_solver_type(value: object, name: str) -> None:
    if value not in ("midpoint", "heun"):
        raise ValueError(f"{name} must be 'midpoint' or 'heun', got {value!r}")


SOLVER_TYPE = Option(
    "midpoint", _check_solver_type, "the second-order term's form, 'midpoint' or 'heun' (as diffusers)"
)
"""The `solver_type` option of the DPM-Solver++ samplers (diffusers' name and values)."""
EULER_AT_FINAL = Option(
    False, check_bool, "first order on the last step of every grid (diffusers' euler_at_final)"
)
"""The `euler_at_final` option of the DPM-Solver++ multistep samplers."""


def _on_grid(sampler: Callable[..., SolveOutput]) -> Callable[[SolveRequest], SolveOutput]:
    def run(req: SolveRequest) -> SolveOutput:
        return sampler(
            req.score,
            req.sde,
            req.x_T,
            req.grid,
            return_trajectory=req.return_trajectory,
            callback=req.callback,
            **req.options,
        )

    return run


def _exponential(
    name: str, sampler: Callable[..., SolveOutput], order: int, nfe: int, budgets: tuple, text: str, **kw
):
    return Solver(
        name, "diffusion", _on_grid(sampler), nfe, order=order, default_steps=50,
        time_grid=kw.pop("time_grid", "logsnr"), budgets=budgets, verified=True, description=text, **kw,
    )  # fmt: skip


for _solver in [
    _exponential("ddim", ddim, 1, 1, (5, 10, 20, 50, 100, 150, 300),
                 "DDIM, deterministic (= DPM-Solver-1): exponential Euler in log-SNR", clean_end=True, velocity=True),
    _exponential("dpm_solver++2m", dpm_solver_pp_2m, 2, 1, (5, 10, 15, 20, 30, 50, 75, 100),
                 "DPM-Solver++(2M), multistep, data prediction (Lu et al. 2022b)", clean_end=True, velocity=True,
                 options={"lower_order_final": Option(True, check_bool, "first order on the last step of grids "
                                                      "of fewer than 15 steps"),
                          "solver_type": SOLVER_TYPE, "euler_at_final": EULER_AT_FINAL}),
    _exponential("edm_heun", edm_heun, 2, 2, (3, 5, 10, 20, 30, 40, 60),
                 "Karras et al.'s deterministic Heun sampler on the rho = 7 grid (EDM)", time_grid="karras",
                 clean_end=True),
    _exponential("kdpm2", kdpm2, 2, 2, (3, 5, 10, 20, 30, 40, 60),
                 "k-diffusion's DPM-2 (diffusers' KDPM2DiscreteScheduler): midpoint in (x/alpha, sigma/alpha), "
                 "the midpoint halfway in log-SNR", time_grid="karras", clean_end=True),
]:  # fmt: skip
    SOLVERS[_solver.name] = _solver
