"""Time grids shared by the fixed-step samplers."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..adapters.grid import fixed_step_grid, uniform_grid

__all__ = ["uniform_grid", "fixed_step_grid", "time_grid", "log_snr", "t_of_log_snr", "GRIDS"]


GRIDS = ("uniform", "logsnr", "karras", "quadratic")
r"""Time grids `time_grid` builds: uniform in t, uniform in log-SNR, Karras et al.'s rho-schedule,
uniform in $\sqrt t$ (DDIM's and DPM-Solver's "time_quadratic")."""


def log_snr(sde: Any, t: Tensor) -> Tensor:
    r"""Half the log signal-to-noise ratio, $\lambda_t = \log(\alpha_t/\sigma_t)$, in float64; decreasing in t.

    Args:
        sde: The forward SDE.
        t: Forward times, any shape.
    """
    return sde.log_snr(t.to(torch.float64))


def t_of_log_snr(sde: Any, lam: Tensor, *, lo: float, hi: float, iterations: int = 64) -> Tensor:
    r"""Invert $\lambda_t$ on $[lo, hi]$ by bisection (float64; every SDE here, no closed form needed).

    64 halvings of $[lo, hi] \subset [0, 1]$ reach float64's resolution.

    Args:
        sde: The forward SDE.
        lam: Target values of $\lambda$, any shape; each must lie in $[\lambda_{hi}, \lambda_{lo}]$.
        lo: Lower end of the bracket in $t$.
        hi: Upper end of the bracket in $t$.
        iterations: Bisection steps.

    Returns:
        The times $t$ with $\lambda_t$ = `lam`, float64, shaped like `lam`.
    """
    lam = lam.to(torch.float64)
    a = torch.full_like(lam, lo)
    b = torch.full_like(lam, hi)
    for _ in range(iterations):
        mid = (a + b) / 2
        above = log_snr(sde, mid) > lam  # lambda decreases in t: the root lies to the right of mid
        a = torch.where(above, mid, a)
        b = torch.where(above, b, mid)
    return (a + b) / 2


def time_grid(sde: Any, steps: int, eps: float, kind: str = "uniform", *, rho: float = 7.0) -> Tensor:
    r"""`steps + 1` forward times from T down to eps (float64), end points exact.

    Kinds: `"uniform"` in t; `"quadratic"` uniform in $\sqrt t$;
    `"logsnr"` uniform in $\lambda_t = \log(\alpha_t/\sigma_t)$ (DPM-Solver's
    choice); `"karras"`, $\tilde\sigma_i = (\tilde\sigma_{max}^{1/\rho} + \tfrac{i}{N}(\tilde\sigma_{min}^{1/\rho}
    - \tilde\sigma_{max}^{1/\rho}))^\rho$ in $\tilde\sigma = \sigma_t/\alpha_t$ (Karras et al. 2022, eq. 5,
    with N intervals ending at $\tilde\sigma(\epsilon)$ rather than at 0).

    Args:
        sde: The forward SDE.
        steps: Number of intervals N.
        eps: The last time.
        kind: `"uniform"`, `"logsnr"`, `"karras"` or `"quadratic"`.
        rho: The Karras grid's exponent.

    Returns:
        A float64 tensor of `steps + 1` decreasing times.

    Raises:
        ValueError: On an unknown kind.
    """
    if kind not in GRIDS:
        raise ValueError(f"time grid must be one of {', '.join(GRIDS)}; got {kind!r}")
    T = float(sde.T)
    if kind == "uniform":
        return uniform_grid(T, eps, steps)
    if kind == "quadratic":
        root = torch.linspace(T**0.5, eps**0.5, steps + 1, dtype=torch.float64)
        grid = root.square()
        grid[0], grid[-1] = T, eps
        return grid
    ends = log_snr(sde, torch.tensor([T, eps], dtype=torch.float64))
    if kind == "logsnr":
        lam = torch.linspace(float(ends[0]), float(ends[1]), steps + 1, dtype=torch.float64)
    else:
        s_max, s_min = (-ends).exp()
        i = torch.arange(steps + 1, dtype=torch.float64) / steps
        sig = (s_max ** (1 / rho) + i * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        lam = -sig.log()
    grid = t_of_log_snr(sde, lam, lo=eps, hi=T)
    grid[0], grid[-1] = T, eps
    return grid
