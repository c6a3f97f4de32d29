r"""Single-step DPM-Solver: orders 1-3 on any grid, DPM-Solver++(2S), grouped steps, the "fast" schedule, adaptive steps.

Notation as in samplers/diffusion.py. A single-step DPM-Solver-$k$ step from $s$ to $t$
($h = \lambda_t - \lambda_s$) evaluates the model at $s$ and at $k - 1$ intermediate points in $\lambda$
(Lu et al. 2022, Algorithms 1-2):

| order | intermediate points | update |
| ---: | --- | --- |
| 1 | - | $x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t(e^h - 1)\hat\epsilon_s$ (DDIM) |
| 2 | $\lambda_s + h/2$ | $x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t(e^h - 1)\hat\epsilon(u, s_1)$ |
| 3 | $\lambda_s + h/3$, $\lambda_s + 2h/3$ | $x_t$ below |

with $u = \frac{\alpha_{s_1}}{\alpha_s} x_s - \sigma_{s_1}(e^{h/2} - 1)\hat\epsilon_s$ (order 2), and for order 3
($r_1 = 1/3$, $r_2 = 2/3$, $\phi_1(z) = (e^z - 1)/z$, $D_k = \hat\epsilon(u_k, s_k) - \hat\epsilon_s$):
$u_1 = \frac{\alpha_{s_1}}{\alpha_s}x_s - \sigma_{s_1}(e^{r_1 h} - 1)\hat\epsilon_s$,
$u_2 = \frac{\alpha_{s_2}}{\alpha_s}x_s - \sigma_{s_2}(e^{r_2 h} - 1)\hat\epsilon_s
- \frac{\sigma_{s_2} r_2}{r_1}(\phi_1(r_2 h) - 1) D_1$,
$x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t(e^h - 1)\hat\epsilon_s - \frac{\sigma_t}{r_2}(\phi_1(h) - 1) D_2$.
`dpm_solver2` and `dpm_solver3` are DPM-Solver-2 and -3 on every step; one class (`SinglestepDPMSolver`)
takes every single-step update, so the fast schedule and the adaptive solver share them.

In data prediction (DPM-Solver++(2S), Lu et al. 2022b, Algorithm 1 with $r = 1/2$):
$u = \frac{\sigma_{s_1}}{\sigma_s}x_s - \alpha_{s_1}(e^{-h/2} - 1)\hat x_0(x_s, s)$,
$x_t = \frac{\sigma_t}{\sigma_s}x_s - \alpha_t(e^{-h} - 1)\hat x_0(u, s_1)$.

**Grouped steps** (`dpm_solver++_grouped`, diffusers' `DPMSolverSinglestepScheduler`): the
intermediate points are the grid's own points, taken in groups of $p$ with orders $1, \dots, p$; each
step goes from the group's start with every model the group has so far, one NFE per step.

**The fast schedule** (`dpm_solver_fast`, Lu et al. 2022, §3.4 and their code's `"fast"` mode): for an
NFE budget $M$ (`steps` here is that budget, as in their code), $K = \lfloor M/3 \rfloor + 1$ steps on a
log-SNR grid with orders $[3, \dots, 3, 2, 1]$ ($M \equiv 0 \bmod 3$), $[3, \dots, 3, 1]$ ($\equiv 1$) or
$[3, \dots, 3, 2]$ ($\equiv 2$): exactly $M$ score calls, the lower orders on the last steps.

**Adaptive steps** (`dpm_solver_adaptive`, Lu et al. 2022, §4 / Algorithm 5, "DPM-Solver-12" and
"-23"): a step of size $h$ in $\lambda$ is taken with orders $k - 1$ and $k$, sharing the model at $s$
(and, for -23, the model at $\lambda_s + h/3$: the lower one is DPM-Solver-2 with $r_1 = 1/3$);
$E = \max_b \mathrm{RMS}\big((x_{high} - x_{low})/\delta\big)$ with
$\delta = \max(\text{atol}, \text{rtol}\max(|x_{low}|, |x_{prev}|))$; accepted when $E \le 1$, then
$h \leftarrow \min(\theta h E^{-1/k}, \lambda_\epsilon - \lambda_s)$.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_bool
from ..errors import NonFiniteError, StepSizeError
from ..sde import SDE
from .base import ScoreLedger, SolveOutput, SolveRequest, run_on_grid
from .diffusion import SOLVER_TYPE, _phi1, _refuse_clean_end, _schedule, first_order_update
from .grids import t_of_log_snr, time_grid
from .registry import SOLVERS, Option, Solver

__all__ = [
    "SinglestepDPMSolver",
    "fast_orders",
    "dpm_solver_fast",
    "dpm_solver_adaptive",
    "dpm_solver_pp_grouped",
    "grouped_orders",
]

_R = {2: (0.5,), 3: (1.0 / 3.0, 2.0 / 3.0)}
"""The intermediate points of a DPM-Solver-k step, as fractions of h."""


class SinglestepDPMSolver:
    """DPM-Solver-k steps between any two times, k = 1, 2, 3 (noise prediction) or DPM-Solver++(1)/(2S) (data).

    Args:
        ledger: The score ledger (NFE, callback).
        sde: The forward SDE.
        lo: The smallest time any step reaches (the bracket of the log-SNR inversion).
        hi: The largest.
        data: Data prediction (DPM-Solver++) rather than noise prediction (orders 1 and 2 only).
    """

    def __init__(self, ledger: ScoreLedger, sde: SDE, lo: float, hi: float, *, data: bool = False) -> None:
        self.ledger, self.sde, self.lo, self.hi, self.data = ledger, sde, lo, hi, data

    def coeffs(self, times: Tensor) -> tuple[list[float], list[float], list[float]]:
        """$\\alpha, \\sigma, \\lambda$ at `times` as float64 lists."""
        return _schedule(self.sde, times)

    def intermediate(self, lam_s: Tensor, lam_t: Tensor, order: int) -> list[tuple[list[float], ...]]:
        """For each fraction r of the order: (t, alpha, sigma) lists at $\\lambda_s + r h$ (vectorised over steps)."""
        out = []
        for r in _R.get(order, ()):
            ts = t_of_log_snr(self.sde, lam_s + r * (lam_t - lam_s), lo=self.lo, hi=self.hi)
            a, s, _ = _schedule(self.sde, ts)
            out.append((ts.tolist(), a, s))
        return out

    def model(self, x: Tensor, t: float, a: float, s: float) -> Tensor:
        """$\\hat x_0$ (data) or $\\hat\\epsilon$ at `(x, t)`: one NFE."""
        return self.ledger.data(x, t, alpha=a, sigma=s) if self.data else self.ledger.noise(x, t, sigma=s)

    def step(
        self,
        x: Tensor,
        order: int,
        here: tuple[float, float, float, float],
        there: tuple[float, float, float],
        mids: list[tuple[float, float, float]],
        model_s: Tensor | None = None,
    ) -> Tensor:
        """One DPM-Solver-`order` step from `here` = (t, alpha, sigma, lambda) to `there` = (alpha, sigma, lambda).

        `mids` holds (t, alpha, sigma) of the intermediate points; `model_s`, if given, is the model at
        `here` already evaluated (it is then not evaluated again).
        """
        t_s, a_s, sig_s, lam_s = here
        a_t, sig_t, lam_t = there
        h = lam_t - lam_s
        data = self.data
        m_s = self.model(x, t_s, a_s, sig_s) if model_s is None else model_s
        at_s = {"a_s": a_s, "sig_s": sig_s, "data": data}
        if order == 1:
            return first_order_update(x, m_s, **at_s, a_t=a_t, sig_t=sig_t, h=h)
        if order == 2:
            (t1, a1, s1), r1 = mids[0], _R[2][0]
            u = first_order_update(x, m_s, **at_s, a_t=a1, sig_t=s1, h=r1 * h)
            return first_order_update(x, self.model(u, t1, a1, s1), **at_s, a_t=a_t, sig_t=sig_t, h=h)
        return self.third(x, m_s, here, there, mids, self.first_difference(x, m_s, here, h, mids[0]))

    def first_difference(
        self,
        x: Tensor,
        m_s: Tensor,
        here: tuple[float, float, float, float],
        h: float,
        mid: tuple[float, float, float],
    ) -> Tensor:
        r"""$D_1 = \hat\epsilon(u_1, s_1) - \hat\epsilon_s$ at the first third of the step (one NFE)."""
        t1, a1, s1 = mid
        u1 = first_order_update(x, m_s, a_s=here[1], sig_s=here[2], a_t=a1, sig_t=s1, h=_R[3][0] * h)
        return self.model(u1, t1, a1, s1) - m_s

    def third(
        self,
        x: Tensor,
        m_s: Tensor,
        here: tuple[float, float, float, float],
        there: tuple[float, float, float],
        mids: list[tuple[float, float, float]],
        d1: Tensor,
    ) -> Tensor:
        """The DPM-Solver-3 update given $D_1$ (one more NFE, at the second intermediate point)."""
        (t2, a2, s2), (r1, r2) = mids[1], _R[3]
        a_t, sig_t, lam_t = there
        h = lam_t - here[3]
        at_s = {"a_s": here[1], "sig_s": here[2]}
        u2 = first_order_update(x, m_s, **at_s, a_t=a2, sig_t=s2, h=r2 * h)
        u2 = u2 - (s2 * r2 / r1) * (_phi1(r2 * h) - 1) * d1
        d2 = self.model(u2, t2, a2, s2) - m_s
        x_t = first_order_update(x, m_s, **at_s, a_t=a_t, sig_t=sig_t, h=h)
        return x_t - (sig_t / r2) * (_phi1(h) - 1) * d2

    def run(self, x_T: Tensor, grid: Tensor, orders: list[int], return_trajectory: bool) -> SolveOutput:
        """Step over `grid` with `orders[i]` on interval i."""
        alpha, sigma, lam = self.coeffs(grid)
        lam_t = torch.tensor(lam, dtype=torch.float64)
        times = grid.tolist()
        mids = {k: self.intermediate(lam_t[:-1], lam_t[1:], k) for k in set(orders)}

        def step(x: Tensor, i: int) -> Tensor:
            k = orders[i]
            at = [(m[0][i], m[1][i], m[2][i]) for m in mids[k]]
            return self.step(
                x, k, (times[i], alpha[i], sigma[i], lam[i]), (alpha[i + 1], sigma[i + 1], lam[i + 1]), at
            )

        return run_on_grid(step, x_T, grid, self.ledger, return_trajectory)


def singlestep_runner(order: int, *, data: bool = False):
    """The runner of DPM-Solver-`order` (or DPM-Solver++(2S) with `data`) on the request's grid."""

    def run(req: SolveRequest) -> SolveOutput:
        times = req.grid.tolist()
        _refuse_clean_end(_schedule(req.sde, req.grid[-1:])[1], req.solver)
        solver = SinglestepDPMSolver(req.ledger(), req.sde, times[-1], times[0], data=data)
        return solver.run(req.x_T, req.grid, [order] * (len(times) - 1), req.return_trajectory)

    return run


def fast_orders(nfe: int) -> list[int]:
    """Lu et al.'s order schedule for an NFE budget: threes, then the lower orders that spend it exactly.

    Args:
        nfe: The NFE budget M >= 1.
    """
    k = nfe // 3 + 1
    if nfe % 3 == 0:
        return [3] * (k - 2) + [2, 1]
    return [3] * (k - 1) + [nfe % 3]


def dpm_solver_fast(req: SolveRequest) -> SolveOutput:
    """Runner of `dpm_solver_fast`: `steps` is the NFE budget (Lu et al.'s "fast" DPM-Solver).

    Args:
        req: The checked request; `req.steps` is the NFE budget.
    """
    orders = fast_orders(req.steps)
    times = req.grid.tolist()
    grid = time_grid(req.sde, len(orders), times[-1], req.grid_kind or "logsnr").to(req.grid.device)
    solver = SinglestepDPMSolver(req.ledger(), req.sde, times[-1], times[0])
    out = solver.run(req.x_T, grid, orders, req.return_trajectory)
    out.accepted = req.steps  # its "steps" are the NFE budget (len(orders) grid intervals)
    return out


def dpm_solver_adaptive(req: SolveRequest) -> SolveOutput:
    """Runner of `dpm_solver_adaptive`: DPM-Solver-12 / -23 with error control in log-SNR (see the module).

    Args:
        req: The checked request (`rtol`, `atol`; option `order`).
    """
    order, rtol, atol = req.options["order"], req.rtol, req.atol
    theta, h_init, t_err = 0.9, 0.05, 1e-5
    ledger = req.ledger()
    sde, eps, T = req.sde, req.eps, float(req.sde.T)
    solver = SinglestepDPMSolver(ledger, sde, eps, T)
    lam_T, lam_eps = (float(v) for v in sde.log_snr(torch.tensor([T, eps], dtype=torch.float64)))
    x, x_prev, lam_s = req.x_T, req.x_T, lam_T
    h = h_init
    accepted = rejected = 0
    traj, times = ([x], [T]) if req.return_trajectory else (None, None)
    model_s: Tensor | None = None
    while lam_eps - lam_s > t_err:
        if h < 1e-10:
            raise StepSizeError(
                float(t_of_log_snr(sde, torch.tensor(lam_s), lo=eps, hi=T)), "dpm_solver_adaptive"
            )
        lam_t = min(lam_s + h, lam_eps)
        ts = t_of_log_snr(sde, torch.tensor([lam_s, lam_t], dtype=torch.float64), lo=eps, hi=T)
        if lam_t == lam_eps:
            ts[1] = eps
        (a_s, a_t), (s_s, s_t), _ = solver.coeffs(ts)
        t_s, t_t = ts.tolist()
        here, there = (t_s, a_s, s_s, lam_s), (a_t, s_t, lam_t)
        lam_pair = torch.tensor([lam_s], dtype=torch.float64), torch.tensor([lam_t], dtype=torch.float64)
        if model_s is None:
            model_s = solver.model(x, t_s, a_s, s_s)
        mids = [(m[0][0], m[1][0], m[2][0]) for m in solver.intermediate(*lam_pair, order)]
        h_step = lam_t - lam_s
        if order == 2:  # DPM-Solver-1 against -2 (midpoint)
            x_low = first_order_update(x, model_s, a_s=a_s, sig_s=s_s, a_t=a_t, sig_t=s_t, h=h_step)
            x_high = solver.step(x, 2, here, there, mids, model_s)
        else:  # DPM-Solver-2 with r1 = 1/3 against -3, sharing the model at the first third
            d1 = solver.first_difference(x, model_s, here, h_step, mids[0])
            x_low = first_order_update(x, model_s, a_s=a_s, sig_s=s_s, a_t=a_t, sig_t=s_t, h=h_step)
            x_low = x_low - (s_t / (2 * _R[3][0])) * math.expm1(h_step) * d1
            x_high = solver.third(x, model_s, here, there, mids, d1)
        delta = torch.maximum(x_low.abs(), x_prev.abs()).mul_(rtol).clamp_min_(atol)
        err = float(((x_high - x_low) / delta).flatten(1).square().mean(dim=1).sqrt().max())
        if not math.isfinite(err):
            raise NonFiniteError("the state", t_t)
        if err <= 1.0:
            accepted += 1
            x_prev, x, lam_s, model_s = x_low, x_high, lam_t, None
            if traj is not None:
                traj.append(x)
                times.append(t_t)
        else:
            rejected += 1
        h = min(theta * h * max(err, 1e-10) ** (-1.0 / order), lam_eps - lam_s)
    return SolveOutput(
        samples=x, nfe=ledger.nfe, sample_evaluations=ledger.rows,
        trajectory=torch.stack(traj) if traj is not None else None,
        times=torch.tensor(times, dtype=torch.float64) if times is not None else None,
        accepted=accepted, rejected=rejected,
    )  # fmt: skip


def grouped_orders(
    order: int, steps: int, lower_order_final: bool, *, to_clean_data: bool = False
) -> list[int]:
    """The orders of `dpm_solver++_grouped`'s steps: groups 1, 2, ..., `order` (diffusers' `get_order_list`).

    With `lower_order_final` the last group is cut short (ending [1, 1] for order 2 on an even grid,
    [1, 2, 1] or [1] for order 3); a last step to sigma = 0 is first order.

    Args:
        order: The group's size p (1-3).
        steps: The number of grid intervals.
        lower_order_final: End with lower orders, as diffusers' `lower_order_final=True`.
        to_clean_data: The grid ends at sigma = 0.
    """
    pattern = list(range(1, order + 1))
    orders = (pattern * (steps // order + 1))[:steps]
    if lower_order_final and order == 2 and steps % 2 == 0 and steps >= 2:
        orders[-1] = 1
    elif lower_order_final and order == 3 and steps % 3 == 0 and steps >= 3:
        orders[-3:] = [1, 2, 1]
    if to_clean_data and orders:
        orders[-1] = 1
    return orders


def dpm_solver_pp_grouped(req: SolveRequest) -> SolveOutput:
    r"""DPM-Solver++ single-step with its intermediate points on the grid (diffusers' `DPMSolverSinglestepScheduler`).

    The grid's steps come in groups of $p$ (`grouped_orders`): a group from $s = t_j$ evaluates the model
    at $t_j, \dots, t_{j+p-1}$, one per grid point, and each of its steps goes from $x_s$ (the group's
    start) to the next grid point with the models so far: DPM-Solver++(1) (DDIM), then the second-order
    and third-order single-step updates with $r_k = (\lambda_{t_{j+k}} - \lambda_s)/h$ (Lu et al. 2022b;
    `solver_type` "midpoint" or "heun" picks the second-order term's form, as diffusers). One NFE per step;
    on a uniform log-SNR grid a group of two is DPM-Solver++(2S) over both steps.

    Args:
        req: The checked request (options: `order`, `solver_type`, `lower_order_final`).
    """
    opts = req.options
    ledger = req.ledger()
    times = req.grid.tolist()
    alpha, sigma, lam = _schedule(req.sde, req.grid)
    orders = grouped_orders(
        opts["order"], len(times) - 1, opts["lower_order_final"], to_clean_data=sigma[-1] == 0
    )
    heun = opts["solver_type"] == "heun"
    start: list[Tensor] = []
    models: list[Tensor] = []

    def step(x: Tensor, i: int) -> Tensor:
        order = orders[i]
        if order == 1:
            start[:] = [x]
            models.clear()
        models.append(ledger.data(x, times[i], alpha=alpha[i], sigma=sigma[i]))
        j = i - order + 1  # the group's start
        h = lam[i + 1] - lam[j]
        phi_1 = math.expm1(-h)
        out = torch.mul(start[0], sigma[i + 1] / sigma[j]).add_(models[0], alpha=-alpha[i + 1] * phi_1)
        if order == 1:
            return out
        phi_2 = phi_1 / h + 1.0
        r0 = (lam[i] - lam[j]) / h
        d1_last = (models[-1] - models[0]) / r0
        if order == 2:
            return out.add_(d1_last, alpha=alpha[i + 1] * phi_2 if heun else -0.5 * alpha[i + 1] * phi_1)
        r1 = (lam[i - 1] - lam[j]) / h
        if not heun:
            return out.add_(d1_last, alpha=alpha[i + 1] * phi_2)
        d1_mid = (models[1] - models[0]) / r1
        d1 = (r0 * d1_mid - r1 * d1_last) / (r0 - r1)
        d2 = 2.0 * (d1_last - d1_mid) / (r0 - r1)
        phi_3 = (phi_1 + h) / h**2 - 0.5
        return out.add_(d1, alpha=alpha[i + 1] * phi_2).add_(d2, alpha=-alpha[i + 1] * phi_3)

    return run_on_grid(step, req.x_T, req.grid, ledger, req.return_trajectory)


def _grouped_order(value: object, name: str) -> None:
    if isinstance(value, bool) or value not in (1, 2, 3):
        raise ValueError(f"{name} must be 1, 2 or 3, got {value!r}")


def _adaptive_order(value: object, name: str) -> None:
    if isinstance(value, bool) or value not in (2, 3):
        raise ValueError(f"{name} must be 2 (DPM-Solver-12) or 3 (DPM-Solver-23), got {value!r}")


def _nfe_adaptive(options: dict) -> int:
    """order (the model at s and order - 1 intermediate points)"""
    return options["order"]


def _nfe_adaptive_rejected(options: dict) -> int:
    """order - 1 (the model at s is kept for the retry)"""
    return options["order"] - 1


for _solver in [
    Solver("dpm_solver2", "diffusion", singlestep_runner(2), 2, order=2, default_steps=50, time_grid="logsnr",
           budgets=(3, 5, 10, 20), verified=True,
           description="DPM-Solver-2, single-step, midpoint in log-SNR (Lu et al. 2022)"),
    Solver("dpm_solver3", "diffusion", singlestep_runner(3), 3, order=3, default_steps=50, time_grid="logsnr",
           budgets=(2, 4, 7, 14), verified=True, description="DPM-Solver-3, single-step (Lu et al. 2022)"),
    Solver("dpm_solver++2s", "diffusion", singlestep_runner(2, data=True), 2, order=2, default_steps=25,
           time_grid="logsnr", budgets=(3, 4, 5, 6, 8, 10), verified=True,
           description="DPM-Solver++(2S), single-step, data prediction (Lu et al. 2022b)"),
    Solver("dpm_solver_fast", "diffusion", dpm_solver_fast, 1, order=2, default_steps=20, time_grid="logsnr", budget="nfe",
           budgets=(6, 8, 10, 12, 15, 20, 30, 40), verified=True,
           description="DPM-Solver's fast schedule: steps is the NFE budget, spent exactly (orders 3..3,2,1; "
                       "2 as h -> 0; 2.6-2.7 measured over 128-512 NFE)"),
    Solver("dpm_solver_adaptive", "diffusion", dpm_solver_adaptive, _nfe_adaptive, order=3, adaptive=True,
           nfe_start=0,
           nfe_per_rejected_step=_nfe_adaptive_rejected, default_rtol=0.05, default_atol=0.0078,
           options={"order": Option(3, _adaptive_order, "3: DPM-Solver-23 (default); 2: DPM-Solver-12")},
           budgets=(0.2, 0.1, 0.05, 0.02, 0.01),
           description="Adaptive DPM-Solver-23 / -12 in log-SNR (Lu et al. 2022, §4); tolerances as theirs"),
    Solver("dpm_solver++_grouped", "diffusion", dpm_solver_pp_grouped, 1, order=2, default_steps=20,
           time_grid="logsnr", clean_end=True, budgets=(6, 8, 10, 12, 15, 20, 25, 30, 40, 50), verified=True,
           options={"order": Option(2, _grouped_order, "the group's size p: orders 1, ..., p (1-3)"),
                    "solver_type": SOLVER_TYPE,
                    "lower_order_final": Option(True, check_bool, "cut the last group short (as diffusers)")},
           description="DPM-Solver++ single-step with its intermediate points on the grid, 1 NFE per step "
                       "(diffusers' DPMSolverSinglestepScheduler)"),
]:  # fmt: skip
    SOLVERS[_solver.name] = _solver
