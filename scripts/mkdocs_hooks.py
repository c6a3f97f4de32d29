"""mkdocs hooks: pages generated from the code at build time, so they can never drift from it.

- `<!-- diffsolve-cli-help -->` (docs/cli.md) becomes the `--help` text of every command, from the
  parser the `diffsolve` executable uses;
- `<!-- diffsolve-solver-table -->` becomes the table of every solver in the registry.
"""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- diffsolve-cli-help -->"
SOLVER_MARKER = "<!-- diffsolve-solver-table -->"


def _help(parser: argparse.ArgumentParser) -> str:
    # argparse wraps to the terminal's width (read from COLUMNS); fix it so the page is the same anywhere.
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        return parser.format_help().rstrip()
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved


def cli_reference() -> str:
    """Markdown for `diffsolve --help` and `diffsolve COMMAND --help`, every command."""
    from diffsolve.cli import build_parser as _parser

    parser = _parser()
    parts = ["## `diffsolve`", "", "```text", _help(parser), "```", ""]
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        parts += [f"## `diffsolve {name}`", "", "```text", _help(command), "```", ""]
    return "\n".join(parts)


def solver_table() -> str:
    """Markdown table of `diffsolve.solvers()`: name, family, order, adaptivity, noise, cost, notes."""
    from diffsolve import solvers

    rows = [
        "| solver | family | order | adaptive | stochastic | NFE per step | notes |",
        "| --- | --- | ---: | :---: | :---: | --- | --- |",
    ]
    for s in solvers():
        rows.append(
            f"| `{s.name}` | {s.family} | {s.orders_text()} | {'yes' if s.adaptive else ''} "
            f"| {'yes' if s.stochastic else ''} | {s.nfe_text()} | {s.description} |"
        )
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files) -> str:  # mkdocs's hook signature
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, cli_reference())
    if SOLVER_MARKER in markdown:
        markdown = markdown.replace(SOLVER_MARKER, solver_table())
    return markdown
