r"""Inverse problems: a linear-Gaussian observation, and the conditional scores that sample its posterior.

An `Observation` is $y = A x_0 + n$, $n \sim N(0, s^2 I)$, with $A$ an `(m, D)` matrix on the flattened
sample (inpainting: the observed rows of the identity, `Observation.inpainting`). Sampling the
posterior $p(x_0 \mid y)$ with a diffusion model needs the score of $p_t(x \mid y)$,

$$\nabla_x \log p_t(x \mid y) = \nabla_x \log p_t(x) + \nabla_x \log p_t(y \mid x),$$

whose second term has no closed form for a learned prior. The methods people use approximate it,
and each is one more `Score` for every sampler of `sample`:

| score | $\nabla_x \log p_t(y \mid x)$ approximated by | cost per call |
| --- | --- | --- |
| `dps(score, obs)` | $\zeta\,\nabla_x \log N(y;\ A\hat x_0(x),\ s^2 I)$ (Chung et al. 2023) | score + one VJP |
| `pigdm(score, obs)` | $\nabla_x \log N(y;\ A\hat x_0(x),\ r_t^2 AA^\top + s^2 I)$ (Song et al. 2023) | score + one VJP |

with Tweedie's denoiser $\hat x_0(x) = (x + \sigma_t^2 s(x, t))/\alpha_t$ and
$r_t^2 = c^2\sigma_t^2/(\alpha_t^2 c^2 + \sigma_t^2)$ ($c$ = `data_std`), the variance of $x_0 \mid x_t$
were the data $N(0, c^2 I)$: on such data $\Pi$GDM is exact. Both are the papers' likelihood
approximations (DPS eq. 16 at $\zeta = 1$, $\Pi$GDM eq. 7) written as scores, so that every solver runs
them; the papers' own loops also reweight the term per step (DPS by $\zeta'/\|y - A\hat x_0\|$,
$\Pi$GDM's algorithm by $\sqrt{\bar\alpha_{t-1}\bar\alpha_t}$), which no score can express. Near
$T$ the term pulls through $\partial\hat x_0/\partial x$, which a learned network gets wrong by a
factor $1/\alpha_t$: on the digits U-Net of docs/benchmarks.md both diverge in the first steps, while
on exact scores they run, and the papers' loops (the solvers `dps_ddpm`, `pigdm_ddim`) run on both
(docs/benchmarks.md, "Inverse problems"). Projection methods (score_sde's
replacement, RePaint's resampling) change the state rather than the score: they are the solvers
`replacement` and `repaint`, which take `observation=` (samplers/inverse.py).

The yardstick is exact: for a `GaussianMixture` prior, `Observation.posterior(mixture)` (=
`GaussianMixture.posterior`) is the posterior mixture itself, with exact samples, noised marginals
and scores, so every method's bias can be measured (docs/how-to/inverse-problems.md).

References:
    Chung, Kim, Mccann, Klasky, Ye, "Diffusion Posterior Sampling for General Noisy Inverse
    Problems", ICLR 2023.
    Song, Vahdat, Mardani, Kautz, "Pseudoinverse-Guided Diffusion Models for Inverse Problems",
    ICLR 2023.
    Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole, "Score-Based Generative Modeling through
    Stochastic Differential Equations", ICLR 2021 (Appendix I.2, inpainting by replacement).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ._validation import append_dims, check_positive, describe
from .analytic import GaussianMixture, _as_observation
from .scores import check_output
from .sde import SDE

__all__ = ["Observation", "dps", "pigdm", "ObservationGuided"]


class Observation:
    r"""A linear observation $y = A x_0 + n$, $n \sim N(0, s^2 I)$, of a sample flattened to `D` values.

    Args:
        A: The observation matrix, `(m, D)`.
        y: The observed values, `(m,)`.
        noise_std: The noise level $s$ (> 0 for `posterior`; 0 is allowed for the projection solvers
            and the guided scores, which then treat $y$ as exact).
        event_shape: The shape of one sample (default `(D,)`), so that images stay images.

    Attributes:
        A, y: float64 CPU tensors; `dim` = D, `m` the number of observed values.
    """

    def __init__(
        self,
        A: Tensor | np.ndarray,
        y: Tensor | np.ndarray,
        noise_std: float,
        *,
        event_shape: tuple[int, ...] | None = None,
    ) -> None:
        a = torch.as_tensor(A) if not isinstance(A, Tensor) else A
        if a.dim() != 2:
            raise ValueError(f"A must be a matrix (m, D), got {describe(A)}")
        self.A, self.y = _as_observation(a, y, a.shape[1], torch.float64)
        check_positive(noise_std, "noise_std", allow_zero=True)
        self.noise_std = float(noise_std)
        shape = (self.A.shape[1],) if event_shape is None else tuple(int(s) for s in event_shape)
        if math.prod(shape) != self.A.shape[1]:
            raise ValueError(
                f"event_shape {shape} holds {math.prod(shape)} values but A has {self.A.shape[1]} columns"
            )
        self.event_shape = shape
        self._pinv = torch.linalg.pinv(self.A)
        self._on: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor, Tensor]] = {}

    @classmethod
    def inpainting(cls, mask: Tensor, x: Tensor, noise_std: float = 0.0) -> Observation:
        """Observe the values of `x` where `mask` is True (`mask` and `x` shaped like one sample).

        Args:
            mask: A boolean tensor, the shape of one sample: True where the value is observed.
            x: The sample whose values are observed (its unobserved values are ignored).
            noise_std: The observation noise added to the observed values' model (not to `x`).
        """
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a boolean tensor, got {describe(mask)}")
        if not isinstance(x, Tensor) or tuple(x.shape) != tuple(mask.shape):
            raise ValueError(f"x must be a tensor shaped like mask {tuple(mask.shape)}, got {describe(x)}")
        flat = mask.reshape(-1).cpu()
        if not bool(flat.any()):
            raise ValueError("mask observes nothing: at least one value must be True")
        A = torch.eye(flat.numel(), dtype=torch.float64)[flat]
        return cls(
            A, x.reshape(-1).detach().cpu().to(torch.float64)[flat], noise_std, event_shape=tuple(mask.shape)
        )

    @classmethod
    def of(cls, A: Tensor | np.ndarray, x0: Tensor, noise_std: float, *, seed: int = 0) -> Observation:
        """The observation of one sample `x0` through `A`, with its noise drawn (keyed by `seed`).

        Args:
            A: The observation matrix `(m, D)`.
            x0: One sample (any shape with D values): the ground truth being observed.
            noise_std: The noise level $s$.
            seed: Seed of the observation noise.
        """
        a = torch.as_tensor(A, dtype=torch.float64)
        clean = a @ x0.detach().reshape(-1).cpu().to(torch.float64)
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        return cls(a, clean + noise_std * noise, noise_std, event_shape=tuple(x0.shape))

    @property
    def dim(self) -> int:
        return self.A.shape[1]

    @property
    def m(self) -> int:
        return self.A.shape[0]

    def __repr__(self) -> str:
        return f"Observation(m={self.m}, D={self.dim}, noise_std={self.noise_std:g})"

    def tensors(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`(A, y, A^+)` in `like`'s dtype and device (cached)."""
        key = (like.dtype, like.device)
        if key not in self._on:
            self._on[key] = tuple(v.to(like) for v in (self.A, self.y, self._pinv))  # type: ignore[assignment]
        return self._on[key]

    def check(self, x: Tensor, name: str = "x") -> None:
        """Refuse samples whose shape does not fit the observation."""
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"{name} has samples of shape {tuple(x.shape[1:])}, but the observation is of samples shaped "
                f"{self.event_shape}"
            )

    def residual(self, x0: Tensor) -> Tensor:
        """$y - A x_0$ for a batch `(B, *event)`, shape `(B, m)`."""
        a, y, _ = self.tensors(x0)
        return y - x0.flatten(1) @ a.T

    def project(self, x: Tensor, target: Tensor) -> Tensor:
        """`x` moved to the nearest point with $A x$ = `target` `(B, m)`: $x + A^+(\\text{target} - A x)$."""
        a, _, pinv = self.tensors(x)
        flat = x.flatten(1)
        return (flat + (target - flat @ a.T) @ pinv.T).view(x.shape)

    def posterior(self, mixture: GaussianMixture) -> GaussianMixture:
        """The exact posterior of a `GaussianMixture` prior given this observation (`GaussianMixture.posterior`)."""
        if not isinstance(mixture, GaussianMixture):
            raise TypeError(f"mixture must be a GaussianMixture, got {describe(mixture)}")
        return mixture.posterior(self.A, self.y, self.noise_std)


def _data_std(value: float) -> float:
    check_positive(value, "data_std")
    return float(value)


class ObservationGuided:
    r"""A score plus an approximate $\nabla_x \log p_t(y \mid x)$ through Tweedie's denoiser (see `dps`, `pigdm`).

    Each call evaluates the score once under autograd and pulls $A^\top M (y - A\hat x_0)$ back
    through $\hat x_0(x)$ with one vector-Jacobian product; $M$ is $I/s^2$ (DPS) or
    $(r_t^2 AA^\top + s^2 I)^{-1}$ ($\Pi$GDM). NFE counts the score calls; each also costs one VJP.

    Args:
        score: The prior's score, differentiable in `x`.
        observation: The `Observation`.
        sde: The forward SDE (default: `score.sde`).
        method: `"dps"` or `"pigdm"`.
        scale: The guidance scale $\zeta$ multiplying the likelihood term (1: the approximation itself).
        data_std: $c$ in $r_t^2$ ($\Pi$GDM only).
    """

    def __init__(
        self,
        score: Callable[[Tensor, Tensor], Tensor],
        observation: Observation,
        *,
        sde: SDE | None = None,
        method: str = "dps",
        scale: float = 1.0,
        data_std: float = 1.0,
    ) -> None:
        if not callable(score):
            raise TypeError(f"score must be callable as score(x, t), got {describe(score)}")
        if not isinstance(observation, Observation):
            raise TypeError(f"observation must be an Observation, got {describe(observation)}")
        sde = sde if sde is not None else getattr(score, "sde", None)
        if not isinstance(sde, SDE):
            raise TypeError(
                f"sde must be given (the score has no .sde): a diffsolve SDE, got {describe(sde)}"
            )
        if method not in ("dps", "pigdm"):
            raise ValueError(f"method must be 'dps' or 'pigdm', got {method!r}")
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not 0 <= float(scale) < math.inf:
            raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
        if method == "dps" and observation.noise_std == 0:
            raise ValueError(
                "dps weighs the residual by 1/noise_std^2: give an Observation with noise_std > 0"
            )
        self.score, self.observation, self.sde = score, observation, sde
        self.method, self.scale, self.data_std = method, float(scale), _data_std(data_std)
        self.event_shape = observation.event_shape

    def __repr__(self) -> str:
        return f"ObservationGuided({self.method!r}, scale={self.scale:g}, {self.observation!r})"

    def _weighted(self, resid: Tensor, t: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """$M$ (y - A x0_hat), `(B, m)`."""
        s2 = self.observation.noise_std**2
        if self.method == "dps":
            return resid / s2
        a = self.observation.tensors(resid)[0]
        c2 = self.data_std**2
        r2 = c2 * sigma**2 / (alpha**2 * c2 + sigma**2)  # (B,)
        gram = a @ a.T
        eye = torch.eye(a.shape[0], dtype=resid.dtype, device=resid.device)
        cov = r2[:, None, None] * gram + s2 * eye  # (B, m, m)
        return torch.linalg.solve(cov, resid[..., None])[..., 0]

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.observation.check(x)
        alpha, sigma = self.sde.marginal(t)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            s = check_output(self.score(xg, t), x, "the prior score")
            x0 = (xg + append_dims(sigma**2, x.dim()) * s) / append_dims(alpha, x.dim())
            resid = self.observation.residual(x0)
            a = self.observation.tensors(x)[0]
            pull = (self._weighted(resid.detach(), t, alpha, sigma) @ a).view(x.shape)
            (grad,) = torch.autograd.grad(x0, xg, grad_outputs=pull)
        return s.detach() + self.scale * grad


def dps(
    score: Callable[[Tensor, Tensor], Tensor],
    observation: Observation,
    *,
    scale: float = 1.0,
    sde: SDE | None = None,
) -> ObservationGuided:
    r"""Diffusion posterior sampling (Chung et al. 2023) as a score:
    $s(x, t) + \zeta \nabla_x \log N(y;\ A\hat x_0(x),\ s^2 I)$.

    $\zeta$ = 1 is DPS's own approximation $p_t(y \mid x) \approx p(y \mid \hat x_0(x))$; Chung et al.'s
    step $\zeta_i = \zeta'/\|y - A\hat x_0\|$ per sampler step corresponds to other values of `scale`
    (the bias study in docs/benchmarks.md measures how the bias depends on it).

    Args:
        score: The prior's score.
        observation: The `Observation` (noise_std > 0).
        scale: $\zeta$, >= 0.
        sde: The forward SDE (default: `score.sde`).
    """
    return ObservationGuided(score, observation, sde=sde, method="dps", scale=scale)


def pigdm(
    score: Callable[[Tensor, Tensor], Tensor],
    observation: Observation,
    *,
    scale: float = 1.0,
    data_std: float = 1.0,
    sde: SDE | None = None,
) -> ObservationGuided:
    r"""Pseudoinverse-guided diffusion ($\Pi$GDM, Song et al. 2023) as a score:
    $s(x, t) + \zeta \nabla_x \log N(y;\ A\hat x_0(x),\ r_t^2 AA^\top + s^2 I)$.

    Exact (at `scale` 1) when the data are $N(0, c^2 I)$ with $c$ = `data_std`; for other data a
    model of $x_0 \mid x_t$'s spread. Works with noise-free observations ($s$ = 0).

    Args:
        score: The prior's score.
        observation: The `Observation`.
        scale: $\zeta$, >= 0.
        data_std: $c$, the data's standard deviation in $r_t^2 = c^2\sigma_t^2/(\alpha_t^2 c^2 + \sigma_t^2)$.
        sde: The forward SDE (default: `score.sde`).
    """
    return ObservationGuided(score, observation, sde=sde, method="pigdm", scale=scale, data_std=data_std)
