"""The documentation's runnable examples run, and say what they claim.

A fenced ```python block directly after a line `<!-- runnable -->` (in docs/**/*.md or README.md) is
an example this test executes: all runnable blocks of one page in order, in one fresh interpreter, in a
temporary directory (so files they write go nowhere). Examples assert their own claims (an error
bound, a count), so a page whose numbers drift fails here. Other blocks (shell commands, fragments)
are not run; the shell quick start is what `.ci/run` runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- runnable -->"
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def runnable_blocks(text: str) -> list[str]:
    """The code of every ```python block that directly follows the marker line."""
    blocks = []
    for part in text.split(MARKER)[1:]:
        match = FENCE.match(part.lstrip("\n"))
        if match is None:
            raise ValueError(f"{MARKER} not followed by a ```python block: {part[:80]!r}")
        blocks.append(match.group(1))
    return blocks


PAGES = sorted(p for p in [*(ROOT / "docs").rglob("*.md"), ROOT / "README.md"] if MARKER in p.read_text())


def test_marker_parsing():
    text = f"intro\n{MARKER}\n```python\nx = 1\n```\n\n```python\nnot_run()\n```\n{MARKER}\n```python\ny = 2\n```\n"
    assert runnable_blocks(text) == ["x = 1\n", "y = 2\n"]
    with pytest.raises(ValueError, match="not followed"):
        runnable_blocks(f"{MARKER}\n```bash\nls\n```\n")


def test_the_guides_have_runnable_examples():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    for page in [
        "docs/index.md",
        "docs/how-to/torchsde-torchdiffeq.md",
        "docs/how-to/likelihood.md",
        "docs/how-to/compare.md",
        "docs/how-to/convergence.md",
        "docs/how-to/train.md",
        "docs/how-to/custom-solver.md",
        "README.md",
    ]:
        assert page in names, f"{page} has no {MARKER} example"


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_examples_run(page, tmp_path):
    code = "\n".join(runnable_blocks(page.read_text()))
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{page.name} examples failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def test_the_site_renders_its_maths_offline():
    """KaTeX is vendored: no script or stylesheet from a network, and every woff2 font the CSS names is shipped."""
    root = Path(__file__).resolve().parents[1]
    config = (root / "mkdocs.yml").read_text()
    assets = re.findall(r"^\s+- (\S+\.(?:js|css))\s*$", config, re.M)
    assert "javascripts/katex/katex.js" in assets and "javascripts/katex/katex.min.css" in assets
    assert not [a for a in assets if "://" in a], assets
    for asset in assets:
        assert (root / "docs" / asset).is_file(), asset
    katex = root / "docs" / "javascripts" / "katex"
    fonts = set(re.findall(r"url\((fonts/[^)]+\.woff2)\)", (katex / "katex.min.css").read_text()))
    assert len(fonts) >= 20 and all((katex / f).is_file() for f in fonts)
