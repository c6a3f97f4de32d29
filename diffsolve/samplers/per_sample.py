r"""Adaptive solvers whose samples take their own steps: `dopri5_per_sample` (the Dormand–Prince 5(4)
pair on the probability-flow ODE) and `adaptive_sde_per_sample` (Gotta Go Fast's reverse-SDE pair),
each sample with its own step size and its own accept/reject.

torchdiffeq's `dopri5` controls one step size for the whole batch: the error norm is taken over
every sample at once, so one hard sample (a trajectory that ends in a narrow mode, where the drift
stiffens as $t \to 0$) makes the whole batch take small steps, and a sample's result depends on its
batch-mates. Here every sample carries its own time $t_i$, step $h_i$ and FSAL stage; a round
evaluates the six new stages of the samples still running (one batched score call per stage, on
those rows only, each at its own time), then accepts or rejects each sample's step by its own
error norm

$$\text{err}_i = \Big\| \frac{y^{(5)}_i - y^{(4)}_i}{\text{atol} + \text{rtol}\,\max(|y_i|, |y^{new}_i|)} \Big\|_{\text{RMS}},$$

and sets its next step with torchdiffeq's rule (safety 0.9, growth at most 10x, shrink at most 5x
after a rejection, $\text{err}^{-1/5}$). The initial step is Hairer, Nørsett and Wanner's
(torchdiffeq's `_select_initial_step`), per sample. A sample's trajectory is therefore a function
of its own initial state only.

Cost accounting: a batched call on the running samples is one NFE (`nfe`, what a sample's result
waited for); `settings["sample_evaluations"]` counts the score evaluations of individual samples
(the compute actually spent), and `SampleResult.nfe_per_sample` each sample's own NFE. `steps_taken`
counts rounds (one step attempt of every running sample, accepted or not), so that
`nfe = 2 + 6 x steps_taken` as for any registered solver.

`adaptive_sde_per_sample` is `adaptive_sde` (Jolicoeur-Martineau et al. 2021, Algorithm 1) with the
same per-sample bookkeeping. Its noise comes from `adapters.RowBrownian`, a virtual Brownian tree
that each sample queries at its own time, keyed by the sample's global index: a sample's path, and
so its result, depends on the seed and its index only (another path than `BrownianPath`'s for the
same seed, so its samples differ from `adaptive_sde`'s). A round makes one batched call for the
second stage of every running sample and one for the next step's first stage of the samples that
accepted and go on; `steps_taken` counts the rounds with both calls and `steps_rejected` those with
one (every running sample rejected, or every accepting sample reached $\epsilon$), so that
`nfe = 1 + 2 x steps_taken + steps_rejected`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ..errors import NonFiniteError, StepSizeError
from ..scores import ScoreCalls
from .adaptive_sde import DEFAULT_ATOL, DEFAULT_RTOL
from .base import SolveOutput, SolveRequest
from .noise import NOISE_REMOVAL
from .registry import SOLVERS, Solver

__all__ = ["dopri5_per_sample", "adaptive_sde_per_sample"]

_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4, strict=True))
SAFETY, IFACTOR, DFACTOR = 0.9, 10.0, 0.2


class _Score(ScoreCalls):
    """The score on a subset of rows, each at its own time (the ledger counts batched calls and rows)."""

    def __init__(self, req: SolveRequest) -> None:
        super().__init__(req.score, req.callback)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.evaluate(x, t.to(x.dtype), t.max())


class _Drift(ScoreCalls):
    """The PF-ODE drift on a subset of rows, each at its own time (the ledger counts batched calls and rows)."""

    def __init__(self, req: SolveRequest) -> None:
        super().__init__(req.score, req.callback)
        self.sde = req.sde

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        tx = t.to(x.dtype)
        return self.sde.pf_drift(x, tx, self.evaluate(x, tx, t.max()))


def _rms(v: Tensor) -> Tensor:
    return v.flatten(1).square().mean(1).sqrt()


def _col(v: Tensor, like: Tensor) -> Tensor:
    return v.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


def dopri5_per_sample(req: SolveRequest) -> tuple[SolveOutput, Tensor, int]:
    """Integrate the PF-ODE from T down to `req.eps`, every sample with its own adaptive steps.

    Args:
        req: The checked request (`rtol`, `atol` set).

    Returns:
        `(output, nfe_per_sample, sample_evaluations)`.
    """
    x = req.x_T.clone()
    b = x.shape[0]
    f = _Drift(req)
    rtol, atol = float(req.rtol), float(req.atol)
    t = torch.full((b,), float(req.sde.T), dtype=torch.float64, device=x.device)
    eps = float(req.eps)
    own = torch.zeros(b, dtype=torch.int64, device=x.device)  # each sample's NFE
    k1 = f(x, t)
    h = _initial_step(f, x, t, k1, rtol, atol, eps)
    own += 2
    rounds = 0
    active = torch.ones(b, dtype=torch.bool, device=x.device)
    while True:
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        xa, ta, ha, k = x[idx], t[idx], h[idx], [k1[idx]]
        ha = torch.maximum(ha, eps - ta)  # negative steps: never past eps
        for j in range(1, 7):
            y = xa + sum(_col(ha * a, xa) * kk for a, kk in zip(_A[j], k, strict=False) if a != 0.0)
            k.append(f(y, ta + _C[j] * ha))
        own[idx] += 6
        y5 = y  # stage 7 is evaluated at the 5th-order solution (FSAL)
        err_vec = sum(_col(ha * e, xa) * kk for e, kk in zip(_E, k, strict=True) if e != 0.0)
        tol = atol + rtol * torch.maximum(xa.abs(), y5.abs())
        err = _rms(err_vec / tol).to(torch.float64)
        ok = err <= 1
        if not bool(torch.isfinite(y5).all()):
            raise NonFiniteError("the state", float(ta.min()))
        acc = idx[ok]
        x[acc], t[acc], k1[acc] = y5[ok], ta[ok] + ha[ok], k[6][ok]
        factor = torch.where(
            err == 0, torch.full_like(err, IFACTOR),
            (SAFETY * err.clamp_min(1e-300) ** -0.2).clamp(max=IFACTOR),
        )  # fmt: skip
        factor = torch.where(ok, factor.clamp(min=1.0), factor.clamp(min=DFACTOR))
        h[idx] = ha * factor
        rounds += 1
        active[acc] = t[acc] > eps * (1 + 1e-12)
        if bool((h[idx].abs() < 1e-14 * ta.abs().clamp_min(1.0)).any()):
            raise StepSizeError(float(ta.min()), req.solver)
    out = SolveOutput(
        samples=x, nfe=f.nfe, accepted=rounds, sample_evaluations=f.rows
    )  # a round: one step attempt of every running sample
    return out, own, f.rows


def _initial_step(
    f: _Drift, x: Tensor, t: Tensor, k1: Tensor, rtol: float, atol: float, eps: float
) -> Tensor:
    """Hairer, Nørsett & Wanner's starting step (torchdiffeq's `_select_initial_step`), per sample; one NFE."""
    scale = atol + x.abs() * rtol
    d0, d1 = _rms(x / scale).to(torch.float64), _rms(k1 / scale).to(torch.float64)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1)
    h0 = torch.minimum(h0, t - eps)
    y1 = x - _col(h0, x) * k1  # forward time decreases
    k2 = f(y1, t - h0)
    d2 = _rms((k2 - k1) / scale).to(torch.float64) / h0
    big = torch.maximum(d1, d2)
    h1 = torch.where(big <= 1e-15, torch.maximum(torch.full_like(h0, 1e-6), h0 * 1e-3), (0.01 / big) ** 0.2)
    return -torch.minimum(100 * h0, h1)


def _run(req: SolveRequest) -> SolveOutput:
    out, own, _ = dopri5_per_sample(req)
    out.nfe_per_sample = own
    return out


def adaptive_sde_per_sample(
    req: SolveRequest, *, h_init: float = 0.01, safety: float = 0.9, exponent: float = 0.9
) -> tuple[SolveOutput, Tensor, int]:
    r"""Gotta Go Fast's reverse-SDE solver (`adaptive_sde`) with a step size and accept/reject per sample.

    Each sample steps from its own $t_i$ to $t_i - h_i$ with one Brownian increment
    $\Delta W_i$ from `RowBrownian`: $x' = x + h\,b(x, t) + g(t)\Delta W$ (Euler–Maruyama),
    $\tilde x = x + h\,b(x', t - h) + g(t - h)\Delta W$, $x'' = (x' + \tilde x)/2$, with the error
    $E_i = \mathrm{RMS}\big((x'_i - x''_i)/\delta_i\big)$, $\delta_i = \max(\text{atol},
    \text{rtol}\cdot\max(|x'_i|, |x'_{i,\text{prev}}|))$ over the sample's own entries; the
    sample accepts when $E_i \le 1$ and sets $h_i \leftarrow \theta h_i E_i^{-r}$ either way.

    Args:
        req: The checked request (`rtol`, `atol`, `seed`, `options["noise_removal"]`).
        h_init: First step size, in $t$.
        safety: The factor $\theta$ of the step-size update.
        exponent: The exponent $r$ of the step-size update.

    Returns:
        `(output, nfe_per_sample, sample_evaluations)`.
    """
    sde, x = req.sde, req.x_T.clone()
    b = x.shape[0]
    T, eps = float(sde.T), float(req.eps)
    rtol, atol = float(req.rtol), float(req.atol)
    noise_removal = bool(req.options["noise_removal"])
    path = req.noise.row_path((b, x[0].numel()), s_end=T - eps, dtype=x.dtype, device=x.device)
    score = _Score(req)
    dev = x.device
    t = torch.full((b,), T, dtype=torch.float64, device=dev)
    h = torch.full((b,), min(h_init, T - eps), dtype=torch.float64, device=dev)
    w = torch.zeros(b, x[0].numel(), dtype=x.dtype, device=dev)  # W at each sample's solver time T - t
    x_prev = x.clone()
    s_x = score(x, t)
    own = torch.ones(b, dtype=torch.int64, device=dev)
    active = torch.ones(b, dtype=torch.bool, device=dev)
    two_calls = one_call = 0

    def drift(x: Tensor, t: Tensor, s: Tensor) -> Tensor:  # stepping down in t negates reverse_drift
        return -sde.reverse_drift(x, t.to(x.dtype), s)

    while True:
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        xa, ta, ha = x[idx], t[idx], h[idx]
        if bool((ha < 1e-10 * T).any()):
            raise StepSizeError(float(ta[ha < 1e-10 * T].max()), req.solver)
        t_next = torch.where(ta - ha <= eps * (1 + 1e-12), torch.full_like(ta, eps), ta - ha)
        ha = ta - t_next
        w_next = path.value(T - t_next, idx)
        dw = (w_next - w[idx]).view(xa.shape)
        if noise_removal:
            dw = dw * _col((t_next != eps).to(torch.float64), dw)
        g_a, g_n = _col(sde.g2(ta).sqrt(), xa), _col(sde.g2(t_next).sqrt(), xa)
        hc = _col(ha, xa)
        x1 = xa + hc * drift(xa, ta, s_x[idx]) + g_a * dw
        s1 = score(x1, t_next)
        x2 = (x1 + xa + hc * drift(x1, t_next, s1) + g_n * dw) / 2
        delta = (rtol * torch.maximum(x1.abs(), x_prev[idx].abs())).clamp_min(atol)
        err = _rms((x1 - x2) / delta).to(torch.float64)
        if not bool(torch.isfinite(err).all()):
            raise NonFiniteError("the state", float(t_next[~torch.isfinite(err)].max()))
        own[idx] += 1
        ok = err <= 1.0
        acc = idx[ok]
        x[acc], x_prev[acc], t[acc], w[acc] = x2[ok], x1[ok], t_next[ok], w_next[ok]
        h[idx] = safety * ha * err.clamp_min(1e-10) ** -exponent
        going = acc[t[acc] > eps]
        active[acc] = t[acc] > eps
        h[going] = torch.minimum(h[going], t[going] - eps)
        if going.numel():
            s_x[going] = score(x[going], t[going])
            own[going] += 1
            two_calls += 1
        else:
            one_call += 1
    out = SolveOutput(
        samples=x, nfe=score.nfe, accepted=two_calls, rejected=one_call, sample_evaluations=score.rows
    )
    return out, own, score.rows


def _run_sde(req: SolveRequest) -> SolveOutput:
    out, own, _ = adaptive_sde_per_sample(req)
    out.nfe_per_sample = own
    return out


SOLVERS["adaptive_sde_per_sample"] = Solver(
    "adaptive_sde_per_sample", "diffusion", _run_sde, nfe_per_step=2, nfe_start=1, nfe_per_rejected_step=1,
    strong_order=1.0, adaptive=True, stochastic=True,
    options={"noise_removal": replace(NOISE_REMOVAL, default=False)},
    default_rtol=DEFAULT_RTOL, default_atol=DEFAULT_ATOL, budgets=(0.5, 0.2, 0.1, 0.05, 0.02),
    reference="adaptive_sde_per_sample",
    description="Gotta Go Fast's adaptive reverse-SDE solver with a step size and accept/reject per sample "
    "(noise from a per-sample virtual Brownian tree, so a sample's result does not depend on its batch-mates)",
)  # fmt: skip

SOLVERS["dopri5_per_sample"] = Solver(
    "dopri5_per_sample", "ode", _run, nfe_per_step=6, nfe_start=2, order=5,
    adaptive=True, budgets=(1e-2, 1e-3, 1e-4),
    description="Dormand–Prince 5(4) on the PF-ODE with a step size and accept/reject per sample "
    "(a sample's result does not depend on its batch-mates)",
)  # fmt: skip
