"""Time grids shared by the fixed-step samplers."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .._validation import check_positive
from ..adapters.grid import fixed_step_grid, uniform_grid

__all__ = [
    "uniform_grid", "fixed_step_grid", "time_grid", "shifted_grid", "dynamic_shift", "log_snr", "t_of_log_snr", "GRIDS",
]  # fmt: skip


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
    r"""Invert $\lambda_t$ on $[lo, hi]$ by bisection (float64; `SDE.time_of_log_snr`).

    Args:
        sde: The forward SDE.
        lam: Target values of $\lambda$, any shape; each must lie in $[\lambda_{hi}, \lambda_{lo}]$.
        lo: Lower end of the bracket in $t$.
        hi: Upper end of the bracket in $t$.
        iterations: Bisection steps.

    Returns:
        The times $t$ with $\lambda_t$ = `lam`, float64, shaped like `lam`.
    """
    return sde.time_of_log_snr(lam, lo=lo, hi=hi, iterations=iterations)


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
    if kind in ("logsnr", "karras") and sde.zero_terminal_snr:
        raise ValueError(
            f"a {kind!r} grid cannot start at alpha_T = 0 ({sde!r}: log-SNR -inf there); pass time_grid='uniform', "
            "'quadratic' or a tensor of times (samplers.grids.shifted_grid, a scheduler's)"
        )
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


def shifted_grid(sde: Any, steps: int, eps: float, shift: float = 3.0) -> Tensor:
    r"""Flow matching's shifted time grid (SD3, FLUX): uniform in $u$ where $t = s u / (1 + (s - 1) u)$.

    The grid of diffusers' `FlowMatchEulerDiscreteScheduler` with `shift = s` (SD3's default is 3;
    FLUX's dynamic shift is $s = e^\mu$, `dynamic_shift`): $s > 1$ puts more steps at large t, where
    a flow-matching model's velocity changes fastest at high resolution. The end points are exact
    (`steps + 1` times from `sde.T` down to `eps`); pass the grid as `sample(..., time_grid=grid)`
    to any solver that takes one (`ode:euler` and `ode:heun2` are what the schedulers run).

    Args:
        sde: The forward SDE or path (any; the shift is a warp of t, most used on `RectifiedFlow`).
        steps: Number of intervals.
        eps: The last time, in (0, T).
        shift: $s > 0$; 1 is the uniform grid.

    Returns:
        A float64 tensor of `steps + 1` decreasing times.
    """
    check_positive(steps, "steps", integer=True)
    check_positive(shift, "shift")
    check_positive(eps, "eps")
    T = float(sde.T)
    if not 0.0 < eps < T:
        raise ValueError(f"eps must lie in (0, T) = (0, {T}), got {eps!r}")
    s = float(shift)

    def unwarp(t: float) -> float:
        return t / (s - (s - 1.0) * t)

    u = torch.linspace(unwarp(T), unwarp(eps), steps + 1, dtype=torch.float64)
    grid = s * u / (1.0 + (s - 1.0) * u)
    grid[0], grid[-1] = T, eps
    return grid


def dynamic_shift(
    image_seq_len: int,
    *,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    r"""FLUX's resolution-dependent shift $s = e^\mu$ for `shifted_grid`, $\mu$ linear in the image's
    token count: `base_shift` at `base_seq_len` tokens, `max_shift` at `max_seq_len` (FLUX.1's
    defaults; diffusers' `calculate_shift`, used with `use_dynamic_shifting=True`).

    Args:
        image_seq_len: The number of latent tokens (FLUX: (height / 16) * (width / 16)).
        base_seq_len: The token count where $\mu$ = `base_shift`.
        max_seq_len: The token count where $\mu$ = `max_shift`.
        base_shift: $\mu$ at `base_seq_len`.
        max_shift: $\mu$ at `max_seq_len`.

    Returns:
        The shift $s = e^\mu$.
    """
    check_positive(image_seq_len, "image_seq_len", integer=True)
    if not max_seq_len > base_seq_len:
        raise ValueError(f"max_seq_len must exceed base_seq_len, got {max_seq_len} and {base_seq_len}")
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    mu = base_shift + slope * (image_seq_len - base_seq_len)
    return math.exp(mu)
