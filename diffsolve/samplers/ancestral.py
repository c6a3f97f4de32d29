r"""Stochastic diffusion samplers: Euler ancestral, DDIM with eta, DPM-Solver++(2M) SDE, EDM's stochastic sampler.

Notation as in samplers/diffusion.py; $\rho = \sigma/\alpha$ and $\tilde x = x/\alpha$ are the
variance-exploding coordinates k-diffusion and EDM work in. Every sampler here draws its noise from
the Brownian path the seed names (the path of the `sde:` solvers): the noise of step $i$ is
$z_i = \Delta W_i / \sqrt{\Delta s_i}$ over the step's interval of solver time $s = T - t$, so one seed
gives one path at every step count and every grid, and paired comparisons between samplers and step
counts see the same noise. Each ends with the noise-free mean of its last step unless
`noise_removal=False` (samplers/noise.py).

| sampler | step from $t_i$ to $t_{i+1}$ | NFE/step |
| --- | --- | ---: |
| `euler_ancestral` | k-diffusion's: Euler to $\rho_{down}$, then noise $\rho_{up} z$ (`euler_ancestral`) | 1 |
| `ddim_eta` | DDIM with $\eta$: $c = \eta\,\tilde\sigma$ of fresh noise (DDPM's ancestral step at $\eta = 1$) | 1 |
| `dpm_solver++2m_sde` | SDE-DPM-Solver++(2M), midpoint form, $\eta h$ of noise | 1 |
| `edm_stochastic` | EDM Algorithm 2: raise $\rho_i$ to $(1 + \gamma)\rho_i$ with fresh noise, then Heun | 2 |

At $\eta = 1$ the first three are discretisations of the reverse SDE driven by $W$ (strong order 1
against a fine Euler–Maruyama solve on the same path, tested); `edm_stochastic` is not (its churn
adds and removes noise inside a step) and claims no order.

References:
    Song, Meng, Ermon, "Denoising Diffusion Implicit Models", ICLR 2021 (eq. 12, $\sigma_\tau(\eta)$).
    Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based Generative
    Models", NeurIPS 2022 (Algorithm 2); k-diffusion's `sample_euler_ancestral`.
    Lu et al., "DPM-Solver++", 2022 (SDE-DPM-Solver++(2M); k-diffusion's `sample_dpmpp_2m_sde`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_positive
from .base import SolveOutput, SolveRequest, run_on_grid
from .diffusion import _schedule
from .grids import t_of_log_snr
from .multistep import LOWER_ORDER_FINAL
from .noise import NOISE_REMOVAL
from .registry import SOLVERS, Option, Solver

__all__ = ["euler_ancestral", "ddim_eta", "ddim_eta_step", "dpm_solver_pp_2m_sde", "edm_stochastic"]


class _Noise:
    """Unit normals per step from the Brownian path: $z_i = \\Delta W_i/\\sqrt{\\Delta s_i}$."""

    def __init__(self, req: SolveRequest) -> None:
        self.path = req.noise.path(req.x_T, req.sde, req.eps)
        self.times = req.grid.tolist()
        self.last = len(self.times) - 2 if req.options["noise_removal"] else None

    def __call__(self, i: int) -> Tensor | None:
        """The noise of step i, or None on a noise-free last step."""
        if i == self.last:
            return None
        t, t_next = self.times[i], self.times[i + 1]
        return self.path.increment(t, t_next).mul_(1.0 / math.sqrt(t - t_next))


def _setup(req: SolveRequest):
    ledger = req.ledger()
    times = req.grid.tolist()
    alpha, sigma, lam = _schedule(req.sde, req.grid)
    return ledger, times, alpha, sigma, lam, _Noise(req)


def _check_eta(eta: float, rho: list[float], noise: _Noise, name: str) -> None:
    r"""Refuse an `eta` that asks a step for more fresh noise than it has variance.

    A step from $\rho_i$ to $\rho_{i+1}$ ($\rho = \sigma/\alpha$) can add at most $\rho_{i+1}$ of fresh
    noise: $\eta \le \rho_i/\sqrt{\rho_i^2 - \rho_{i+1}^2}$ (1 is DDPM's posterior; a little above
    it is still a valid, noisier sampler of the same marginals). Above it the step would have to be
    clamped (as k-diffusion does), which samples the wrong distribution: refused instead.
    """
    bound = math.inf
    for i in range(len(rho) - 1):
        if i != noise.last and rho[i + 1] > 0:
            bound = min(bound, rho[i] / math.sqrt(rho[i] ** 2 - rho[i + 1] ** 2))
    if eta > bound * (1 + 1e-12):
        raise ValueError(
            f"eta must be at most {bound:.4g} for {name} on this grid (a larger eta asks a step for more fresh "
            f"noise than the state's variance at its end; 1 is DDPM's ancestral step), got {eta!r}"
        )


def euler_ancestral(req: SolveRequest) -> SolveOutput:
    r"""k-diffusion's Euler ancestral step in $(\tilde x, \rho)$, with $\eta$ = `eta` (1 NFE per step).

    $\rho_{up} = \min\big(\rho_{i+1}, \eta\sqrt{\rho_{i+1}^2(\rho_i^2 - \rho_{i+1}^2)/\rho_i^2}\big)$,
    $\rho_{down} = \sqrt{\rho_{i+1}^2 - \rho_{up}^2}$,
    $\tilde x_{i+1} = \tilde x_i + (\rho_{down} - \rho_i)\hat\epsilon + \rho_{up} z_i$.

    Args:
        req: The checked request (options: `eta`, `noise_removal`; `seed` names the Brownian path).
    """
    ledger, times, alpha, sigma, _, noise = _setup(req)
    eta = req.options["eta"]
    rho = [s / a for a, s in zip(alpha, sigma, strict=True)]
    _check_eta(eta, rho, noise, req.solver)

    def step(x: Tensor, i: int) -> Tensor:
        eps_hat = ledger.noise(x, times[i], sigma=sigma[i])
        z = noise(i)
        up = (
            0.0
            if z is None
            else min(rho[i + 1], eta * math.sqrt(rho[i + 1] ** 2 * (rho[i] ** 2 - rho[i + 1] ** 2)) / rho[i])
        )
        down = math.sqrt(rho[i + 1] ** 2 - up**2)
        x_tilde = (x / alpha[i]).add_(eps_hat, alpha=down - rho[i])
        if z is not None:
            x_tilde.add_(z, alpha=up)
        return x_tilde.mul_(alpha[i + 1])

    return run_on_grid(step, req.x_T, req.grid, ledger, req.return_trajectory)


def ddim_eta(req: SolveRequest) -> SolveOutput:
    r"""DDIM with $\eta$ = `eta` (Song et al. 2021, eq. 12), for any SDE's $\alpha, \sigma$ (1 NFE per step).

    With $\sigma_{i|i+1}^2 = \sigma_i^2 - (\alpha_i/\alpha_{i+1})^2\sigma_{i+1}^2$ (the forward transition
    from $t_{i+1}$ to $t_i$) and $\tilde\sigma^2 = \sigma_{i|i+1}^2\,\sigma_{i+1}^2/\sigma_i^2$ (the DDPM
    posterior variance), $c = \eta\tilde\sigma$ and
    $x_{i+1} = \alpha_{i+1}\hat x_0 + \sqrt{\sigma_{i+1}^2 - c^2}\,\hat\epsilon + c z_i$.
    $\eta = 0$ is deterministic DDIM, $\eta = 1$ DDPM's ancestral sampling.

    Args:
        req: The checked request (options: `eta`, `noise_removal`; `seed` names the Brownian path).
    """
    ledger, times, alpha, sigma, _, noise = _setup(req)
    eta = req.options["eta"]
    _check_eta(eta, [s / a for a, s in zip(alpha, sigma, strict=True)], noise, req.solver)

    def step(x: Tensor, i: int) -> Tensor:
        return ddim_eta_step(x, ledger(x, times[i]), i, alpha, sigma, noise(i), eta)

    return run_on_grid(step, req.x_T, req.grid, ledger, req.return_trajectory)


def ddim_eta_step(
    x: Tensor,
    score: Tensor,
    i: int,
    alpha: list[float],
    sigma: list[float],
    z: Tensor | None,
    eta: float = 1.0,
) -> Tensor:
    """One step of `ddim_eta` from grid time i to i + 1 (DDPM's ancestral step at `eta` = 1, the step the
    projection solvers and the papers' inverse-problem loops take).

    Args:
        x: The state at grid time i, `(B, *event)`.
        score: The score at `x` and grid time i, shaped like `x`.
        i: The step's index on the grid.
        alpha: $\\alpha_t$ at every grid time.
        sigma: $\\sigma_t$ at every grid time.
        z: The step's unit normal noise, shaped like `x`, or None for a noise-free step.
        eta: DDIM's $\\eta$ (0: deterministic DDIM, 1: DDPM's ancestral step).
    """
    eps_hat = score.mul(-sigma[i])
    x0_hat = torch.add(x, eps_hat, alpha=-sigma[i]).div_(alpha[i])
    var_cond = max(sigma[i] ** 2 - (alpha[i] / alpha[i + 1]) ** 2 * sigma[i + 1] ** 2, 0.0)
    c = 0.0 if z is None else eta * math.sqrt(var_cond) * sigma[i + 1] / sigma[i]
    out = x0_hat.mul_(alpha[i + 1]).add_(eps_hat, alpha=math.sqrt(max(sigma[i + 1] ** 2 - c**2, 0.0)))
    return out if z is None else out.add_(z, alpha=c)


def dpm_solver_pp_2m_sde(req: SolveRequest) -> SolveOutput:
    r"""SDE-DPM-Solver++(2M), midpoint form, as k-diffusion's `sample_dpmpp_2m_sde` with $\eta$ = `eta` (1 NFE per step).

    With $h = \lambda_{i+1} - \lambda_i$, $\eta h$ and the data predictions $m_i$:
    $x_{i+1} = \frac{\sigma_{i+1}}{\sigma_i}e^{-\eta h}x_i + \alpha_{i+1}(1 - e^{-(1+\eta)h})\big(m_i +
    \tfrac{1}{2r}(m_i - m_{i-1})\big) + \sigma_{i+1}\sqrt{1 - e^{-2\eta h}}\,z_i$, $r = h_{i-1}/h$ (first step:
    no correction).

    Args:
        req: The checked request (options: `eta`, `noise_removal`; `seed` names the Brownian path).
    """
    ledger, times, alpha, sigma, lam, noise = _setup(req)
    eta = req.options["eta"]
    last = len(times) - 2 if req.options["lower_order_final"] and len(times) - 1 < 15 else None
    prev: list[Tensor] = []

    def step(x: Tensor, i: int) -> Tensor:
        m = ledger.data(x, times[i], alpha=alpha[i], sigma=sigma[i])
        h = lam[i + 1] - lam[i]
        z = noise(i)
        eta_h = 0.0 if z is None else eta * h
        w = -math.expm1(-h - eta_h)
        out = torch.mul(x, sigma[i + 1] / sigma[i] * math.exp(-eta_h)).add_(m, alpha=alpha[i + 1] * w)
        if prev and i != last and sigma[i + 1] > 0:  # the last step to sigma = 0 (h = inf) is first order
            r = (lam[i] - lam[i - 1]) / h
            out.add_(m - prev[0], alpha=alpha[i + 1] * w * 0.5 / r)
        prev[:] = [m]
        if z is not None:
            out.add_(z, alpha=sigma[i + 1] * math.sqrt(-math.expm1(-2 * eta_h)))
        return out

    return run_on_grid(step, req.x_T, req.grid, ledger, req.return_trajectory)


def edm_stochastic(req: SolveRequest) -> SolveOutput:
    r"""Karras et al.'s stochastic sampler (EDM, Algorithm 2) in $(\tilde x, \rho)$ (2 NFE per step).

    $\gamma_i = \min(S_{churn}/N, \sqrt2 - 1)$ where $S_{tmin} \le \rho_i \le S_{tmax}$ (else 0; and 0 on a
    noise-free last step); $\hat\rho = (1 + \gamma_i)\rho_i$;
    $\hat{\tilde x} = \tilde x_i + \sqrt{\hat\rho^2 - \rho_i^2}\,S_{noise} z_i$; then Heun from $\hat\rho$ to
    $\rho_{i+1}$ on $\mathrm{d}\tilde x/\mathrm{d}\rho = \hat\epsilon$.

    Args:
        req: The checked request (options: `s_churn`, `s_tmin`, `s_tmax`, `s_noise`, `noise_removal`;
            `seed` names the Brownian path).
    """
    ledger, times, alpha, sigma, lam, noise = _setup(req)
    opts = req.options
    n = len(times) - 1
    rho = [s / a for a, s in zip(alpha, sigma, strict=True)]
    gamma = [
        min(opts["s_churn"] / n, math.sqrt(2) - 1) if opts["s_tmin"] <= rho[i] <= opts["s_tmax"] else 0.0
        for i in range(n)
    ]
    if noise.last is not None:
        gamma[-1] = 0.0
    rho_hat = [r * (1 + g) for r, g in zip(rho, gamma, strict=False)]
    lo, hi = times[-1], times[0]
    # The time of rho_hat (above rho_i: may pass T, where it is clamped: no churn beyond the prior).
    lam_hat = torch.tensor([-math.log(r) for r in rho_hat], dtype=torch.float64)
    t_hat = t_of_log_snr(req.sde, lam_hat.clamp(min=lam[0]), lo=lo, hi=hi)
    a_hat, s_hat, _ = _schedule(req.sde, t_hat)
    rho_hat = [s / a for a, s in zip(a_hat, s_hat, strict=True)]
    t_hat = t_hat.tolist()

    def step(x: Tensor, i: int) -> Tensor:
        x_tilde = x / alpha[i]
        z = noise(i)
        if gamma[i] > 0 and z is not None:
            x_tilde.add_(z, alpha=math.sqrt(max(rho_hat[i] ** 2 - rho[i] ** 2, 0.0)) * opts["s_noise"])
            r_cur, t_cur, a_cur, s_cur = rho_hat[i], t_hat[i], a_hat[i], s_hat[i]
        else:
            r_cur, t_cur, a_cur, s_cur = rho[i], times[i], alpha[i], sigma[i]
        d = ledger(x_tilde * a_cur, t_cur).mul(-s_cur)
        dr = rho[i + 1] - r_cur
        x_euler = x_tilde + dr * d
        d_next = ledger(x_euler * alpha[i + 1], times[i + 1]).mul(-sigma[i + 1])
        return x_tilde.add_(d + d_next, alpha=dr / 2).mul_(alpha[i + 1])

    return run_on_grid(step, req.x_T, req.grid, ledger, req.return_trajectory)


def _eta(default: float) -> Option:
    return Option(
        default, lambda v, name: check_positive(v, name, allow_zero=True), "noise scale eta (0: no noise)"
    )


def _nonneg(default: float, help: str) -> Option:
    return Option(default, lambda v, name: check_positive(v, name, allow_zero=True), help)


def _stochastic(name: str, run, nfe: int, text: str, grid: str, **kw) -> Solver:
    options = {"noise_removal": NOISE_REMOVAL, **kw.pop("options", {})}
    kw.setdefault("budgets", (10, 20, 50, 100, 200))
    return Solver(
        name, "diffusion", run, nfe, stochastic=True, default_steps=50, time_grid=grid, options=options,
        description=text, **kw,
    )  # fmt: skip


for _solver in [
    _stochastic("euler_ancestral", euler_ancestral, 1, "k-diffusion's Euler ancestral (eta = 1: the reverse SDE)",
                "karras", options={"eta": _eta(1.0)}, strong_order=1.0, verified=True, clean_end=True),
    _stochastic("ddim_eta", ddim_eta, 1, "DDIM with eta (eta = 1: DDPM's ancestral sampler)", "uniform",
                options={"eta": _eta(1.0)}, strong_order=1.0, verified=True, clean_end=True),
    _stochastic("dpm_solver++2m_sde", dpm_solver_pp_2m_sde, 1, "SDE-DPM-Solver++(2M), midpoint (k-diffusion's)",
                "logsnr", options={"eta": _eta(1.0), "lower_order_final": LOWER_ORDER_FINAL}, strong_order=1.0,
                verified=True, budgets=(10, 15, 20, 25, 30, 50), clean_end=True),
    _stochastic("edm_stochastic", edm_stochastic, 2, "Karras et al.'s stochastic sampler (EDM Algorithm 2, S_churn)",
                "karras", options={
                    "s_churn": _nonneg(40.0, "S_churn: total noise added (gamma = S_churn / N per step)"),
                    "s_tmin": _nonneg(0.05, "S_tmin: churn only where rho >= S_tmin"),
                    "s_tmax": _nonneg(50.0, "S_tmax: churn only where rho <= S_tmax"),
                    "s_noise": _nonneg(1.003, "S_noise: scale of the added noise"),
                }),
]:  # fmt: skip
    SOLVERS[_solver.name] = _solver
