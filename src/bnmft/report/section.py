"""What every section of the main job's report shares: the :class:`Check` and :class:`Claim` records, the run's
:class:`Context` (output folder, preset, the cache of finished simulations) and the :class:`Section` interface.

A section is a module (:mod:`.theory`, :mod:`.simulation`, :mod:`.width`, :mod:`.residual`, :mod:`.conv`,
:mod:`.training`) with

* ``NAME`` - a short name (progress output, wall time per section in ``report.html``);
* ``run(ctx) -> data`` - computes the section (writing its figures and CSV files into ``ctx.out``), or loads the
  finished simulations from ``ctx.out/.cache`` (:meth:`Context.cached`);
* ``checks(data) -> list[Check]`` - its checks against independent references (the main job fails if one fails);
* ``claims(data) -> list[Claim]`` - the paper's (or our) claims it tests, with their verdicts, for the summary;
* ``text(data) -> str`` - its Markdown (one or more ``##`` sections; its checks table included);
* ``appendix(data) -> str`` - Markdown for the end of the report (``""`` for none).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
#: bump when what a section caches changes shape, so an older results/.cache is recomputed, not misread
#: (2: the residual branch scale is called branch_scale)
CACHE_FORMAT = 2


@dataclass(frozen=True)
class Check:
    """One check: ``measured`` (the engine's or the simulator's value) against ``reference`` (an independent one),
    ``difference`` (as the check defines it: absolute, relative, or after rounding) within ``tolerance``."""

    name: str
    measured: float
    reference: float
    difference: float
    tolerance: float

    @property
    def passed(self) -> bool:
        """``difference <= tolerance`` (False where either is NaN)."""
        return bool(self.difference <= self.tolerance)

    def row(self) -> str:
        """The check as a row of :func:`check_table`."""
        verdict = "yes" if self.passed else "NO"
        return (
            f"| {self.name} | {self.measured:.12g} | {self.reference:.12g} | {self.difference:.2e} | "
            f"{self.tolerance:.0e} | {verdict} |"
        )


def check_table(checks: list[Check]) -> list[str]:
    """The Markdown table of ``checks`` (one row each, ``yes``/``NO`` in the last column)."""
    head = ["| check | engine | reference | difference | tolerance | ok |", "|---|---|---|---|---|---|"]
    return head + [c.row() for c in checks]


@dataclass(frozen=True)
class Claim:
    """A claim of the paper (or ours) that a section tests, and what this run measured.

    ``verdict``: the outcome in one sentence; ``consistent``: whether it supports the claim (None: not judged);
    ``ratio``: the measured value over the theory's prediction where the claim is about one (``ratio_of`` says
    which), else None; ``subject``: the figure or sweep that tests it."""

    source: str
    claim: str
    verdict: str
    consistent: bool | None = None
    ratio: float | None = None
    ratio_of: str = ""
    subject: str = ""

    def quote(self, here: str = "Here", note: str = "") -> str:
        """The claim and its verdict as the report's block quote."""
        return f"> **{self.source}:** {self.claim} **{here}:** {self.verdict}{note}"


@dataclass(frozen=True)
class Context:
    """The main job's settings, as every section's ``run`` sees them."""

    out: Path
    preset: str
    quiet: bool = False
    workers: int | None = None
    scheduler: str | None = None
    device: str = "cpu"
    version: str = ""

    def cached(self, name: str, build: Callable[[], T]) -> T:
        """``build()``, or its result from an earlier run: finished simulations are pickled into
        ``out/.cache/<name>_<preset>_<version>_c<CACHE_FORMAT>.pickle``, so an interrupted main job resumes where it
        stopped (and a cache of another format is never read)."""
        cache = self.out / ".cache"
        cache.mkdir(exist_ok=True)
        done = cache / f"{name}_{self.preset}_{self.version}_c{CACHE_FORMAT}.pickle"
        if done.exists():
            with open(done, "rb") as fh:
                result: T = pickle.load(fh)  # written below by this method, never by a user
            return result
        result = build()
        tmp = done.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(result, fh)
        tmp.replace(done)
        return result


def anchor(heading: str) -> str:
    """The in-page anchor of a Markdown heading's text, as GitHub makes it (and :mod:`.html` sets it): lower case,
    punctuation other than ``-`` and ``_`` dropped, each space a ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


class Section(Protocol):
    """The interface every section module implements (see the module docstring)."""

    NAME: str

    def run(self, ctx: Context) -> Any: ...

    def checks(self, data: Any) -> list[Check]: ...

    def claims(self, data: Any) -> list[Claim]: ...

    def text(self, data: Any) -> str: ...

    def appendix(self, data: Any) -> str: ...
