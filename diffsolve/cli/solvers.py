"""`diffsolve solvers`: every solver with its orders, adaptivity and NFE per step."""

from __future__ import annotations

import argparse

NAME = "solvers"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `diffsolve solvers` and its options."""
    return sub.add_parser(
        "solvers",
        help="list every solver name with its family, order, adaptivity, NFE per step, grid and options",
        description="List every solver that `sample` and the other commands accept (built-in, registered "
        "or added by an installed package through the diffsolve.solvers entry points), with its stated "
        "orders (marked unverified where no test measures them), its NFE per step, its default time grid "
        "and its own options (`diffsolve sample --option NAME=VALUE`) with their defaults.",
    )


def run(args: argparse.Namespace) -> int:
    """Run `diffsolve solvers`; returns the exit status."""
    import shutil
    import textwrap

    from ..samplers import solvers

    width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 100))
    indent = " " * 4

    def wrapped(text: str) -> str:
        return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent + "  ")

    print(f"{'name':<24} {'family':<7} {'order':<22} adaptive")
    for s in solvers():
        print(f"{s.name:<24} {s.family:<7} {s.orders_text():<22} {'yes' if s.adaptive else 'no'}")
        print(wrapped(s.description))
        details = [f"NFE per step: {s.nfe_text()}"]
        if s.time_grid is not None:
            details.append(f"time grid: {s.time_grid} (any kind or an explicit grid)")
        if s.options:
            details.append("options: " + ", ".join(f"{k}={o.default!r}" for k, o in s.options.items()))
        print(wrapped("; ".join(details)))
    print(
        "\n"
        + textwrap.fill(
            "orders marked (unverified) are stated, not yet measured by the test suite "
            "(docs/choosing-a-sampler.md)",
            width,
        )
    )
    return 0
