r"""The reverse-time SDE as an object `torchsde.sdeint` accepts as it is.

In forward time the reverse SDE runs from $T$ down to $\epsilon$:
$dx = [f(t)x - g(t)^2 s(x, t)]\,dt + g(t)\,d\bar W_t$. torchsde needs increasing times, so we integrate
in solver time $s = T - t \in [0, T - \epsilon]$, where

$$dx = \big[g(t)^2 s(x, t) - f(t)x\big]\,ds + g(t)\,dW_s, \qquad t = T - s.$$

The noise $g(t)\,dW$ does not depend on $x$ (additive noise), so the Itô and Stratonovich forms
coincide and torchsde may use its additive-noise schemes (SRA1 for `srk`: 2 drift stages per step).

This module holds every torchsde quirk in one place: the change of variable (`ReverseSDE`), the
Brownian path a seed names (`brownian_motion`, and `ReverseBrownian` for samplers that step in
forward time), and `sdeint`, the one wrapper that picks the Itô or Stratonovich declaration a
method needs and steps exactly `steps` times.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch
import torchsde
from torch import Tensor, nn

from .._keyed import SRK_CHUNK, mix, normal_rows, stream
from .._validation import check_positive, check_seed
from ..errors import FiniteGuard, NonFiniteError
from ..scores import CountedCalls, Score, ScoreCalls, check_problem
from ..sde import SDE
from .brownian import BrownianPath, RowBrownian
from .grid import uniform_grid

__all__ = [
    "ReverseSDE",
    "BROWNIAN_TOL",
    "STRATONOVICH_METHODS",
    "brownian_motion",
    "ZeroBrownian",
    "ReverseBrownian",
    "KeyedNoise",
    "sdeint",
]

STRATONOVICH_METHODS = frozenset({"reversible_heun", "heun", "midpoint", "euler_heun"})
"""torchsde methods offered only in Stratonovich form; with additive noise the two forms are one SDE,
so `sdeint` declares the same SDE as Stratonovich with diagonal noise for them."""

# Resolution of the Brownian tree: queries are rounded to 9 decimals, so paths are the same whatever
# the step size. Rounding shifts each query point by < 5e-10, which moves a solution by about
# |g'| sqrt(dt * tol) ~ 1e-5 at dt = 1e-3: below float32 resolution of x ~ 1.
BROWNIAN_TOL = 1e-9
"""Tolerance (`tol`) of every `torchsde.BrownianInterval` built here: queries agree to 1e-9 in time."""


class ReverseSDE(CountedCalls, nn.Module):
    """The reverse-time SDE of `sde` driven by `score`, ready for `torchsde.sdeint`.

    `f(s, y)` and `g(s, y)` take solver time $s = T - t$ and flat states `y` of shape `(B, D)`;
    `to_event` restores `(B, *event_shape)`. The score only ever sees $t \\in [\\epsilon, T]$.

    Args:
        score: A `Score`, `score(x, t)` with `t` of shape `(B,)`.
        sde: The forward SDE.
        eps: The final forward time; solver time runs over $[0, T - \\epsilon]$.
        event_shape: Shape of one sample; `None` means flat vectors `(D,)`.
        noise_type: `"additive"` (default; `g` is a `(B, D, D)` diagonal, only built on request) or
            `"diagonal"` (`g` is `(B, D)`). Both describe the same SDE.
        sde_type: `"ito"` or `"stratonovich"`: the same SDE, as the noise is additive.

    Attributes:
        nfe: Score evaluations so far (one call on a batch is one). Reset with `reset()`.
        callback: If set, called with the forward time `t` (0-d tensor) after each score evaluation.
        guard: The `FiniteGuard` that checks the state at every drift call. On the CPU it raises at
            once; on an accelerator it keeps the first failing time on the device: call
            `guard.raise_if_failed()` after `torchsde.sdeint` (`adapters.sdeint` does).
    """

    def __init__(
        self,
        score: Score,
        sde: SDE,
        eps: float = 1e-3,
        *,
        event_shape: tuple[int, ...] | None = None,
        noise_type: str = "additive",
        sde_type: str = "ito",
    ) -> None:
        super().__init__()
        check_problem(score, sde, eps)
        if noise_type not in ("additive", "diagonal"):
            raise ValueError(f"noise_type must be 'additive' or 'diagonal', got {noise_type!r}")
        if sde_type not in ("ito", "stratonovich"):
            raise ValueError(f"sde_type must be 'ito' or 'stratonovich', got {sde_type!r}")
        self.score = score
        self.sde = sde
        self.eps = float(eps)
        self.event_shape = None if event_shape is None else tuple(event_shape)
        self.noise_type = noise_type
        self.sde_type = sde_type
        self.calls = ScoreCalls(score)
        self.guard = FiniteGuard()
        self._cache: tuple[Tensor, int, Tensor, Tensor] | None = None

    @property
    def s_end(self) -> float:
        """The final solver time $T - \\epsilon$."""
        return self.sde.T - self.eps

    def reset(self) -> None:
        """Zero the NFE counter and drop the one-entry drift cache."""
        self.calls.reset()
        self._cache = None

    def forward_time(self, s: Tensor | float, like: Tensor) -> Tensor:
        """Forward time $t = T - s$ as a 0-d tensor of `like`'s dtype, clamped into $[\\epsilon, T]$."""
        s = torch.as_tensor(s, device=like.device)
        return (self.sde.T - s).to(like.dtype).clamp(self.eps, self.sde.T)

    def to_event(self, y: Tensor) -> Tensor:
        """Restore `(..., B, D)` to `(..., B, *event_shape)`."""
        return y if self.event_shape is None else y.reshape(*y.shape[:-1], *self.event_shape)

    def f(self, s: Tensor, y: Tensor) -> Tensor:
        """Drift in solver time: $g(t)^2 s(x, t) - f(t)x$ at $t = T - s$, flat `(B, D)`."""
        cache = self._cache
        # torchsde's additive SRK (SRA1) evaluates the drift twice at (t0, y0) in every step; the
        # second call is answered from this cache, so a step costs 2 score calls rather than 3.
        if cache is not None and y is cache[0] and y._version == cache[1] and torch.equal(s, cache[2]):
            return cache[3]
        t = self.forward_time(s, y)
        self.guard.check(y, t)
        x = self.to_event(y)
        tb = t.expand(y.shape[0])
        score = self.calls.evaluate(x, tb, t)
        out = (-self.sde.reverse_drift(x, tb, score)).reshape(y.shape)
        self._cache = (y, y._version, s.detach().clone() if isinstance(s, Tensor) else torch.tensor(s), out)
        return out

    def _g(self, s: Tensor, y: Tensor) -> Tensor:
        return self.sde.g2(self.forward_time(s, y)).sqrt()

    def g(self, s: Tensor, y: Tensor) -> Tensor:
        """Diffusion: `(B, D)` for diagonal noise; for additive noise the `(B, D, D)` matrix $g(t) I$.

        The additive form builds a `D x D` identity (expanded over the batch without copying); the
        solvers never ask for it: they use `g_prod`.
        """
        gt = self._g(s, y)
        if self.noise_type == "diagonal":
            return gt.expand_as(y)
        eye = torch.eye(y.shape[1], dtype=y.dtype, device=y.device)
        return (gt * eye).expand(y.shape[0], -1, -1)

    def g_prod(self, s: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """$g(t)\\,v$ for a noise increment `v` of shape `(B, D)`."""
        return self._g(s, y) * v

    def brownian_motion(
        self,
        y0: Tensor,
        seed: int,
        *,
        levy_area_approximation: str = "none",
        row_start: int = 0,
    ) -> BrownianPath | torchsde.BrownianInterval:
        """The Brownian path over solver time $[0, T - \\epsilon]$ that `sample(..., seed=seed)` uses.

        The same as `brownian_motion(y0, seed, s_end=self.s_end, ...)`; see there.

        Args:
            y0: The flat initial state `(B, D)`; gives the size, dtype and device.
            seed: The entropy of the path.
            levy_area_approximation: `"none"` or `"space-time"` (as in torchsde).
            row_start: Global index of the first sample (for a chunk or shard of a larger run).
        """
        return brownian_motion(
            y0, seed, s_end=self.s_end, levy_area_approximation=levy_area_approximation, row_start=row_start
        )


def brownian_motion(
    y0: Tensor, seed: int, *, s_end: float, levy_area_approximation: str = "none", row_start: int = 0
) -> BrownianPath | torchsde.BrownianInterval:
    """The Brownian path over solver time $[0, s_{end}]$ that a seed names.

    Without Lévy areas (every method but `srk`) it is a `BrownianPath` (adapters/brownian.py): the
    same path at every step count (to its resolution of $s_{end}/1024$), each sample's path a function
    of the seed and its global index, at about two normal draws per step.

    `srk` needs space-time Lévy areas, which only torchsde's `BrownianInterval` carries: with
    `"space-time"` the path is torchsde's (`halfway_tree=True`, `tol=BROWNIAN_TOL`, so it too is the
    same at every step count), another path than the default one for the same seed. One interval
    draws all rows together, so that path is not batch-invariant: a chunk or shard that starts at
    `row_start > 0` gets its own entropy, keyed by (seed, row_start), so that chunks never share noise.

    Args:
        y0: The flat initial state `(B, D)`; gives the size, dtype and device.
        seed: The entropy of the path.
        s_end: The end of solver time, $T - \\epsilon$.
        levy_area_approximation: `"none"` or `"space-time"` (as in torchsde).
        row_start: Global index of the first sample (for a chunk or shard of a larger run).
    """
    if y0.dim() != 2:
        raise ValueError(f"y0 must be flat (batch, D), got shape {tuple(y0.shape)}")
    seed = check_seed(seed)  # 1.5 is not seed 1, and -1 is not 2^64 - 1
    check_positive(row_start, "row_start", integer=True, allow_zero=True)
    if levy_area_approximation == "none":
        return BrownianPath(
            tuple(y0.shape), seed=seed, s_end=s_end, dtype=y0.dtype, device=y0.device, row_start=row_start
        )
    return torchsde.BrownianInterval(
        t0=0.0,
        t1=s_end,
        size=tuple(y0.shape),
        dtype=y0.dtype,
        device=y0.device,
        entropy=int(seed) if row_start == 0 else mix(int(seed), SRK_CHUNK, int(row_start)),
        levy_area_approximation=levy_area_approximation,
        halfway_tree=True,
        tol=BROWNIAN_TOL,
    )


class _OnGrid(torchsde.BaseBrownian):
    """`bm` queried at the grid points torchsde means: its `t + dt` stepping drifts off them by ~1e-12."""

    def __init__(self, bm: torchsde.BaseBrownian, grid: Tensor) -> None:
        self._bm, self._grid = bm, grid.tolist()
        self._tol = 1e-6 * (self._grid[-1] - self._grid[0]) / max(len(self._grid) - 1, 1)

    shape = property(lambda self: self._bm.shape)
    dtype = property(lambda self: self._bm.dtype)
    device = property(lambda self: self._bm.device)
    levy_area_approximation = property(lambda self: self._bm.levy_area_approximation)

    def _snap(self, t: float) -> float:
        i = bisect.bisect_left(self._grid, t)
        for j in (i - 1, i):
            if 0 <= j < len(self._grid) and abs(self._grid[j] - t) <= self._tol:
                return self._grid[j]
        return t

    def __call__(self, ta, tb=None, return_U: bool = False, return_A: bool = False):
        ta = self._snap(float(ta))
        tb = None if tb is None else self._snap(float(tb))
        return self._bm(ta, tb, return_U=return_U, return_A=return_A)

    def __repr__(self) -> str:
        return f"_OnGrid({self._bm!r})"


class ZeroBrownian(torchsde.BaseBrownian):
    """A path with no noise (increments and Lévy areas all zero): a method's own noise-free step.

    `sdeint(..., noise_removal=True)` takes its last step on it, so the solve ends with the mean of its last
    step, as Song et al.'s samplers do (their `x_mean`).

    Args:
        like: The path it stands in for (shape, dtype, device and Lévy area kind).
    """

    def __init__(self, like: torchsde.BaseBrownian) -> None:
        self._like = like

    shape = property(lambda self: self._like.shape)
    dtype = property(lambda self: self._like.dtype)
    device = property(lambda self: self._like.device)
    levy_area_approximation = property(lambda self: self._like.levy_area_approximation)

    def __call__(self, ta, tb=None, return_U: bool = False, return_A: bool = False):
        zero = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        extra = [zero] * (int(return_U) + int(return_A))
        return (zero, *extra) if extra else zero

    def __repr__(self) -> str:
        return f"ZeroBrownian({self._like!r})"


class ReverseBrownian:
    """The reverse SDE's Brownian path queried in forward time, for samplers that step from T down to eps.

    `increment(t, t_next)` is $W(T - t_{next}) - W(T - t)$ in solver time, shaped like the state:
    the same path `sample(..., seed=seed)` gives the `sde:` solvers, so a hand-written step (`pc`,
    `adaptive_sde`) sees the same noise.

    Args:
        x_T: The initial state `(B, *event)`; gives the size, dtype and device.
        sde: The forward SDE (its `T`).
        eps: The final forward time.
        seed: The entropy of the path.
        row_start: Global index of the first sample (for a chunk or shard of a larger run).
    """

    def __init__(self, x_T: Tensor, sde: SDE, eps: float, seed: int, row_start: int = 0) -> None:
        self.T = float(sde.T)
        self.shape = x_T.shape
        self.bm = brownian_motion(
            x_T.reshape(x_T.shape[0], -1), seed, s_end=self.T - float(eps), row_start=row_start
        )

    def increment(self, t: float, t_next: float) -> Tensor:
        """The increment over forward times `t > t_next`, i.e. solver times $T - t < T - t_{next}$."""
        return self.bm(self.T - t, self.T - t_next).reshape(self.shape)


@dataclass(frozen=True)
class KeyedNoise:
    """A solve's randomness, handed to runners by the `SolveRequest`: runners never read a seed.

    Every draw is keyed by the user's seed, a purpose and each sample's global row index (`row_start`
    is where this chunk or shard starts in the whole run), so that chunks and ranks never share
    noise and a sample's noise does not depend on the batch around it.

    Attributes:
        seed: The user's seed.
        row_start: The global index of the first row.
    """

    seed: int
    row_start: int = 0

    def path(self, x_T: Tensor, sde: SDE, eps: float) -> ReverseBrownian:
        """The reverse SDE's Brownian path at this request's rows, queried in forward time."""
        return ReverseBrownian(x_T, sde, eps, self.seed, self.row_start)

    def row_path(self, shape: tuple[int, int], s_end: float, dtype: torch.dtype, device) -> RowBrownian:
        """A per-sample Brownian path (`RowBrownian`) at this request's rows, in solver time [0, s_end]."""
        return RowBrownian(
            shape, seed=self.seed, s_end=s_end, dtype=dtype, device=device, row_start=self.row_start
        )

    def normals(self, purpose: str, *key: int, like: Tensor) -> Tensor:
        """Standard normals shaped like `like`, keyed by a named purpose (`_keyed.PURPOSES`), `key`
        (a step, a corrector iteration) and each row's global index."""
        rows = like.shape[0]
        z = normal_rows((*stream(self.seed, purpose), *key), self.row_start, rows, like[0].numel(),
                        dtype=like.dtype, device=like.device)  # fmt: skip
        return z.view(like.shape)


def sdeint(
    rsde: ReverseSDE,
    x_T: Tensor,
    *,
    method: str,
    steps: int,
    seed: int | KeyedNoise,
    return_trajectory: bool = False,
    solver: str | None = None,
    noise_removal: bool = False,
    row_start: int = 0,
) -> tuple[Tensor, Tensor]:
    """Integrate `rsde` from T down to eps in `steps` equal steps with torchsde, on the path `seed` names.

    Stratonovich-only methods (`STRATONOVICH_METHODS`) get the same SDE declared with diagonal noise
    in Stratonovich form; `srk` gets the path with space-time Lévy areas it needs.

    Args:
        rsde: The reverse SDE (its `noise_type`/`sde_type` are set here to what `method` needs).
        x_T: The initial state `(B, *event)`.
        method: A torchsde method name (`"euler"`, `"srk"`, `"milstein"`, `"heun"`, ...).
        steps: Number of equal steps in solver time.
        seed: The entropy of the Brownian path (`brownian_motion`), or a request's `KeyedNoise` (which
            carries its own `row_start`).
        return_trajectory: Return the state at every step, not only the first and last.
        solver: The name errors report (default `"sde:<method>"`).
        noise_removal: Take the last step without noise (`ZeroBrownian`): the method's own noise-free step,
            at the same cost. The other steps see the same path as without it.
        row_start: Global index of the first sample (for a chunk or shard of a larger run).

    Returns:
        `(states, times)`: states `(len(times), B, *event)` at forward times `times` (T first).

    Raises:
        NonFiniteError: If the state becomes NaN/Inf; names the step's t and the solver.
    """
    strat = method in STRATONOVICH_METHODS
    rsde.noise_type = "diagonal" if strat else "additive"
    rsde.sde_type = "stratonovich" if strat else "ito"
    rsde.event_shape = tuple(x_T.shape[1:])
    y0 = x_T.reshape(x_T.shape[0], -1)
    noise = seed if isinstance(seed, KeyedNoise) else KeyedNoise(seed, row_start)
    bm = rsde.brownian_motion(
        y0,
        noise.seed,
        levy_area_approximation="space-time" if method == "srk" else "none",
        row_start=noise.row_start,
    )
    s_grid = uniform_grid(0.0, rsde.s_end, steps, device=x_T.device)
    if isinstance(bm, BrownianPath):
        bm = _OnGrid(bm, s_grid)
    # torchsde advances by repeated `t + dt`; a step a hair longer than the grid spacing keeps
    # rounding from adding a spurious last step of size ~1e-16 (it then clamps at the final time).
    dt = rsde.s_end / steps * (1 + 1e-12)
    noisy = s_grid[:-1] if noise_removal else s_grid
    try:
        if len(noisy) > 1:
            ys = torchsde.sdeint(
                rsde, y0, noisy if return_trajectory else noisy[[0, -1]], bm=bm, method=method, dt=dt
            )
        else:
            ys = y0[None]
        if noise_removal:
            last = torchsde.sdeint(rsde, ys[-1], s_grid[-2:], bm=ZeroBrownian(bm), method=method, dt=dt)
            ys = torch.cat([ys if return_trajectory else ys[:1], last[1:]])
        rsde.guard.check(ys[-1], rsde.eps)
        rsde.guard.raise_if_failed()
    except NonFiniteError as err:
        raise err.with_solver(solver or f"sde:{method}") from None
    ts = s_grid if return_trajectory else s_grid[[0, -1]]
    return rsde.to_event(ys), rsde.sde.T - ts
