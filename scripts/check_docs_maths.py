"""Render every formula of the built docs site with the vendored KaTeX, offline, and report failures.

    mkdocs build --strict -d site && python scripts/check_docs_maths.py site

pymdownx.arithmatex leaves each formula in a `<span class="arithmatex">\\(...\\)</span>` (inline) or
`<div class="arithmatex">\\[...\\]</div>` (display) that the browser renders with KaTeX on page load.
This script runs the same `katex.js` the site ships (docs/javascripts/katex/) under Node, with
`throwOnError`, on every such formula, so a formula KaTeX cannot parse fails here instead of showing
raw TeX to a reader. It needs `node`; without it it says so and exits 0 (`--require-node` makes
that an error).

`--browser` also opens pages in a real headless Chromium (offline, from `file://`), lets the page's
scripts run, and checks in the resulting DOM that every formula became KaTeX and none is left as
raw TeX; `--screenshot PNG` saves the first page as it rendered.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KATEX = ROOT / "docs" / "javascripts" / "katex" / "katex.js"
PATTERN = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.S)

NODE_SCRIPT = r"""
const katex = require(process.argv[1]);
const items = JSON.parse(require("fs").readFileSync(0, "utf8"));
const failures = [];
for (const [where, tex, display] of items) {
  try { katex.renderToString(tex, {displayMode: display, throwOnError: true}); }
  catch (e) { failures.push([where, tex, String(e.message || e)]); }
}
process.stdout.write(JSON.stringify(failures));
"""


def formulas(site: Path) -> list[tuple[str, str, bool]]:
    """Every formula of the built site: (page, TeX, display)."""
    out = []
    for page in sorted(site.rglob("*.html")):
        for tag, body in PATTERN.findall(page.read_text(encoding="utf-8")):
            tex = html.unescape(re.sub(r"<[^>]+>", "", body)).strip()
            for left, right in (("\\(", "\\)"), ("\\[", "\\]"), ("$$", "$$"), ("$", "$")):
                if tex.startswith(left) and tex.endswith(right):
                    tex = tex[len(left) : len(tex) - len(right)]
                    break
            out.append((str(page.relative_to(site)), tex, tag == "div"))
    return out


def browser_check(site: Path, pages: list[str], screenshot: str | None) -> int:
    """Render `pages` in headless Chromium; count KaTeX elements and raw `\\(` left over."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        print("no Chromium: the browser check is skipped", file=sys.stderr)
        return 0
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=5000",
    ]
    bad = 0
    for i, name in enumerate(pages):
        url = (site / name).resolve().as_uri()
        dom = subprocess.run(
            [chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
        ).stdout
        rendered, raw = dom.count('class="katex"'), len(re.findall(r'class="arithmatex">\\[(\[]', dom))
        print(f"browser: {name}: {rendered} formulas rendered by KaTeX, {raw} left as raw TeX")
        bad += raw > 0 or rendered == 0
        if screenshot and i == 0:
            subprocess.run([chromium, *flags, "--window-size=1100,1400", f"--screenshot={screenshot}", url],
                           capture_output=True, timeout=120)  # fmt: skip
            print(f"screenshot: {screenshot}")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", nargs="?", default="site", help="the built site (mkdocs build -d SITE)")
    parser.add_argument("--require-node", action="store_true", help="fail when node is not installed")
    parser.add_argument("--browser", action="store_true", help="also render pages in headless Chromium")
    parser.add_argument("--screenshot", default=None, help="with --browser: save the first page as this PNG")
    args = parser.parse_args()
    site = Path(args.site)
    if not (site / "index.html").is_file():
        print(f"{site} is not a built site (no index.html); run mkdocs build first", file=sys.stderr)
        return 2
    node = shutil.which("node")
    if node is None:
        print("node is not installed: formulas not checked", file=sys.stderr)
        return 1 if args.require_node else 0
    items = formulas(site)
    run = subprocess.run([node, "-e", NODE_SCRIPT, str(KATEX)], input=json.dumps(items), capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    if run.returncode != 0:
        print(run.stderr, file=sys.stderr)
        return 2
    failures = json.loads(run.stdout)
    pages = len({p for p, _, _ in items})
    print(f"{len(items)} formulas on {pages} pages rendered by the vendored KaTeX; {len(failures)} failed")
    for where, tex, message in failures:
        print(f"  {where}: {tex[:100]!r}: {message[:200]}")
    status = 1 if failures else 0
    if args.browser:
        pages = ["concepts/index.html", "how-to/inverse-problems/index.html", "api/analytic/index.html"]
        status = max(status, browser_check(site, pages, args.screenshot))
    return status


if __name__ == "__main__":
    sys.exit(main())
