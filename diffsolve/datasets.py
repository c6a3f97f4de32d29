"""Datasets that need no download: the 2-D toy sets of the literature, analytic mixtures, and 8x8 digits.

Every generator is deterministic given `seed` (numpy's PCG64), so a dataset is reproducible from
its name, size and seed alone. The toy sets follow the definitions popularised by FFJORD
(Grathwohl et al., ICLR 2019), written here from their formulas.

The digits are scikit-learn's copy of the UCI handwritten digits (1797 images of 8x8 pixels with 17
grey levels, 0..16), shipped inside scikit-learn: install the `data` extra.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ._keyed import stream, uniform_rows
from ._validation import check_batched, check_positive, check_seed
from .analytic import GaussianMixture

__all__ = ["TOY_DATASETS", "MIXTURES", "toy2d", "mixture", "digits", "DIGITS_LEVELS", "dequantize"]

DIGITS_LEVELS = 17  # grey levels 0..16 in scikit-learn's 8x8 digits
"""Grey levels of scikit-learn's 8x8 digits (0..16): the `bins` to dequantise them with."""


def _eight_gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    s = 1 / math.sqrt(2)
    centers = 4 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)])
    return (rng.normal(size=(n, 2)) * 0.5 + centers[rng.integers(0, 8, n)]) / 1.414


def _checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    x1 = rng.uniform(-2, 2, n)
    x2 = rng.uniform(0, 1, n) - rng.integers(0, 2, n) * 2 + np.floor(x1) % 2
    return np.stack([x1, x2], 1) * 2


def _swissroll(rng: np.random.Generator, n: int) -> np.ndarray:
    t = 1.5 * np.pi * (1 + 2 * rng.uniform(size=n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], 1) + rng.normal(size=(n, 2))
    return x / 5


def _moons(rng: np.random.Generator, n: int) -> np.ndarray:
    n1 = n // 2
    a, b = np.pi * rng.uniform(size=n1), np.pi * rng.uniform(size=n - n1)
    upper = np.stack([np.cos(a), np.sin(a)], 1)
    lower = np.stack([1 - np.cos(b), 0.5 - np.sin(b)], 1)
    x = np.concatenate([upper, lower]) + rng.normal(scale=0.1, size=(n, 2))
    return x * 2 + np.array([-1.0, -0.2])


def _circles(rng: np.random.Generator, n: int) -> np.ndarray:
    n1 = n // 2
    a = 2 * np.pi * rng.uniform(size=n)
    r = np.where(np.arange(n) < n1, 1.0, 0.5)
    x = np.stack([r * np.cos(a), r * np.sin(a)], 1) + rng.normal(scale=0.08, size=(n, 2))
    return x * 3


def _rings(rng: np.random.Generator, n: int) -> np.ndarray:
    radius = rng.integers(1, 5, n).astype(float)  # four rings, radii 1..4
    a = 2 * np.pi * rng.uniform(size=n)
    x = np.stack([radius * np.cos(a), radius * np.sin(a)], 1) * 0.75
    return x + rng.normal(scale=0.08, size=(n, 2))


def _pinwheel(rng: np.random.Generator, n: int) -> np.ndarray:
    classes, radial, tangential, rate = 5, 0.3, 0.1, 0.25
    features = rng.normal(size=(n, 2)) * np.array([radial, tangential]) + np.array([1.0, 0.0])
    labels = rng.integers(0, classes, n)
    angles = 2 * np.pi * labels / classes + rate * np.exp(features[:, 0])
    rot = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)], 1).reshape(n, 2, 2)
    return 2 * np.einsum("ti,tij->tj", features, rot)


def _two_spirals(rng: np.random.Generator, n: int) -> np.ndarray:
    n1 = n // 2
    t = np.sqrt(rng.uniform(size=n)) * 540 * (2 * np.pi) / 360
    sign = np.where(np.arange(n) < n1, 1.0, -1.0)
    x = np.stack([-np.cos(t) * t, np.sin(t) * t], 1) * sign[:, None] + rng.uniform(size=(n, 2)) * 0.5
    return x / 3 + rng.normal(scale=0.1, size=(n, 2))


_TOY: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "swissroll": _swissroll,
    "moons": _moons,
    "circles": _circles,
    "rings": _rings,
    "pinwheel": _pinwheel,
    "2spirals": _two_spirals,
}
TOY_DATASETS: tuple[str, ...] = tuple(_TOY)
"""Names of the 2-D toy sets `toy2d` draws."""

MIXTURES: dict[str, Callable[[], GaussianMixture]] = {
    "ring2d": GaussianMixture.ring2d,
    "mixture16": lambda: GaussianMixture.random(dim=16, k=5, seed=0),
}
"""The analytic problems by name: `ring2d` (8 Gaussians on a circle) and `mixture16` (5 in 16-D)."""


def toy2d(name: str, n: int, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    """`n` points of a 2-D toy dataset, shape `(n, 2)`, deterministic given `seed`.

    Args:
        name: One of `TOY_DATASETS`: 8gaussians, checkerboard, swissroll, moons, circles, rings,
            pinwheel, 2spirals.
        n: Number of points.
        seed: Seed of numpy's PCG64 generator.
        dtype: dtype of the returned tensor.

    Raises:
        ValueError: On an unknown name (the valid ones are listed) or n < 1.
    """
    if name not in _TOY:
        raise ValueError(f"dataset must be one of {', '.join(TOY_DATASETS)}; got {name!r}")
    check_positive(n, "n", integer=True)
    x = _TOY[name](np.random.default_rng(seed), n)
    return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype)


def mixture(name: str) -> GaussianMixture:
    """An analytic mixture by name: `ring2d` or `mixture16` (`GaussianMixture.random(16, 5, seed=0)`).

    Args:
        name: A key of `MIXTURES`.

    Raises:
        ValueError: On an unknown name; the message lists the valid ones.
    """
    if name not in MIXTURES:
        raise ValueError(f"mixture must be one of {', '.join(MIXTURES)}; got {name!r}")
    return MIXTURES[name]()


def digits(
    split: str = "train",
    *,
    scale: str = "[0, 1]",
    test_fraction: float = 0.2,
    dtype: torch.dtype = torch.float32,
    return_labels: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """scikit-learn's 8x8 handwritten digits as images `(N, 1, 8, 8)`, with a fixed train/test split.

    The split is a permutation of the 1797 images drawn with seed 0, the last `test_fraction` of it
    being the test set (360 images at 0.2). Grey levels 0..16 are mapped to `[0, 1]` (`k / 16`) or
    `[-1, 1]` (`2k / 16 - 1`); they are not dequantised here: use `diffsolve.dequantize(x,
    bins=DIGITS_LEVELS, low=..., high=...)` explicitly.

    Args:
        split: `"train"` or `"test"`.
        scale: `"[0, 1]"` or `"[-1, 1]"`.
        test_fraction: Fraction of the images held out as the test set.
        dtype: The returned tensor's dtype.
        return_labels: Also return the digit each image shows (0..9).

    Returns:
        The images, `(N, 1, 8, 8)`; with `return_labels`, `(images, labels)` with labels `(N,)` int64.

    Raises:
        ImportError: Without scikit-learn (`pip install "diffsolve[data]"`).
        ValueError: On an unknown split or scale.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if scale not in ("[0, 1]", "[-1, 1]"):
        raise ValueError(f"scale must be '[0, 1]' or '[-1, 1]', got {scale!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError('the digits need scikit-learn: pip install "diffsolve[data]"') from err
    bunch = load_digits()
    images = bunch.images.astype(np.float64)  # (1797, 8, 8), levels 0..16
    order = np.random.default_rng(0).permutation(len(images))
    n_test = round(test_fraction * len(images))
    idx = {"train": order[:-n_test], "test": order[-n_test:], "all": np.arange(len(images))}[split]
    x = images[idx] / (DIGITS_LEVELS - 1)
    if scale == "[-1, 1]":
        x = 2 * x - 1
    out = torch.as_tensor(x[:, None], dtype=dtype)
    return (out, torch.as_tensor(bunch.target[idx], dtype=torch.int64)) if return_labels else out


def dequantize(
    x: Tensor,
    *,
    bins: int = 256,
    low: float = 0.0,
    high: float = 1.0,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    row_start: int = 0,
) -> Tensor:
    r"""Uniform dequantisation of data with `bins` levels on $[\text{low}, \text{high}]$.

    Level $k \in \{0, \dots, \text{bins}-1\}$, stored as $\text{low} + k\,(\text{high}-\text{low})/(\text{bins}-1)$
    (as `ToTensor` stores 8-bit images in [0, 1]), becomes $\text{low} + (k + u)\,(\text{high}-\text{low})/\text{bins}$
    with $u \sim U[0, 1)$: a continuous variable whose density, integrated over a level's cell, is the
    probability of that level. Likelihoods of the result are what `bits_per_dim` converts.

    Args:
        x: Quantised data `(B, *event)` on the level grid.
        bins: Number of levels.
        low: The value of level 0.
        high: The value of level `bins - 1`.
        generator: Source of the uniform noise.
        seed: Instead of `generator`: each row's noise keyed by the seed and its global index
            `row_start + i`, drawn on `x`'s device, so a data set dequantised in chunks (or shards)
            gets the same noise as in one batch.
        row_start: Global index of `x`'s first row (with `seed`).

    Returns:
        The dequantised data, shaped like `x`: each value uniform in its level's cell of width
        $(\text{high}-\text{low})/\text{bins}$.

    Raises:
        ValueError: If `x` has NaN/Inf or values outside $[\text{low}, \text{high}]$, or the range is empty.
    """
    x = check_batched(x, "x", min_dim=1)
    check_positive(bins, "bins", integer=True)
    for value, name in ((low, "low"), (high, "high")):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not high > low:
        raise ValueError(f"high must be > low, got low={low!r}, high={high!r}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must be finite: dequantize got NaN or Inf in its data")
    lo, hi = float(x.min()), float(x.max())
    if lo < low or hi > high:
        raise ValueError(
            f"x must lie in the declared range [{low}, {high}], got values in [{lo:.6g}, {hi:.6g}]"
        )
    width = high - low
    k = torch.round((x - low) / width * (bins - 1))
    if seed is not None:
        if generator is not None:
            raise ValueError("give generator or seed, not both")
        seed = check_seed(seed)
        u = uniform_rows(
            stream(seed, "dequantize"), row_start, x.shape[0], x[0].numel(), dtype=x.dtype, device=x.device
        )
        u = u.view(x.shape)
    else:
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return low + (k + u) * (width / bins)
