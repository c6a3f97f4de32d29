r"""Song et al.'s predictor-corrector sampler: reverse-diffusion predictor + Langevin corrector.

On a grid $T = t_0 > t_1 > \dots > t_N = \epsilon$, step $i$ runs `corrector_steps` Langevin
updates at $t_i$, then one predictor step to $t_{i+1}$. With the forward transition
$x_{t_i} = a_i x_{t_{i+1}} + G_i z$, where $a_i = \alpha_{t_i}/\alpha_{t_{i+1}}$ and
$G_i^2 = \sigma_{t_i}^2 - a_i^2 \sigma_{t_{i+1}}^2$ (exact for every SDE here; for VP it is DDPM's
$a_i = \sqrt{1-\beta_i}$, $G_i^2 = \beta_i$), the predictor is the reverse diffusion

$$x \leftarrow (2 - a_i)\,x + G_i^2\, s(x, t_i) + G_i z, \qquad z = \Delta W_i/\sqrt{\Delta s_i},$$

with $\Delta W_i$ from the same Brownian path as `sde:` solvers. The corrector is Langevin dynamics
$x \leftarrow x + \delta\,s + \sqrt{2\delta}\,\xi$ with $\delta = 2 a_i^2 (r \|\xi\|/\|s\|)^2$ and
signal-to-noise ratio $r$ = `snr`. As in Song et al.'s code the norms are averaged over the batch:
per-sample norms blow up in low dimension, where $\|s\| \to 0$ at a mode's centre while $\|\xi\|$
does not. (So one sample's step size depends on its batch.) Cost: `1 + corrector_steps` NFE per step.
The last predictor step returns its mean, without noise, unless `noise_removal=False` (samplers/noise.py).

References:
    Song et al., "Score-Based Generative Modeling through SDEs", ICLR 2021, Algorithms 2-3.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .._validation import append_dims, check_positive
from ..adapters import KeyedNoise, uniform_grid
from ..scores import Score
from ..sde import SDE
from .base import ScoreLedger, SolveOutput, SolveRequest, run_on_grid
from .noise import NOISE_REMOVAL
from .registry import SOLVERS, Option, Solver

__all__ = ["pc_sampler"]


def pc_sampler(
    score: Score,
    sde: SDE,
    x_T: Tensor,
    *,
    steps: int,
    eps: float,
    noise: KeyedNoise,
    snr: float,
    corrector_steps: int,
    return_trajectory: bool,
    callback: Callable[[Tensor], None] | None = None,
    noise_removal: bool = True,
    step_size: str = "batch",
) -> SolveOutput:
    """Run the predictor-corrector sampler from `x_T` at T down to eps in `steps` predictor steps.

    Args:
        score: A `Score`, called as `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE.
        x_T: Initial state at $T$, `(B, *event)`.
        steps: Predictor steps, on a grid uniform in $t$.
        eps: Final forward time.
        noise: The solve's randomness (`KeyedNoise(seed, row_start)`): the Brownian path the predictor's
            noise comes from (shared with `sde:` solvers) and the corrector's Langevin noise (its own
            stream), both keyed by each sample's global row.
        snr: The signal-to-noise ratio $r$ of the Langevin step (Song et al. use 0.16 for CIFAR-10).
        corrector_steps: Langevin updates before each predictor step.
        return_trajectory: Also keep the state after every step.
        callback: Called with each forward time the score is evaluated at.
        noise_removal: End with the mean of the last predictor step (Song et al.'s `x_mean`).
        step_size: `"batch"`: Song et al.'s Langevin step, from the batch means of the noise and score
            norms (so a sample's result depends on its batch-mates); `"sample"`: each sample's own
            norms (batch-invariant, like every fixed-step sampler).

    Returns:
        A `SolveOutput`.
    """
    t_grid = uniform_grid(sde.T, eps, steps)
    times = t_grid.tolist()
    path = noise.path(x_T, sde, eps)
    per_sample = step_size == "sample"
    alpha, sigma = (v.tolist() for v in sde.marginal(t_grid))
    call = ScoreLedger(score, sde, callback)

    def step(x: Tensor, i: int) -> Tensor:
        t_cur = times[i]
        a = alpha[i] / alpha[i + 1]
        g2 = sigma[i] ** 2 - a**2 * sigma[i + 1] ** 2
        for c in range(corrector_steps):
            grad = call(x, t_cur)
            z = noise.normals("corrector", i, c, like=x)  # each sample's by its global index, on x's device
            grad_norm, noise_norm = grad.flatten(1).norm(dim=1), z.flatten(1).norm(dim=1)
            if not per_sample:
                grad_norm, noise_norm = grad_norm.mean(), noise_norm.mean()
            # A zero score carries no information: take no step rather than an infinite one.
            # (Kept on the device: no host sync per step.)
            ratio = torch.where(grad_norm > 0, noise_norm / grad_norm, 0.0)
            delta = (
                append_dims(2 * a**2 * (snr * ratio) ** 2, x.dim())
                if per_sample
                else 2 * a**2 * (snr * ratio) ** 2
            )
            x = x + delta * grad + (2 * delta).sqrt() * z
        mean = (2 - a) * x + g2 * call(x, t_cur)
        if noise_removal and i == len(times) - 2:
            return mean
        z = path.increment(t_cur, times[i + 1]) / (t_cur - times[i + 1]) ** 0.5
        return mean.add_(z, alpha=g2**0.5)

    return run_on_grid(step, x_T, t_grid, call, return_trajectory)


def _run(req: SolveRequest) -> SolveOutput:
    return pc_sampler(
        req.score, req.sde, req.x_T, steps=req.steps, eps=req.eps, noise=req.noise, snr=req.options["snr"],
        corrector_steps=req.options["corrector_steps"], return_trajectory=req.return_trajectory,
        callback=req.callback, noise_removal=req.options["noise_removal"], step_size=req.options["step_size"],
    )  # fmt: skip


def _check_step_size(value: object, name: str) -> None:
    if value not in ("batch", "sample"):
        raise ValueError(f"{name} must be 'batch' or 'sample', got {value!r}")


def _pc_nfe(options: dict) -> int:
    """1 + corrector_steps"""
    return 1 + options["corrector_steps"]


SOLVERS["pc"] = Solver(
    "pc", "diffusion", _run, _pc_nfe, stochastic=True, default_steps=1000,
    options={
        "snr": Option(0.16, check_positive, "signal-to-noise ratio r of the Langevin corrector"),
        "corrector_steps": Option(
            1, lambda v, name: check_positive(v, name, integer=True, allow_zero=True), "Langevin steps per step"
        ),
        "noise_removal": NOISE_REMOVAL,
        "step_size": Option(
            "batch", _check_step_size, "Langevin step from batch-mean norms (Song et al.) or per sample"
        ),
    },
    budgets=(25, 50, 75, 100, 200),
    # Song et al.'s step size reads batch means; per-sample steps (or no corrector) keep rows apart.
    batch_invariant=lambda o: o["step_size"] == "sample" or o["corrector_steps"] == 0,
    description="Song et al.'s predictor-corrector: reverse-diffusion predictor + Langevin corrector",
)  # fmt: skip
