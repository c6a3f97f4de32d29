"""Score networks: `ScoreMLP` for vector data.

A network here maps `(x, t)` to a tensor shaped like `x`; wrap it in `ScoreModel` with the
parameterisation it was trained for. Each network records its constructor arguments in `.config`
(JSON-serialisable), which is what a checkpoint stores to rebuild it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ._validation import check_positive

__all__ = ["ScoreMLP", "GaussianFourierEmbedding", "SinusoidalEmbedding", "ARCHITECTURES"]


class GaussianFourierEmbedding(nn.Module):
    r"""Random Fourier features of time, $[\sin 2\pi W t, \cos 2\pi W t]$ with fixed $W \sim N(0, s^2)$.

    References:
        Tancik et al., "Fourier features let networks learn high frequency functions", NeurIPS 2020.
    """

    def __init__(self, dim: int, scale: float = 16.0) -> None:
        super().__init__()
        # A buffer: saved with the weights, so a loaded model has the same features.
        self.register_buffer("w", torch.randn(dim // 2, generator=torch.Generator().manual_seed(0)) * scale)

    def forward(self, t: Tensor) -> Tensor:
        arg = 2 * math.pi * t[:, None] * self.w.to(t.dtype)
        return torch.cat([arg.sin(), arg.cos()], dim=1)


class SinusoidalEmbedding(nn.Module):
    """Transformer-style sinusoidal features of `1000 t` at geometrically spaced frequencies."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(10_000) * torch.arange(half) / max(half - 1, 1)))

    def forward(self, t: Tensor) -> Tensor:
        arg = 1000 * t[:, None] * self.freqs.to(t.dtype)
        return torch.cat([arg.sin(), arg.cos()], dim=1)


class _ResBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.lin1 = nn.Linear(width, width)
        self.temb = nn.Linear(width, width)
        self.lin2 = nn.Linear(width, width)

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        z = self.lin1(nn.functional.silu(self.norm(h))) + self.temb(temb)
        return h + self.lin2(nn.functional.silu(z))


class ScoreMLP(nn.Module):
    """A residual MLP with a time embedding, for data `(B, *event)` of `dim` values per sample.

    Args:
        dim: Values per sample (the event is flattened and restored).
        width: Hidden width.
        depth: Number of residual blocks (each: LayerNorm, SiLU, two linear layers, time added).
        time_embedding: `"fourier"` (Gaussian random features of t) or `"sinusoidal"`.
        embed_dim: Size of the time features.
        fourier_scale: Std of the Fourier frequencies (t lies in [0, 1]).
    """

    def __init__(
        self,
        dim: int,
        *,
        width: int = 256,
        depth: int = 3,
        time_embedding: str = "fourier",
        embed_dim: int = 64,
        fourier_scale: float = 16.0,
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("width", width), ("depth", depth), ("embed_dim", embed_dim)):
            check_positive(value, name, integer=True)
        if time_embedding not in ("fourier", "sinusoidal"):
            raise ValueError(f"time_embedding must be 'fourier' or 'sinusoidal', got {time_embedding!r}")
        self.config: dict[str, Any] = {
            "dim": dim,
            "width": width,
            "depth": depth,
            "time_embedding": time_embedding,
            "embed_dim": embed_dim,
            "fourier_scale": fourier_scale,
        }
        self.embed = (
            GaussianFourierEmbedding(embed_dim, fourier_scale)
            if time_embedding == "fourier"
            else SinusoidalEmbedding(embed_dim)
        )
        self.t_mlp = nn.Sequential(nn.Linear(2 * (embed_dim // 2), width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_ResBlock(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        temb = self.t_mlp(self.embed(t))
        h = self.inp(x.reshape(x.shape[0], -1))
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h).reshape(x.shape)


ARCHITECTURES: dict[str, type[nn.Module]] = {"ScoreMLP": ScoreMLP}
