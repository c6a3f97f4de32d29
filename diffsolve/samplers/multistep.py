r"""Multistep samplers of the PF-ODE: DPM-Solver++(3M), UniPC, iPNDM, DEIS and LMS, one NFE per step.

Notation as in samplers/diffusion.py: on the grid $T = t_0 > \dots > t_N = \epsilon$, $\alpha_i$,
$\sigma_i$, $\lambda_i = \log(\alpha_i/\sigma_i)$ (increasing), $h_i = \lambda_{i+1} - \lambda_i$; the
model is the data prediction $\hat x_0 = (x + \sigma^2 s)/\alpha$ or the noise prediction
$\hat\epsilon = -\sigma s$. In $\tilde x = x/\alpha$ against $\rho = \sigma/\alpha = e^{-\lambda}$ the
PF-ODE is $\mathrm{d}\tilde x/\mathrm{d}\rho = \hat\epsilon$.

Every multistep method here keeps the model at the last few grid points, so a step costs one score
call. Its first steps have fewer points to use and run at lower order (order $\min(p, i + 1)$ at step
$i$); with `lower_order_final` (the default) the last steps do too ($\min(p, N - i)$) on grids of
fewer than 15 steps, as in Lu et al.'s code and diffusers: a high-order extrapolation over the last,
stiffest steps near $\epsilon$ costs more accuracy than it gains there, while on fine grids a
first-order last step would cap the global order at 2.

| sampler | step from $t_i$ to $t_{i+1}$ | order |
| --- | --- | ---: |
| `dpm_solver++3m` | DPM-Solver++ multistep in $\hat x_0$, divided differences in $\lambda$ | 2 (3 after its start) |
| `unipc` | UniP-$p$ predictor, then UniC with the model at the prediction (the next step's model) | $p + 1$ |
| `ipndm` | Adams–Bashforth (equal-step weights, up to order 4) on $\tilde x$ against $\rho$ | 2 (unequal grids) |
| `deis` | DEIS: $\hat\epsilon$ extrapolated in $t$ (tAB) or $\log\rho$, integrated exactly against $\mathrm{d}\rho$ | 3 |
| `lms` | Adams–Bashforth with the grid's own weights (up to order 4) on $\tilde x$ against $\rho$ | 2 (4 after its start) |

References:
    Lu et al., "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic Models",
    2022 (multistep, their code's `multistep_dpm_solver_third_update`).
    Zhao, Bai, Rao, Zhou, Lu, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
    Diffusion Models", NeurIPS 2023 (Algorithms 2-3, $B(h) = h$ "bh1" and $B(h) = e^h - 1$ "bh2").
    Zhang, Chen, "Fast Sampling of Diffusion Models with Exponential Integrator", ICLR 2023 (tAB-DEIS,
    and iPNDM, their improved pseudo-numerical method).
    Karras, Aittala, Aila, Laine, "Elucidating the Design Space of Diffusion-Based Generative Models",
    NeurIPS 2022 (the linear multistep sampler of their k-diffusion code, `sample_lms`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..sde import SDE
from .base import SolveOutput, SolveRequest, run_on_grid
from .diffusion import EULER_AT_FINAL, SOLVER_TYPE, _schedule
from .registry import SOLVERS, Option, Solver

__all__ = ["dpm_solver_pp_3m", "unipc", "ipndm", "deis", "lms", "step_orders"]


LOWER_ORDER_FINAL_BELOW = 15
"""`lower_order_final` lowers the last steps' orders on grids of fewer steps than this (as diffusers does)."""


def step_orders(
    order: int,
    steps: int,
    lower_order_final: bool | str,
    *,
    to_clean_data: bool = False,
    from_zero_snr: bool = False,
    euler_at_final: bool = False,
) -> list[int]:
    r"""The order of each of `steps` multistep steps: warm-up from 1, and down to 1 at the end if asked.

    The final steps are lowered only on grids of fewer than `LOWER_ORDER_FINAL_BELOW` steps, where
    they help; on finer grids a first-order last step would cap the global order at 2. A last step
    to $\sigma = 0$ (a discrete schedule's clean data, $\lambda = \infty$) is first order whatever the
    grid, as in diffusers: its $h$ is infinite, so no older model can be extrapolated over it.

    Args:
        order: The method's order p.
        steps: Number of steps N.
        lower_order_final: Lower the last steps' orders on grids of fewer than 15 steps (True, as
            DPM-Solver's code and diffusers' DPMSolverMultistep), on every grid (`"always"`, as
            diffusers' UniPC), or never (False).
        to_clean_data: The grid ends at $\sigma = 0$.
        from_zero_snr: The grid starts at $\alpha = 0$ ($\lambda = -\infty$): the model there (the data's
            mean) is never extrapolated from, so step i uses at most i older models.
        euler_at_final: The last step is first order whatever the grid (diffusers' `euler_at_final`).
    """
    final = lower_order_final == "always" or (lower_order_final is True and steps < LOWER_ORDER_FINAL_BELOW)
    orders = [min(order, i + 1, steps - i if final else order) for i in range(steps)]
    if from_zero_snr:
        orders = [1] + [min(o, i) for i, o in enumerate(orders) if i > 0]
    if to_clean_data or euler_at_final:
        orders[-1] = 1
    return orders


class _Model:
    """The data or noise prediction at grid point `i`, one score call each."""

    def __init__(self, req: SolveRequest, data: bool) -> None:
        self.ledger = req.ledger()
        self.times = req.grid.tolist()
        self.alpha, self.sigma, self.lam = _schedule(req.sde, req.grid)
        self.data = data

    def __call__(self, x: Tensor, i: int) -> Tensor:
        if self.data:
            return self.ledger.data(x, self.times[i], alpha=self.alpha[i], sigma=self.sigma[i])
        if self.alpha[i] == 0:
            raise ValueError(
                "noise prediction cannot start at alpha = 0 (zero terminal SNR: its step divides by alpha); "
                "use the data prediction (unipc's prediction='data', the default)"
            )
        return self.ledger.noise(x, self.times[i], sigma=self.sigma[i])


def _lower_order_final(req: SolveRequest) -> bool | str:
    return req.options["lower_order_final"]


def dpm_solver_pp_3m(req: SolveRequest) -> SolveOutput:
    r"""DPM-Solver++(3M): multistep, data prediction, order 3, 1 NFE per step.

    With $r_0 = h_{i-1}/h_i$, $r_1 = h_{i-2}/h_i$, $D_{1,0} = (m_i - m_{i-1})/r_0$,
    $D_{1,1} = (m_{i-1} - m_{i-2})/r_1$, $D_1 = D_{1,0} + \frac{r_0}{r_0 + r_1}(D_{1,0} - D_{1,1})$,
    $D_2 = \frac{D_{1,0} - D_{1,1}}{r_0 + r_1}$ and $\varphi_1 = e^{-h} - 1$, $\varphi_2 = \varphi_1/h + 1$,
    $\varphi_3 = \varphi_2/h - \tfrac12$:
    $x_{i+1} = \frac{\sigma_{i+1}}{\sigma_i}x_i - \alpha_{i+1}\varphi_1 m_i + \alpha_{i+1}\varphi_2 D_1
    - \alpha_{i+1}\varphi_3 D_2$. Orders 1 and 2 (warm-up, final steps) are DPM-Solver++(1) and (2M).

    Args:
        req: The checked request (options: `lower_order_final`, `solver_type` of the second-order steps,
            `euler_at_final`).
    """
    model = _Model(req, data=True)
    alpha, sigma, lam = model.alpha, model.sigma, model.lam
    orders = step_orders(
        3, len(lam) - 1, _lower_order_final(req), to_clean_data=sigma[-1] == 0, from_zero_snr=alpha[0] == 0,
        euler_at_final=req.options["euler_at_final"],
    )  # fmt: skip
    heun = req.options["solver_type"] == "heun"
    hist: list[Tensor] = []

    def step(x: Tensor, i: int) -> Tensor:
        hist.append(model(x, i))
        del hist[:-3]
        h = lam[i + 1] - lam[i]
        phi_1 = math.expm1(-h)
        out = torch.mul(x, sigma[i + 1] / sigma[i]).add_(hist[-1], alpha=-alpha[i + 1] * phi_1)
        order = orders[i]
        if order >= 2:
            r0 = (lam[i] - lam[i - 1]) / h
            d1_0 = (hist[-1] - hist[-2]) / r0
            if order == 2:  # "heun": D_1 weighed by phi_2, as diffusers' solver_type="heun"
                return out.add_(
                    d1_0, alpha=alpha[i + 1] * (phi_1 / h + 1.0) if heun else -0.5 * alpha[i + 1] * phi_1
                )
            r1 = (lam[i - 1] - lam[i - 2]) / h
            d1_1 = (hist[-2] - hist[-3]) / r1
            d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_2 = phi_1 / h + 1.0
            phi_3 = phi_2 / h - 0.5
            out.add_(d1, alpha=alpha[i + 1] * phi_2).add_(d2, alpha=-alpha[i + 1] * phi_3)
        return out

    return run_on_grid(step, req.x_T, req.grid, model.ledger, req.return_trajectory)


def _unipc_coefficients(
    rks: list[float], hh: float, variant: str, order: int
) -> tuple[float, list[float], list[float]]:
    r"""UniPC's $B(h)$ and the predictor and corrector weights $\rho^p$, $\rho^c$ (Zhao et al., Alg. 2-3).

    `rks` are $r_k = (\lambda_{i-k} - \lambda_i)/h$ for the $p - 1$ older points, then 1 (the new point).
    """
    b_h = hh if variant == "bh1" else math.expm1(hh)
    h_phi_k = math.expm1(hh) / hh - 1.0
    factorial = 1
    r = np.array(rks, dtype=np.float64)
    rows, b = [], []
    for k in range(1, order + 1):
        rows.append(r ** (k - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    mat, vec = np.stack(rows), np.array(b)
    if order == 1:
        rhos_p, rhos_c = [], [0.5]
    else:
        rhos_p = [0.5] if order == 2 else list(np.linalg.solve(mat[:-1, :-1], vec[:-1]))
        rhos_c = list(np.linalg.solve(mat, vec))
    return b_h, [float(v) for v in rhos_p], [float(v) for v in rhos_c]


def unipc(req: SolveRequest) -> SolveOutput:
    r"""UniPC (Zhao et al. 2023): the UniP-$p$ predictor and the UniC corrector, 1 NFE per step.

    From $x_i$ with models $m_i, m_{i-1}, \dots$ (data prediction: $\hat x_0$, $\hbar = -h$; noise
    prediction: $\hat\epsilon$, $\hbar = h$), $D_k = (m_{i-k} - m_i)/r_k$,
    $\tilde x = \frac{\sigma_{i+1}}{\sigma_i}x_i - \alpha_{i+1}(e^{\hbar} - 1)m_i$ (data; noise:
    $\frac{\alpha_{i+1}}{\alpha_i}x_i - \sigma_{i+1}(e^{\hbar} - 1)m_i$), the predictor is
    $x^p = \tilde x - \alpha_{i+1}B(h)\sum_k \rho^p_k D_k$; the model at it, $m_{i+1} = m(x^p, t_{i+1})$,
    gives the corrector $x_{i+1} = \tilde x - \alpha_{i+1}B(h)\big(\sum_k \rho^c_k D_k + \rho^c_p
    (m_{i+1} - m_i)\big)$ and is kept as the next step's model. The last step takes no corrector (it
    would cost an NFE). Order $p + 1$ where the corrector runs.

    Args:
        req: The checked request (options: `order`, `variant`, `prediction`, `lower_order_final`).
    """
    opts = req.options
    data = opts["prediction"] == "data"
    model = _Model(req, data=data)
    alpha, sigma, lam = model.alpha, model.sigma, model.lam
    n = len(lam) - 1
    if alpha[0] == 0 and opts["variant"] == "bh1":
        raise ValueError(
            "unipc's variant 'bh1' (B(h) = h) cannot start at alpha = 0, where h is infinite: use 'bh2'"
        )
    orders = step_orders(
        opts["order"], n, _lower_order_final(req), to_clean_data=sigma[-1] == 0, from_zero_snr=alpha[0] == 0
    )
    hist: list[Tensor] = [model(req.x_T, 0)]

    def step(x: Tensor, i: int) -> Tensor:
        order = orders[i]
        h = lam[i + 1] - lam[i]
        hh = -h if data else h
        m0 = hist[-1]
        rks = [(lam[i - k] - lam[i]) / h for k in range(1, order)] + [1.0]
        d1s = [(hist[-1 - k] - m0) / rks[k - 1] for k in range(1, order)]
        b_h, rhos_p, rhos_c = _unipc_coefficients(rks, hh, opts["variant"], order)
        if data:
            scale = alpha[i + 1] * b_h
            base = torch.mul(x, sigma[i + 1] / sigma[i]).add_(m0, alpha=-alpha[i + 1] * math.expm1(hh))
        else:
            scale = sigma[i + 1] * b_h
            # sigma_t (e^h - 1) -> alpha_t sigma_s / alpha_s at sigma_t = 0 (h = inf; a first-order step)
            k = sigma[i + 1] * math.expm1(hh) if sigma[i + 1] > 0 else alpha[i + 1] * sigma[i] / alpha[i]
            base = torch.mul(x, alpha[i + 1] / alpha[i]).add_(m0, alpha=-k)
        pred = base.clone()
        for rho, d in zip(rhos_p, d1s, strict=False):
            pred.add_(d, alpha=-scale * rho)
        if i == n - 1:
            return pred
        m_next = model(pred, i + 1)
        hist.append(m_next)
        del hist[:-3]
        for rho, d in zip(rhos_c[:-1], d1s, strict=True):
            base.add_(d, alpha=-scale * rho)
        return base.add_(m_next - m0, alpha=-scale * rhos_c[-1])

    return run_on_grid(step, req.x_T, req.grid, model.ledger, req.return_trajectory)


_AB = {1: [1.0], 2: [1.5, -0.5], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}
"""Adams–Bashforth weights for equal steps, newest first."""


def ipndm(req: SolveRequest) -> SolveOutput:
    r"""iPNDM (Zhang & Chen 2023): Adams–Bashforth on $\mathrm{d}\tilde x/\mathrm{d}\rho = \hat\epsilon$, 1 NFE per step.

    $\tilde x_{i+1} = \tilde x_i + (\rho_{i+1} - \rho_i)\sum_k c_k \hat\epsilon_{i-k}$ with the
    equal-step weights $c$ of order $\min(4, i + 1)$ (and down to 1 at the end with
    `lower_order_final`), as the method defines them whatever the grid: on an unequal grid its
    order is that of the grid's smoothness, not 4 (Zhou et al. 2023 use it on the Karras grid).

    Args:
        req: The checked request (options: `lower_order_final`).
    """
    model = _Model(req, data=False)
    rho = _rho_on_grid(model)
    orders = step_orders(4, len(rho) - 1, _lower_order_final(req), to_clean_data=model.sigma[-1] == 0)
    weights = [[(rho[i + 1] - rho[i]) * c for c in _AB[order]] for i, order in enumerate(orders)]
    return _adams(req, model, weights)


def _rho_on_grid(model: _Model) -> list[float]:
    r"""$\rho = \sigma/\alpha$ at the grid's times, float64."""
    return [s / a for a, s in zip(model.alpha, model.sigma, strict=True)]


def _adams(req: SolveRequest, model: _Model, weights: list[list[float]]) -> SolveOutput:
    r"""$\tilde x_{i+1} = \tilde x_i + \sum_j C_{ij}\,\hat\epsilon_{i-j}$: the step iPNDM, DEIS and LMS share.

    `weights[i]` are step i's $C_{ij}$, newest model first (as many as the step's order).
    """
    alpha = model.alpha
    depth = max(len(w) for w in weights)
    hist: list[Tensor] = []

    def step(x: Tensor, i: int) -> Tensor:
        hist.append(model(x, i))
        del hist[:-depth]
        x_tilde = x / alpha[i]
        for c, e in zip(weights[i], reversed(hist), strict=False):
            x_tilde.add_(e, alpha=c)
        return x_tilde.mul_(alpha[i + 1])

    return run_on_grid(step, req.x_T, req.grid, model.ledger, req.return_trajectory)


def _lagrange_integrals(nodes: list[float], a: float, b: float, weight=None, points: int = 16) -> list[float]:
    r"""$\int_a^b \ell_j(u)\,w(u)\,\mathrm{d}u$ for the Lagrange basis $\ell_j$ on `nodes` ($w = 1$ if None).

    Gauss–Legendre with `points` nodes in float64: exact for $w = 1$ (a polynomial of degree < 2 `points`),
    and to round-off for the smooth $w = e^u$ DEIS uses.
    """
    gx, gw = np.polynomial.legendre.leggauss(points)
    u = (b - a) / 2 * gx + (a + b) / 2
    w = gw * (b - a) / 2 * (1.0 if weight is None else weight(u))
    out = []
    for j, node in enumerate(nodes):
        ell = np.ones_like(u)
        for k, other in enumerate(nodes):
            if k != j:
                ell *= (u - other) / (node - other)
        out.append(float((ell * w).sum()))
    return out


def _rho(sde: SDE, t: np.ndarray) -> np.ndarray:
    r"""$\rho = \sigma_t/\alpha_t$ in float64."""
    log_alpha, sigma = sde.log_alpha_sigma(torch.from_numpy(np.asarray(t, dtype=np.float64)))
    return (sigma * (-log_alpha).exp()).numpy()


def deis_coefficients(sde: SDE, grid: Tensor, orders: list[int], nodes: int = 16) -> list[list[float]]:
    r"""tAB-DEIS weights: $C_{ij} = \int_{t_i}^{t_{i+1}} \ell_j(\tau)\,\rho'(\tau)\,\mathrm{d}\tau$.

    $\ell_j$ is the Lagrange polynomial in $t$ on the nodes $t_i, t_{i-1}, \dots$ (as many as the
    step's order) that is 1 at $t_{i-j}$. By parts, $C_{ij} = [\ell_j \rho]_{t_i}^{t_{i+1}} -
    \int \ell_j'(\tau) \rho(\tau)\,\mathrm{d}\tau$: the first-order weight is $\rho_{i+1} - \rho_i$ exactly,
    and the rest integrates $\rho$ itself, which stays bounded where $\rho'$ does not ($\rho \propto \sqrt t$
    at $t = 0$, a grid ending at the clean data). The integral is Gauss–Legendre with `nodes` points in
    float64 on each piece between the SDE's `knots` (a discrete schedule's $\beta$ jumps at every
    timestep, so $\rho$ is smooth only between them).
    """
    times = grid.to(torch.float64).tolist()
    knots = getattr(sde, "knots", None)
    knots = [] if knots is None else knots.tolist()
    gx, gw = np.polynomial.legendre.leggauss(nodes)
    coeffs = []
    for i, order in enumerate(orders):
        a, b = times[i], times[i + 1]
        cuts = [a, *sorted((k for k in knots if b < k < a), reverse=True), b]
        tau = np.concatenate(
            [(q - p) / 2 * gx + (p + q) / 2 for p, q in zip(cuts[:-1], cuts[1:], strict=True)]
        )
        w = np.concatenate([gw * (q - p) / 2 for p, q in zip(cuts[:-1], cuts[1:], strict=True)])
        rho_tau, (rho_a, rho_b) = _rho(sde, tau), _rho(sde, np.array([a, b]))
        pts = [times[i - k] for k in range(order)]
        row = []
        for j in range(order):
            others = [pts[k] for k in range(order) if k != j]
            ell = np.poly1d(others, r=True) / float(np.prod([pts[j] - p for p in others]))
            row.append(float(ell(b) * rho_b - ell(a) * rho_a - (ell.deriv()(tau) * rho_tau * w).sum()))
        coeffs.append(row)
    return coeffs


def log_rho_coefficients(rho: list[float], orders: list[int]) -> list[list[float]]:
    r"""DEIS weights with $\hat\epsilon$ a polynomial in $\log\rho = -\lambda$ (diffusers' `DEISMultistepScheduler`).

    $C_{ij} = \int_{\rho_i}^{\rho_{i+1}} \ell_j(\log\rho)\,\mathrm{d}\rho = \int_{u_i}^{u_{i+1}} \ell_j(u)\,e^u\,
    \mathrm{d}u$, $u = \log\rho$, $\ell_j$ the Lagrange polynomial on $u_i, u_{i-1}, \dots$ that is 1 at
    $u_{i-j}$; a first-order step's weight is $\rho_{i+1} - \rho_i$ (also to $\rho = 0$, where $u = -\infty$).
    """
    coeffs = []
    for i, order in enumerate(orders):
        if order == 1:
            coeffs.append([rho[i + 1] - rho[i]])
            continue
        u = [math.log(rho[i - k]) for k in range(order)]
        coeffs.append(_lagrange_integrals(u, u[0], math.log(rho[i + 1]), np.exp))
    return coeffs


def deis(req: SolveRequest) -> SolveOutput:
    r"""DEIS (Zhang & Chen 2023): exponential integrator with $\hat\epsilon$ extrapolated, 1 NFE per step.

    $\tilde x_{i+1} = \tilde x_i + \sum_j C_{ij}\,\hat\epsilon_{i-j}$, orders up to 3 (warm-up from 1; down
    to 1 at the end with `lower_order_final`), $\hat\epsilon$ extrapolated in $t$ (`basis="t"`, tAB-DEIS,
    `deis_coefficients`) or in $\log\rho$ (`basis="log_rho"`, diffusers' `DEISMultistepScheduler`,
    `log_rho_coefficients`).

    Args:
        req: The checked request (options: `order`, `lower_order_final`, `basis`).
    """
    model = _Model(req, data=False)
    n = len(model.alpha) - 1
    orders = step_orders(req.options["order"], n, _lower_order_final(req), to_clean_data=model.sigma[-1] == 0)
    if req.options["basis"] == "t":
        weights = deis_coefficients(req.sde, req.grid, orders)
    else:
        weights = log_rho_coefficients(_rho_on_grid(model), orders)
    return _adams(req, model, weights)


def lms_coefficients(rho: list[float], orders: list[int]) -> list[list[float]]:
    r"""Linear-multistep weights $C_{ij} = \int_{\rho_i}^{\rho_{i+1}} \ell_j(\rho)\,\mathrm{d}\rho$, $\ell_j$ the
    Lagrange polynomial in $\rho$ on $\rho_i, \rho_{i-1}, \dots$ that is 1 at $\rho_{i-j}$ (exact)."""
    return [
        _lagrange_integrals([rho[i - k] for k in range(order)], rho[i], rho[i + 1], points=4)
        for i, order in enumerate(orders)
    ]


def lms(req: SolveRequest) -> SolveOutput:
    r"""Linear multistep (Adams–Bashforth with variable steps) on $\mathrm{d}\tilde x/\mathrm{d}\rho = \hat\epsilon$.

    $\tilde x_{i+1} = \tilde x_i + \sum_j C_{ij}\,\hat\epsilon_{i-j}$ (`lms_coefficients`): the polynomial
    through the last $p$ models in $\rho$, integrated exactly over the step, order $p = \min(4, i + 1)$:
    k-diffusion's `sample_lms` and diffusers' `LMSDiscreteScheduler`. Unlike `ipndm`'s equal-step
    weights, these are the grid's own, so every step after the warm-up has order $p$ on any grid; the
    first-order start makes the whole solve second order. A last step to $\rho = 0$ is an ordinary
    step (as theirs): the polynomial is finite there.

    Args:
        req: The checked request (options: `order`, `lower_order_final`).
    """
    model = _Model(req, data=False)
    rho = _rho_on_grid(model)
    orders = step_orders(req.options["order"], len(rho) - 1, _lower_order_final(req))
    return _adams(req, model, lms_coefficients(rho, orders))


def _choice(*allowed: str):
    def check(value: object, name: str) -> None:
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")

    return check


def _check_order(value: object, name: str) -> None:
    if isinstance(value, bool) or value not in (1, 2, 3):
        raise ValueError(f"{name} must be 1, 2 or 3, got {value!r}")


def _check_lms_order(value: object, name: str) -> None:
    if isinstance(value, bool) or value not in (1, 2, 3, 4):
        raise ValueError(f"{name} must be 1, 2, 3 or 4, got {value!r}")


def _check_lower_order_final(value: object, name: str) -> None:
    if not (isinstance(value, bool) or value == "always"):
        raise ValueError(f"{name} must be True, False or 'always', got {value!r}")


LOWER_ORDER_FINAL = Option(
    True,
    _check_lower_order_final,
    "lower orders on the last steps of grids under 15 steps (as Lu et al.'s code); 'always': on every grid "
    "(as diffusers' UniPC)",
)
"""The `lower_order_final` option every multistep sampler offers."""


# Up to 50 steps: under the distribution judge ring2d needs 25-40 (docs/benchmarks.md, "The judge").
MULTISTEP_BUDGETS = (5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50)

for _solver in [
    Solver("dpm_solver++3m", "diffusion", dpm_solver_pp_3m, 1, clean_end=True, velocity=True, order=2, default_steps=20,
           time_grid="logsnr",
           options={"lower_order_final": LOWER_ORDER_FINAL, "solver_type": SOLVER_TYPE, "euler_at_final": EULER_AT_FINAL},
           budgets=MULTISTEP_BUDGETS, verified=True,
           description="DPM-Solver++(3M), multistep, data prediction (Lu et al. 2022b); third-order steps after "
                       "a first-order start, so second order overall"),
    Solver("unipc", "diffusion", unipc, 1, clean_end=True, velocity=True, order=4, default_steps=20, time_grid="logsnr",
           options={
               "order": Option(3, _check_order, "order p of the UniP predictor (the corrector makes it p + 1)"),
               "variant": Option("bh2", _choice("bh1", "bh2"), "B(h) = h ('bh1') or e^h - 1 ('bh2')"),
               "prediction": Option("data", _choice("data", "noise"), "model: data ('data') or noise prediction"),
               "lower_order_final": LOWER_ORDER_FINAL,
           },
           budgets=MULTISTEP_BUDGETS, verified=True,
           description="UniPC (Zhao et al. 2023): UniP-p predictor + UniC corrector, order p + 1 = 4 by default"),
    Solver("ipndm", "diffusion", ipndm, 1, clean_end=True, order=2, default_steps=20, time_grid="quadratic",
           options={"lower_order_final": LOWER_ORDER_FINAL}, budgets=MULTISTEP_BUDGETS, verified=True,
           description="iPNDM: Adams–Bashforth up to order 4 in (x/alpha, sigma/alpha) (Zhang & Chen 2023); its "
                       "equal-step weights make it second order on unequal grids"),
    Solver("deis", "diffusion", deis, 1, clean_end=True, order=3, default_steps=20, time_grid="quadratic",
           budgets=MULTISTEP_BUDGETS, verified=True,
           options={"lower_order_final": LOWER_ORDER_FINAL,
                    "order": Option(3, _check_order, "the order of the extrapolation (1-3)"),
                    "basis": Option("t", _choice("t", "log_rho"), "eps extrapolated in t (tAB-DEIS) or in log "
                                    "sigma/alpha ('log_rho', diffusers' DEISMultistepScheduler)")},
           description="DEIS, order 3: exponential integrator, eps extrapolated in t (tAB, Zhang & Chen 2023) or "
                       "log sigma/alpha"),
    Solver("lms", "diffusion", lms, 1, clean_end=True, order=2, default_steps=20, time_grid="karras",
           options={"order": Option(4, _check_lms_order, "the order p of the multistep polynomial (1-4)"),
                    "lower_order_final": Option(False, _check_lower_order_final, "lower orders on the last steps "
                                                "of grids under 15 steps (True), on every grid ('always'), or "
                                                "never (False, as k-diffusion and diffusers)")},
           budgets=MULTISTEP_BUDGETS, verified=True,
           description="linear multistep in (x/alpha, sigma/alpha), up to order 4 with the grid's own weights "
                       "(k-diffusion's sample_lms, diffusers' LMSDiscreteScheduler); second order overall"),
]:  # fmt: skip
    SOLVERS[_solver.name] = _solver
