"""Random numbers keyed by (seed, purpose, global row index): draws that do not depend on the batch.

A sample's prior draw, Brownian path, corrector noise and Hutchinson probes are rows of streams
named by the seed and a purpose. Rows are grouped in blocks of `BLOCK_ROWS` global indices; each
block has its own generator, seeded by a splitmix64 hash of (words..., block), and a row's numbers
are its slice of that generator's stream. On the CPU torch's `rand`/`randint` are prefix-stable
and `randn` is prefix-stable in multiples of 16 numbers, so drawing a multiple of 16 from the
start of the block gives every row the same numbers whatever the batch around it: the first k
samples of a batch of 2k equal a batch of k bit for bit, and a chunk or a shard starting at row r
(`row_start=r`) draws exactly the rows a single batch would have given it. On a GPU the numbers are
drawn on the device, keyed the same way, but CUDA's generators are not prefix-stable.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BLOCK_ROWS", "absorb", "mix", "rows", "normal_rows", "uniform_rows", "hash64", "hashed_normals",
    "sub_seed", "fresh_seed", "PRIOR_SEED", "CORRECTOR_SEED", "PURPOSES", "stream", "sequential",
]  # fmt: skip

BLOCK_ROWS = 1 << 12
"""Global row indices per generator: a chunk starting inside a block draws from the block's start."""

MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15

# Purposes: each names an independent family of streams under one seed.
PRIOR, CORRECTOR, PROBES, DEQUANTIZE, ROW_PATH, SRK_CHUNK, OBSERVATION, RESAMPLE, TRAINING = (
    11,
    12,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
)


PRIOR_SEED, CORRECTOR_SEED = 0, 1
"""Indices of `sub_seed`: the prior draw's and the Langevin corrector's seeds under a user's seed."""

PURPOSES: dict[str, tuple[int | None, int]] = {
    "prior": (PRIOR_SEED, PRIOR),
    "corrector": (CORRECTOR_SEED, CORRECTOR),
    "probes": (None, PROBES),
    "dequantize": (None, DEQUANTIZE),
    "observation": (None, OBSERVATION),
    "resample": (None, RESAMPLE),
    "training": (None, TRAINING),
}
"""Each named purpose: (the `sub_seed` index its word comes from, or None for the seed itself; its tag)."""


def sub_seed(seed: int, index: int) -> int:
    """The `index`-th 31-bit sub-seed of a user's seed (numpy's SeedSequence): the one place sub-seeds
    are derived, so that the prior draws of `sample`, `compare` and the analysis tools agree.

    Args:
        seed: The user's seed.
        index: `PRIOR_SEED` or `CORRECTOR_SEED`.
    """
    return int(np.random.SeedSequence(seed).generate_state(2)[index]) & 0x7FFFFFFF


def stream(seed: int, purpose: str) -> tuple[int, int]:
    """The key `(word, tag)` of a named purpose's stream under a user's seed: the one table of them.

    `"prior"` (x_T) and `"corrector"` (Langevin noise) read sub-seeds of the seed, `"probes"`
    (Hutchinson), `"dequantize"`, `"observation"` (the noised observation of the projection solvers),
    `"resample"` (RePaint's extra steps) and `"training"` (`sequential`: batches, times and noise of a
    training run) read the seed itself; each has its own tag, so no two row-keyed purposes share
    numbers. (The Brownian path is keyed by the seed in `adapters.brownian`.)

    Args:
        seed: The user's seed.
        purpose: One of `PURPOSES`.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
    index, tag = PURPOSES[purpose]
    return (seed if index is None else sub_seed(seed, index)), tag


def sequential(seed: int, purpose: str) -> torch.Generator:
    """A CPU `torch.Generator` for a purpose whose draws are sequential, not keyed by row: training,
    whose batches follow one another and whose generator state a checkpoint saves so that a resumed
    run continues the same stream. Seeded by the purpose's word (`stream`); the tag, which only
    separates row-keyed streams, is not used.

    Args:
        seed: The user's seed.
        purpose: One of `PURPOSES`.
    """
    return torch.Generator().manual_seed(stream(seed, purpose)[0])


def fresh_seed() -> int:
    """A 31-bit seed from the operating system's entropy, for calls that were given none (echoed back)."""
    return int(np.random.SeedSequence().generate_state(1)[0]) & 0x7FFFFFFF


def absorb(h: int, *words: int) -> int:
    """The splitmix64 finaliser over each word in turn, from the 64-bit state `h`.

    Args:
        h: The state.
        *words: Integers to absorb (taken modulo 2^64).
    """
    for w in words:
        h = (h ^ (w & MASK64)) * 0xBF58476D1CE4E5B9 & MASK64
        h = (h ^ (h >> 31)) * 0x94D049BB133111EB & MASK64
        h ^= h >> 29
    return h


def mix(*words: int) -> int:
    """A 63-bit generator seed from integers.

    Args:
        *words: The key.
    """
    return absorb(_GOLDEN, *words) >> 1


def rows(
    draw: Callable[[int, torch.Generator], Tensor],
    seed_of: Callable[[int], int],
    row_start: int,
    n: int,
    numel: int,
    generator: torch.Generator,
) -> Tensor:
    """Rows `row_start .. row_start + n` of the keyed stream, `(n, numel)`.

    Args:
        draw: `draw(count, generator)` returns `count` numbers from the generator's stream.
        seed_of: The generator seed of a block.
        row_start: The first global row index.
        n: Rows.
        numel: Numbers per row.
        generator: Reseeded per block (its device is where the numbers are drawn).
    """
    r0, r1 = row_start, row_start + n
    parts = []
    for block in range(r0 // BLOCK_ROWS, (r1 - 1) // BLOCK_ROWS + 1):
        lo = max(r0, block * BLOCK_ROWS) - block * BLOCK_ROWS
        hi = min(r1, (block + 1) * BLOCK_ROWS) - block * BLOCK_ROWS
        generator.manual_seed(seed_of(block))
        z = draw(-(-(hi * numel) // 16) * 16, generator)  # a multiple of 16: a prefix of the stream
        parts.append(z[lo * numel : hi * numel])
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
    return out.view(n, numel)


_GENERATORS: dict[torch.device, torch.Generator] = {}


def generator_on(device: torch.device | str) -> torch.Generator:
    """One reusable generator per device (reseeded before every use), so a draw creates no object.

    Args:
        device: The device.
    """
    device = torch.device(device)
    if device not in _GENERATORS:
        _GENERATORS[device] = torch.Generator(device=device)
    return _GENERATORS[device]


def _keyed(draw, key: tuple[int, ...], row_start: int, n: int, numel: int, dtype, device) -> Tensor:
    return rows(
        lambda c, g: draw(c, generator=g, dtype=dtype, device=device),
        lambda block: mix(*key, block), row_start, n, numel, generator_on(device),
    )  # fmt: skip


def normal_rows(
    key: tuple[int, ...],
    row_start: int,
    n: int,
    numel: int,
    *,
    dtype: torch.dtype,
    device: torch.device | str,
) -> Tensor:
    """Standard normals `(n, numel)`, row i keyed by `(*key, row_start + i)`.

    Args:
        key: Names the stream (seed, purpose, ...).
        row_start: The first global row index.
        n: Rows.
        numel: Numbers per row.
        dtype: A floating dtype.
        device: Where to draw.
    """
    return _keyed(torch.randn, key, row_start, n, numel, dtype, device)


def uniform_rows(
    key: tuple[int, ...],
    row_start: int,
    n: int,
    numel: int,
    *,
    dtype: torch.dtype,
    device: torch.device | str,
) -> Tensor:
    """Uniforms on [0, 1) `(n, numel)`, row i keyed by `(*key, row_start + i)`; arguments as `normal_rows`.

    Args:
        key: Names the stream.
        row_start: The first global row index.
        n: Rows.
        numel: Numbers per row.
        dtype: A floating dtype.
        device: Where to draw.
    """
    return _keyed(torch.rand, key, row_start, n, numel, dtype, device)


def _signed(c: int) -> int:
    """A 64-bit constant as the int64 torch stores (two's complement)."""
    return c - (1 << 64) if c >= 1 << 63 else c


_C1, _C2 = _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shr(x: Tensor, k: int) -> Tensor:
    """Logical right shift of int64 tensors (torch's `>>` is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def hash64(x: Tensor) -> Tensor:
    """`absorb(0, w)` elementwise: the splitmix64 finaliser on int64 tensors, in two's complement.

    int64 products wrap modulo 2^64 on CPU and CUDA, so the bits equal the Python integer hash
    `absorb(0, w)` of each word (tested), on any device.

    Args:
        x: An int64 tensor.
    """
    x = x * _C1
    x = (x ^ _shr(x, 31)) * _C2
    return x ^ _shr(x, 29)


def hashed_normals(keys: Tensor, dtype: torch.dtype) -> Tensor:
    """One standard normal per int64 key, by Box–Muller from two 53-bit uniforms hashed from it.

    A counter-based draw: the number is a function of its key alone, so any subset of keys, in any
    order, on any device, gets the same numbers (up to the device's `log`/`cos` rounding). Slower per
    number than `torch.randn`; used where each row needs its own keys (`RowBrownian`).

    Args:
        keys: int64 keys (already mixed with a seed).
        dtype: The floating dtype of the result (computed in float64).
    """
    a = hash64(keys ^ 0x5851F42D4C957F2D)
    b = hash64(keys ^ 0x14057B7EF767814F)
    scale = 2.0**-53
    u1 = (_shr(a, 11) + 1).to(torch.float64) * scale  # (0, 1]: log(u1) is finite
    u2 = _shr(b, 11).to(torch.float64) * scale
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * torch.pi) * u2)).to(dtype)
