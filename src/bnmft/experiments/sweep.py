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
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from ..errors import InputError
from ..options import check_real
from .config import CONFIG_KEYS, TrainConfig, check_config
from .groups import CostModel, cell_cost, group_cells
from .runners import DaskRunner, LocalRunner
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
    name (``quick``, ``paper``, ``tiny``). Raises InputError naming the offending key for anything unknown,
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
        return parse_toml(text, "config")
    return read_toml(source, "config", f"a TOML file or one of {PRESETS}")


def read_toml(path: str | Path, name: str, allowed: str) -> dict:
    """A TOML file's tables; InputError naming ``name`` (the argument) and what is ``allowed`` where it cannot be
    read, is not text or not TOML."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise InputError(f"{name}: cannot read {str(path)!r} ({err.strerror}); give {allowed}") from None
    except UnicodeDecodeError:
        raise InputError(f"{name}: {str(path)!r} is not a text file (give {allowed})") from None
    return parse_toml(text, name)


def parse_toml(text: str, name: str) -> dict:
    """TOML text's tables; InputError naming ``name`` where it is not TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"{name}: not valid TOML ({err})") from None


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
    if len(set(seeds)) != len(seeds):
        raise InputError("config: seeds repeats a seed (each cell once)")
    sweep = Sweep(
        raw["name"], x, dict(base), {k: list(v) for k, v in grid.items()}, tuple(seeds), raw.get("description", "")
    )
    for cell in sweep.cells():  # every cell is checked before any work starts
        try:
            check_config(TrainConfig(**cell))
        except (InputError, TypeError) as err:  # TypeError: a key TrainConfig does not take
            raise InputError(f"config: {err}") from None
    return sweep


#: seconds a claim on a cell lasts; the coordinator renews its claims every LEASE_SECONDS / 4
LEASE_SECONDS = 120.0
#: a time-limited run starts a group only if this many times its estimated wall time fits in the time left (the
#: estimate is 0.84-1.74x off: :class:`~bnmft.experiments.groups.CostModel`)
LIMIT_MARGIN = 1.5


class _Heartbeat:
    """Renews ``owner``'s claims in ``path`` from a thread (its own SQLite connection) until closed."""

    def __init__(self, path: Path, owner: str, lease: float):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(path, owner, lease), daemon=True)
        self.thread.start()

    def _run(self, path: Path, owner: str, lease: float) -> None:
        store = Store(path)
        try:
            while not self.stop.wait(lease / 4):
                store.renew(owner, lease)
        finally:
            store.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def run_sweep(
    sweep: Sweep,
    store: Store,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    on_result: Callable[[dict], None] | None = None,
    lease: float = LEASE_SECONDS,
    device: str = "cpu",
    time_limit: float | None = None,
) -> dict:
    """Run the cells of ``sweep`` that ``store`` does not have yet; returns counts.

    Each cell is claimed in the store before it is trained (:meth:`Store.claim`), so several sweeps on one store -
    on one machine or many - never train the same cell twice: a cell claimed by another live sweep is left to it
    (this one waits for its result), and the claim of a crashed sweep expires after ``lease`` seconds.

    Args:
        workers: local processes (default: the number of CPU cores); ignored with ``scheduler``.
        scheduler: a Dask distributed scheduler address (``tcp://host:port``): cells run on its workers.
        progress: show a progress bar on stderr: the cells done, and the time left as
            :class:`~bnmft.experiments.groups.CostModel` estimates it from the measured cells (cells differ too much in
            cost for a rate).
        lease: seconds a claim lasts without renewal (renewed every lease / 4 while this sweep runs).
        device: ``"cpu"`` or ``"cuda"``: where the (batched) models train.
        time_limit: seconds of wall time (e.g. a cluster job's limit less a margin: the estimate can be 2x off): a
            group of cells starts only while :data:`LIMIT_MARGIN` times its estimated wall time fits in the time
            left (:class:`~bnmft.experiments.groups.CostModel`, from the cells the store holds and those this run
            finishes; on a store with nothing measured, the first group trains alone to measure), and no more groups
            than train at once; the groups in flight finish, the others are left for the next run.

    Returns:
        ``{"cells", "skipped" (done when it started), "ran" (trained by this run), "by_others" (finished
        meanwhile by another run), "left" (not finished: the time limit, or a stop)}``.
    """
    counts = _run([sweep], store, workers=workers, scheduler=scheduler, progress=progress, on_result=on_result,
                  lease=lease, device=device, order="grid", time_limit=time_limit)  # fmt: skip
    return counts[sweep.name]  # (grid order: the anchor first)


def run_sweeps(
    sweeps: list[Sweep],
    store: Store,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    on_result: Callable[[dict], None] | None = None,
    lease: float = LEASE_SECONDS,
    device: str = "cpu",
    stop: threading.Event | None = None,
    order: str = "cost",
    time_limit: float | None = None,
) -> dict[str, dict]:
    """Run several sweeps as one schedule: the cells (batched groups) of all of them that ``store`` does not have
    yet go to one pool, so no worker idles at the end of each sweep; cells of different sweeps that share their
    shapes train as one batched model, and a cell two sweeps share is trained once, stored under the first.
    Arguments as :func:`run_sweep`, and

    Args:
        stop: an event that, once set (from another thread), ends the run at once - the cells in flight are
            abandoned (their workers terminated), finished ones are stored.
        order: ``"cost"``: the costliest groups first (:func:`cell_cost`: the shortest idle tail); ``"sweeps"``:
            the sweeps in the order given, each in its grid order (a stopped run has finished the first sweeps, up
            to the cells in flight, and holds a prefix of the grid of the sweep it stopped in; a group shared by
            several sweeps goes with the first). With a ``time_limit``, a later group that fits in the time left
            starts when the next does not.

    Returns:
        :func:`run_sweep`'s counts per sweep name.
    """
    if order not in ("cost", "sweeps"):
        raise InputError(f"order must be 'cost' or 'sweeps', got {order!r}")
    return _run(sweeps, store, workers=workers, scheduler=scheduler, progress=progress, on_result=on_result,
                lease=lease, device=device, order=order, stop=stop, time_limit=time_limit)  # fmt: skip


def plan_sweeps(sweeps: list[Sweep], store: Store | None = None) -> list[dict]:
    """What running ``sweeps`` on ``store`` would train, without training: per sweep ``{"sweep", "cells", "done",
    "to_train", "core_seconds", "longest_group_seconds"}``: the estimated training time of its cells not yet done,
    grouped by sweep (:class:`~bnmft.experiments.groups.CostModel` from the store's finished cells; None while
    nothing is measured), and of its longest batched group (no run is shorter); a cell two sweeps share counts in
    the first (``to_train`` of the second leaves it out). ``store`` None: a new store (nothing done)."""
    done = store.done_keys() if store is not None else set()
    costs = CostModel(store.results() if store is not None else ())
    seen: set[str] = set()
    out = []
    for sweep in sweeps:
        cells = sweep.cells()
        todo = [c for c in cells if cell_key(c) not in done and cell_key(c) not in seen]
        seen.update(cell_key(c) for c in todo)
        estimates = [costs.seconds(group) for group in group_cells(todo)]
        known = [e for e in estimates if e is not None]
        whole = len(known) == len(estimates)
        out.append({"sweep": sweep.name, "cells": len(cells), "done": sum(cell_key(c) in done for c in cells),
                    "to_train": len(todo), "core_seconds": float(sum(known)) if whole else None,
                    "longest_group_seconds": max(known, default=0.0) if whole else None})  # fmt: skip
    return out


def sweep_results(store: Store, sweep: Sweep) -> list[dict]:
    """The finished cells of ``sweep`` in ``store`` (:meth:`Store.results`'s rows), whichever sweep trained them: a
    cell two sweeps share is stored once, under the first."""
    return store.results(keys={cell_key(c) for c in sweep.cells()})


def _run(sweeps, store, *, workers, scheduler, progress, on_result, lease, device, order, stop=None, time_limit=None):
    from tqdm import tqdm

    started = time.monotonic()
    if isinstance(lease, bool) or not (isinstance(lease, int | float) and lease > 0):
        raise InputError(f"lease must be a positive number of seconds, got {lease!r}")
    if time_limit is not None:
        check_real("time_limit", time_limit, positive=True)
    names = [s.name for s in sweeps]
    if len(set(names)) != len(names):
        raise InputError(f"sweeps: each name once, got {names}")
    done = store.done_keys()
    cells = {s.name: s.cells() for s in sweeps}
    owner_of: dict[str, str] = {}  # cell key -> the sweep that stores it
    todo = []
    for sweep in sweeps:
        store.register_sweep(sweep.name, sweep.to_dict())
        for config in cells[sweep.name]:
            key = cell_key(config)
            if key not in done and key not in owner_of:
                owner_of[key] = sweep.name
                todo.append(config)
    counts = {n: {"cells": len(c), "skipped": sum(cell_key(x) in done for x in c), "ran": 0, "by_others": 0,
                  "left": 0} for n, c in cells.items()}  # fmt: skip
    if not todo:
        return counts
    if device != "cpu":
        from .batched import check_device

        check_device(device)
    costs = CostModel(store.results()) if time_limit is not None or progress else None  # (before the runner)
    runner = DaskRunner(scheduler, device) if scheduler else LocalRunner(workers, len(todo), device)  # before output
    total = sum(len(c) for c in cells.values())
    bar = tqdm(
        total=total,
        initial=sum(c["skipped"] for c in counts.values()),
        desc=f"sweep {names[0]}" if len(sweeps) == 1 else f"training {len(sweeps)} sweeps",
        unit="cell",
        disable=not progress,
        file=sys.stderr,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",  # (cells differ: no rate, no ETA)
    )
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    shared = {n: {cell_key(x) for x in c} for n, c in cells.items()}
    ran: set[str] = set()
    pending = {cell_key(c): c for c in todo}  # not yet finished (here or by another sweep), nor dropped

    def show_time_left() -> None:  # the bar's estimate: the cells not yet done, spread over the runner's slots
        if progress and costs is not None:
            bar.set_postfix_str(_time_left_text(costs, list(pending.values()), runner.parallel))

    def finished(key: str) -> None:  # the bar counts a cell once per sweep that has it
        bar.update(sum(key in keys for keys in shared.values()))
        pending.pop(key, None)
        show_time_left()

    def dropped(group: list[dict]) -> None:  # not started for the time limit: out of the bar's estimate
        for config in group:
            pending.pop(cell_key(config), None)
        show_time_left()

    def record(config: dict, result: dict) -> None:
        key = cell_key(config)
        ran.add(key)  # trained here; the store keeps the first result of a cell, so nothing is duplicated
        store.add(owner_of[key], key, config, result, owner=owner)
        if costs is not None:
            costs.add(config, result)
        finished(key)
        if on_result is not None:
            on_result(result)

    decide = None
    if costs is not None and time_limit is not None:
        deadline = started + time_limit

        def decide(group: list[dict], busy: bool) -> str:
            """``"start"``, ``"wait"`` or ``"drop"`` a group under the time limit (``busy``: groups in flight)."""
            now, seconds = time.monotonic(), costs.seconds(group)
            if now >= deadline:
                return "drop"
            if seconds is None:  # nothing measured yet: one group at a time, until one has been
                return "wait" if busy else "start"
            if now + LIMIT_MARGIN * seconds <= deadline:
                return "start"
            return "wait" if busy else "drop"  # a group in flight may lower the price; with none, nothing will

    heartbeat = _Heartbeat(store.path, owner, lease)
    try:
        show_time_left()
        rank = {key: names.index(name) for key, name in owner_of.items()}
        _schedule(todo, store, owner, lease, runner, record, finished, order, rank, stop, decide, dropped)
    finally:
        runner.close(terminate=stop is not None and stop.is_set())
        heartbeat.close()
        store.release(owner)
        bar.close()
    now_done = store.done_keys()
    for name, keys in shared.items():
        mine = [k for k in keys if k not in done]
        counts[name]["ran"] = sum(k in ran for k in mine)  # (a cell two sweeps share: trained once, run for both)
        counts[name]["left"] = sum(k not in now_done for k in mine)  # (the time limit, or a stop)
        counts[name]["by_others"] = len(mine) - counts[name]["ran"] - counts[name]["left"]
    return counts


def _time_left_text(costs: CostModel, configs: list[dict], parallel: int) -> str:
    """``"~3.2 h left"`` (or minutes): the estimated wall time of ``configs`` grouped as a run batches them, on
    ``parallel`` slots; ``""`` before anything is measured."""
    estimates = [costs.seconds(group) for group in group_cells(configs)]
    if not estimates or None in estimates:
        return ""
    seconds = sum(e for e in estimates if e is not None) / max(parallel, 1)
    return f"~{seconds / 3600:.1f} h left" if seconds >= 3600 else f"~{math.ceil(seconds / 60)} min left"


def _schedule(todo, store: Store, owner: str, lease: float, runner, record, finished, order: str,
              rank: dict[str, int], stop: threading.Event | None, decide: Callable[[list[dict], bool], str] | None,
              dropped: Callable[[list[dict]], None]) -> None:  # fmt: skip
    """Claim and submit groups of cells (one batched model each) while the runner has room, in ``order``
    (``"grid"``: as given; ``"cost"``; ``"sweeps"``: by the least ``rank`` of a group's cells, else as given); collect
    results (``record``); wait for the cells other sweeps hold (``finished(key)`` once another sweep has stored
    one). Under a time limit, ``decide`` starts, keeps waiting or drops each group (``dropped(group)``), and no more
    groups are submitted than the runner trains at once (a queued group would start later than decided)."""
    waiting = group_cells(todo)  # not yet claimed by this sweep
    if order == "cost":
        waiting.sort(key=cell_cost, reverse=True)
    elif order == "sweeps":
        waiting.sort(key=lambda g: min(rank[cell_key(c)] for c in g))  # (a stable sort: grid order within)
    while (waiting or runner.busy()) and not (stop is not None and stop.is_set()):
        still = []
        for group in waiting:
            verdict = "start" if decide is None else decide(group, runner.busy())
            if verdict == "drop":
                dropped(group)
                continue
            room = runner.has_room() and (decide is None or runner.in_flight() < runner.parallel)
            if verdict == "wait" or not room:
                still.append(group)
                continue
            claimed, taken = [], []
            for config in group:
                state = store.claim(cell_key(config), owner, lease)
                if state == "claimed":
                    claimed.append(config)
                elif state == "done":  # another sweep finished it (counted as by_others at the end)
                    finished(cell_key(config))
                else:
                    taken.append(config)  # a live claim of another sweep: look again later
            if claimed:
                runner.submit(claimed)
            if taken:
                still.append(taken)
        waiting = still
        if runner.busy():
            for config, result in runner.collect(timeout=min(lease / 4, 5.0)):
                record(config, result)
        elif waiting:
            time.sleep(min(lease / 4, 2.0))  # only cells another sweep holds: wait for them (or for their lease)


def grid_table(results: list[dict], x: str) -> tuple[list, list, list[list[float]]]:
    """(x values, depths, accuracy[depth][x]) averaged over seeds; NaN-free: missing cells are None."""
    missing = [r["key"][:12] for r in results if x not in r["config"]]
    if missing:
        raise InputError(f"store: cell {missing[0]} has no {x!r} in its configuration (the sweep's x axis)")
    xs = sorted({r["config"][x] for r in results}, key=_sort_key)
    depths = sorted({r["config"]["depth"] for r in results})
    cells: dict[tuple, list[float]] = {}
    for r in results:
        cells.setdefault((r["config"][x], r["config"]["depth"]), []).append(r["result"]["test_accuracy"])
    table = [[(sum(v) / len(v)) if (v := cells.get((xv, d))) else None for xv in xs] for d in depths]
    return xs, depths, table


def _sort_key(value):
    return (0, value) if isinstance(value, int | float) and math.isfinite(value) else (1, str(value))
