r"""Projection samplers for inverse problems: score_sde's replacement and RePaint's resampling.

Both step DDPM's ancestral sampler (`ddim_eta` at $\eta = 1$, on the Brownian path the seed names)
and, after every step to $t_{i+1}$, move the state onto the observation's noised level set: with
`observation=` an `inverse.Observation` ($y = A x_0 + n$),

$$x \leftarrow x + A^+\big(y_{t} - A x\big), \qquad y_t = \alpha_t\, y + \sigma_t\, A z,$$

the replacement of the observed values by a fresh forward-noised copy of the observation (Song et
al. 2021, Appendix I.2; for a mask $A^+ = A^\top$ and this is inpainting's replacement). `repaint`
repeats each step `resample` times, taking the state back from $t_{i+1}$ to $t_i$ through the
forward transition between repetitions (Lugmayr et al. 2022, jump length 1), so that the unobserved
values have time to agree with the observed ones. Neither models the observation noise $s$: it
projects onto $Ax = y$ as if $y$ were exact, a bias the study in docs/benchmarks.md measures.

`dps_ddpm` and `pigdm_ddim` are the papers' own loops on the same step: a correction computed by
autograd through Tweedie's $\hat x_0(x_i)$ and added to the state with the papers' per-step weights
(DPS: $\zeta'$ on the gradient of $\|y - A\hat x_0\|$; $\Pi$GDM: $\zeta\,\alpha_i\alpha_{i+1}$ on its
pseudoinverse guidance), which no score can express; `inverse.dps` and `inverse.pigdm` are the same
likelihood terms as scores, for any solver.

Without `observation` all four are DDPM's ancestral sampler (`replacement` equals `ddim_eta`).

References:
    Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations", ICLR 2021.
    Lugmayr et al., "RePaint: Inpainting using Denoising Diffusion Probabilistic Models", CVPR 2022.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_positive, describe
from ..inverse import Observation
from .ancestral import _Noise, ddim_eta_step
from .base import SolveOutput, SolveRequest, run_on_grid
from .diffusion import _schedule, prediction
from .noise import NOISE_REMOVAL
from .registry import SOLVERS, Option, Solver

__all__ = ["replacement", "repaint", "dps_ddpm", "pigdm_ddim"]


def _check_observation(value: object, name: str) -> None:
    if value is not None and not isinstance(value, Observation):
        raise TypeError(f"{name} must be a diffsolve.inverse.Observation or None, got {describe(value)}")


OBSERVATION = Option(
    None, _check_observation, "the inverse.Observation to project onto (None: no projection)"
)


def _projector(req: SolveRequest, alpha: list[float], sigma: list[float]):
    """`project(x, i, key)`: x onto the noised observation at grid time i (noise-free at the end
    when noise is removed); the identity without an observation."""
    obs: Observation | None = req.options["observation"]
    if obs is None:
        return lambda x, i, *key: x
    obs.check(req.x_T, "x_T")
    end = len(alpha) - 1
    clean_end = req.options["noise_removal"]

    def project(x: Tensor, i: int, *key: int) -> Tensor:
        a, y, _ = obs.tensors(x)
        target = alpha[i] * y.expand(x.shape[0], -1)
        if not (i == end and clean_end):
            z = req.noise.normals("observation", i, *key, like=x).flatten(1)
            target = target + sigma[i] * (z @ a.T)
        return obs.project(x, target)

    return project


def replacement(req: SolveRequest) -> SolveOutput:
    """DDPM ancestral steps, each followed by the projection onto the noised observation (1 NFE per step).

    Args:
        req: The checked request (options: `observation`, `noise_removal`; `seed` names the noise).
    """
    ledger, times = req.ledger(), req.grid.tolist()
    alpha, sigma, _ = _schedule(req.sde, req.grid)
    noise, project = _Noise(req), _projector(req, alpha, sigma)

    def step(x: Tensor, i: int) -> Tensor:
        return project(ddim_eta_step(x, ledger(x, times[i]), i, alpha, sigma, noise(i)), i + 1, 0)

    return run_on_grid(step, project(req.x_T, 0, 0), req.grid, ledger, req.return_trajectory)


def repaint(req: SolveRequest) -> SolveOutput:
    r"""RePaint: each step repeated `resample` times, going back from $t_{i+1}$ to $t_i$ by the forward
    transition between repetitions (`resample` NFE per step).

    Args:
        req: The checked request (options: `observation`, `resample`, `noise_removal`; `seed` names the noise).
    """
    ledger, times = req.ledger(), req.grid.tolist()
    alpha, sigma, _ = _schedule(req.sde, req.grid)
    noise, project = _Noise(req), _projector(req, alpha, sigma)
    repeats = req.options["resample"]

    def step(x: Tensor, i: int) -> Tensor:
        for u in range(repeats):
            z = noise(i) if u == repeats - 1 else req.noise.normals("resample", i, u, 0, like=x)
            x = project(ddim_eta_step(x, ledger(x, times[i]), i, alpha, sigma, z), i + 1, u)
            if u < repeats - 1:  # back to t_i through the forward transition from t_i to t_{i+1}
                ratio = alpha[i] / alpha[i + 1]
                spread = math.sqrt(max(sigma[i] ** 2 - ratio**2 * sigma[i + 1] ** 2, 0.0))
                x = x.mul(ratio).add_(req.noise.normals("resample", i, u, 1, like=x), alpha=spread)
        return x

    return run_on_grid(step, project(req.x_T, 0, 0), req.grid, ledger, req.return_trajectory)


def _guided_loop(req: SolveRequest, pull):
    """A DDPM-ancestral loop whose every step adds `pull(x, score, i)`: the state's step plus a
    correction computed by autograd through Tweedie's denoiser at the step's start."""
    ledger, times = req.ledger(), req.grid.tolist()
    alpha, sigma, _ = _schedule(req.sde, req.grid)
    noise, obs = _Noise(req), req.options["observation"]
    if obs is not None:
        obs.check(req.x_T, "x_T")

    def step(x: Tensor, i: int) -> Tensor:
        if obs is None:
            return ddim_eta_step(x, ledger(x, times[i]), i, alpha, sigma, noise(i))
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            s = ledger(xg, times[i])
            x0 = prediction(xg, s, alpha=alpha[i], sigma=sigma[i], data=True)
            correction = pull(xg, x0, obs, i, alpha, sigma)
        return ddim_eta_step(x, s.detach(), i, alpha, sigma, noise(i)).add_(correction)

    return run_on_grid(step, req.x_T, req.grid, ledger, req.return_trajectory)


def dps_ddpm(req: SolveRequest) -> SolveOutput:
    r"""Chung et al.'s DPS loop (Algorithm 1, in the form of the authors' code): a DDPM ancestral step,
    then $x \leftarrow x - \zeta' \nabla_{x_i}\|y - A\hat x_0(x_i)\|$ per sample (the paper's step
    $\zeta_i = \zeta'/\|y - A\hat x_0\|$ on the squared norm, up to a factor 2), $\zeta'$ = `scale`
    (1 NFE and one VJP per step).

    Args:
        req: The checked request (options: `observation`, `scale`, `noise_removal`; `seed` names the noise).
    """
    scale = req.options["scale"]

    def pull(xg, x0, obs, i, alpha, sigma):
        norm = obs.residual(x0).norm(dim=1).sum()
        (grad,) = torch.autograd.grad(norm, xg)
        return grad.mul_(-scale)

    return _guided_loop(req, pull)


def pigdm_ddim(req: SolveRequest) -> SolveOutput:
    r"""Song et al.'s $\Pi$GDM loop (Algorithm 1) on DDPM's ancestral step: the step, then
    $+\ \zeta\,\alpha_i\alpha_{i+1}\,(\partial\hat x_0/\partial x)^\top r_i^2 A^\top (r_i^2 AA^\top + s^2 I)^{-1}(y - A\hat x_0)$
    with $r_i^2 = \sigma_i^2/(\alpha_i^2 + \sigma_i^2)$ (noise-free: $A^+(y - A\hat x_0)$), $\zeta$ = `scale`
    (1 NFE and one VJP per step).

    Args:
        req: The checked request (options: `observation`, `scale`, `noise_removal`; `seed` names the noise).
    """
    scale = req.options["scale"]

    def pull(xg, x0, obs, i, alpha, sigma):
        a = obs.tensors(x0)[0]
        r2 = sigma[i] ** 2 / (alpha[i] ** 2 + sigma[i] ** 2)
        cov = r2 * a @ a.T + obs.noise_std**2 * torch.eye(a.shape[0], dtype=x0.dtype, device=x0.device)
        weighted = torch.linalg.solve(cov, obs.residual(x0).T).T * r2
        (grad,) = torch.autograd.grad(x0, xg, grad_outputs=(weighted @ a).view(x0.shape))
        return grad.mul_(scale * alpha[i] * alpha[i + 1])

    return _guided_loop(req, pull)


def _scale(value: object, name: str) -> None:
    check_positive(value, name, allow_zero=True)
    if not value < float("inf"):
        raise ValueError(f"{name} must be finite, got {value!r}")


def _resample_count(value: object, name: str) -> None:
    check_positive(value, name, integer=True)
    if value > 1000:
        raise ValueError(f"{name} must be at most 1000 repetitions per step, got {value!r}")


def _repaint_nfe(options) -> int:
    """resample"""
    return int(options["resample"])


_OPTIONS = {"observation": OBSERVATION, "noise_removal": NOISE_REMOVAL}

for _solver in [
    Solver("replacement", "diffusion", replacement, 1, stochastic=True, default_steps=200, time_grid="uniform",
           options=_OPTIONS, budgets=(10, 20, 50, 100, 200, 500, 1000),
           description="inpainting by replacement (score_sde): DDPM ancestral steps projected onto the noised observation"),
    Solver("repaint", "diffusion", repaint, _repaint_nfe, stochastic=True, default_steps=100, time_grid="uniform",
           options={**_OPTIONS, "resample": Option(5, _resample_count, "repetitions per step (RePaint's r; jump 1)")},
           budgets=(2, 4, 10, 20, 50, 100, 200),
           description="RePaint: replacement with each step repeated `resample` times through the forward transition"),
    Solver("dps_ddpm", "diffusion", dps_ddpm, 1, stochastic=True, default_steps=1000, time_grid="uniform",
           options={**_OPTIONS, "scale": Option(1.0, _scale, "DPS's step zeta' on the residual's norm")},
           budgets=(10, 20, 50, 100, 200, 500, 1000),
           description="Chung et al.'s DPS loop: DDPM steps, each minus zeta' grad ||y - A x0_hat|| (one VJP per step)"),
    Solver("pigdm_ddim", "diffusion", pigdm_ddim, 1, stochastic=True, default_steps=100, time_grid="uniform",
           options={**_OPTIONS, "scale": Option(1.0, _scale, "the guidance weight zeta")},
           budgets=(10, 20, 50, 100, 200, 500, 1000),
           description="Song et al.'s PiGDM loop: DDPM steps plus the pseudoinverse guidance weighted by alpha_i alpha_i+1"),
]:  # fmt: skip
    SOLVERS[_solver.name] = _solver
