"""torch.distributed: shard work by global index across ranks, solve independently, gather once.

When a default process group is initialised (for example under
`torchrun --nproc-per-node K -m diffsolve ...`, or by your own `torch.distributed.init_process_group`),
`sample`, `log_likelihood` and `compare` give rank r the contiguous rows
`[r * n // K, (r + 1) * n // K)` of the whole run. Every random number is keyed by the seed and the
global row index (`diffsolve._keyed`), so each rank solves its shard exactly as a single process
would solve those rows, with no collective inside the solve: ranks that take different numbers of
adaptive steps never wait for each other. The only collective is the gather at the end, which
returns the whole result on every rank (`gather="all"`) or on rank 0 only (`gather="rank0"`; the
other ranks get their own shard). A rank that dies makes the others' gather fail after the process
group's timeout (set it with `init_process_group(timeout=...)`); it never hangs forever.

Nothing here is home-made: the process group, its backends (gloo on CPU, NCCL on GPU) and
`DistributedDataParallel` for training are PyTorch's own.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "world",
    "shard",
    "local_chunks",
    "gather_rows",
    "gather_numbers",
    "is_main",
    "check_gather",
    "GATHER",
]

GATHER = ("all", "rank0")
"""Where a distributed call's result is gathered: every rank, or rank 0 only."""


def world() -> tuple[int, int]:
    """`(rank, world_size)` of the default process group, or `(0, 1)` when none is initialised."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0, and in a process that is not part of a process group (where files are written)."""
    return world()[0] == 0


def shard(total: int, rank: int, size: int) -> tuple[int, int]:
    """The global rows `[start, stop)` rank `rank` of `size` solves: contiguous, balanced to one row.

    Args:
        total: Rows of the whole run.
        rank: This rank.
        size: Ranks in all.
    """
    return total * rank // size, total * (rank + 1) // size


def local_chunks(total: int, batch_size: int | None, what: str) -> tuple[list[tuple[int, int]], int]:
    """This rank's share of `total` rows cut into chunks of at most `batch_size`, and the number of ranks.

    The shard / chunk plan that `sample` and `log_likelihood` share: global row indices
    `[(start, stop), ...]` (all of them, in one chunk, for one process with no `batch_size`), so that
    every keyed draw reads the sample's global index.

    Args:
        total: Rows of the whole run.
        batch_size: The most rows per chunk (None: the whole shard at once).
        what: What the rows are, for the error when there are fewer rows than ranks.
    """
    rank, ranks = world()
    if total < ranks:
        raise ValueError(f"{what} is smaller than the number of ranks ({ranks}): every rank needs a row")
    lo, hi = shard(total, rank, ranks)
    size = hi - lo if batch_size is None else min(batch_size, hi - lo)
    return [(r, min(r + size, hi)) for r in range(lo, hi, size)], ranks


def check_gather(gather: object) -> str:
    """`gather` if it is one of `GATHER`, else a ValueError naming it.

    Args:
        gather: The value given.
    """
    if gather not in GATHER:
        raise ValueError(f"gather must be one of {', '.join(map(repr, GATHER))}, got {gather!r}")
    return gather


def gather_rows(local: Tensor, total: int, gather: str = "all") -> Tensor:
    """Concatenate every rank's shard `(rows, *rest)` in rank order: the `(total, *rest)` tensor.

    The shards may differ in size by one row; each is padded to the largest for torch's
    `all_gather` / `gather` and trimmed back. With `gather="rank0"` the other ranks get their own
    shard back.

    Args:
        local: This rank's rows.
        total: Rows in all.
        gather: `"all"` or `"rank0"`.
    """
    rank, size = world()
    if size == 1:
        return local
    dist = torch.distributed
    sizes = [shard(total, r, size) for r in range(size)]
    longest = max(b - a for a, b in sizes)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    if gather == "all":
        parts = [torch.empty_like(padded) for _ in range(size)]
        dist.all_gather(parts, padded.contiguous())
    else:
        parts = [torch.empty_like(padded) for _ in range(size)] if rank == 0 else None
        dist.gather(padded.contiguous(), parts, dst=0)
        if rank != 0:
            return local
    return torch.cat([p[: b - a] for p, (a, b) in zip(parts, sizes, strict=True)])


def gather_numbers(values: list[float], device: torch.device | str = "cpu") -> list[list[float]]:
    """Every rank's list of numbers (NFE counts, timings; the same length on every rank), on every rank.

    Args:
        values: This rank's numbers.
        device: Where the collective runs (a CUDA device for NCCL).
    """
    rank, size = world()
    if size == 1:
        return [list(values)]
    local = torch.tensor(values, dtype=torch.float64, device=device)
    parts = [torch.empty_like(local) for _ in range(size)]
    torch.distributed.all_gather(parts, local)
    return [p.tolist() for p in parts]
