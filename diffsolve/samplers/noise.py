r"""What stochastic samplers share: last-step noise removal and the Euler–Maruyama step of `sde:euler`.

**Noise removal.** A stochastic sampler's last step ends at $\epsilon$, where nothing follows to
average its noise away: the samples carry $g(t_{N-1})\sqrt{\Delta t}$ of fresh noise that the data
distribution $p_\epsilon$ does not have. Song et al.'s samplers return the mean of the last step
instead (`x_mean` in their code), and so do ours by default (`noise_removal=True`; not to be
confused with `sample(..., denoise=True)`, Tweedie's one-step denoising at $\epsilon$, which costs an NFE). Strong-convergence
studies need the plain scheme, whose every step is a sample of the same SDE: pass `noise_removal=False`
(`analysis.convergence_order` does so itself for `kind="strong"`).

**Euler–Maruyama.** `sde:euler` is written here rather than run through torchsde: on the grid
$T = t_0 > \dots > t_N = \epsilon$,

$$x_{i+1} = x_i + \big[g(t_i)^2 s(x_i, t_i) - f(t_i)\,x_i\big]\,\Delta t_i + g(t_i)\,\Delta W_i,
\qquad \Delta t_i = t_i - t_{i+1},$$

with $\Delta W_i = W(T - t_{i+1}) - W(T - t_i)$ from the path the seed names (`adapters.BrownianPath`,
the same path the other `sde:` solvers see), so a step costs one score call, two normal draws and
three fused array operations. It equals torchsde's `euler` on that path (tested).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._validation import check_bool
from .base import SolveOutput, SolveRequest, run_on_grid
from .registry import Option

__all__ = ["NOISE_REMOVAL", "euler_maruyama"]


NOISE_REMOVAL = Option(
    True, check_bool, "end with the noise-free mean of the last step (False: the plain scheme)"
)
"""The `noise_removal` option every stochastic sampler offers."""


def euler_maruyama(req: SolveRequest) -> SolveOutput:
    """Runner of `sde:euler`: Euler–Maruyama on the reverse SDE over `req.grid`, last step noise-free if asked.

    Args:
        req: The checked request (its `options["noise_removal"]` says whether the last step drops its noise).
    """
    ledger = req.ledger()
    grid = req.grid
    times = grid.tolist()
    f = req.sde._f(grid).tolist()
    g2 = req.sde.g2(grid).tolist()
    path = req.noise.path(req.x_T, req.sde, req.eps)
    plain_steps = len(times) - 1 - int(req.options["noise_removal"])

    def step(x: Tensor, i: int) -> Tensor:
        dt = times[i] - times[i + 1]
        x_next = torch.mul(x, 1.0 - f[i] * dt).add_(ledger(x, times[i]), alpha=g2[i] * dt)
        if i < plain_steps:
            x_next.add_(path.increment(times[i], times[i + 1]), alpha=math.sqrt(g2[i]))
        return x_next

    return run_on_grid(step, req.x_T, grid, ledger, req.return_trajectory)
