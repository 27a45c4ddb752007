"""Embedded SQLite store of sweep results: one row per cell, keyed by the hash of its full configuration.

Writes are single transactions made by the coordinating process only (workers return results), in WAL
mode: a crash or ``kill -9`` loses at most the cells that were running, never a finished one, and a cell is
never stored twice (primary key).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

from ..errors import InputError

SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    sweep TEXT NOT NULL,
    config TEXT NOT NULL,
    result TEXT NOT NULL,
    test_accuracy REAL,
    diverged INTEGER,
    finished REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created REAL NOT NULL
);
"""


def cell_key(config: dict) -> str:
    """sha256 of the canonical JSON of a cell's full configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Store:
    """The results of one or more sweeps in a SQLite file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as err:
            raise InputError(f"store: {self.path} is not a bnmft results database ({err})") from None

    def close(self) -> None:
        self.db.close()

    def register_sweep(self, name: str, spec: dict) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO sweeps VALUES (?, ?, ?)", (name, json.dumps(spec), time.time()))

    def sweeps(self) -> dict[str, dict]:
        return {n: json.loads(s) for n, s in self.db.execute("SELECT name, spec FROM sweeps")}

    def done_keys(self) -> set[str]:
        return {k for (k,) in self.db.execute("SELECT key FROM cells")}

    def add(self, sweep: str, key: str, config: dict, result: dict) -> bool:
        """Store a finished cell; returns False if it was already there (nothing is duplicated)."""
        with self.db:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO cells VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    sweep,
                    json.dumps(config, sort_keys=True),
                    json.dumps(result),
                    result.get("test_accuracy"),
                    int(bool(result.get("diverged"))),
                    time.time(),
                ),
            )
        return cur.rowcount == 1

    def results(self, sweep: str | None = None) -> list[dict]:
        query = "SELECT key, sweep, config, result, finished FROM cells"
        rows = self.db.execute(query + (" WHERE sweep = ?" if sweep else ""), (sweep,) if sweep else ())
        return [
            {"key": k, "sweep": s, "config": json.loads(c), "result": json.loads(r), "finished": f}
            for k, s, c, r, f in rows
        ]
