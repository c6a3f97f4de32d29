r"""Forward SDEs with linear drift, and the drifts of their reverse-time SDE and probability-flow ODE.

Every SDE here has the form $dx = f(t)\,x\,dt + g(t)\,dW$ on $t \in [0, T]$, so its transition from
data is Gaussian: $x_t = \alpha_t x_0 + \sigma_t z$ with $z \sim N(0, I)$, where

$$\alpha_t = \exp\Big(\int_0^t f\Big), \qquad \sigma_t^2 = \alpha_t^2 \int_0^t \frac{g(s)^2}{\alpha_s^2}\,ds.$$

Given a score $s(x, t) \approx \nabla_x \log p_t(x)$ (Anderson 1982; Song et al. 2021), the reverse-time
SDE has drift $f(t)x - g(t)^2 s(x, t)$ and the probability-flow ODE has drift $f(t)x - \tfrac12 g(t)^2 s(x, t)$,
both in forward time $t$. The change of variable to solver time lives in `diffsolve.adapters`.

Parameters are Python floats; tensors' dtype and device follow the inputs. Closed forms avoid the
cancellation in $1 - \alpha_t^2$ by writing it as `-expm1(2 log alpha)`.

References:
    Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole. "Score-Based Generative Modeling through
    Stochastic Differential Equations", ICLR 2021.
"""

from __future__ import annotations

import abc
import functools
import math
import numbers
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ._validation import (
    append_dims,
    as_time,
    batch_time,
    check_batched,
    check_positive,
    check_seed,
    check_tensor,
)

__all__ = [
    "SDE", "VPSDE", "SubVPSDE", "VESDE", "CosineVPSDE", "DiscreteVPSDE", "EDMSDE", "AffinePath", "RectifiedFlow",
]  # fmt: skip


class SDE(abc.ABC):
    """A forward SDE $dx = f(t)\\,x\\,dt + g(t)\\,dW$ with a Gaussian transition and a Gaussian prior.

    Subclasses give $f(t)$, $g(t)^2$ and $(\\log\\alpha_t, \\sigma_t)$ in closed form; everything else
    (drifts, perturbation, prior) is shared.
    """

    T: float = 1.0

    # --- closed forms supplied by each SDE (t is a tensor already checked to lie in [0, T]) ---

    @abc.abstractmethod
    def _f(self, t: Tensor) -> Tensor:
        """The linear drift coefficient f(t)."""

    @abc.abstractmethod
    def _g2(self, t: Tensor) -> Tensor:
        """The squared diffusion g(t)^2."""

    @abc.abstractmethod
    def _log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """log alpha_t and sigma_t."""

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the Gaussian prior N(0, prior_std^2 I) at t = T."""

    @abc.abstractmethod
    def params(self) -> dict[str, float]:
        """The constructor arguments, so that `type(sde)(**sde.params())` rebuilds it."""

    # --- public maths ---

    def drift(self, x: Tensor, t: float | Tensor) -> Tensor:
        """The forward drift $f(t)\\,x$; `t` is a float, a 0-d or a `(B,)` tensor."""
        x = check_batched(x, "x", min_dim=1)
        t = batch_time(as_time(t, like=x, T=self.T), x)
        return append_dims(self._f(t).to(x.dtype), x.dim()) * x

    def diffusion(self, t: float | Tensor) -> Tensor:
        """The diffusion coefficient $g(t)$, shaped like `t`."""
        return self.g2(t).sqrt()

    def g2(self, t: float | Tensor) -> Tensor:
        """The squared diffusion coefficient $g(t)^2$, shaped like `t`."""
        return self._g2(as_time(t, like=None, T=self.T))

    def marginal(self, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """The scale and standard deviation $(\\alpha_t, \\sigma_t)$ of $x_t \\mid x_0$, shaped like `t`."""
        log_alpha, sigma = self.log_alpha_sigma(t)
        return log_alpha.exp(), sigma

    def log_alpha_sigma(self, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """$(\\log\\alpha_t, \\sigma_t)$, shaped like `t`: the log-scale without the rounding of `log(alpha)`."""
        return self._log_alpha_sigma(as_time(t, like=None, T=self.T))

    def log_snr(self, t: float | Tensor) -> Tensor:
        """Half the log signal-to-noise ratio $\\lambda_t = \\log(\\alpha_t/\\sigma_t)$, decreasing in t.

        The time variable of DPM-Solver and DEIS; computed in `t`'s dtype (pass float64 for grids).
        """
        log_alpha, sigma = self.log_alpha_sigma(t)
        return log_alpha - sigma.log()

    def time_of_log_snr(
        self, lam: Tensor, *, lo: float = 0.0, hi: float | None = None, iterations: int = 64
    ) -> Tensor:
        r"""The times $t \in [lo, hi]$ (default $[0, T]$) with $\lambda_t$ = `lam`, by bisection in float64
        (any SDE, no closed form needed; 64 halvings reach float64's resolution on $[0, 1]$).

        Args:
            lam: Target values of $\lambda$, any shape; each must lie in $[\lambda_{hi}, \lambda_{lo}]$.
            lo: Lower end of the bracket.
            hi: Upper end of the bracket (default T).
            iterations: Bisection steps.
        """
        lam = lam.to(torch.float64)
        a = torch.full_like(lam, lo)
        b = torch.full_like(lam, self.T if hi is None else hi)
        for _ in range(iterations):
            mid = (a + b) / 2
            above = self.log_snr(mid) > lam  # lambda decreases in t: the root lies to the right of mid
            a = torch.where(above, mid, a)
            b = torch.where(above, b, mid)
        return (a + b) / 2

    def log_snr_midpoints(self, times: Tensor) -> Tensor:
        r"""The times halfway in $\lambda$ between consecutive `times` (where $\sigma/\alpha$ is their geometric
        mean), float64; NaN on an interval ending at $\sigma = 0$ ($\lambda = \infty$). `kdpm2`'s midpoints.

        Args:
            times: Decreasing times, shape `(N + 1,)`.
        """
        lam = self.log_snr(times.double())
        inner = torch.isfinite(lam[1:])
        mid = torch.full_like(lam[1:], math.nan)
        if bool(inner.any()):
            lo, hi = float(times[1:][inner].min()), float(times[:-1][inner].max())
            mid[inner] = self.time_of_log_snr(((lam[:-1] + lam[1:]) / 2)[inner], lo=lo, hi=hi)
        return mid

    def perturb(
        self,
        x0: Tensor,
        t: float | Tensor,
        noise: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw $x_t = \\alpha_t x_0 + \\sigma_t z$; `noise` is $z$ (drawn from `generator` when omitted)."""
        x0 = check_batched(x0, "x0", min_dim=1)
        if noise is None:
            noise = torch.randn(x0.shape, dtype=x0.dtype, device=x0.device, generator=generator)
        elif check_tensor(noise, "noise").shape != x0.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}; expected x0's shape {tuple(x0.shape)}")
        t = batch_time(as_time(t, like=x0, T=self.T), x0)
        alpha, sigma = self.marginal(t)
        return (
            append_dims(alpha.to(x0.dtype), x0.dim()) * x0 + append_dims(sigma.to(x0.dtype), x0.dim()) * noise
        )

    def prior_sample(
        self,
        shape: tuple[int, ...] | torch.Size,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
    ) -> Tensor:
        """Draw from the prior $N(0, \\text{prior\\_std}^2 I)$ with `shape = (batch, *event)`.

        `seed=` (a fresh generator seeded by it) or `generator=`, as `GaussianMixture.sample` and `sample`
        take either; these are plain `torch.randn` draws, not `sample`'s keyed prior draws
        (`sampling.prior_draws`), which do not depend on the batch.
        """
        if (
            not isinstance(shape, (tuple, list, torch.Size))
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in shape)
            or len(shape) < 2
        ):
            raise ValueError(f"shape must be (batch, *event) of positive integers, got {shape!r}")
        shape = tuple(int(s) for s in shape)  # numpy integers are integers too
        if seed is not None:
            if generator is not None:
                raise ValueError("give seed= or generator=, not both")
            generator = torch.Generator().manual_seed(check_seed(seed))
        if generator is not None and generator.device.type == "cpu":
            z = torch.randn(shape, dtype=dtype, generator=generator).to(device or "cpu")
        else:
            z = torch.randn(shape, dtype=dtype, device=device, generator=generator)
        return self.prior_std * z

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """Log-density of the prior at `z` (shape `(B, *event)`), in nats, summed over the event: `(B,)`."""
        z = check_batched(z, "z")
        d = z[0].numel()
        s = self.prior_std
        sq = z.flatten(1).square().sum(1)
        return -0.5 * sq / s**2 - d * (math.log(s) + 0.5 * math.log(2 * math.pi))

    def reverse_drift(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Drift of the reverse-time SDE in forward time: $f(t)x - g(t)^2 s$, for `t` 0-d or of shape `(B,)`."""
        g2 = append_dims(self._g2(t).to(x.dtype), x.dim())
        return append_dims(self._f(t).to(x.dtype), x.dim()) * x - g2 * score

    def pf_drift(self, x: Tensor, t: Tensor, score: Tensor) -> Tensor:
        """Drift of the probability-flow ODE in forward time: $f(t)x - \\tfrac12 g(t)^2 s$, `t` 0-d or `(B,)`."""
        g2 = append_dims(self._g2(t).to(x.dtype), x.dim())
        return append_dims(self._f(t).to(x.dtype), x.dim()) * x - 0.5 * g2 * score

    @functools.cached_property
    def zero_terminal_snr(self) -> bool:
        r"""Whether $\alpha_T = 0$: the marginal at T is the prior itself and holds nothing of the data
        (`RectifiedFlow(T=1)`). The score there is the prior's and does not determine the velocity,
        so only a solver that steps on a velocity model's output (`Solver.velocity`) starts there.
        Computed once (every solve asks)."""
        return float(self.marginal(torch.tensor([self.T], dtype=torch.float64))[0][0]) == 0.0

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        if self is other:  # every solve compares its SDE with its model's, most often the same object
            return True
        return type(self) is type(other) and self.params() == other.params()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.params().items()))))


def _check_finite(**params: float) -> None:
    for name, value in params.items():
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r} (the marginals would not be)")


PRIOR_SIGNAL_MAX = 0.1
r"""The largest $\alpha_T$ a VP-type SDE may keep at T without a warning: its prior N(0, I) drops a
share $\alpha_T$ of the data that the marginal at T still carries (0.0066 for the default VP SDE,
0.068 for Stable Diffusion's scaled-linear betas)."""


def _check_prior(sde: SDE, what: str) -> None:
    """Refuse non-finite marginals; warn when the prior N(0, I) is far from the marginal at T."""
    for dtype in (torch.float32, torch.float64):
        alpha, sigma = sde.marginal(torch.linspace(0.0, sde.T, 17, dtype=dtype))
        if not bool(torch.isfinite(alpha).all() and torch.isfinite(sigma).all()):
            raise ValueError(
                f"{what} gives non-finite marginals (alpha_t, sigma_t) on [0, T] in {dtype}: "
                "its parameters are out of range"
            )
    if float(alpha[-1]) > PRIOR_SIGNAL_MAX:
        warnings.warn(
            f"{what} keeps alpha_T = {float(alpha[-1]):.3g} of the data at T = {sde.T:g}: its prior N(0, I) "
            f"is far from the marginal at T, so samples start from the wrong distribution (raise T or the "
            f"noise schedule until alpha_T <= {PRIOR_SIGNAL_MAX})",
            stacklevel=3,
        )


class _LinearBetaSDE(SDE):
    r"""Shared maths of VP and sub-VP: $\beta(t) = \beta_{min} + t(\beta_{max} - \beta_{min})$, $f = -\beta/2$."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        check_positive(beta_min, "beta_min")
        check_positive(beta_max, "beta_max")
        _check_finite(beta_min=beta_min, beta_max=beta_max)
        if beta_max < beta_min:
            raise ValueError(
                f"beta_max must be >= beta_min, got beta_min={beta_min!r}, beta_max={beta_max!r}"
            )
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)
        _check_prior(self, f"{type(self).__name__}(beta_min={beta_min!r}, beta_max={beta_max!r})")

    def params(self) -> dict[str, float]:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max}

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _int_beta(self, t: Tensor) -> Tensor:
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def _f(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    @property
    def prior_std(self) -> float:
        return 1.0


class VPSDE(_LinearBetaSDE):
    r"""Variance-preserving SDE (the continuous DDPM): $dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)}\,dW$.

    $\alpha_t = e^{-B(t)/2}$ and $\sigma_t^2 = 1 - e^{-B(t)}$ with $B(t) = \int_0^t \beta$. Prior $N(0, I)$.

    Args:
        beta_min: $\beta(0)$.
        beta_max: $\beta(T)$, with $T = 1$.

    References:
        Song et al., "Score-Based Generative Modeling through SDEs", ICLR 2021, eq. (11).
    """

    def _g2(self, t: Tensor) -> Tensor:
        return self.beta(t)

    def _log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        b = self._int_beta(t)
        return -0.5 * b, (-torch.expm1(-b)).sqrt()


class SubVPSDE(_LinearBetaSDE):
    r"""Sub-VP SDE: $dx = -\tfrac12\beta(t)x\,dt + \sqrt{\beta(t)(1 - e^{-2B(t)})}\,dW$.

    Same $\alpha_t$ as VP, $\sigma_t = 1 - e^{-B(t)}$ (below VP's at every t). Prior $N(0, I)$, as in Song et al.

    Args:
        beta_min: $\beta(0)$.
        beta_max: $\beta(T)$, with $T = 1$.

    References:
        Song et al., "Score-Based Generative Modeling through SDEs", ICLR 2021, eq. (12).
    """

    def _g2(self, t: Tensor) -> Tensor:
        return self.beta(t) * -torch.expm1(-2.0 * self._int_beta(t))

    def _log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        b = self._int_beta(t)
        return -0.5 * b, -torch.expm1(-b)


class VESDE(SDE):
    r"""Variance-exploding SDE: $dx = \sqrt{d[\sigma^2(t)]/dt}\,dW$ with $\sigma(t) = \sigma_{min}(\sigma_{max}/\sigma_{min})^t$.

    $\alpha_t = 1$. This SDE's own transition from $x_0$ has variance
    $\int_0^t g^2 = \sigma(t)^2 - \sigma_{min}^2$, and that is what `marginal` returns: the marginal is
    exact for this SDE. (Song et al.'s code reports $\sigma(t)$, which is exact only for data already
    blurred by $N(0, \sigma_{min}^2)$.) Prior $N(0, \sigma_{max}^2 I)$.

    Args:
        sigma_min: $\sigma(0)$ of the geometric schedule.
        sigma_max: $\sigma(T)$, with $T = 1$.

    References:
        Song et al., "Score-Based Generative Modeling through SDEs", ICLR 2021, eq. (9).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        check_positive(sigma_min, "sigma_min")
        check_positive(sigma_max, "sigma_max")
        _check_finite(sigma_min=sigma_min, sigma_max=sigma_max)
        if sigma_max <= sigma_min:
            raise ValueError(
                f"sigma_max must be > sigma_min, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}"
            )
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def params(self) -> dict[str, float]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def _f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _g2(self, t: Tensor) -> Tensor:
        return 2.0 * self._log_ratio * self.sigma_min**2 * torch.exp(2.0 * self._log_ratio * t)

    def _log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        var = self.sigma_min**2 * torch.expm1(2.0 * self._log_ratio * t)
        return torch.zeros_like(t), var.sqrt()

    @property
    def prior_std(self) -> float:
        return self.sigma_max


class CosineVPSDE(SDE):
    r"""VP SDE with Nichol & Dhariwal's cosine schedule, $\bar\alpha(t) = \cos^2\theta(t) / \cos^2\theta(0)$.

    $\theta(t) = \tfrac\pi2 \frac{t + s}{1 + s}$; $\alpha_t = \bar\alpha(t)^{1/2}$, $\sigma_t^2 = 1 - \bar\alpha(t)$,
    $\beta(t) = -\tfrac{d}{dt}\log\bar\alpha = \frac{\pi}{1 + s}\tan\theta(t)$, $f = -\beta/2$, $g^2 = \beta$.
    $\beta$ blows up at $t = 1$, so the SDE ends at $T = 0.9946$ by default (DPM-Solver's choice,
    where $\alpha_T \approx 8.4 \times 10^{-3}$). Prior $N(0, I)$.

    Args:
        s: The offset that keeps $\beta$ finite near $t = 0$ (0.008 in Nichol & Dhariwal).
        T: The end time, in (0, 1).

    References:
        Nichol & Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021, eq. (17).
        Lu et al., "DPM-Solver", NeurIPS 2022, Appendix D (T = 0.9946).
    """

    def __init__(self, s: float = 0.008, T: float = 0.9946) -> None:
        check_positive(s, "s")
        _check_finite(s=s, T=T)
        if not 0.0 < T < 1.0:
            raise ValueError(f"T must be in (0, 1) (beta is infinite at 1), got {T!r}")
        self.s, self.T = float(s), float(T)
        self._log_cos0 = math.log(math.cos(0.5 * math.pi * self.s / (1 + self.s)))
        _check_prior(self, f"CosineVPSDE(s={s!r}, T={T!r})")

    def params(self) -> dict[str, float]:
        return {"s": self.s, "T": self.T}

    def _theta(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * (t + self.s) / (1 + self.s)

    def beta(self, t: Tensor) -> Tensor:
        """$\\beta(t) = \\frac{\\pi}{1 + s}\\tan\\theta(t)$, for a tensor `t` in $[0, T]$."""
        return math.pi / (1 + self.s) * torch.tan(self._theta(t))

    def _f(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def _g2(self, t: Tensor) -> Tensor:
        return self.beta(t)

    def _log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        log_abar = (2.0 * (torch.log(torch.cos(self._theta(t))) - self._log_cos0)).clamp(max=0.0)
        return 0.5 * log_abar, (-torch.expm1(log_abar)).sqrt()

    @property
    def prior_std(self) -> float:
        return 1.0


class DiscreteVPSDE(SDE):
    r"""The discrete DDPM schedule $\beta_1, \dots, \beta_N$ as a continuous VP SDE.

    Timestep $n = 0, \dots, N-1$ (diffusers' and DDPM's index) sits at $t_n = (n + 1)/N$, where
    $\log\alpha_{t_n} = \tfrac12\sum_{i \le n}\log(1 - \beta_i)$, exactly the discrete
    $\sqrt{\bar\alpha_n}$; between the knots, and from $\log\alpha_0 = 0$ to the first, $\log\alpha_t$ is
    linear in $t$ (DPM-Solver's `NoiseScheduleVP('discrete')`). So $f(t) = \tfrac{d}{dt}\log\alpha_t$ is
    piecewise constant, $\sigma_t^2 = 1 - \alpha_t^2$ and $g^2 = -2f$: a VP SDE whose marginals at the
    knots are the discrete ones. $T = 1$ (timestep $N - 1$). Prior $N(0, I)$.

    Args:
        betas: The discrete $\beta_n$ in (0, 1), increasing or not; default DDPM's 1000 linear betas
            from 1e-4 to 0.02.

    References:
        Ho, Jain & Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
        Lu et al., "DPM-Solver", NeurIPS 2022, Section 3.4 (the discrete-time models).
    """

    def __init__(self, betas: Tensor | list[float] | None = None) -> None:
        if betas is None:
            b = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        else:
            try:  # a list straight to float64 (through float32 it would lose digits and equality)
                raw = betas if isinstance(betas, Tensor) else torch.as_tensor(betas, dtype=torch.float64)
            except (TypeError, RuntimeError):
                raise TypeError(f"betas must be real numbers, got {betas!r:.80}") from None
            if raw.is_complex() or raw.dtype == torch.bool:
                raise TypeError(f"betas must be real numbers, got dtype {raw.dtype}")
            b = raw.to(torch.float64).reshape(-1)
        if b.numel() < 2 or not bool(torch.isfinite(b).all()) or not bool(((b > 0) & (b < 1)).all()):
            raise ValueError(f"betas must be at least 2 finite values in (0, 1), got {b.numel()} values")
        self.betas = b
        self.N = b.numel()
        log_alpha = torch.cat([torch.zeros(1, dtype=torch.float64), 0.5 * torch.cumsum(torch.log1p(-b), 0)])
        self._knots = torch.linspace(0.0, 1.0, self.N + 1, dtype=torch.float64)
        self._log_alpha = log_alpha  # at t = 0 and at each t_n = (n + 1)/N
        self._slopes = torch.diff(log_alpha) * self.N  # f on each cell
        # the same tables as Python floats, for one time on the CPU (every grid solver's call)
        self._tables = (self._log_alpha.tolist(), self._knots.tolist(), self._slopes.tolist())
        _check_prior(self, repr(self))

    def params(self) -> dict[str, float]:
        return {"betas": self.betas.tolist()}  # type: ignore[dict-item]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self.betas.tolist())))

    def __repr__(self) -> str:
        return f"DiscreteVPSDE(N={self.N}, betas {self.betas[0].item():.3g} .. {self.betas[-1].item():.3g})"

    @property
    def knots(self) -> Tensor:
        """The times k/N, k = 0..N, where the piecewise-constant beta jumps: integrals of the
        schedule's derivatives (DEIS's coefficients) are split there."""
        return self._knots

    def timestep(self, t: float | Tensor) -> Tensor:
        """The (fractional) discrete timestep $n = Nt - 1$ of time `t`: what a DDPM network takes."""
        t = as_time(t, like=None, T=self.T)
        return t * self.N - 1

    def time_of(self, n: float | Tensor) -> Tensor:
        """The time $t = (n + 1)/N$ of discrete timestep `n` (0 <= n <= N - 1; a fractional one between)."""
        n = torch.as_tensor(n, dtype=torch.float64)
        if not bool(((n >= 0) & (n <= self.N - 1)).all()):
            raise ValueError(f"n must lie in [0, N - 1] = [0, {self.N - 1}], got {n.tolist()}")
        return (n + 1) / self.N

    def _cell(self, t: Tensor) -> Tensor:
        return (t.double() * self.N).floor().clamp(0, self.N - 1).long()

    def _f(self, t: Tensor) -> Tensor:
        return self._slopes.to(t.device)[self._cell(t)].to(t.dtype)

    def _g2(self, t: Tensor) -> Tensor:
        return -2.0 * self._f(t)

    def _log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        if t.numel() == 1 and t.device.type == "cpu" and not t.requires_grad:
            # One time: the same float64 arithmetic in Python floats (a fifth of the tensor path's cost)
            v = float(t.reshape(-1)[0])
            la, knots, slopes = self._tables
            n = min(max(math.floor(v * self.N), 0), self.N - 1)
            log_alpha = torch.full_like(t, la[n] + (v - knots[n]) * slopes[n])
            return log_alpha, (-torch.expm1(2.0 * log_alpha)).sqrt()
        cell = self._cell(t)
        la, knots = self._log_alpha.to(t.device), self._knots.to(t.device)
        log_alpha = (la[cell] + (t.double() - knots[cell]) * self._slopes.to(t.device)[cell]).to(t.dtype)
        return log_alpha, (-torch.expm1(2.0 * log_alpha)).sqrt()

    @property
    def prior_std(self) -> float:
        return 1.0


class EDMSDE(SDE):
    r"""Karras et al.'s (EDM) SDE: $\sigma(t) = t$, $dx = \sqrt{2t}\,dW$, $\alpha_t = 1$, on $[0, \sigma_{max}]$.

    Time is the noise level: $x_t = x_0 + t z$. $T = \sigma_{max}$ (80 by default), prior
    $N(0, \sigma_{max}^2 I)$; EDM samples from $\sigma_{max}$ down to $\sigma_{min} = 0.002$ (pass it as `eps`).

    Args:
        sigma_max: The largest noise level, which is also $T$.

    References:
        Karras, Aittala, Aila & Laine, "Elucidating the Design Space of Diffusion-Based Generative
        Models", NeurIPS 2022 (Table 1, "Ours").
    """

    def __init__(self, sigma_max: float = 80.0) -> None:
        check_positive(sigma_max, "sigma_max")
        _check_finite(sigma_max=sigma_max)
        self.sigma_max = self.T = float(sigma_max)

    def params(self) -> dict[str, float]:
        return {"sigma_max": self.sigma_max}

    def _f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _g2(self, t: Tensor) -> Tensor:
        return 2.0 * t

    def _log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(t), t.clone()

    @property
    def prior_std(self) -> float:
        return self.sigma_max


class AffinePath(SDE):
    r"""Any affine Gaussian path $x_t = \alpha_t x_0 + \sigma_t \epsilon$, given by its two schedules.

    The flow-matching view of a diffusion: a network that predicts the velocity
    $v = \dot\alpha_t x_0 + \dot\sigma_t \epsilon$ is integrated along $dx/dt = v(x, t)$, which is
    exactly this path's probability-flow ODE, $f(t) x - \tfrac12 g(t)^2 s(x, t)$ with
    $f = \dot\alpha/\alpha$ and $g^2 = 2\sigma\dot\sigma - 2 f \sigma^2$ (Kingma et al. 2021's
    $\tfrac{d\sigma^2}{dt} - 2\tfrac{d\log\alpha}{dt}\sigma^2$); the reverse SDE with that $g$ has the
    same marginals. So every sampler, likelihood and analytic marginal of diffsolve applies to a
    flow-matching model on its path. `RectifiedFlow` is the straight path $\alpha = 1 - t$, $\sigma = t$.

    Args:
        alpha: $\alpha_t$, a function of a float64 tensor of times, positive on $[0, T]$.
        sigma: $\sigma_t$, non-negative, increasing on $[0, T]$.
        d_alpha: $\dot\alpha_t$.
        d_sigma: $\dot\sigma_t$.
        T: The end time: where the prior sits.
        prior_std: The standard deviation of the Gaussian prior at T (default $\sigma_T$: the marginal
            at T is then that prior up to the $\alpha_T x_0$ it still carries).
        name: A name for its `repr` (two paths are equal when they are the same object or share it).
    """

    def __init__(
        self,
        alpha: Callable[[Tensor], Tensor],
        sigma: Callable[[Tensor], Tensor],
        d_alpha: Callable[[Tensor], Tensor],
        d_sigma: Callable[[Tensor], Tensor],
        *,
        T: float = 1.0,
        prior_std: float | None = None,
        name: str = "custom",
    ) -> None:
        for fn, what in ((alpha, "alpha"), (sigma, "sigma"), (d_alpha, "d_alpha"), (d_sigma, "d_sigma")):
            if not callable(fn):
                raise TypeError(f"{what} must be a function of a tensor of times, got {type(fn).__name__}")
        check_positive(T, "T")
        _check_finite(T=T)
        self.T = float(T)
        self._alpha, self._sigma, self._d_alpha, self._d_sigma = alpha, sigma, d_alpha, d_sigma
        self.name = str(name)
        grid = torch.linspace(0.0, self.T, 257, dtype=torch.float64)
        a, s = alpha(grid), sigma(grid)
        # alpha may vanish at T itself (zero terminal SNR, `zero_terminal_snr`), nowhere before it
        if not (bool(torch.isfinite(a).all()) and bool((a[:-1] > 0).all()) and float(a[-1]) >= 0):
            raise ValueError(
                f"alpha must be finite and positive on [0, T = {self.T}) and >= 0 at T (end at or before it vanishes)"
            )
        if not (bool(torch.isfinite(s).all()) and bool((s >= 0).all()) and bool((s.diff() > 0).all())):
            raise ValueError(f"sigma must be finite, non-negative and increasing on [0, T = {self.T}]")
        a, s, grid = a[:-1], s[:-1], grid[:-1]  # g^2 is infinite where alpha = 0
        g2 = 2 * s * d_sigma(grid) - 2 * (d_alpha(grid) / a) * s**2
        if not (bool(torch.isfinite(g2).all()) and bool((g2 >= -1e-12).all())):
            raise ValueError(
                "the path's g(t)^2 = 2 sigma sigma' - 2 (alpha'/alpha) sigma^2 must be finite and >= 0 on "
                f"[0, T = {self.T}]: its signal-to-noise ratio alpha/sigma must not increase with t"
            )
        self._prior_std = (
            float(sigma(torch.tensor([self.T], dtype=torch.float64))[0])
            if prior_std is None
            else float(prior_std)
        )
        check_positive(self._prior_std, "prior_std")

    def params(self) -> dict[str, float]:
        return {"T": self.T, "prior_std": self._prior_std}

    def __repr__(self) -> str:
        return f"AffinePath({self.name}, T={self.T:g}, prior_std={self._prior_std:g})"

    def __eq__(self, other: object) -> bool:
        return self is other or (
            type(self) is type(other)
            and self.name != "custom"
            and self.name == other.name  # type: ignore[attr-defined]
            and self.params() == other.params()  # type: ignore[attr-defined]
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.name, self.T, self._prior_std))

    def _f(self, t: Tensor) -> Tensor:
        td = t.double()
        return (self._d_alpha(td) / self._alpha(td)).to(t.dtype)

    def _g2(self, t: Tensor) -> Tensor:
        td = t.double()
        s = self._sigma(td)
        g2 = 2 * s * self._d_sigma(td) - 2 * (self._d_alpha(td) / self._alpha(td)) * s**2
        return g2.clamp_min(0).to(t.dtype)  # round-off only: the constructor refused a negative g^2

    def _log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        td = t.double()
        return self._alpha(td).log().to(t.dtype), self._sigma(td).to(t.dtype)

    @property
    def prior_std(self) -> float:
        return self._prior_std


class RectifiedFlow(AffinePath):
    r"""The rectified-flow / flow-matching path $x_t = (1 - t)\,x_0 + t\,\epsilon$ (SD3, FLUX).

    $\alpha_t = 1 - t$, $\sigma_t = t$; the velocity a flow-matching network predicts is
    $v = \epsilon - x_0$ (`ScoreModel(net, path, "velocity")`), and $dx/dt = v$ is this path's
    probability-flow ODE. Its SDE form has $f = -1/(1 - t)$ and $g^2 = 2t/(1 - t)$, infinite at
    $t = 1$ (where $\alpha = 0$, the log-SNR is $-\infty$), so by default the path ends at
    $T = 0.999$, with the prior $N(0, T^2 I)$: the marginal there is $0.001\,x_0 + 0.999\,\epsilon$, a
    prior mismatch a likelihood can remove with `prior_log_prob` (the exact marginal at T). Every
    sampler and `log_likelihood` run there. `RectifiedFlow(T=1)` is the path SD3 and FLUX sample
    (prior exactly $N(0, I)$, zero terminal SNR): only the solvers that step on a velocity model's
    output start there (`flow_euler`, `flow_heun`, `Solver.velocity`), since the score at $t = 1$
    is the prior's and does not determine the velocity.

    Args:
        T: The end time, in (0, 1].
    """

    def __init__(self, T: float = 0.999) -> None:
        _check_finite(T=T)
        if not 0.0 < T <= 1.0:
            raise ValueError(f"T must be in (0, 1] (alpha = 1 - t vanishes at 1), got {T!r}")
        super().__init__(
            lambda t: 1.0 - t, lambda t: t, lambda t: -torch.ones_like(t), lambda t: torch.ones_like(t),
            T=T, name="rectified",
        )  # fmt: skip

    def params(self) -> dict[str, float]:
        return {"T": self.T}

    def __repr__(self) -> str:
        return f"RectifiedFlow(T={self.T:g})"

    def __eq__(self, other: object) -> bool:
        return type(other) is RectifiedFlow and self.T == other.T  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(("RectifiedFlow", self.T))

    def _f(self, t: Tensor) -> Tensor:
        return -1.0 / (1.0 - t)

    def _g2(self, t: Tensor) -> Tensor:
        return 2.0 * t / (1.0 - t)

    def _log_alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.log1p(-t), t.clone()
