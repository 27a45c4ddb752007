"""Small file helpers shared by the simulator, the figures and the main job."""

from __future__ import annotations

import csv
from pathlib import Path


def write_csv(path: str | Path, rows: list[dict]) -> Path:
    """Write rows (dicts) as CSV via a temporary file, so a crash never leaves half a file.

    The columns are every key of any row, in order of first appearance; a row without a key leaves its cell
    empty (a budget trend has a limit's interval only where its crossing converges)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
    return path
