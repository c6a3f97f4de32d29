r"""Gaussian mixtures: data distributions whose every diffusion marginal is known in closed form.

If $p_0 = \sum_k w_k N(\mu_k, \mathrm{diag}(s_k^2))$ and $x_t = \alpha_t x_0 + \sigma_t z$, then

$$p_t = \sum_k w_k\, N\big(\alpha_t \mu_k,\ \mathrm{diag}(\alpha_t^2 s_k^2 + \sigma_t^2)\big),$$

so $\log p_t$ is a log-sum-exp and the score is the responsibility-weighted sum of the component
scores $-(x - \alpha_t\mu_k)/v_{k}$. A component may also have a full covariance
$U_k \mathrm{diag}(s_k^2) U_k^\top$ (`bases=`): its noised covariance $U_k \mathrm{diag}(\alpha_t^2 s_k^2 +
\sigma_t^2) U_k^\top$ keeps the same axes, so every formula above holds in each component's own axes.
`GaussianMixture.posterior` is such a mixture: the exact posterior of a linear-Gaussian observation.
This is the ground truth that samplers, likelihoods and convergence orders are checked against. The
marginal follows whatever $(\alpha_t, \sigma_t)$ the SDE object reports, so the oracle and the SDE can never disagree silently.

Computation runs in the mixture's dtype (float64 by default); results come back in `x`'s dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ._validation import as_time, batch_time, check_batched, check_positive, describe
from .sde import SDE

__all__ = ["GaussianMixture", "AnalyticScore"]

_ArrayLike = Tensor | np.ndarray | Sequence | float


class GaussianMixture:
    r"""A mixture of Gaussians with diagonal covariances, in any dimension.

    Args:
        weights: Mixture weights, shape `(K,)`, positive; normalised to sum to one.
        means: Component means, shape `(K, D)`.
        stds: Component standard deviations: a scalar, `(K,)` (isotropic per component) or `(K, D)`;
            with `bases`, the standard deviations along each component's principal axes.
        bases: None (diagonal covariances, the default) or `(K, D, D)` orthonormal matrices $U_k$ whose
            columns are each component's principal axes: component k's covariance is
            $U_k \mathrm{diag}(s_k^2) U_k^\top$.
        dtype: The dtype the mixture computes in (float64 keeps the analytic checks exact).

    Raises:
        ValueError: On inconsistent shapes, non-positive weights or standard deviations, or bases that
            are not orthonormal.
    """

    def __init__(
        self,
        weights: _ArrayLike,
        means: _ArrayLike,
        stds: _ArrayLike,
        *,
        bases: _ArrayLike | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        w = torch.as_tensor(
            np.asarray(weights, dtype=np.float64) if not isinstance(weights, Tensor) else weights
        )
        mu = torch.as_tensor(np.asarray(means, dtype=np.float64) if not isinstance(means, Tensor) else means)
        s = torch.as_tensor(np.asarray(stds, dtype=np.float64) if not isinstance(stds, Tensor) else stds)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point torch dtype, got {dtype!r}")
        for name, v in (("weights", w), ("means", mu), ("stds", s)):
            if v.is_complex() or v.dtype == torch.bool:
                raise TypeError(f"{name} must be real numbers, got dtype {v.dtype}")
        w, mu, s = (v.detach().to(dtype=dtype, device="cpu") for v in (w, mu, s))
        if w.dim() != 1 or w.numel() < 1:
            raise ValueError(f"weights must have shape (K,), got {tuple(w.shape)}")
        if mu.dim() != 2 or mu.shape[0] != w.shape[0]:
            raise ValueError(f"means must have shape (K, D) = ({w.shape[0]}, D), got {tuple(mu.shape)}")
        if not bool((w > 0).all()) or not bool(torch.isfinite(w).all()):
            raise ValueError(f"weights must be positive and finite, got {w.tolist()}")
        if not bool(torch.isfinite(mu).all()):
            raise ValueError("means must be finite")
        k, d = mu.shape
        if s.dim() == 0:
            s = s.expand(k, d)
        elif s.dim() == 1 and s.shape[0] == k:
            s = s[:, None].expand(k, d)
        elif tuple(s.shape) != (k, d):
            raise ValueError(f"stds must be a scalar, ({k},) or ({k}, {d}), got shape {tuple(s.shape)}")
        if not bool((s > 0).all()) or not bool(torch.isfinite(s).all()):
            raise ValueError("stds must be positive and finite")
        self.dtype = dtype
        self.weights = w / w.sum()
        self.means = mu.contiguous()
        self.stds = s.contiguous()
        self.bases = None if bases is None else _check_bases(bases, k, d, dtype)
        self._on: dict[torch.device, tuple[Tensor, Tensor, Tensor]] = {}
        self._bases_on: dict[torch.device, Tensor] = {}

    # --- ready problems ---

    @classmethod
    def ring2d(cls, n_components: int = 8, radius: float = 4.0, std: float = 0.3) -> GaussianMixture:
        """Equal-weight components on a circle (default: 8 on radius 4, std 0.3)."""
        check_positive(n_components, "n_components", integer=True)
        angles = 2 * math.pi * np.arange(n_components) / n_components
        means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        return cls(np.full(n_components, 1.0 / n_components), means, std)

    @classmethod
    def random(cls, dim: int, k: int, seed: int = 0) -> GaussianMixture:
        """A reproducible random mixture: Dirichlet(2) weights, N(0, 3^2) means, stds uniform in [0.3, 1]."""
        check_positive(dim, "dim", integer=True)
        check_positive(k, "k", integer=True)
        rng = np.random.default_rng(seed)
        return cls(
            rng.dirichlet(np.full(k, 2.0)), rng.normal(0.0, 3.0, (k, dim)), rng.uniform(0.3, 1.0, (k, dim))
        )

    @classmethod
    def from_covariances(
        cls,
        weights: _ArrayLike,
        means: _ArrayLike,
        covariances: _ArrayLike,
        *,
        dtype: torch.dtype = torch.float64,
    ) -> GaussianMixture:
        """A mixture with full covariances `(K, D, D)` (symmetric positive definite), through their
        eigendecompositions; exactly diagonal covariances give a diagonal mixture (`bases` None)."""
        cov = (
            torch.as_tensor(
                np.asarray(covariances, dtype=np.float64)
                if not isinstance(covariances, Tensor)
                else covariances
            )
            .detach()
            .to(dtype=dtype, device="cpu")
        )
        if cov.dim() != 3 or cov.shape[1] != cov.shape[2]:
            raise ValueError(f"covariances must have shape (K, D, D), got {tuple(cov.shape)}")
        if not bool(torch.isfinite(cov).all()) or not torch.allclose(
            cov, cov.transpose(1, 2), rtol=1e-10, atol=1e-12
        ):
            raise ValueError("covariances must be finite and symmetric")
        off = cov - torch.diag_embed(torch.diagonal(cov, dim1=1, dim2=2))
        if not bool(off.any()):
            return cls(weights, means, torch.diagonal(cov, dim1=1, dim2=2).sqrt(), dtype=dtype)
        evals, bases = torch.linalg.eigh(cov)
        if not bool((evals > 0).all()):
            raise ValueError(
                f"covariances must be positive definite; smallest eigenvalue {evals.min().item():.3g}"
            )
        return cls(weights, means, evals.sqrt(), bases=bases, dtype=dtype)

    def posterior(self, A: _ArrayLike, y: _ArrayLike, noise_std: float) -> GaussianMixture:
        r"""The exact posterior $p(x_0 \mid y)$ of the observation $y = A x_0 + n$, $n \sim N(0, s^2 I)$.

        Each component is conditioned like a Kalman update: with $S_k = A\Sigma_k A^\top + s^2 I$ and
        $K_k = \Sigma_k A^\top S_k^{-1}$, its mean is $\mu_k + K_k(y - A\mu_k)$, its covariance
        $\Sigma_k - K_k A \Sigma_k$ and its weight $\propto w_k N(y; A\mu_k, S_k)$ (components whose
        weight underflows to 0 are dropped). The result is again a `GaussianMixture` (full covariances
        where $A$ mixes coordinates), so its noised marginals, scores and exact samples come with it.

        Args:
            A: The observation matrix, `(m, D)` (a mask's observed rows of the identity for inpainting).
            y: The observed values, `(m,)`.
            noise_std: The observation noise $s$, > 0 (a noise-free observation has no density; take a
                small $s$).

        Raises:
            ValueError: On shapes that do not fit the mixture, or a non-positive `noise_std`.
        """
        a, obs = _as_observation(A, y, self.dim, self.dtype)
        check_positive(noise_std, "noise_std")
        cov = self.covariances
        s_mat = a @ cov @ a.T + noise_std**2 * torch.eye(a.shape[0], dtype=self.dtype)
        chol = torch.linalg.cholesky(s_mat)
        resid = obs - self.means @ a.T  # (K, m)
        gain = torch.cholesky_solve(a @ cov, chol).transpose(1, 2)  # Sigma A^T S^-1, (K, D, m)
        means = self.means + (gain @ resid[..., None])[..., 0]
        post_cov = cov - gain @ a @ cov
        post_cov = 0.5 * (post_cov + post_cov.transpose(1, 2))
        white = torch.linalg.solve_triangular(chol, resid[..., None], upper=False)[..., 0]
        log_evidence = (
            -0.5 * white.square().sum(-1)
            - torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
            - 0.5 * a.shape[0] * math.log(2 * math.pi)
        )
        weights = torch.softmax(torch.log(self.weights) + log_evidence, 0)
        keep = weights > 0
        try:
            return GaussianMixture.from_covariances(
                weights[keep], means[keep], post_cov[keep], dtype=self.dtype
            )
        except ValueError:
            raise ValueError(
                f"noise_std = {noise_std:g} is too small for {self.dtype}: the posterior covariance is singular "
                "to round-off along the observed directions; take a larger noise_std"
            ) from None

    # --- basic properties ---

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def mean(self) -> Tensor:
        r"""The mixture's mean $\sum_k w_k \mu_k$, shape `(D,)`."""
        return self.weights @ self.means

    @property
    def covariances(self) -> Tensor:
        r"""Each component's covariance, `(K, D, D)`: $U_k \mathrm{diag}(s_k^2) U_k^\top$ (diagonal without bases)."""
        if self.bases is None:
            return torch.diag_embed(self.stds**2)
        return self.bases @ torch.diag_embed(self.stds**2) @ self.bases.transpose(1, 2)

    def __repr__(self) -> str:
        full = ", full covariances" if self.bases is not None else ""
        return f"GaussianMixture(n_components={self.n_components}, dim={self.dim}{full}, dtype={self.dtype})"

    def _params(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        if device not in self._on:
            self._on[device] = (self.weights.to(device), self.means.to(device), self.stds.to(device))
        return self._on[device]

    def _axes(self, device: torch.device) -> Tensor:
        if device not in self._bases_on:
            self._bases_on[device] = self.bases.to(device)  # type: ignore[union-attr]
        return self._bases_on[device]

    def _in_axes(self, x: Tensor, mean: Tensor) -> Tensor:
        r"""$U_k^\top (x - m_k)$ for every component, `(B, K, D)`: x in each component's own axes."""
        u = self._axes(x.device)
        return torch.einsum("bd,kde->bke", x, u) - torch.einsum("...kd,kde->...ke", mean, u)

    def _flat(self, x: object, name: str = "x") -> Tensor:
        x = check_batched(x, name)
        if x[0].numel() != self.dim:
            raise ValueError(f"{name} must have {self.dim} values per sample, got shape {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.dim)

    def marginal(self, t: float, sde: SDE) -> GaussianMixture:
        """The exact marginal $p_t$ under `sde`, itself a Gaussian mixture (scalar `t`)."""
        t_ = as_time(t, like=self.weights, T=sde.T)
        if t_.dim() != 0:
            raise ValueError(f"t must be a scalar here, got shape {tuple(t_.shape)}")
        alpha, sigma = sde.marginal(t_)
        stds = (alpha**2 * self.stds**2 + sigma**2).sqrt()
        return GaussianMixture(self.weights, alpha * self.means, stds, bases=self.bases, dtype=self.dtype)

    # --- sampling and densities at t = 0 ---

    def sample(
        self,
        n: int,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        return_components: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Draw `n` exact samples, shape `(n, D)`, in `dtype` (default: the mixture's) on `device`."""
        check_positive(n, "n", integer=True)
        if generator is None:
            generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
        w, mu, s = self.weights, self.means, self.stds
        comp = torch.multinomial(w, n, replacement=True, generator=generator)
        z = s[comp] * torch.randn(n, self.dim, dtype=self.dtype, generator=generator)
        if self.bases is not None:
            z = torch.einsum("nde,ne->nd", self.bases[comp], z)
        x = (mu[comp] + z).to(dtype=dtype or self.dtype, device=device)
        return (x, comp.to(device)) if return_components else x

    def _moments(self, x: Tensor, alpha: Tensor | None, sigma: Tensor | None) -> tuple[Tensor, Tensor]:
        """Component means and precisions of p_t: `(K, D)` when t is shared by the batch, else `(B, K, D)`."""
        _, mu, s = self._params(x.device)
        if alpha is None:
            return mu, 1.0 / s**2
        # Both must agree: under VE alpha is 1 at every t while sigma is not.
        if alpha.dim() == 0 or bool(((alpha == alpha[0]) & (sigma == sigma[0])).all()):
            # One time for the whole batch (the usual case in a solve): no (B, K, D) moments.
            a, sg = alpha.reshape(-1)[0], sigma.reshape(-1)[0]
            return a * mu, 1.0 / (a**2 * s**2 + sg**2)
        a, sg = alpha[:, None, None], sigma[:, None, None]
        return a * mu[None], 1.0 / (a**2 * (s**2)[None] + sg**2)

    def _component_log_probs(
        self, x: Tensor, mean: Tensor, prec: Tensor, diff: Tensor | None = None
    ) -> Tensor:
        """log w_k + log N_k(x) for every component: (B, K). x is (B, D) in the mixture's dtype."""
        w = self._params(x.device)[0]
        if self.bases is not None:
            quad = ((self._in_axes(x, mean) if diff is None else diff) ** 2 * prec).sum(-1)
        elif prec.dim() == 2:
            # Expanded as matrix products (4x faster than the (B, K, D) difference); in float64 the
            # cancellation costs ~1e-16 * |x|^2 / var, negligible next to the terms that matter.
            quad = (x**2) @ prec.T - 2 * x @ (prec * mean).T + (prec * mean**2).sum(-1)
        else:
            quad = ((x[:, None, :] - mean) ** 2 * prec).sum(-1)
        log_norm = 0.5 * (torch.log(prec) - math.log(2 * math.pi)).sum(-1)
        return torch.log(w) + log_norm - 0.5 * quad

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact $\\log p_0(x)$ in nats, shape `(B,)`, in `x`'s dtype."""
        x64 = self._flat(x).to(self.dtype)
        out = torch.logsumexp(self._component_log_probs(x64, *self._moments(x64, None, None)), dim=1)
        return out.to(x.dtype)

    # --- the marginal p_t under an SDE ---

    def _alpha_sigma(self, x: Tensor, t: float | Tensor, sde: SDE) -> tuple[Tensor, Tensor]:
        t = batch_time(as_time(t, like=x, T=sde.T), x).to(self.dtype)
        return sde.marginal(t)

    def log_prob_t(self, x: Tensor, t: float | Tensor, sde: SDE) -> Tensor:
        """Exact $\\log p_t(x)$ under `sde`, in nats, shape `(B,)`; `t` a float, 0-d or `(B,)` tensor."""
        x64 = self._flat(x).to(self.dtype)
        mean, prec = self._moments(x64, *self._alpha_sigma(x64, t, sde))
        return torch.logsumexp(self._component_log_probs(x64, mean, prec), dim=1).to(x.dtype)

    def _posterior(
        self, x: Tensor, t: float | Tensor, sde: SDE, components: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """`(x, mean, prec, resp, diff)` in the mixture's dtype: the moments of p_t's components, the
        responsibilities, restricted to `components` (a `(B, K)` mask) when given, and x in each
        component's axes (`_in_axes`, None without bases), computed once for the score to reuse."""
        x64 = self._flat(x).to(self.dtype)
        mean, prec = self._moments(x64, *self._alpha_sigma(x64, t, sde))
        diff = (
            None if self.bases is None else self._in_axes(x64, mean)
        )  # once per call, shared with the score
        logits = self._component_log_probs(x64, mean, prec, diff)
        if components is not None:
            logits = logits.masked_fill(~components.to(logits.device), -math.inf)
        return x64, mean, prec, _softmax(logits), diff

    def _score(self, x: Tensor, mean: Tensor, prec: Tensor, resp: Tensor, diff: Tensor | None) -> Tensor:
        """sum_k r_k P_k (m_k - x), written as two contractions over k (in each component's axes with bases)."""
        if self.bases is not None:
            return -torch.einsum("bk,kde,bke->bd", resp, self._axes(x.device), prec * diff)
        if prec.dim() == 2:
            return resp @ (prec * mean) - x * (resp @ prec)
        return torch.einsum("bk,bkd->bd", resp, prec * mean) - x * torch.einsum("bk,bkd->bd", resp, prec)

    def score_t(self, x: Tensor, t: float | Tensor, sde: SDE, components: Tensor | None = None) -> Tensor:
        """Exact score $\\nabla_x \\log p_t(x)$ under `sde`, shaped and typed like `x`.

        `components`, a `(B, K)` boolean mask, restricts each row to a subset of the components
        (weights renormalised): the score of $p_t(x \\mid y)$ for a class made of those components.
        """
        return self._score(*self._posterior(x, t, sde, components)).reshape(x.shape).to(x.dtype)

    def score_and_divergence_t(self, x: Tensor, t: float | Tensor, sde: SDE) -> tuple[Tensor, Tensor]:
        r"""The exact score (shaped like `x`) and its divergence $\operatorname{tr}\nabla_x^2 \log p_t(x)$
        (shape `(B,)`), from one pass over the components.

        With responsibilities $r_k$, component scores $s_k = P_k(m_k - x)$ and $s = \sum_k r_k s_k$,
        the score's Jacobian is $\sum_k r_k(-P_k + s_k s_k^\top) - s s^\top$, so its trace is
        $\sum_k r_k(\|s_k\|^2 - \operatorname{tr} P_k) - \|s\|^2$: about the cost of the score itself,
        instead of D vector-Jacobian products.
        """
        x64, mean, prec, resp, diff = self._posterior(x, t, sde, None)
        score = self._score(x64, mean, prec, resp, diff)
        if self.bases is not None:  # ||s_k||^2 and tr P_k do not depend on the axes
            sq = (prec * diff).square().sum(-1)
            trace_p = prec.sum(-1).expand_as(sq)
        elif prec.dim() == 2:  # (K, D): ||s_k||^2 = sum_j P_kj^2 (m_kj - x_j)^2, expanded as matrix products
            p2 = prec**2
            sq = (x64**2) @ p2.T - 2 * x64 @ (p2 * mean).T + (p2 * mean**2).sum(-1)
            trace_p = prec.sum(-1)[None]
        else:
            sq = (prec * (mean - x64[:, None, :])).square().sum(-1)
            trace_p = prec.sum(-1)
        div = (resp * (sq - trace_p)).sum(-1) - score.square().sum(-1)
        return score.reshape(x.shape).to(x.dtype), div.to(x.dtype)

    def responsibilities(self, x: Tensor, t: float | Tensor | None = None, sde: SDE | None = None) -> Tensor:
        """Posterior component probabilities under $p_t$ (under $p_0$ when `t` is None), shape `(B, K)`."""
        x64 = self._flat(x).to(self.dtype)
        if t is None:
            return _softmax(self._component_log_probs(x64, *self._moments(x64, None, None)))
        if sde is None:
            raise ValueError("sde must be given together with t")
        mean, prec = self._moments(x64, *self._alpha_sigma(x64, t, sde))
        return _softmax(self._component_log_probs(x64, mean, prec))

    def score_fn(self, sde: SDE) -> AnalyticScore:
        """The exact score of $p_t$ under `sde`, as a `Score` callable `score(x, t)`."""
        if not isinstance(sde, SDE):
            raise TypeError(f"sde must be a diffsolve SDE, got {describe(sde)}")
        return AnalyticScore(self, sde)


def _check_bases(bases: _ArrayLike, k: int, d: int, dtype: torch.dtype) -> Tensor:
    u = torch.as_tensor(np.asarray(bases, dtype=np.float64) if not isinstance(bases, Tensor) else bases)
    u = u.detach().to(dtype=dtype, device="cpu")
    if tuple(u.shape) != (k, d, d):
        raise ValueError(f"bases must have shape (K, D, D) = ({k}, {d}, {d}), got {tuple(u.shape)}")
    eye = torch.eye(d, dtype=dtype)
    err = (u.transpose(1, 2) @ u - eye).abs().max().item() if u.is_floating_point() else float("inf")
    if not err < 1e-6:
        raise ValueError(
            f"bases must be orthonormal matrices (U^T U = I); the largest deviation is {err:.3g}"
        )
    return u.contiguous()


def _as_observation(A: _ArrayLike, y: _ArrayLike, dim: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """`(A, y)` as float tensors `(m, D)` and `(m,)`, checked against the dimension `dim`."""
    a = torch.as_tensor(np.asarray(A, dtype=np.float64) if not isinstance(A, Tensor) else A)
    obs = torch.as_tensor(np.asarray(y, dtype=np.float64) if not isinstance(y, Tensor) else y)
    a, obs = a.detach().to(dtype=dtype, device="cpu"), obs.detach().to(dtype=dtype, device="cpu")
    if a.dim() != 2 or a.shape[1] != dim or a.shape[0] < 1:
        raise ValueError(f"A must have shape (m, D) with D = {dim}, got {tuple(a.shape)}")
    if tuple(obs.shape) != (a.shape[0],):
        raise ValueError(
            f"y must have shape (m,) = ({a.shape[0]},), one value per row of A, got {tuple(obs.shape)}"
        )
    if not bool(torch.isfinite(a).all()) or not bool(torch.isfinite(obs).all()):
        raise ValueError("A and y must be finite")
    return a, obs


def _softmax(logits: Tensor) -> Tensor:
    """Softmax over dim 1 via logsumexp: on CPU it is ~4x faster than torch.softmax for (B, K) with small K."""
    return torch.exp(logits - torch.logsumexp(logits, dim=1, keepdim=True))


class AnalyticScore:
    """The exact score of a `GaussianMixture` under an SDE; a `Score`: `score(x, t)` with `t` of shape `(B,)`.

    Args:
        mixture: The data distribution $p_0$.
        sde: The forward SDE whose marginals $p_t$ the score is of.

    Attributes:
        event_shape: `(mixture.dim,)`, so that samplers need no `event_shape` argument.
    """

    def __init__(self, mixture: GaussianMixture, sde: SDE) -> None:
        self.mixture = mixture
        self.sde = sde
        self.event_shape = (mixture.dim,)

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return self.mixture.score_t(x, t, self.sde)

    def score_and_divergence(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """The score and its exact divergence $\\operatorname{tr}\\nabla_x s(x, t)$ (`(B,)`), in closed form.

        `log_likelihood(divergence="exact")` calls it, once per evaluation, instead of the score and
        D vector-Jacobian products whenever a score has this method (see
        `GaussianMixture.score_and_divergence_t`).

        Args:
            x: The points `(B, *event)`.
            t: The times `(B,)`.
        """
        return self.mixture.score_and_divergence_t(x, t, self.sde)

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        r"""The exact velocity $dx/dt = \dot\alpha_t \hat x_0 + \dot\sigma_t \hat\epsilon$ on an `AffinePath`,
        defined at $\alpha_t = 0$ too (`RectifiedFlow(T=1)`), where $\hat x_0 = E[x_0 \mid x_t]$ is the
        mixture's mean; elsewhere $\hat x_0 = (x + \sigma_t^2 s)/\alpha_t$ (Tweedie). On any other SDE,
        the probability-flow drift. `t` is `(B,)`."""
        from .sde import AffinePath

        if not isinstance(self.sde, AffinePath):
            return self.sde.pf_drift(x, t, self(x, t))
        m = self.mixture
        x64 = m._flat(x).to(m.dtype)
        t64 = batch_time(as_time(t, like=x, T=self.sde.T), x).to(m.dtype)
        alpha, sigma = self.sde.marginal(t64)
        d_alpha, d_sigma = self.sde._d_alpha(t64)[:, None], self.sde._d_sigma(t64)[:, None]
        alpha, sigma = alpha[:, None], sigma[:, None]
        s = m.score_t(x64, t64, self.sde)
        zero = alpha == 0
        x0 = torch.where(zero, m.mean.to(x64.device), (x64 + sigma**2 * s) / torch.where(zero, 1.0, alpha))
        eps = (x64 - alpha * x0) / sigma
        return (d_alpha * x0 + d_sigma * eps).reshape(x.shape).to(x.dtype)

    def __repr__(self) -> str:
        return f"AnalyticScore({self.mixture!r}, {self.sde!r})"
