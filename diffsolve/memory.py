"""A memory budget: every entry point estimates what it will allocate and refuses, before allocating,
a call that would not fit.

The estimate counts diffsolve's own tensors: the state and the solver's working copies, a stored
trajectory, Hutchinson probes, the basis vectors of an exact trace, the training batch. It does not
see inside a score network, so it is a lower bound for learned scores; its purpose is to turn
`n=10**9` into a one-line error instead of a 200 GiB allocation.

The limit is, in this order: what `set_memory_limit` set; the environment variable
`DIFFSOLVE_MEMORY_LIMIT` (bytes, or with a unit: `"8GiB"`, `"500MB"`; `"none"` for no limit); or
`DEFAULT_FRACTION` of the memory available on the device when the call starts (`MemAvailable` on
Linux for the CPU, `torch.cuda.mem_get_info` for a GPU). Where the available memory cannot be read,
there is no default limit.
"""

from __future__ import annotations

import math
import numbers
import os
import re

import torch

__all__ = [
    "DEFAULT_FRACTION",
    "MemoryBudgetError",
    "memory_limit",
    "set_memory_limit",
    "check_memory",
    "check_chunked",
    "format_bytes",
    "GraphBudget",
]

DEFAULT_FRACTION = 0.5
"""The default limit as a fraction of the memory available on the device."""
ENV = "DIFFSOLVE_MEMORY_LIMIT"
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip
_limit: float | None = None
_set = False


class MemoryBudgetError(ValueError):
    """A call would allocate more than the memory limit (`diffsolve.memory.memory_limit`)."""


def format_bytes(nbytes: float) -> str:
    """`nbytes` in the largest binary unit that keeps it at least 1 (e.g. `"238.4 GiB"`).

    Args:
        nbytes: A number of bytes.
    """
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{int(nbytes)} B"


def _parse(text: str) -> float | None:
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if text.strip().lower() == "none":
        return None
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(
            f"{ENV} must be a number of bytes with an optional unit (e.g. 8GiB, 500MB) or 'none', got {text!r}"
        )
    return float(match.group(1)) * _UNITS[match.group(2).lower()]


def _available(device: torch.device) -> float | None:
    """Bytes available on `device` now, or None where that cannot be read."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def set_memory_limit(nbytes: float | str | None) -> None:
    """Set the memory limit for this process, or with None go back to the default.

    Args:
        nbytes: Bytes (a number, or a string with a unit like `"8GiB"`); `math.inf` for no limit;
            None restores the default (`DIFFSOLVE_MEMORY_LIMIT`, else a fraction of what is available).
    """
    global _limit, _set
    if nbytes is None:
        _limit, _set = None, False
        return
    value = _parse(nbytes) if isinstance(nbytes, str) else nbytes
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0
    ):
        raise ValueError(
            f"nbytes must be a positive number of bytes, a string like '8GiB', or None; got {nbytes!r}"
        )
    _limit, _set = (math.inf if value is None else float(value)), True


ALWAYS_FITS = 16 * 2**20
"""Estimates up to this many bytes are not checked against the default limit (reading the available
memory costs more than such a call's work; a machine with under 32 MiB free fails anyway). A limit set
by `set_memory_limit` or `DIFFSOLVE_MEMORY_LIMIT` is always checked."""


def _default_and_small(nbytes: float) -> bool:
    return nbytes <= ALWAYS_FITS and not _set and ENV not in os.environ


def memory_limit(device: torch.device | str = "cpu") -> tuple[float, str]:
    """The limit that applies to a call on `device` now, and where it comes from.

    Args:
        device: The device the call allocates on.

    Returns:
        `(bytes, source)`: `math.inf` when there is no limit; `source` says which rule set it.
    """
    if _set:
        return _limit, "set by diffsolve.set_memory_limit"
    env = os.environ.get(ENV)
    if env is not None:
        value = _parse(env)
        return (math.inf if value is None else value), f"{ENV}={env}"
    device = torch.device(device)
    available = _available(device)
    if available is None:
        return math.inf, "no limit: the available memory cannot be read"
    return DEFAULT_FRACTION * available, (
        f"{DEFAULT_FRACTION:g} of the {format_bytes(available)} available on {device.type}"
    )


def check_memory(
    what: str, nbytes: float, *, device: torch.device | str = "cpu", per_item: float | None = None,
    items: str = "points", detail: str = "", hint: str | None = None,
) -> None:  # fmt: skip
    """Refuse a call whose estimate `nbytes` is above the limit, before it allocates.

    Args:
        what: The call, as the user wrote it (e.g. `"sample(n=1000000000)"`).
        nbytes: The estimate.
        device: Where it would allocate.
        per_item: Bytes per point (sample, row, batch element): the message then says how many fit.
        items: What `per_item` counts.
        detail: What the estimate counts, for the message.
        hint: What to do instead (replaces the "at most ... fit" sentence), e.g. `"pass batch_size=..."`.

    Raises:
        MemoryBudgetError: If `nbytes` is above `memory_limit(device)`.
    """
    if _default_and_small(nbytes):
        return
    limit, source = memory_limit(device)
    if nbytes <= limit:
        return
    fit = "" if hint is None else f"; {hint}"
    if per_item and hint is None:
        fit = f"; at most {max(int(limit // per_item), 0):,} {items} fit: split the work into calls of that size"
    raise MemoryBudgetError(
        f"{what} needs about {format_bytes(nbytes)}{f' ({detail})' if detail else ''}, above the memory limit of "
        f"{format_bytes(limit)} ({source}){fit}, or raise the limit with diffsolve.set_memory_limit or {ENV}"
    )


def working_copies(adaptive: bool, stochastic: bool) -> int:
    """Copies of the state a solver holds at once (stages, error estimate, Brownian cache), rounded up.

    Args:
        adaptive: An error-controlled solver (Dormand–Prince: seven stages, the error, the candidate).
        stochastic: A stochastic solver (increments, the Brownian tree's cached levels).
    """
    return 24 if stochastic else 16 if adaptive else 8


def check_solve(
    what: str, n: int, event_numel: int, dtype: torch.dtype, device: torch.device | str, *, adaptive: bool,
    stochastic: bool, stored_states: int = 0, extra_per_point: float = 0.0,
) -> None:  # fmt: skip
    """`check_memory` for a solve of `n` points of `event_numel` values each.

    Args:
        what: The call, for the message.
        n: Points.
        event_numel: Values per point.
        dtype: The state's dtype.
        device: Where it runs.
        adaptive: See `working_copies`.
        stochastic: See `working_copies`.
        stored_states: Further whole states kept (a trajectory's times, results to compare).
        extra_per_point: Further bytes per point (probes, an exact trace's basis vectors).
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    copies = working_copies(adaptive, stochastic) + stored_states
    per_point = copies * event_numel * itemsize + extra_per_point
    detail = f"{n:,} points x {event_numel:,} values x {itemsize} bytes x {copies} states"
    if extra_per_point:
        detail += f" + {format_bytes(extra_per_point)} per point"
    check_memory(what, n * per_point, device=device, per_item=per_point, detail=detail)


def check_chunked(
    what: str, n: int, batch_size: int | None, working: float, kept: float, *,
    device: torch.device | str = "cpu", detail: str = "", too_many: str = "ask for fewer points",
) -> None:  # fmt: skip
    """`check_memory` for work streamed in chunks: working bytes per point of a chunk, kept bytes per
    point of all `n`; the message names the largest `batch_size` that fits.

    Args:
        what: The call, for the message.
        n: Points in all.
        batch_size: Points per chunk (None: all at once).
        working: Bytes per point while its chunk is solved.
        kept: Bytes per point kept for the whole run (results).
        device: Where it would allocate.
        detail: What the estimate counts, for the message.
        too_many: What to do when even the kept results do not fit.
    """
    work = n if batch_size is None else min(n, batch_size)
    if _default_and_small(work * working + n * kept):
        return
    limit = memory_limit(device)[0]
    if work * working + n * kept <= limit:
        return
    fit = int((limit - n * kept) // working) if math.isfinite(limit) and working > 0 else 0
    hint = f"pass batch_size={fit:,} or less" if fit > 0 else f"the results alone do not fit: {too_many}"
    check_memory(what, work * working + n * kept, device=device, detail=detail, hint=hint)


class GraphBudget:
    """Enforce the memory limit on the autograd graph a block builds, while it builds it.

    A solve differentiated through (`log_likelihood` on inputs that require grad, without the
    adjoint) keeps every stage of every step for the backward pass: its memory grows with the steps
    an adaptive solver chooses, which no estimate made before the solve can know. Inside the block,
    a saved-tensors hook sees every tensor autograd keeps for backward (no copy is made) and stops
    the block with `MemoryBudgetError` as soon as the graph passes the limit. The graph's size is
    the larger of two measures: the bytes of the saved tensors' storages, each counted once, and the
    device's own growth since the block began (`torch.cuda.memory_allocated`, or the process's
    resident size on Linux), read every `PROBE_EVERY` new storages, which adds what the first cannot
    see (autograd's nodes, the allocator's rounding: twice the saved bytes for a mixture's score of
    many small tensors, a few percent for a network's).

    Args:
        what: The call, for the message.
        device: Where the graph lives.
        hint: What to do instead, for the message.
    """

    PROBE_EVERY = 64

    def __init__(self, what: str, device: torch.device | str, hint: str) -> None:
        self.what, self.hint = what, hint
        self.device = torch.device(device)
        self.limit, self.source = memory_limit(self.device)
        self.nbytes = 0
        self._seen: set[int] = set()
        self._start = 0.0
        self._hooks: torch.autograd.graph.saved_tensors_hooks | None = None

    def __enter__(self) -> GraphBudget:
        if math.isfinite(self.limit):
            self._start = _in_use(self.device) or 0.0
            self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)
            self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._hooks is not None:
            self._hooks.__exit__(*exc)
            self._hooks = None

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in self._seen:
            return t
        self._seen.add(key)
        self.nbytes += storage.nbytes()
        size = self.nbytes
        if len(self._seen) % self.PROBE_EVERY == 0:
            now = _in_use(self.device)
            size = max(size, 0.0 if now is None else now - self._start)
        if size > self.limit:
            raise MemoryBudgetError(
                f"{self.what}: the autograd graph kept for the backward pass reached {format_bytes(size)}, "
                f"above the memory limit of {format_bytes(self.limit)} ({self.source}); {self.hint}, "
                f"or raise the limit with diffsolve.set_memory_limit or {ENV}"
            )
        return t


def _unpack(t: torch.Tensor) -> torch.Tensor:
    return t


def _in_use(device: torch.device) -> float | None:
    """Bytes in use on `device` now: the CUDA allocator's count, or this process's resident size
    (Linux's /proc/self/statm); None where neither can be read."""
    if device.type == "cuda":
        return float(torch.cuda.memory_allocated(device))
    try:
        with open("/proc/self/statm") as f:
            return float(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
