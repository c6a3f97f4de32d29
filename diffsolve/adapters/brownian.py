r"""The Brownian path a seed names: exact, the same at every step count, and cheap to walk.

A reverse-SDE solve in solver time $s \in [0, S]$ ($S = T - \epsilon$) needs $W(s)$ at its grid
points. `BrownianPath` builds $W$ as a binary (Lévy) tree over $[0, S]$: the value at the midpoint
of a dyadic interval $[a, b]$ is drawn from its bridge law given the ends,

$$W\big(\tfrac{a+b}2\big) = \tfrac12\big(W(a) + W(b)\big) + \tfrac12\sqrt{b - a}\;Z_{\text{node}},$$

down to `levels` levels ($2^{10}$ cells by default); inside a cell a query point gets the bridge
law between its nearest known neighbours, $W(s) = W(a) + \frac{s-a}{b-a}(W(b) - W(a)) +
\sqrt{(s-a)(b-s)/(b-a)}\;Z_{\text{cell}, s}$. Every $Z$ is keyed: drawn from a generator seeded by
(seed, node) or (seed, cell, s), so $W(s)$ is a function of the seed and $s$ alone, whatever else is
queried, as long as no other query falls strictly inside the same cell before it: any grid of up to
$2^{10}$ equal steps, $2^{11}$ equal steps (its odd points are the cells' only inner points), or any
grid whose points are at least $S/2^{10}$ apart. The law is exact for every grid. A deeper tree
(`levels`) widens that guarantee at a cost of about one more draw per step per level.

Walking a grid in order costs about $\log_2(2^{\text{levels}}/N) + 2$ node draws per step (the
tree's frontier is kept, so shared ancestors are drawn once), against torchsde's
`BrownianInterval`, which searches and splits a cached interval tree on every query.

Rows are samples. The $Z$ of a node for the samples with global indices $r_0, \dots, r_0 + B - 1$ are
rows of one prefix-stable normal stream per block of `BLOCK_ROWS` indices (torch's CPU `randn` is
prefix-stable in multiples of 16 numbers), so on the CPU a sample's path depends on the seed and its
global index only: the first k paths of a batch of 2k equal those of a batch of k, bit for bit.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchsde import BaseBrownian

from .._keyed import BLOCK_ROWS, ROW_PATH, absorb, hash64, hashed_normals, mix, rows

__all__ = ["BrownianPath", "RowBrownian", "LEVELS", "BLOCK_ROWS"]  # BLOCK_ROWS: see diffsolve._keyed

LEVELS = 10
"""Depth of the tree: the path is step-count independent down to cells of $S/2^{10}$."""

_ROOT, _NODE, _BRIDGE = 1, 2, 3  # key kinds
_QUANTUM = 2.0**-20  # resolution of a query inside a cell, in cells
_absorb, _mix = absorb, mix


class BrownianPath(BaseBrownian):
    """A `(B, D)` Brownian motion on $[0, S]$ named by a seed, for `torchsde.sdeint(bm=...)` and our own steps.

    `path(ta, tb)` is $W(t_b) - W(t_a)$; `path.value(s)` is $W(s)$. Queries may come in any order;
    walking forward is cheapest.

    Args:
        shape: `(B, D)`: samples and noise channels.
        seed: The entropy of the path.
        s_end: The end of solver time, $S = T - \\epsilon$.
        dtype: Floating dtype of the path.
        device: Device of the path.
        row_start: Global index of the first row (for a chunk or a shard of a larger run).
        levels: Depth of the tree (see the module docstring); changing it changes the path.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        *,
        seed: int,
        s_end: float,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        row_start: int = 0,
        levels: int = LEVELS,
    ) -> None:
        if len(shape) != 2:
            raise ValueError(f"shape must be (batch, channels), got {tuple(shape)}")
        if not s_end > 0:
            raise ValueError(f"s_end must be > 0, got {s_end}")
        self._shape = tuple(int(n) for n in shape)
        self.seed = int(seed)
        self.s_end = float(s_end)
        self._dtype = dtype
        self._device = torch.device("cpu") if device is None else torch.device(device)
        self.row_start = int(row_start)
        self.levels = int(levels)
        self.cells = 1 << self.levels
        self.h = self.s_end / self.cells
        self._gen = torch.Generator(device=self._device)
        zeros = torch.zeros(self._shape, dtype=dtype, device=self._device)
        root = self._normals(_ROOT, 0).mul_(math.sqrt(self.s_end))
        # The frontier: at each level l, the index k of the interval holding the last query, and W at its ends.
        self._k = [0] * (self.levels + 1)
        self._ends: list[tuple[Tensor, Tensor]] = [(zeros, root)] + [(zeros, zeros)] * self.levels
        self._depth = 0  # levels 0..depth of the frontier are valid
        self._mid_k = [-1] * self.levels  # the interval whose midpoint self._mid[l] holds, per level
        self._mid: list[Tensor | None] = [None] * self.levels
        self._sd = [0.5 * math.sqrt(self.s_end / (1 << level)) for level in range(self.levels)]
        self._node_prefix = [
            _absorb(0x9E3779B97F4A7C15, self.seed, _NODE, level) for level in range(self.levels)
        ]
        self._cell_points: list[tuple[float, Tensor]] = []  # bridge points queried in the current cell
        self._last: tuple[float, Tensor] | None = None

    # --- torchsde's BaseBrownian interface ---

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def levy_area_approximation(self) -> str:
        return "none"

    def __repr__(self) -> str:
        return (
            f"BrownianPath(shape={self._shape}, seed={self.seed}, s_end={self.s_end}, levels={self.levels})"
        )

    def __call__(self, ta, tb=None, return_U: bool = False, return_A: bool = False) -> Tensor:
        if return_U or return_A:
            raise ValueError("BrownianPath carries no Lévy area; use torchsde.BrownianInterval for srk")
        if tb is None:
            return self.value(float(ta)).clone()  # the tree keeps its own values: hand out a copy
        w_a = self.value(float(ta))  # first: it is usually the last query, so it costs nothing
        return self.value(float(tb)) - w_a

    # --- the path ---

    def _normals(self, kind: int, *key: int) -> Tensor:
        """Standard normals `(B, D)` keyed by (seed, kind, key, block): each row by its global index."""
        b, d = self._shape
        r0, r1 = self.row_start, self.row_start + b
        gen = self._gen
        if r1 <= BLOCK_ROWS:  # one stream (the common case: a batch of up to BLOCK_ROWS from index 0)
            gen.manual_seed(_mix(self.seed, kind, *key, 0) if kind != _NODE else self._node_seed(*key))
            z = torch.randn(-(-(r1 * d) // 16) * 16, generator=gen, dtype=self._dtype, device=self._device)
            return z[r0 * d : r1 * d].view(b, d)
        return rows(
            lambda c, g: torch.randn(c, generator=g, dtype=self._dtype, device=self._device),
            lambda block: _mix(self.seed, kind, *key, block), r0, b, d, gen,
        )  # fmt: skip

    def _node_seed(self, level: int, k: int) -> int:
        """`_mix(seed, _NODE, level, k, 0)`, from the hash state after (seed, _NODE, level), kept per level."""
        return _absorb(self._node_prefix[level], k, 0) >> 1

    def _cell_ends(self, cell: int) -> tuple[Tensor, Tensor]:
        """W at the ends of `cell`, descending the tree from the deepest frontier level that holds it."""
        levels = self.levels
        depth = self._depth
        while depth > 0 and self._k[depth] != cell >> (levels - depth):
            depth -= 1
        for level in range(depth, levels):
            k = self._k[level]
            lo, hi = self._ends[level]
            if self._mid_k[level] == k:  # drawn on an earlier descent through this interval
                mid = self._mid[level]
            else:
                mid = torch.lerp(lo, hi, 0.5).add_(self._normals(_NODE, level, k), alpha=self._sd[level])
                self._mid_k[level], self._mid[level] = k, mid
            child = cell >> (levels - level - 1)
            self._k[level + 1] = child
            self._ends[level + 1] = (lo, mid) if child == 2 * k else (mid, hi)
        if depth < levels or self._depth < levels:
            self._cell_points = []
        self._depth = levels
        return self._ends[levels]

    def value(self, s: float) -> Tensor:
        """$W(s)$, `(B, D)`, for $0 \\le s \\le S$ (to within $10^{-9} S$).

        The tensor is the tree's own (do not modify it in place); `path(ta, tb)` returns new tensors.
        """
        s = float(s)
        if not -1e-9 * self.s_end <= s <= self.s_end * (1 + 1e-9):
            raise ValueError(f"s must be in [0, {self.s_end}], got {s}")
        if self._last is not None and self._last[0] == s:
            return self._last[1]
        # Positions are read to 2^-20 of a cell (~1e-9 S): the same point reached through another
        # grid's rounding (~1e-13 of a cell) gets the same key, and a cell edge is an edge.
        pos = min(max(s / self.h, 0.0), float(self.cells))
        edge = round(pos)
        if abs(pos - edge) < _QUANTUM:
            cell = min(edge, self.cells - 1)
            lo, hi = self._cell_ends(cell)
            w = hi if edge == cell + 1 else lo
        else:
            w = self._bridge(int(pos), pos)
        self._last = (s, w)
        return w

    def _bridge(self, cell: int, pos: float) -> Tensor:
        lo, hi = self._cell_ends(cell)
        a, b = float(cell), float(cell + 1)
        wa, wb = lo, hi
        for p, w in self._cell_points:  # the nearest points already drawn in this cell
            if p < pos and p > a:
                a, wa = p, w
            elif p > pos and p < b:
                b, wb = p, w
        frac = (pos - a) / (b - a)
        sd = math.sqrt(self.h * (pos - a) * (b - pos) / (b - a))
        key = int(round((pos - cell) / _QUANTUM))
        w = torch.lerp(wa, wb, frac).add_(self._normals(_BRIDGE, cell, key), alpha=sd)
        self._cell_points.append((pos, w))
        return w


class RowBrownian:
    r"""A `(B, D)` Brownian motion on $[0, S]$ that each row can query at its own time: a virtual tree.

    For solvers whose samples take their own steps (`adaptive_sde_per_sample`): `value(s, rows)`
    returns $W_i(s_i)$ for the listed rows, each at its own $s_i$. Like diffrax's
    `VirtualBrownianTree`, nothing is stored: $W_i(s)$ is recomputed by descending a binary Lévy
    tree over $[0, S]$ from the root, $W(S) = \sqrt S\,Z_{\text{root}}$, through `levels` midpoints
    $W(\tfrac{a+b}2) = \tfrac12(W(a) + W(b)) + \tfrac12\sqrt{b-a}\,Z_{\text{node}}$, then the bridge
    inside the final cell, $W(s) = W(a) + \frac{s-a}{b-a}(W(b) - W(a)) + \sqrt{(s-a)(b-s)/(b-a)}\,
    Z_{\text{cell}, s}$. Every $Z$ is a counter-based normal (`_keyed.hashed_normals`) keyed by
    (seed, global row, node, channel), so $W_i(s)$ is a function of the seed, the row's global
    index and $s$ alone: queries may come in any order, a rejected step's retry sees the same path,
    and a sample's path does not depend on its batch-mates, on any device.

    The law is exact for query points at least $S/2^{\text{levels}}$ apart ($10^{-6} S$ at the
    default 20 levels); two points strictly inside one cell get independent bridges. A query costs
    `levels + 2` normals per row and channel. The path differs from `BrownianPath`'s for the same
    seed (different draws).

    Args:
        shape: `(B, D)`: samples and noise channels.
        seed: The entropy of the path.
        s_end: The end of solver time, $S = T - \epsilon$.
        dtype: Floating dtype of the path.
        device: Device of the path.
        row_start: Global index of the first row.
        levels: Depth of the tree (at most 24).
    """

    _QBITS = 20  # a query's position inside a cell, in units of 2^-20 cells

    def __init__(
        self,
        shape: tuple[int, int],
        *,
        seed: int,
        s_end: float,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        row_start: int = 0,
        levels: int = 20,
    ) -> None:
        if len(shape) != 2:
            raise ValueError(f"shape must be (batch, channels), got {tuple(shape)}")
        if not s_end > 0:
            raise ValueError(f"s_end must be > 0, got {s_end}")
        if not 1 <= int(levels) <= 24:
            raise ValueError(f"levels must be in [1, 24], got {levels}")
        self.shape = tuple(int(n) for n in shape)
        self.s_end, self.levels, self.dtype = float(s_end), int(levels), dtype
        self.device = torch.device("cpu") if device is None else torch.device(device)
        b, d = self.shape
        base = mix(int(seed), ROW_PATH)
        idx = torch.arange(row_start, row_start + b, dtype=torch.int64, device=self.device)
        self._row_keys = hash64(idx ^ base)  # (B,)
        self._channel_keys = hash64(torch.arange(d, dtype=torch.int64, device=self.device) + (1 << 40))
        lv = torch.arange(self.levels, dtype=torch.int64, device=self.device)
        self._shifts = (self.levels - lv).view(-1, 1)  # node k at level l: cell >> (levels - l)
        self._tags = ((lv + 1) << 44).view(-1, 1)
        self._sd = (0.5 * torch.sqrt(self.s_end / 2.0 ** lv.double())).to(dtype).view(-1, 1, 1)

    def value(self, s: Tensor, rows: Tensor | None = None) -> Tensor:
        """$W_i(s_i)$, `(len(rows), D)`, for solver times `s` `(len(rows),)` in $[0, S]$.

        Args:
            s: Each row's solver time (float64 recommended).
            rows: Local row indices (default: all rows, in order).
        """
        levels, q = self.levels, self._QBITS
        row_keys = self._row_keys if rows is None else self._row_keys[rows]
        n, d = row_keys.shape[0], self.shape[1]
        pos = (s.to(torch.float64) / self.s_end).clamp(0.0, 1.0) * float(1 << (levels + q))
        qpos = torch.round(pos).to(torch.int64)
        cell = (qpos >> q).clamp(max=(1 << levels) - 1)
        frac_q = qpos - (cell << q)  # in [0, 2^q], 2^q only at s = S
        nodes = torch.cat(
            [
                torch.zeros(1, n, dtype=torch.int64, device=self.device),  # the root
                self._tags + (cell.unsqueeze(0) >> self._shifts),  # each level's interval
                ((63 << 44) + (cell << q) + frac_q).unsqueeze(0),  # the bridge point inside the cell
            ]
        )  # (levels + 2, n)
        keys = hash64(hash64(nodes) ^ row_keys)
        z = hashed_normals(hash64(keys.unsqueeze(-1) ^ self._channel_keys), self.dtype)  # (levels + 2, n, d)
        lo = torch.zeros(n, d, dtype=self.dtype, device=self.device)
        hi = z[0] * math.sqrt(self.s_end)
        mids = z[1 : levels + 1] * self._sd
        bits = ((cell.unsqueeze(0) >> (self._shifts - 1)) & 1).bool().unsqueeze(-1)  # (levels, n, 1)
        for level in range(levels):
            mid = (lo + hi).mul_(0.5).add_(mids[level])
            lo, hi = torch.where(bits[level], mid, lo), torch.where(bits[level], hi, mid)
        frac = (frac_q.to(torch.float64) / (1 << q)).unsqueeze(-1)
        sd = torch.sqrt(frac * (1 - frac) * (self.s_end / (1 << levels))).to(self.dtype)
        return torch.lerp(lo, hi, frac.to(self.dtype)).add_(z[-1] * sd)
