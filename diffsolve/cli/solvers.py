"""`diffsolve solvers`: every solver with its orders, adaptivity and NFE per step."""

from __future__ import annotations

import argparse

NAME = "solvers"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `diffsolve solvers` and its options."""
    return sub.add_parser(
        "solvers",
        help="list every solver name with its family, order, adaptivity and NFE per step",
        description="List every solver that `sample` and the other commands accept (built-in, registered "
        "or added by an installed package through the diffsolve.solvers entry points), with its stated "
        "orders (marked unverified where no test measures them) and its NFE per step.",
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
    print(
        "\norders marked (unverified) are stated, not yet measured by the test suite (docs/choosing-a-sampler.md)"
    )
    return 0
