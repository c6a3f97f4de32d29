"""mkdocs hooks: the CLI reference page is the `--help` text of every command, generated at build time.

`docs/cli.md` holds the marker `<!-- diffsolve-cli-help -->`; this hook replaces it with one section per
command, so the page can never drift from the parser the `diffsolve` executable uses.
"""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- diffsolve-cli-help -->"


def _help(parser: argparse.ArgumentParser) -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal width; fix it for a stable page
    return parser.format_help().rstrip()


def cli_reference() -> str:
    """Markdown for `diffsolve --help` and `diffsolve COMMAND --help`, every command."""
    from diffsolve.cli import _parser

    parser = _parser()
    parts = ["## `diffsolve`", "", "```text", _help(parser), "```", ""]
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        parts += [f"## `diffsolve {name}`", "", "```text", _help(command), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (mkdocs's signature)
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
