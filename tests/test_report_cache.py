"""The main job's cache (results/.cache): data only, never code; a truncated, garbage, foreign or crafted file is
reported in one line on stderr and recomputed."""

import json
import math
import os
import pickle

import numpy as np
import pytest

from bnmft.report.section import CACHE_FORMAT, Context
from bnmft.simulate.mlp import BatchSummary


def _summary() -> BatchSummary:
    return BatchSummary(8, 64, 10, 2, 1.5, 0.01, 1.49, 0.3, 0.001, None, 0.5, 0.0, 0.5, lambda_W_mean=float("nan"))


def _data() -> dict:
    return {
        "summaries": [_summary()],
        "settings": {"width": 64, "depth": 10},
        "rows": [{"x": np.float64(0.1), "n": np.int64(3), "ok": np.bool_(True), "f32": np.float32(1 / 3)}],
        "gram": np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
        "ints": np.array([[1, 2], [3, 4]], dtype=np.int64),
        "pair": (1, "a", None),
        "by_batch": {4: 0.5, 8: math.inf},
        "nan": math.nan,
        "__bnmft__": "a key that looks like the tag",
    }


def _same(a, b) -> None:
    """Equal values and equal types, recursively (NaN equal to NaN)."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, BatchSummary):
        _same(vars(a), vars(b))
    else:
        assert a == b or (a != a and b != b), (a, b)


@pytest.fixture
def ctx(tmp_path):
    return Context(out=tmp_path, preset="tiny", version="0.test")


def _path(ctx, name="fig"):
    return ctx.out / ".cache" / f"{name}_tiny_0.test_c{CACHE_FORMAT}.json"


def test_a_cached_result_comes_back_equal_with_its_types(ctx, capsys):
    calls = []
    first = ctx.cached("fig", lambda: calls.append(1) or _data())
    again = ctx.cached("fig", lambda: calls.append(1) or _data())
    assert calls == [1]  # read, not recomputed
    _same(first, again)
    assert json.loads(_path(ctx).read_text())["format"] == CACHE_FORMAT  # plain JSON on disk
    assert capsys.readouterr().err == ""


def test_a_value_the_cache_cannot_hold_is_a_bug_not_a_silent_loss(ctx):
    with pytest.raises(TypeError, match="cannot hold"):
        ctx.cached("fig", lambda: {"f": open})


def _crafted_pickle(marker) -> bytes:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return pickle.dumps(Payload())


@pytest.mark.parametrize(
    "content",
    [
        "truncated",
        "garbage",
        "pickle",
        "not json data",
        "other name",
        "other format",
        "foreign class",
        "object dtype",
        "bad shape",
        "missing field",
        "deep",
        "directory",
    ],
)
def test_a_bad_cache_file_is_reported_in_one_line_and_recomputed(ctx, tmp_path, capsys, content):
    marker = tmp_path / "ran_code"
    path = _path(ctx)
    ctx.cached("fig", _data)
    good = path.read_text()
    capsys.readouterr()

    def tagged(data, **head) -> str:
        return json.dumps({"format": CACHE_FORMAT, "name": "fig", **head, "data": data})

    array = {"__bnmft__": "ndarray", "dtype": "<f8", "shape": [1], "data": [1.0]}
    summary = {"__bnmft__": "dataclass", "type": "bnmft.simulate.mlp:BatchSummary", "fields": {}}
    bad = {
        "truncated": good[: len(good) // 2],
        "garbage": bytes(range(256)) * 4,
        "pickle": _crafted_pickle(marker),
        "not json data": "[1, 2, 3]",
        "other name": tagged(1, name="fig2"),
        "other format": tagged(1, format=CACHE_FORMAT - 1),
        "foreign class": tagged({"__bnmft__": "dataclass", "type": "os:system", "fields": {}}),
        "object dtype": tagged(array | {"dtype": "|O"}),
        "bad shape": tagged(array | {"shape": [10**12]}),
        "missing field": tagged(summary),
        "deep": tagged(0).replace("0}", "[" * 100_000 + "]" * 100_000 + "}"),
    }.get(content)
    path.unlink()
    if content == "directory":
        path.mkdir()
    elif isinstance(bad, bytes):
        path.write_bytes(bad)
    else:
        path.write_text(bad)
    if content == "pickle":  # the old cache's name too: it is never opened
        path.with_name(path.name.replace(f"c{CACHE_FORMAT}.json", "c2.pickle")).write_bytes(bad)
    calls = []
    if content == "directory":
        with pytest.raises(IsADirectoryError):  # reported, recomputed, then the write fails: the CLI's exit 2
            ctx.cached("fig", lambda: calls.append(1) or _data())
    else:
        _same(ctx.cached("fig", lambda: calls.append(1) or _data()), _data())
        _same(ctx.cached("fig", lambda: calls.append(1) or _data()), _data())  # rewritten: read this time
    assert calls == [1]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"ignoring the cache file {path}" in err and "recomputing fig" in err, err
    assert not marker.exists()  # the crafted pickle never ran
