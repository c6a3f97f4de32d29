"""The `diffsolve` command, one module per subcommand.

diffsolve compare      the main job: many samplers on one score; table, CSV/JSON/Markdown, plots
diffsolve sample       draw samples with any solver; NFE, seconds, quality; writes .npy
diffsolve likelihood   log-likelihoods by the probability-flow ODE; nats and bits/dim
diffsolve convergence  measured order of convergence of one solver; table and log-log plot
diffsolve train        train a score network and save a checkpoint
diffsolve inpaint      complete partly observed samples (DPS, PiGDM, replacement, RePaint); judged
diffsolve demo         sample ring2d with two solvers; NFE, seconds and distances to exact samples
diffsolve solvers      list every solver with its family, order, adaptivity and cost per step

Each module has `add_parser(sub)` and `run(args)`; the named problems live in `diffsolve.problems`.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence

from . import compare, convergence, demo, inpaint, likelihood, sample, solvers, train
from ._common import UsageError

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS = {m.NAME: m for m in (demo, train, compare, sample, inpaint, likelihood, convergence, solvers)}
"""Every subcommand's module by name, in `--help` order."""


def build_parser() -> argparse.ArgumentParser:
    """The `diffsolve` argument parser with every subcommand (the CLI reference is generated from it)."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="diffsolve",
        description="Score-based diffusion models as differential equations: sample, compare and check "
        "solvers against closed-form Gaussian-mixture marginals.",
    )
    parser.add_argument("--version", action="version", version=f"diffsolve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `diffsolve` console script.

    Every command runs under one error handler: a mistake in the input (an option, a file, a
    checkpoint, a directory in use) prints `diffsolve COMMAND: error: ...` and exits 2; a solve that
    fails (non-finite values, a step size that underflows) prints the same way and exits 1. Only a
    bug in diffsolve itself shows a traceback.

    Args:
        argv: The arguments after the program name; None reads `sys.argv`.

    Returns:
        The exit status: 0 on success, 1 when a solve failed, 2 on a usage error, 130 on Ctrl-C.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command not in COMMANDS:
        parser.print_help()
        return 0
    with _distributed(args):
        status, message = _run(args)
    if message:
        print(message, file=sys.stderr)
    return status


@contextlib.contextmanager
def _distributed(args: argparse.Namespace) -> Iterator[None]:
    """Under `torchrun` (WORLD_SIZE > 1): join the process group for the command, and print only on rank 0.

    gloo on the CPU, NCCL when `--device` is a CUDA device (each rank then takes `cuda:LOCAL_RANK`).
    The group's timeout is `DIFFSOLVE_DIST_TIMEOUT` seconds (default 600): a rank that dies makes
    the others fail after it instead of waiting forever.
    """
    import datetime
    import io
    import os

    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield
        return
    device = str(getattr(args, "device", "cpu") or "cpu")
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        import torch

        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        args.device = f"cuda:{local}"
    timeout = datetime.timedelta(seconds=float(os.environ.get("DIFFSOLVE_DIST_TIMEOUT", "600")))
    dist.init_process_group(backend, timeout=timeout)
    quiet = dist.get_rank() != 0
    try:
        with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
            yield
        # Tear down together: a gloo rank that destroys the group while its peer is still finishing a
        # collective was seen to abort ("terminate called without an active exception", once in CI).
        dist.barrier()
    finally:
        dist.destroy_process_group()


RANK_LOCAL_ARGS = ("device",)
"""Arguments that may differ between ranks (each rank takes its own `cuda:LOCAL_RANK`)."""


def _check_ranks_agree(args: argparse.Namespace) -> None:
    """Under a process group, every rank must run the same command: ranks launched with another
    `--seed`, `--solver` or `--steps` would write a mix of two runs. A usage error on every rank names
    the arguments that differ."""
    import json

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    mine = {k: v for k, v in vars(args).items() if k not in RANK_LOCAL_ARGS}
    text = json.dumps(mine, default=str, sort_keys=True)
    everyone: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, text)
    differ = sorted(
        {k for other in everyone for k, v in json.loads(other).items() if json.loads(text).get(k) != v}
    )
    if differ:
        values = "; ".join(
            f"--{k.replace('_', '-')}: "
            + ", ".join(f"rank {r} {json.loads(o).get(k)!r}" for r, o in enumerate(everyone))
            for k in differ
        )
        raise UsageError(
            args.command,
            f"the ranks were launched with different arguments ({values}); every rank must run the same command",
        )


def _run(args: argparse.Namespace) -> tuple[int, str | None]:
    """Run the command; map each kind of failure to its exit status and one-line message."""
    from ..checkpoint import CheckpointError
    from ..errors import NonFiniteError, StepSizeError
    from ..io import DirectoryInUseError

    prefix = f"diffsolve {args.command}: error:"
    try:
        _check_ranks_agree(args)
        return COMMANDS[args.command].run(args), None
    except UsageError as err:
        return 2, str(err)
    except (NonFiniteError, StepSizeError) as err:
        return 1, f"{prefix} the solve failed: {err}"
    except (ValueError, TypeError, CheckpointError, DirectoryInUseError) as err:
        return 2, f"{prefix} {err}"
    except ImportError as err:
        return 2, f"{prefix} {err} (install the optional dependency it names)"
    except OSError as err:  # a file or directory the user named: missing, unreadable, disk full
        return 2, f"{prefix} {err.strerror or err}: {err.filename!r}" if err.filename else f"{prefix} {err}"
    except KeyboardInterrupt:
        return 130, f"{prefix} interrupted"
