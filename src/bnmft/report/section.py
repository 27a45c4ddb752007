"""What every section of the main job's report shares: the :class:`Check` and :class:`Claim` records, the run's
:class:`Context` (output folder, preset, the cache of finished simulations) and the :class:`Section` interface.

A section is a module (:mod:`.theory`, :mod:`.simulation`, :mod:`.width`, :mod:`.residual`, :mod:`.conv`,
:mod:`.models`, :mod:`.training`) with

* ``NAME`` - a short name (progress output, wall time per section in ``report.html``);
* ``run(ctx) -> data`` - computes the section (writing its figures and CSV files into ``ctx.out``), or loads the
  finished simulations from ``ctx.out/.cache`` (:meth:`Context.cached`: JSON, never code);
* ``checks(data) -> list[Check]`` - its checks against independent references (the main job fails if one fails);
* ``claims(data) -> list[Claim]`` - the paper's (or our) claims it tests, with their verdicts, for the summary;
* ``text(data) -> str`` - its Markdown (one or more ``##`` sections; its checks table included);
* ``appendix(data) -> str`` - Markdown for the end of the report (``""`` for none).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

T = TypeVar("T")
#: bump when what a section caches changes shape, so an older results/.cache is recomputed, not misread
#: (2: the residual branch scale is called branch_scale; 3: JSON instead of pickle)
CACHE_FORMAT = 3
#: the dataclasses a cached result may hold ("module:class"): the only classes a cache file can name
CACHE_DATACLASSES = ("bnmft.simulate.mlp:BatchSummary",)
#: the key that marks a JSON object standing for a tuple, a numpy array or scalar, a dict with other keys, a dataclass
_TAG = "__bnmft__"


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
        """``build()``, or its result from an earlier run: finished simulations are saved as JSON in
        ``out/.cache/<name>_<preset>_<version>_c<CACHE_FORMAT>.json``, so an interrupted main job resumes where it
        stopped (and a cache of another format is never read).

        The file is data only - numbers, strings, lists, tuples, dicts, numpy arrays and scalars, and the
        dataclasses of :data:`CACHE_DATACLASSES` - so a file in a directory someone else wrote cannot run code; a
        truncated, corrupt or foreign file is reported in one line on stderr and recomputed."""
        cache = self.out / ".cache"
        cache.mkdir(exist_ok=True)
        done = cache / f"{name}_{self.preset}_{self.version}_c{CACHE_FORMAT}.json"
        if done.exists() or done.is_symlink():
            try:
                return _read_cache(done, name)
            except (_Unreadable, OSError, ValueError, TypeError, KeyError, RecursionError) as err:  # unreadable: redo
                reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]
                print(f"bnmft: ignoring the cache file {done} ({reason}); recomputing {name}", file=sys.stderr)
        result = build()
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": CACHE_FORMAT, "name": name, "data": _encode(result)}))
        tmp.replace(done)
        return result


class _Unreadable(Exception):
    """A cache file that is not one :meth:`Context.cached` wrote (reported, then recomputed)."""


def _read_cache(path: Path, name: str) -> Any:
    """The data of the cache file ``path`` written for ``name``; :class:`_Unreadable` (or the error of the bad part:
    OSError, ValueError, TypeError, KeyError, RecursionError) for anything else."""
    if not path.is_file():
        raise _Unreadable("not a regular file")
    head = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(head, dict) or head.get("format") != CACHE_FORMAT or head.get("name") != name:
        raise _Unreadable(f"not a cache of {name!r} in format {CACHE_FORMAT}")
    return _decode(head["data"])


def _encode(obj: Any) -> Any:
    """``obj`` as JSON values; the types JSON lacks become objects tagged with :data:`_TAG`."""
    if isinstance(obj, np.generic):  # before float: np.float64 is one
        return {_TAG: "scalar", "dtype": _plain(obj.dtype), "value": obj.item()}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, np.ndarray):
        return {_TAG: "ndarray", "dtype": _plain(obj.dtype), "shape": list(obj.shape),
                "data": obj.ravel().tolist()}  # fmt: skip
    if isinstance(obj, list):
        return [_encode(v) for v in obj]
    if isinstance(obj, tuple):
        return {_TAG: "tuple", "items": [_encode(v) for v in obj]}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and _TAG not in obj:
            return {k: _encode(v) for k, v in obj.items()}
        return {_TAG: "dict", "items": [[_encode(k), _encode(v)] for k, v in obj.items()]}
    kind = f"{type(obj).__module__}:{type(obj).__qualname__}"
    if dataclasses.is_dataclass(obj) and kind in CACHE_DATACLASSES:
        fields = {f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return {_TAG: "dataclass", "type": kind, "fields": fields}
    raise TypeError(f"the main job's cache cannot hold a {kind} (a dataclass: add it to CACHE_DATACLASSES)")


def _decode(node: Any) -> Any:
    """The inverse of :func:`_encode`: builds only JSON values, tuples, numpy values and CACHE_DATACLASSES."""
    if isinstance(node, list):
        return [_decode(v) for v in node]
    if not isinstance(node, dict):
        return node
    tag = node.get(_TAG)
    if tag is None:
        return {k: _decode(v) for k, v in node.items()}
    if tag == "tuple":
        return tuple(_decode(v) for v in node["items"])
    if tag == "dict":
        return {_decode(k): _decode(v) for k, v in node["items"]}
    if tag == "scalar":
        return _dtype(node["dtype"]).type(node["value"])
    if tag == "ndarray":
        return np.array(node["data"], dtype=_dtype(node["dtype"])).reshape(node["shape"])
    if tag == "dataclass":
        if node["type"] not in CACHE_DATACLASSES:
            raise _Unreadable(f"class {str(node['type'])[:60]!r} is not one a cache may hold")
        module, _, qualname = node["type"].partition(":")
        cls = getattr(importlib.import_module(module), qualname)
        fields = node["fields"]
        if not isinstance(fields, dict) or set(fields) != {f.name for f in dataclasses.fields(cls) if f.init}:
            raise _Unreadable(f"the fields of {node['type']} do not match")
        return cls(**{k: _decode(v) for k, v in fields.items()})
    raise _Unreadable(f"unknown cache entry {str(tag)[:40]!r}")


#: the kinds of numpy values a cache holds: bool, integers, floats, strings
PLAIN_KINDS = "biufU"


def _plain(dtype: np.dtype) -> str:
    """``dtype.str`` of a dtype of :data:`PLAIN_KINDS`."""
    if dtype.kind not in PLAIN_KINDS:
        raise TypeError(f"the main job's cache cannot hold numpy {dtype} values")
    return dtype.str


def _dtype(text: Any) -> np.dtype:
    """The numpy dtype of plain values (:data:`PLAIN_KINDS`) whose ``dtype.str`` is ``text``."""
    dtype = np.dtype(text) if isinstance(text, str) else None
    if dtype is None or dtype.kind not in PLAIN_KINDS:
        raise _Unreadable(f"dtype {str(text)[:40]!r} is not one of plain values")
    return dtype


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
