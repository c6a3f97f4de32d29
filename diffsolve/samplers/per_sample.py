r"""`dopri5_per_sample`: the Dormand–Prince 5(4) pair on the probability-flow ODE, each sample with its
own step size and its own accept/reject.

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
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..scores import evaluate_score
from .base import SolveOutput, SolveRequest
from .registry import SOLVERS, Solver

__all__ = ["dopri5_per_sample"]

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


class _Drift:
    """The PF-ODE drift on a subset of rows, each at its own time; counts batched calls and rows."""

    def __init__(self, req: SolveRequest) -> None:
        self.score, self.sde, self.callback = req.score, req.sde, req.callback
        self.nfe = 0
        self.rows = 0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        tx = t.to(x.dtype)
        s = evaluate_score(self.score, x, tx)
        self.nfe += 1
        self.rows += x.shape[0]
        if self.callback is not None:
            self.callback(t.max())
        return self.sde.pf_drift(x, tx, s)


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
            from ..errors import NonFiniteError

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
            from ..errors import StepSizeError

            raise StepSizeError(float(ta.min()), req.solver)
    out = SolveOutput(
        samples=x, nfe=f.nfe, accepted=rounds
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
    out, own, rows = dopri5_per_sample(req)
    out.nfe_per_sample = own
    out.sample_evaluations = rows
    return out


SOLVERS["dopri5_per_sample"] = Solver(
    "dopri5_per_sample", "ode", _run, nfe_per_step=6, nfe_start=2, order=5,
    adaptive=True, budgets=(1e-2, 1e-3, 1e-4),
    description="Dormand–Prince 5(4) on the PF-ODE with a step size and accept/reject per sample "
    "(a sample's result does not depend on its batch-mates)",
)  # fmt: skip
