r"""Bridges to the models other libraries train.

`from_denoiser` turns a k-diffusion / EDM-style denoiser $D(x; \sigma) \approx E[x_0 \mid x_0 + \sigma n]$
into a diffsolve score on `EDMSDE` (time is the noise level): by Tweedie's formula,

$$\nabla_x \log p_\sigma(x) = \frac{D(x; \sigma) - x}{\sigma^2}.$$

With `sigma_data`, the callable is instead the raw network $F$ of Karras et al.'s preconditioning,
$D(x; \sigma) = c_{skip} x + c_{out} F(c_{in} x, c_{noise})$ with $c_{skip} = \sigma_d^2/(\sigma^2 + \sigma_d^2)$,
$c_{out} = \sigma\sigma_d/\sqrt{\sigma^2 + \sigma_d^2}$, $c_{in} = 1/\sqrt{\sigma^2 + \sigma_d^2}$ and
$c_{noise} = \tfrac14\ln\sigma$ (k-diffusion's `Denoiser` wrapper). Loading score_sde (NCSN++/DDPM++)
checkpoints is not provided: their network code is not a dependency, and a state dict alone cannot
be run without it. diffusers' `UNet2DModel` bridge is not built yet.

References:
    Karras, Aittala, Aila & Laine, "Elucidating the Design Space of Diffusion-Based Generative
    Models", NeurIPS 2022 (Table 1, preconditioning).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

from torch import Tensor

from ._validation import append_dims, describe
from .sde import EDMSDE

__all__ = ["from_denoiser", "DenoiserScore"]


class DenoiserScore:
    """A denoiser $D(x; \\sigma)$ as a score on `EDMSDE`: $(D(x; \\sigma) - x)/\\sigma^2$ (see `from_denoiser`).

    Args:
        denoiser: `denoiser(x, sigma)` with `sigma` of shape `(B,)`, or the raw network when
            `sigma_data` is given.
        sde: The `EDMSDE` whose time is the noise level.
        sigma_data: The data's standard deviation for EDM's preconditioning, or None.
    """

    def __init__(
        self, denoiser: Callable[[Tensor, Tensor], Tensor], sde: EDMSDE, sigma_data: float | None = None
    ) -> None:
        self.denoiser, self.sde, self.sigma_data = denoiser, sde, sigma_data

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        """$D(x; \\sigma)$, through EDM's preconditioning when `sigma_data` is set.

        Args:
            x: Noisy points `(B, *event)`.
            sigma: Noise levels `(B,)`.
        """
        if self.sigma_data is None:
            return self.denoiser(x, sigma)
        sd2, s2 = self.sigma_data**2, sigma**2
        c_skip = sd2 / (s2 + sd2)
        c_out = sigma * self.sigma_data / (s2 + sd2).sqrt()
        c_in = 1 / (s2 + sd2).sqrt()
        out = self.denoiser(append_dims(c_in, x.dim()) * x, 0.25 * sigma.log())
        return append_dims(c_skip, x.dim()) * x + append_dims(c_out, x.dim()) * out

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        return (self.denoise(x, t) - x) / append_dims(t.square(), x.dim())


def from_denoiser(
    denoiser: Callable[[Tensor, Tensor], Tensor], *, sigma_data: float | None = None, sigma_max: float = 80.0
) -> DenoiserScore:
    """A k-diffusion / EDM-style denoiser as a diffsolve score, with the `EDMSDE` it lives on.

    Sample with `ds.sample(score, score.sde, n, event_shape=..., eps=0.002)` (EDM's sigma_min).

    Args:
        denoiser: `denoiser(x, sigma) -> E[x0 | x]` with `sigma` of shape `(B,)` (e.g. a k-diffusion
            `Denoiser` or `KarrasVE` model), or, with `sigma_data`, the raw network of EDM's
            preconditioning called as `net(c_in * x, c_noise)`.
        sigma_data: The data's standard deviation (0.5 in EDM) when `denoiser` is the raw network.
        sigma_max: The largest noise level, the SDE's T.

    Returns:
        A `DenoiserScore` (its `sde` is the `EDMSDE`).
    """
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable as denoiser(x, sigma), got {describe(denoiser)}")
    if sigma_data is not None and (
        isinstance(sigma_data, bool)
        or not isinstance(sigma_data, numbers.Real)
        or not (math.isfinite(sigma_data) and sigma_data > 0)
    ):
        raise ValueError(f"sigma_data must be a finite number > 0, got {sigma_data!r}")
    return DenoiserScore(denoiser, EDMSDE(sigma_max), None if sigma_data is None else float(sigma_data))
