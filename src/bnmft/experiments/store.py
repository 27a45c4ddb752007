"""Embedded SQLite store of sweep results: one row per cell, keyed by the hash of its full configuration.

Writes are single transactions made by the coordinating process only (workers return results), in WAL
mode: a crash or ``kill -9`` loses at most the cells that were running, never a finished one, and a cell is
never stored twice (primary key).

Several sweeps may share a store: a coordinator *claims* a cell (table ``claims``: owner and lease expiry) before
training it, renews its leases while it works and drops the claim when the result is stored. A cell claimed by a
live coordinator is not trained by another; the claim of a crashed one expires and its successor takes over.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL
);
"""
#: the columns each table must have (a file with other tables of these names is another program's database)
COLUMNS = {
    "cells": ["key", "sweep", "config", "result", "test_accuracy", "diverged", "finished"],
    "sweeps": ["name", "spec", "created"],
    "claims": ["key", "owner", "expires"],
}


def _alive(owner: str) -> bool:
    """Whether a claim's owner (``host:pid:tag``) may still be running: a process of this host that is gone is
    not (its claims are taken over at once, without waiting for the lease); elsewhere, trust the lease."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def cell_key(config: dict) -> str:
    """sha256 of the canonical JSON of a cell's full configuration."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class Store:
    """The results of one or more sweeps in a SQLite file."""

    def __init__(self, path: str | Path, *, read_only: bool = False):
        """Open (or create) the store at ``path``.

        Args:
          path: the SQLite file; created with its tables where it does not exist (never in ``read_only``).
          read_only: open an existing store for reading only: nothing is written to it, not even its tables or
            the WAL mode (``bnmft sweep --dry-run``).

        Raises InputError for a file that is not a bnmft store: not SQLite, or another program's database (tables
        of its own and no ``cells``; bnmft's tables are never added to it), or tables of bnmft's names with other
        columns.
        """
        self.path = Path(path)
        if read_only and not self.path.is_file():
            raise InputError(f"store: {self.path} does not exist (a store opened read-only must)")
        if not read_only and self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if read_only:
                self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            else:
                self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # explicit transactions
        except sqlite3.DatabaseError as err:
            raise InputError(f"store: {self.path} is not a bnmft results database ({err})") from None
        try:
            self._check_tables(read_only)
        except BaseException:
            self.db.close()  # a refused file is left as it was, with no connection held to it
            raise

    def _check_tables(self, read_only: bool) -> None:
        """Refuse another program's database before writing to it; then (unless ``read_only``) set WAL mode and
        create bnmft's tables, and check every table's columns (read-only: a table missing from an older store
        other than ``cells`` is not read, so not required)."""
        try:
            tables = {name for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "cells" not in tables:
                raise InputError(f"store: {self.path} is another program's database (tables {sorted(tables)}, "
                                 "no bnmft cells): use a new --store file")  # fmt: skip
            if not read_only:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.executescript(SCHEMA)
            for table, columns in COLUMNS.items():
                found = [row[1] for row in self.db.execute(f"PRAGMA table_info({table})")]
                if read_only and not found and table != "cells":
                    continue
                if found != columns:
                    raise InputError(
                        f"store: {self.path} has a table {table!r} with columns {found}, not bnmft's {columns}: "
                        "it is another program's database (or another version's); use a new --store file"
                    )
        except sqlite3.DatabaseError as err:
            raise InputError(f"store: {self.path} is not a bnmft results database ({err})") from None

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """An immediate transaction (one writer at a time across processes): committed, or rolled back on error."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _write(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        """One statement in its own immediate transaction."""
        with self._transaction() as db:
            return db.execute(sql, args)

    def register_sweep(self, name: str, spec: dict) -> None:
        self._write("INSERT OR REPLACE INTO sweeps VALUES (?, ?, ?)", (name, json.dumps(spec), time.time()))

    def _json(self, text: str, what: str):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"store: {self.path} holds corrupt JSON in {what} ({err})") from None

    def sweeps(self) -> dict[str, dict]:
        return {n: self._json(s, f"sweep {n!r}") for n, s in self.db.execute("SELECT name, spec FROM sweeps")}

    def done_keys(self) -> set[str]:
        return {k for (k,) in self.db.execute("SELECT key FROM cells")}

    def add(self, sweep: str, key: str, config: dict, result: dict, owner: str | None = None) -> bool:
        """Store a finished cell (and drop ``owner``'s claim on it); returns False if it was already there (nothing
        is duplicated)."""
        with self._transaction() as db:
            cur = db.execute(
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
            if owner is not None:
                db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, owner))
        return cur.rowcount == 1

    def claim(self, key: str, owner: str, lease: float) -> str:
        """Try to claim a cell for ``lease`` seconds: ``"claimed"``, ``"done"`` (already stored) or ``"taken"`` (a
        live claim of another owner). An expired claim is taken over."""
        now = time.time()
        with self._transaction() as db:  # the check and the claim are atomic
            if db.execute("SELECT 1 FROM cells WHERE key = ?", (key,)).fetchone():
                return "done"
            row = db.execute("SELECT owner, expires FROM claims WHERE key = ?", (key,)).fetchone()
            if row is not None and row[0] != owner and row[1] > now and _alive(row[0]):
                return "taken"
            db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", (key, owner, now + lease))
            return "claimed"

    def renew(self, owner: str, lease: float) -> None:
        """Extend every claim of ``owner`` by ``lease`` seconds from now."""
        self._write("UPDATE claims SET expires = ? WHERE owner = ?", (time.time() + lease, owner))

    def release(self, owner: str) -> None:
        """Drop every claim of ``owner`` (a coordinator that stops, cleanly or on an error)."""
        self._write("DELETE FROM claims WHERE owner = ?", (owner,))

    def results(self, sweep: str | None = None, keys: set[str] | None = None) -> list[dict]:
        """The finished cells (of one sweep; or with these cell ``keys``, whichever sweep trained them: a cell two
        sweeps share is stored once), each ``{key, sweep, config, result, finished}``; a corrupt row or a row
        without the keys a heatmap reads (config: depth; result: test_accuracy) is an InputError naming it."""
        if sweep is not None and keys is not None:
            raise InputError("Store.results: give a sweep or cell keys, not both")
        query = "SELECT key, sweep, config, result, finished FROM cells"
        if keys is not None:  # (the primary key's index)
            wanted = json.dumps(sorted(keys))
            rows = self.db.execute(query + " WHERE key IN (SELECT value FROM json_each(?))", (wanted,))
        else:
            rows = self.db.execute(query + (" WHERE sweep = ?" if sweep else ""), (sweep,) if sweep else ())
        out = []
        for k, s, c, r, f in rows:
            config, result = self._json(c, f"cell {k[:12]}"), self._json(r, f"cell {k[:12]}")
            if not isinstance(config, dict) or "depth" not in config:
                raise InputError(f"store: {self.path}: cell {k[:12]} has no configuration with a depth")
            accuracy = result.get("test_accuracy") if isinstance(result, dict) else None
            if not isinstance(accuracy, int | float) or not 0 <= accuracy <= 1:  # NaN included: never drawn
                raise InputError(
                    f"store: {self.path}: cell {k[:12]} has no test_accuracy in [0, 1] (got {str(accuracy)[:20]})"
                )
            out.append({"key": k, "sweep": s, "config": config, "result": result, "finished": f})
        return out
