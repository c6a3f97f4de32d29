"""Score networks: `ScoreMLP` for vector data, `ScoreUNet` for small images.

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

__all__ = ["ScoreMLP", "ScoreUNet", "GaussianFourierEmbedding", "SinusoidalEmbedding", "ARCHITECTURES"]


class GaussianFourierEmbedding(nn.Module):
    r"""Random Fourier features of time, $[\sin 2\pi W t, \cos 2\pi W t]$ with fixed $W \sim N(0, s^2)$.

    Args:
        dim: Output features (even): `dim / 2` frequencies, each giving a sine and a cosine.
        scale: Standard deviation $s$ of the frequencies.

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
    """Transformer-style sinusoidal features of `1000 t` at geometrically spaced frequencies.

    Args:
        dim: Output features (even).
    """

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
        num_classes: For a class-conditional model: the number of classes C. A learned embedding of
            the label (C + 1 entries, the last the "no label" of classifier-free guidance) is added
            to the time embedding; `forward(x, t, y)` takes labels `(B,)`, and `y=None` or `y = C`
            is unconditional (`train(labels=..., label_dropout=...)` teaches both).
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
        num_classes: int | None = None,
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
        _label_embedding(self, num_classes, width)
        self.embed = (
            GaussianFourierEmbedding(embed_dim, fourier_scale)
            if time_embedding == "fourier"
            else SinusoidalEmbedding(embed_dim)
        )
        self.t_mlp = nn.Sequential(nn.Linear(2 * (embed_dim // 2), width), nn.SiLU(), nn.Linear(width, width))
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(_ResBlock(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        temb = _add_label(self, self.t_mlp(self.embed(t)), y)
        h = self.inp(x.reshape(x.shape[0], -1))
        for block in self.blocks:
            h = block(h, temb)
        return self.out(h).reshape(x.shape)


def _label_embedding(net: nn.Module, num_classes: int | None, width: int) -> None:
    """Give `net` a learned label embedding (C + 1 entries, the last "no label") when `num_classes` is set."""
    net.num_classes = num_classes
    if num_classes is not None:
        check_positive(num_classes, "num_classes", integer=True)
        net.config["num_classes"] = num_classes
        net.label_embed = nn.Embedding(num_classes + 1, width)


def _add_label(net: nn.Module, temb: Tensor, y: Tensor | None) -> Tensor:
    """The time embedding plus the label's (`y=None`: the "no label" entry) for a class-conditional net."""
    if net.num_classes is None:
        if y is not None:
            raise ValueError(f"this {type(net).__name__} has no num_classes: it takes no labels y")
        return temb
    if y is None:
        y = torch.full((temb.shape[0],), net.num_classes, dtype=torch.int64, device=temb.device)
    return temb + net.label_embed(y)


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class _ConvBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv, time added per channel, GroupNorm, SiLU, 3x3 conv, residual."""

    def __init__(self, c_in: int, c_out: int, temb: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb = nn.Linear(temb, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        z = self.conv1(nn.functional.silu(self.norm1(h))) + self.temb(temb)[:, :, None, None]
        z = self.conv2(nn.functional.silu(self.norm2(z)))
        return self.skip(h) + z


class ScoreUNet(nn.Module):
    """A small U-Net with a time embedding and GroupNorm, for images `(B, C, H, W)` (8x8, 28x28; 1–3 channels).

    Two resolutions below the input (pooling by 2 each: 8 -> 4 -> 2, 28 -> 14 -> 7), one residual
    block per level on the way down and two on the way up, skip connections by concatenation.

    Args:
        channels: Image channels C.
        base: Channels at full resolution (doubled at each level below).
        embed_dim: Size of the Fourier time features.
        fourier_scale: Std of the Fourier frequencies.
        num_classes: For a class-conditional model: the number of classes C, as in `ScoreMLP`
            (a label embedding with a "no label" entry, added to the time embedding).
    """

    def __init__(
        self,
        channels: int = 1,
        *,
        base: int = 32,
        embed_dim: int = 64,
        fourier_scale: float = 16.0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        check_positive(channels, "channels", integer=True)
        check_positive(base, "base", integer=True)
        self.config: dict[str, Any] = {
            "channels": channels, "base": base, "embed_dim": embed_dim, "fourier_scale": fourier_scale,
        }  # fmt: skip
        t = 4 * base
        _label_embedding(self, num_classes, t)
        self.embed = GaussianFourierEmbedding(embed_dim, fourier_scale)
        self.t_mlp = nn.Sequential(nn.Linear(2 * (embed_dim // 2), t), nn.SiLU(), nn.Linear(t, t))
        c1, c2, c3 = base, 2 * base, 4 * base
        self.inp = nn.Conv2d(channels, c1, 3, padding=1)
        self.down1 = _ConvBlock(c1, c1, t)
        self.down2 = _ConvBlock(c1, c2, t)
        self.mid = _ConvBlock(c2, c3, t)
        self.up2 = _ConvBlock(c3 + c2, c2, t)
        self.up1 = _ConvBlock(c2 + c1, c1, t)
        self.out = nn.Sequential(
            nn.GroupNorm(_groups(c1), c1), nn.SiLU(), nn.Conv2d(c1, channels, 3, padding=1)
        )

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"ScoreUNet takes images (B, C, H, W), got shape {tuple(x.shape)}")
        temb = _add_label(self, self.t_mlp(self.embed(t)), y)
        h1 = self.down1(self.inp(x), temb)  # H
        h2 = self.down2(nn.functional.avg_pool2d(h1, 2), temb)  # H/2
        m = self.mid(nn.functional.avg_pool2d(h2, 2), temb)  # H/4
        u2 = nn.functional.interpolate(m, size=h2.shape[-2:], mode="nearest")
        u2 = self.up2(torch.cat([u2, h2], dim=1), temb)
        u1 = nn.functional.interpolate(u2, size=h1.shape[-2:], mode="nearest")
        u1 = self.up1(torch.cat([u1, h1], dim=1), temb)
        return self.out(u1)


ARCHITECTURES: dict[str, type[nn.Module]] = {"ScoreMLP": ScoreMLP, "ScoreUNet": ScoreUNet}
"""The networks a checkpoint can name (and `checkpoint.load` rebuild), by class name."""
