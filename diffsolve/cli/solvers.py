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
    from ..samplers import solvers

    print(f"{'name':<20} {'family':<10} {'order':<28} {'adaptive':>8}  {'NFE per step':<40} description")
    for s in solvers():
        print(
            f"{s.name:<20} {s.family:<10} {s.orders_text():<28} {'yes' if s.adaptive else 'no':>8}  "
            f"{s.nfe_text():<40} {s.description}"
        )
        extras = []
        if s.time_grid is not None:
            extras.append(f"time grid: {s.time_grid} (any kind or an explicit grid)")
        if s.options:
            extras.append("options: " + ", ".join(f"{k}={o.default!r}" for k, o in s.options.items()))
        if extras:
            print(f"{'':<20} {'; '.join(extras)}")
    print(
        "\norders marked (unverified) are stated, not yet measured by the test suite (docs/choosing-a-sampler.md)"
    )
    return 0
