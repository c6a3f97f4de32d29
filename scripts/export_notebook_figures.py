"""Copy the figures of an executed notebook into docs/img, so that docs pages can show them.

    python scripts/export_notebook_figures.py notebooks/numerical_analysis.ipynb

Each PNG output becomes docs/img/<notebook>_<cell index>.png (written atomically).
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffsolve.checkpoint import atomic_write_bytes  # noqa: E402


def export(path: Path) -> list[Path]:
    nb = json.loads(path.read_text())
    out_dir = ROOT / "docs" / "img"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, cell in enumerate(nb["cells"]):
        for k, out in enumerate(cell.get("outputs", [])):
            png = out.get("data", {}).get("image/png")
            if png:
                suffix = f"_{k}" if k else ""
                target = out_dir / f"{path.stem}_{i}{suffix}.png"
                atomic_write_bytes(target, base64.b64decode(png))
                written.append(target)
    return written


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        for p in export(Path(arg).resolve()):
            print(p.relative_to(ROOT))
