"""What the commands share: argument types, the help formatter, usage errors, list parsing, the
problem options, and file writes."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..checkpoint import CheckpointError
from ..datasets import MIXTURES
from ..problems import SDES, Problem

__all__ = [
    "HelpFormatter", "UsageError", "positive_int", "positive_float", "parse_list", "parse_budgets",
    "add_problem_args", "problem_from_args", "write_file",
]  # fmt: skip


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_batch_size(p: argparse.ArgumentParser) -> None:
    """The `--batch-size` option of the commands that stream their work in chunks."""
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="solve in chunks of at most this many (bounded memory; fixed-step results are unchanged)",
    )


def seed_int(text: str) -> int:
    """An argparse type: a seed, an integer in [0, 2^63)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a non-negative integer below 2^63, got {text!r}"
        ) from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer below 2^63, got {text!r}")
    return value


def positive_time(text: str) -> float:
    """An argparse type: a time > 0. Its upper bound is the SDE's own horizon T (1 for VP, 0.999 for
    the rectified path, 80 for EDM's), checked by the library once the SDE is known, naming `eps`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a time > 0, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a time > 0, got {text!r}")
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show an option's default in its help, except for flags, None and an empty repeatable option
    ("not given": the help says what then)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, []) or isinstance(action, argparse._StoreTrueAction):
            return action.help
        return super()._get_help_string(action)


class UsageError(Exception):
    """A command-line mistake: printed as `diffsolve COMMAND: error: ...`, exit status 2."""

    def __init__(self, command: str, message: str) -> None:
        super().__init__(f"diffsolve {command}: error: {message}")


def parse_options(items: list[str], command: str) -> dict[str, object]:
    """`NAME=VALUE` strings as solver options: true/false, integers and numbers are converted."""
    out: dict[str, object] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(command, f"--option must be NAME=VALUE, got {item!r}")
        value: object = text.strip()
        low = text.strip().lower()
        if low in ("true", "false"):
            value = low == "true"
        else:
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except ValueError:
                    continue
        out[name.strip()] = value
    return out


def parse_list(text: str, what: str, command: str) -> list[str]:
    """Comma-separated items, stripped; an empty list is a usage error."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UsageError(command, f"{what} is empty")
    return items


def parse_budgets(text: str, solvers: list[str], command: str) -> dict[str, list[float]]:
    """`--budgets`: integers are steps (fixed-step solvers), numbers in (0, 1) tolerances (adaptive ones)."""
    from ..samplers import get_solver

    steps, tols = [], []
    for item in parse_list(text, "--budgets", command):
        try:
            value = float(item)
        except ValueError:
            raise UsageError(command, f"--budgets: {item!r} is not a number") from None
        if value.is_integer() and value >= 1 and "e" not in item.lower() and "." not in item:
            steps.append(int(value))
        elif 0 < value < 1:
            tols.append(value)
        else:
            raise UsageError(
                command,
                f"--budgets: {item!r} is neither a step count (integer >= 1) nor a tolerance in (0, 1)",
            )
    out = {}
    for s in solvers:
        chosen = tols if get_solver(s).adaptive else steps
        if not chosen:
            kind = "tolerances (e.g. 1e-3)" if get_solver(s).adaptive else "step counts (integers)"
            raise UsageError(command, f"no budget in --budgets fits {s}: it takes {kind}")
        out[s] = chosen
    return out


def add_problem_args(p: argparse.ArgumentParser) -> None:
    """The options that choose a `Problem`: --problem/--sde (analytic) or --model (a checkpoint), --device."""
    p.add_argument(
        "--problem",
        default=None,
        help=f"analytic problem with its exact score: one of {', '.join(MIXTURES)} (default ring2d)",
    )
    p.add_argument(
        "--sde",
        "--path",
        choices=list(SDES),
        default=None,
        help="forward SDE (or flow-matching path: rectified) of an analytic problem (default vp)",
    )
    p.add_argument(
        "--model", default=None, help="a checkpoint directory from `diffsolve train` (replaces --problem)"
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")


def available_devices() -> list[str]:
    """The torch devices this machine has: cpu, and cuda:0.. / mps where present."""
    import torch

    names = ["cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def check_device(text: str, command: str) -> str:
    """`--device` as torch names it, if this machine has it; otherwise a usage error listing what it has."""
    import torch

    have = available_devices()
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise UsageError(
            command, f"--device {text!r} is not a torch device; this machine has {', '.join(have)}"
        ) from None
    index = 0 if dev.index is None else dev.index
    if dev.type == "cpu" or (dev.type == "mps" and "mps" in have) or f"{dev.type}:{index}" in have:
        return text
    raise UsageError(command, f"--device {text!r} is not on this machine; it has {', '.join(have)}")


def problem_from_args(args: argparse.Namespace, command: str) -> Problem:
    """The `Problem` the options name; a contradiction, an unknown name or a missing device is a usage
    error, and so is an `--eps` outside (0, T) of the problem's SDE."""
    prob = _problem(args, command)
    eps = getattr(args, "eps", None)
    if eps is not None and not eps < prob.sde.T:
        raise UsageError(
            command, f"--eps must lie in (0, T) = (0, {prob.sde.T:g}) for {prob.sde!r}, got {eps:g}"
        )
    return prob


def _problem(args: argparse.Namespace, command: str) -> Problem:
    args.device = check_device(args.device, command)
    try:
        if args.model is not None:
            if args.problem is not None or args.sde is not None:
                raise UsageError(command, "--model carries its own data and SDE: drop --problem and --sde")
            try:
                return Problem.from_checkpoint(args.model, device=args.device)
            except CheckpointError as err:
                raise UsageError(command, f"--model {args.model!r}: {err}") from None
        name = args.problem or "ring2d"
        if name not in MIXTURES:
            raise UsageError(command, f"--problem must be one of {', '.join(MIXTURES)}; got {name!r}")
        return Problem.mixture(name, args.sde or "vp", device=args.device)
    except ValueError as err:
        raise UsageError(command, str(err)) from None


def output_dir(text: str, command: str, option: str = "--out", *, named: str | None = None) -> Path:
    """The directory `text` names, created if needed; a usage error if a file stands in its way.

    `named` is what the user gave when `text` is its parent (for `output_file`)."""
    path, given = Path(text), named or text
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                where = f": {str(part)!r} is a file" if str(part) != given else " is a file"
                raise UsageError(command, f"{option} {given!r}{where}, not a directory")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(
            command, f"{option} {given!r}: cannot create {str(path)!r} ({err.strerror})"
        ) from None
    return path


def output_file(text: str, command: str, option: str = "--out") -> Path:
    """The file `text` names, its directory created; a usage error if it is a directory or under a file."""
    path = Path(text)
    if path.is_dir():
        raise UsageError(command, f"{option} {text!r} is a directory; name a file")
    output_dir(str(path.parent), command, option, named=text)
    return path


def write_file(path: Path, data: bytes) -> None:
    """Write `data` atomically, creating the parent directory."""
    from ..io import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
