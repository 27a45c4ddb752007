"""Sweeps declared in TOML: a grid of training runs, resumable, on a local process pool or a Dask cluster.

Format (every key is checked before any work starts; the offending key is named)::

    name = "fig3a"                 # required: the sweep's name in the store
    description = "..."            # optional
    x = "batch_size"               # the heatmap's horizontal axis (a grid key; depth is vertical)
    seeds = [0]                    # optional: repeat every cell with these seeds
    [base]                         # fixed TrainConfig fields (bnmft.experiments.training.TrainConfig)
    dataset = "mnist"
    phi = "relu"
    lr = "paper"                   # 1e-5 * B; or a number, or "<factor>*B"
    [grid]                         # lists of values: the cells are their product
    depth = [10, 20, 30]
    batch_size = [8, 32, 128]

Each cell is one :class:`TrainConfig`, keyed by the sha256 of its full configuration; results go to a
:class:`~bnmft.experiments.store.Store`. Running the same sweep again skips every finished cell, so an
interrupted sweep (Ctrl-C, ``kill -9``, a crash) resumes where it stopped, losing and duplicating nothing.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from ..errors import InputError
from .config import CONFIG_KEYS, TrainConfig, check_config
from .store import Store, cell_key

TOP_KEYS = ("name", "description", "x", "seeds", "base", "grid")
PRESET_DIR = "presets"
PRESETS = ("quick", "paper", "tiny")


@dataclass(frozen=True)
class Sweep:
    name: str
    x: str
    base: dict
    grid: dict
    seeds: tuple[int, ...] = (0,)
    description: str = ""

    def cells(self) -> list[dict]:
        keys = sorted(self.grid)
        out = []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            for seed in self.seeds:
                cfg = dict(self.base, **dict(zip(keys, values, strict=True)), seed=seed)
                out.append(TrainConfig(**cfg).to_dict())
        return out

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "x": self.x,
            "base": self.base,
            "grid": self.grid,
            "seeds": list(self.seeds),
            "description": self.description,
        }


def load_sweeps(source: str | Path) -> list[Sweep]:
    """The sweeps of a TOML file (one sweep at top level, or several as ``[[sweeps]]`` tables) or of a preset
    name (``quick``, ``paper``, ``tiny``). Raises ValueError naming the offending key for anything unknown,
    empty or impossible - before any work starts."""
    raw = _read_toml(source)
    if "sweeps" in raw:
        extra = sorted(set(raw) - {"sweeps"})
        if extra:
            raise InputError(f"config: unknown key {extra[0]!r} next to [[sweeps]]")
        if not isinstance(raw["sweeps"], list) or not raw["sweeps"]:
            raise InputError("config: 'sweeps' must be a non-empty array of tables")
        sweeps = [parse_sweep(item) for item in raw["sweeps"]]
        names = [s.name for s in sweeps]
        if len(set(names)) != len(names):
            raise InputError("config: sweep names must be unique")
        return sweeps
    return [parse_sweep(raw)]


def load_sweep(source: str | Path) -> Sweep:
    """A single sweep (see :func:`load_sweeps`)."""
    sweeps = load_sweeps(source)
    if len(sweeps) != 1:
        raise InputError(f"config: {source} holds {len(sweeps)} sweeps; use load_sweeps")
    return sweeps[0]


def _read_toml(source: str | Path) -> dict:
    text_source = str(source)
    if text_source in PRESETS and not Path(text_source).exists():
        text = resources.files("bnmft.experiments").joinpath(PRESET_DIR).joinpath(f"{text_source}.toml").read_text()
    else:
        try:
            text = Path(source).read_text()
        except OSError as err:
            raise InputError(
                f"config: cannot read {source!r} ({err.strerror}); give a TOML file or one of {PRESETS}"
            ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"config: not valid TOML ({err})") from None


def parse_sweep(raw: dict) -> Sweep:
    for key in raw:
        if key not in TOP_KEYS:
            raise InputError(f"config: unknown key {key!r} (allowed: {', '.join(TOP_KEYS)})")
    if not isinstance(raw.get("name"), str) or not raw["name"].strip():
        raise InputError("config: 'name' is required (a non-empty string)")
    base = raw.get("base", {})
    grid = raw.get("grid")
    if not isinstance(base, dict):
        raise InputError("config: 'base' must be a table")
    if not isinstance(grid, dict) or not grid:
        raise InputError("config: 'grid' is required and must have at least one key")
    for section, table in (("base", base), ("grid", grid)):
        for key in table:
            if key not in CONFIG_KEYS or key == "seed":
                raise InputError(
                    f"config: unknown key {section}.{key!r} (allowed: "
                    f"{', '.join(k for k in CONFIG_KEYS if k != 'seed')})"
                )
    for key, values in grid.items():
        if not isinstance(values, list):
            raise InputError(f"config: grid.{key} must be a list of values")
        if not values:
            raise InputError(f"config: grid.{key} is empty")
        if len(set(map(str, values))) != len(values):
            raise InputError(f"config: grid.{key} repeats a value")
        if key in base:
            raise InputError(f"config: {key!r} is both in base and in grid")
    if "depth" not in grid:
        raise InputError("config: grid.depth is required (depth is the heatmap's vertical axis)")
    others = [k for k in grid if k != "depth"]
    x = raw.get("x", others[0] if others else "depth")
    if x not in grid:
        raise InputError(f"config: x = {x!r} must be one of the grid keys {sorted(grid)}")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise InputError("config: seeds must be a non-empty list of integers")
    sweep = Sweep(
        raw["name"], x, dict(base), {k: list(v) for k, v in grid.items()}, tuple(seeds), raw.get("description", "")
    )
    for cell in sweep.cells():  # every cell is checked before any work starts
        try:
            check_config(TrainConfig(**cell))
        except (InputError, TypeError) as err:  # TypeError: a key TrainConfig does not take
            raise InputError(f"config: {err}") from None
    return sweep


def run_cell(config: dict) -> dict:
    """Train one cell (runs in a worker process: one torch thread)."""
    import torch

    from .training import train

    torch.set_num_threads(1)
    return train(TrainConfig(**config))


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def run_sweep(
    sweep: Sweep,
    store: Store,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    on_result: Callable[[dict], None] | None = None,
) -> dict:
    """Run the cells of ``sweep`` that ``store`` does not have yet; returns counts.

    Args:
        workers: local processes (default: the number of CPU cores); ignored with ``scheduler``.
        scheduler: a Dask distributed scheduler address (``tcp://host:port``): cells run on its workers.
        progress: show a progress bar (cells done, time left) on stderr.
    """
    from tqdm import tqdm

    store.register_sweep(sweep.name, sweep.to_dict())
    cells = sweep.cells()
    done = store.done_keys()
    todo = [c for c in cells if cell_key(c) not in done]
    bar = tqdm(
        total=len(cells),
        initial=len(cells) - len(todo),
        desc=f"sweep {sweep.name}",
        unit="cell",
        disable=not progress,
        file=sys.stderr,
        smoothing=0.1,
    )
    added = 0

    def record(config, result):
        nonlocal added
        added += store.add(sweep.name, cell_key(config), config, result)
        bar.update(1)
        if on_result is not None:
            on_result(result)

    try:
        if not todo:
            pass
        elif scheduler:
            _run_dask(todo, scheduler, record)
        else:
            _run_local(todo, workers, record)
    finally:
        bar.close()
    return {"cells": len(cells), "skipped": len(cells) - len(todo), "ran": added}


def _run_local(todo: list[dict], workers: int | None, record) -> None:
    count = max(1, min(workers or multiprocessing.cpu_count(), len(todo)))
    if count == 1:
        _init_worker()
        for config in todo:
            record(config, run_cell(config))
        return
    ctx = multiprocessing.get_context("spawn")  # torch and fork do not mix
    with ProcessPoolExecutor(max_workers=count, mp_context=ctx, initializer=_init_worker) as pool:
        pending = {pool.submit(run_cell, c): c for c in todo}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    record(pending.pop(fut), fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def _run_dask(todo: list[dict], scheduler: str, record) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:  # pragma: no cover - a declared dependency
        raise InputError("--scheduler needs the 'distributed' package") from None
    try:
        client = Client(scheduler, timeout=20)
    except OSError as err:
        raise InputError(f"--scheduler: cannot connect to {scheduler!r} ({err})") from None
    try:
        futures = {client.submit(run_cell, c, pure=False): c for c in todo}
        for fut in as_completed(futures):
            record(futures[fut], fut.result())
    finally:
        client.close()


def grid_table(results: list[dict], x: str) -> tuple[list, list, list[list[float]]]:
    """(x values, depths, accuracy[depth][x]) averaged over seeds; NaN-free: missing cells are None."""
    xs = sorted({r["config"][x] for r in results}, key=_sort_key)
    depths = sorted({r["config"]["depth"] for r in results})
    cells: dict[tuple, list[float]] = {}
    for r in results:
        cells.setdefault((r["config"][x], r["config"]["depth"]), []).append(r["result"]["test_accuracy"])
    table = [[(sum(v) / len(v)) if (v := cells.get((xv, d))) else None for xv in xs] for d in depths]
    return xs, depths, table


def _sort_key(value):
    return (0, value) if isinstance(value, int | float) and math.isfinite(value) else (1, str(value))
