"""The training-budget study: does the trainable edge of ReLU-BN networks converge to the theory's 16 / ln lambda_G
line as training gets longer, and does it depend on the learning rate and optimiser? (docs/budget.md)

Torch-free: this module declares the study's sweeps (run by :func:`bnmft.experiments.sweep.run_sweep`, resumable
through the store) and analyses stored results. Per column (a batch size, or a ghost-batch size), optimiser and
training budget, every seed gives one crossing depth - where its test accuracy falls through halfway between chance
and a shallow reference network's accuracy (:func:`bnmft.experiments.agreement.column_edge`, the heatmaps' rule);
the seeds give the crossing's mean and standard error. Only cells on the plan's depth grid count; a seed without
its anchor cell has no crossing, and a seed is censored only once its whole grid is stored. Per column and
optimiser the crossings against the number of SGD steps give the trend, from the budgets where every seed's grid
is complete and crosses on the grid (the others are named): the increments between budgets (4x apart), their ratio
r and, where -1 < r < 1, the geometric (Aitken) limit ``d_3 + Delta_2 r / (1 - r)``, with a paired bootstrap over
the seeds for its uncertainty.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import InputError
from .agreement import column_edge, theory_depth_for
from .config import TrainConfig, check_config
from .store import cell_key
from .sweep import Sweep, parse_sweep, read_toml

#: optimisers: label -> (optimizer, learning rate)
OPTIMIZERS = {
    "sgd": ("sgd", "1e-3*B"),
    "sgd_paper": ("sgd", "1e-5*B"),
    "rmsprop": ("rmsprop", "1e-5*B"),
}
#: optimisers trained over the whole depth grid only where a seed's shallow anchor network learns at that budget
#: (SGD at the paper's rate stays near chance at the quick budget: the issue asks for it "where it trains at all")
PROBED = ("sgd_paper",)
#: a trend converges where at least this fraction of the bootstrap draws has -1 < r < 1 (one-sided 84%: 1 sigma)
CONVERGE_FRACTION = 0.84
#: a limit is judged against the line only where its 16-84% interval is at most this fraction of the line wide
#: (7 layers at B = 8): a wider interval would hold the line whatever the edge does (docs/budget.md, the rule)
MAX_INTERVAL_FRACTION = 0.25
BOOTSTRAP_DRAWS = 2000
#: a plan's depth grid ends at most this many times a column's theory depth
MAX_DEPTH_RANGE = 10.0


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class BudgetPlan:
    """One budget study.

    Attributes:
        columns: name -> the column's fixed fields (``batch_size``, optionally ``ghost_size``).
        budgets: factor -> ``(epochs, train_subset)``; factor 1 is the quick preset's budget (1 epoch on 5000).
        seeds: every cell repeated with these seeds.
        depth_range, depth_step: the depth grid spans ``depth_range`` times the column's theory depth, every
            ``depth_step`` layers, plus the shallow reference ``anchor_depth`` first.
        base: the fields every cell shares (data set, width, test subset, eps, ...).
        optimizers: labels of :data:`OPTIMIZERS`.
    """

    columns: dict[str, dict]
    budgets: dict[int, tuple[int, int]]
    seeds: tuple[int, ...]
    depth_range: tuple[float, float] = (0.6, 1.6)
    depth_step: int = 4
    anchor_depth: int = 8
    base: dict = field(default_factory=lambda: {"dataset": "mnist", "test_subset": 1000})
    optimizers: tuple[str, ...] = ("sgd", "sgd_paper", "rmsprop")

    def __post_init__(self) -> None:
        for name in ("columns", "budgets", "seeds", "optimizers"):
            if not getattr(self, name):
                raise InputError(f"BudgetPlan {name}: at least one is required")
        unknown = [label for label in self.optimizers if label not in OPTIMIZERS]
        if unknown:
            raise InputError(f"BudgetPlan optimizers: unknown {unknown[0]!r} (allowed: {', '.join(OPTIMIZERS)})")
        for name in ("depth_step", "anchor_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InputError(f"BudgetPlan {name} must be a positive integer, got {value!r}")
        owned = ("optimizer", "lr", "epochs", "train_subset", "seed", "depth")  # the plan's own, per cell
        for column, fields_ in self.columns.items():
            if not isinstance(column, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", column):
                raise InputError(f"BudgetPlan columns: a column's name is letters, digits, _ . - (got {column!r})")
            if not isinstance(fields_, dict) or not _is_int(fields_.get("batch_size")):
                raise InputError(f"BudgetPlan columns.{column}: a table with an integer batch_size (and optionally "
                                 "ghost_size or other fields of a training run)")  # fmt: skip
            mine = sorted(set(fields_) & set(owned))
            if mine:
                raise InputError(f"BudgetPlan columns.{column}.{mine[0]}: set by the plan itself (budgets, "
                                 "optimizers, seeds, the depth grid)")  # fmt: skip
        if len(set(self.optimizers)) != len(self.optimizers):
            raise InputError(f"BudgetPlan optimizers: each once, got {list(self.optimizers)}")
        factors = sorted(self.budgets)
        if not all(_is_int(f) and f > 0 for f in factors):
            raise InputError(f"BudgetPlan budgets: the factors must be positive integers, got {factors}")
        if len(factors) > 2 and len({factors[i + 1] / factors[i] for i in range(len(factors) - 1)}) > 1:
            raise InputError(f"BudgetPlan budgets: the factors must grow by one ratio (e.g. 1, 4, 16: the limit "
                             f"assumes equal steps in log budget), got {factors}")  # fmt: skip
        for factor, value in self.budgets.items():
            if not (isinstance(value, tuple | list) and len(value) == 2 and all(_is_int(v) for v in value)):
                raise InputError(f"BudgetPlan budgets.{factor}: (epochs, train_subset), two integers, got {value!r}")
        first = factors[0]
        seen = {f: self.budgets[f][0] * self.budgets[f][1] for f in factors}  # examples seen
        if any(seen[f] * first != seen[first] * f for f in factors):
            raise InputError(f"BudgetPlan budgets: the examples seen (epochs x train_subset) must be proportional to "
                             f"the factors, got {seen}")  # fmt: skip
        rng = self.depth_range
        if (not isinstance(rng, tuple | list) or len(rng) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in rng)
                or not 0 < rng[0] < rng[1] <= MAX_DEPTH_RANGE):  # fmt: skip
            raise InputError(f"BudgetPlan depth_range: (low, high) times the theory's depth, 0 < low < high <= "
                             f"{MAX_DEPTH_RANGE:g}, got {rng!r}")  # fmt: skip
        owned = sorted(set(self.base) & {"batch_size", "optimizer", "lr", "epochs", "train_subset", "seed", "depth"})
        if owned:
            raise InputError(f"BudgetPlan base.{owned[0]}: set by the plan itself (columns, budgets, optimizers, "
                             "seeds, the depth grid)")  # fmt: skip


PLANS = {
    # Fig 3a's columns B = 8 and 32 and Fig 3b's ghost column 8 (batch 128); 1x = the quick preset's 1 epoch on 5k
    "full": BudgetPlan(
        columns={"B8": {"batch_size": 8}, "B32": {"batch_size": 32}, "ghost8": {"batch_size": 128, "ghost_size": 8}},
        budgets={1: (1, 5000), 4: (2, 10000), 16: (4, 20000)},
        seeds=(0, 1, 2),
    ),
    # a smoke run (tests, minutes on 2 cores): narrow networks, a coarse grid, two budgets
    "tiny": BudgetPlan(
        columns={"B8": {"batch_size": 8}},
        budgets={1: (1, 200), 4: (2, 400)},
        seeds=(0, 1),
        depth_step=8,
        anchor_depth=4,
        base={"dataset": "mnist", "test_subset": 200, "width": 32},
        optimizers=("sgd", "sgd_paper"),
    ),
}


#: the keys of a plan file (docs/budget.md, "Your own plan")
PLAN_KEYS = ("columns", "budgets", "seeds", "depth_range", "depth_step", "anchor_depth", "base", "optimizers")


def load_plan(source: str) -> BudgetPlan:
    """A plan by name (:data:`PLANS`: ``full``, ``tiny``) or from a TOML file of :data:`PLAN_KEYS` (docs/budget.md):
    ``[columns.NAME]`` tables (``batch_size``, optionally ``ghost_size``, ``phi``, ...), ``[budgets]`` factor = [epochs,
    train_subset], ``seeds``, ``optimizers`` (labels of :data:`OPTIMIZERS`), ``[base]`` fields shared by every cell,
    ``depth_range``, ``depth_step``, ``anchor_depth``. Every cell is checked (and every column's theory depth
    computed) before anything trains; InputError names the offending key."""
    if source in PLANS:
        return PLANS[source]
    raw = read_toml(source, "plan", f"a plan file (TOML) or one of {', '.join(PLANS)}")
    unknown = sorted(set(raw) - set(PLAN_KEYS))
    if unknown:
        raise InputError(f"plan: unknown key {unknown[0]!r} (allowed: {', '.join(PLAN_KEYS)})")
    missing = [k for k in ("columns", "budgets", "seeds") if k not in raw]
    if missing:
        raise InputError(f"plan: {missing[0]!r} is required (columns, budgets and seeds are)")
    fields_: dict = dict(raw)
    for name in ("columns", "base", "budgets"):
        if name in raw and not isinstance(raw[name], dict):
            raise InputError(f"plan: {name} must be a table")
    factors = {}
    for key, value in raw["budgets"].items():
        if not key.strip().isdigit() or str(int(key)) != key.strip():
            raise InputError(f"plan: budgets.{key}: a factor is a positive integer written plainly (1, 4, 16)")
        factors[int(key)] = tuple(value) if isinstance(value, list) else value
    fields_["budgets"] = factors
    kinds = {"seeds": (int, "integers >= 0"), "optimizers": (str, f"labels ({', '.join(OPTIMIZERS)})"),
             "depth_range": ((int, float), "two numbers")}  # fmt: skip
    for name, (kind, what) in kinds.items():
        if name in raw:
            value = raw[name]
            if not isinstance(value, list) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
                raise InputError(f"plan: {name} must be an array of {what}, got {value!r}")
            if name != "depth_range" and len(set(value)) != len(value):
                raise InputError(f"plan: {name} repeats a value ({value})")
            fields_[name] = tuple(value)
    if any(seed < 0 for seed in fields_["seeds"]):
        raise InputError(f"plan: seeds must be integers >= 0, got {list(fields_['seeds'])}")
    try:
        plan = BudgetPlan(**fields_)
    except InputError as err:
        raise InputError(f"plan: {str(err).removeprefix('BudgetPlan ')}") from None
    for column, own in plan.columns.items():  # a column's own fields first: then its theory depth can be asked
        try:
            check_config(TrainConfig(**{**plan.base, **own}))
        except (InputError, TypeError) as err:  # TypeError: a key TrainConfig does not take
            raise InputError(f"plan: columns.{column}: {err}") from None
        if len(_grid(plan, column)) < 3:
            raise InputError(f"plan: columns.{column}: its depth grid has fewer than 2 depths past the anchor "
                             f"({_grid(plan, column)}): widen depth_range or lower anchor_depth")  # fmt: skip
    try:
        sweeps = budget_sweeps(plan)  # every cell checked
    except InputError as err:
        raise InputError(f"plan: {str(err).removeprefix('config: ')}") from None
    keys: dict[str, str] = {}
    for _, sweep in sweeps:
        for cell in sweep.cells():
            other = keys.setdefault(cell_key(cell), sweep.name)
            if other != sweep.name:
                raise InputError(f"plan: {other} and {sweep.name} train the same cells (two columns or budgets "
                                 "alike): give each its own fields")  # fmt: skip
    return plan


def _check_column(plan: BudgetPlan, column: str) -> None:
    if column not in plan.columns:
        raise InputError(f"column: no column {column!r} in the plan (it has: {', '.join(plan.columns)})")


def column_theory(plan: BudgetPlan, column: str) -> float:
    """The theory's maximum trainable depth of a column (16 / ln lambda_G at its batch or ghost size and eps)."""
    _check_column(plan, column)
    return _line(plan, column)


def _line(plan: BudgetPlan, column: str) -> float:
    # the column's cells share everything the theory reads (phi, eps, gamma, ...): the training defaults under the
    # plan's base and the column's fields
    config = TrainConfig(**{**plan.base, **plan.columns[column]}).to_dict()
    depth = theory_depth_for(config, "batch_size", config["batch_size"])
    if depth is None or not math.isfinite(depth):
        raise InputError(f"column {column!r}: no finite theory depth")
    return depth


def depth_grid(plan: BudgetPlan, column: str) -> list[int]:
    """The anchor, then every ``depth_step`` layers from ``depth_range[0]`` to ``depth_range[1]`` x the theory."""
    _check_column(plan, column)
    return _grid(plan, column)


def _grid(plan: BudgetPlan, column: str) -> list[int]:
    line = _line(plan, column)
    lo, hi = (math.floor(plan.depth_range[0] * line), math.ceil(plan.depth_range[1] * line))
    grid = list(range(lo, hi + plan.depth_step, plan.depth_step))
    return [plan.anchor_depth, *[d for d in grid if d > plan.anchor_depth]]


def sweep_name(column: str, factor: int, optimizer: str) -> str:
    return f"budget_{column}_{factor}x_{optimizer}"


def budget_sweeps(plan: BudgetPlan) -> list[tuple[str, Sweep]]:
    """The study's sweeps with their optimiser labels, the smallest budget first (a partial run answers for the
    budgets it reached). A label of :data:`PROBED` is run first as :func:`anchor_only`."""
    sweeps = []
    for factor, (epochs, train) in sorted(plan.budgets.items()):
        for column, fields_ in plan.columns.items():
            for label in plan.optimizers:
                optimizer, lr = OPTIMIZERS[label]
                raw = {
                    "name": sweep_name(column, factor, label),
                    "description": f"budget study: column {column}, {factor}x the quick budget ({epochs} epoch(s) on "
                    f"{train}), {optimizer} lr {lr}",
                    "x": "batch_size",
                    "seeds": list(plan.seeds),
                    "base": {**plan.base, **fields_, "optimizer": optimizer, "lr": lr, "epochs": epochs,
                             "train_subset": train},
                    "grid": {"depth": _grid(plan, column)},
                }  # fmt: skip
                raw["base"].pop("batch_size")
                raw["grid"]["batch_size"] = [fields_["batch_size"]]
                sweeps.append((label, parse_sweep(raw)))
    return sweeps


def anchor_only(sweep: Sweep, plan: BudgetPlan) -> Sweep:
    """The sweep's shallow anchor cells only (one per seed): the probe of a :data:`PROBED` optimiser."""
    return replace(sweep, grid={**sweep.grid, "depth": [plan.anchor_depth]})


def anchor_learns(results: list[dict], plan: BudgetPlan) -> bool:
    """Whether any seed's anchor network learns by the heatmaps' rule: the anchor alone, as a column of
    :func:`~bnmft.experiments.agreement.column_edge`, has a measured depth (it clears chance by ``MIN_GAIN``)."""
    return any(column_edge([(plan.anchor_depth, r["result"]["test_accuracy"])])["measured_depth"] is not None
               for r in results if r["config"]["depth"] == plan.anchor_depth)  # fmt: skip


def _seed_crossings(plan: BudgetPlan, results: dict[str, list[dict]]) -> list[dict]:
    """One row per (column, optimiser and rate, budget, seed) of every sweep with a stored cell on the plan's grid:
    the crossing depth by the heatmaps' rule and the seed's state; ``results`` maps sweep names to ``Store.results``
    lists. A seed is ``complete`` once its whole grid is stored, or its anchor does not learn (``untrained``: final);
    one without its anchor has no crossing; an incomplete one has a provisional crossing from the grid's stored
    prefix and is never censored; ``below_grid``: the crossing lies between the anchor and the grid's first depth."""
    rows = []
    for factor in sorted(plan.budgets):
        for column in plan.columns:
            line, grid = _line(plan, column), _grid(plan, column)
            for label in plan.optimizers:
                optimizer, lr = OPTIMIZERS[label]
                cells = [c for c in results.get(sweep_name(column, factor, label), []) if c["config"]["depth"] in grid]
                if not cells:
                    continue
                steps = int(np.mean([c["result"]["steps"] for c in cells]))
                bottom = grid[1] if len(grid) > 1 else grid[0]  # the grid's first depth after the anchor
                for seed in plan.seeds:
                    mine = {c["config"]["depth"]: c["result"]["test_accuracy"] for c in cells
                            if c["config"]["seed"] == seed}  # fmt: skip
                    row = {"column": column, "optimizer": optimizer, "lr": lr, "budget": factor, "steps": steps,
                           "seed": seed, "depths": len(mine), "theory_depth": line, "grid_bottom": bottom,
                           "grid_top": grid[-1], "reference_accuracy": mine.get(plan.anchor_depth)}  # fmt: skip
                    prefix = []  # the grid's stored depths up to the first missing one
                    for d in grid:
                        if d not in mine:
                            break
                        prefix.append((d, mine[d]))
                    edge = column_edge(prefix)
                    untrained = bool(prefix) and edge["measured_depth"] is None
                    complete = untrained or len(prefix) == len(grid)
                    if not complete and edge["censored"]:  # beyond the depths stored so far, not beyond the grid
                        edge = {**edge, "censored": False}
                    below = edge["crossing_depth"] is not None and edge["measured_depth"] == plan.anchor_depth
                    rows.append({**row, **edge, "complete": complete, "untrained": untrained, "below_grid": below})
    return rows


def _summarise(rows: list[dict]) -> list[dict]:
    """Per (column, optimiser, rate, budget): the seeds' mean crossing and its standard error (None where fewer than
    two seeds crossed, or where a crossing lies below the grid: interpolated across the gap after the anchor), how
    many seeds were censored (edge beyond the grid), did not train, crossed below the grid, or are incomplete (a
    ``partial`` row: its crossings are provisional)."""
    out = []
    for key in dict.fromkeys((r["column"], r["optimizer"], r["lr"], r["budget"]) for r in rows):
        sel = [r for r in rows if (r["column"], r["optimizer"], r["lr"], r["budget"]) == key]
        crossed = [r["crossing_depth"] for r in sel if r["crossing_depth"] is not None]
        below = sum(r["below_grid"] for r in sel)
        incomplete = sum(not r["complete"] for r in sel)
        mean = float(np.mean(crossed)) if crossed else None
        se = float(np.std(crossed, ddof=1) / math.sqrt(len(crossed))) if len(crossed) >= 2 and not below else None
        line = sel[0]["theory_depth"]
        out.append({"column": key[0], "optimizer": key[1], "lr": key[2], "budget": key[3], "steps": sel[0]["steps"],
                    "seeds": len(sel), "crossed": len(crossed), "censored": sum(r["censored"] for r in sel),
                    "untrained": sum(r["untrained"] for r in sel), "below_grid": below, "incomplete": incomplete,
                    "partial": incomplete > 0, "crossing_mean": mean, "crossing_stderr": se, "theory_depth": line,
                    "ratio": None if mean is None else mean / line, "grid_bottom": sel[0]["grid_bottom"],
                    "grid_top": sel[0]["grid_top"]})  # fmt: skip
    return out


def _limit(means: list[float]) -> tuple[float | None, float | None]:
    """(r, geometric limit) of the last three means; the limit is None unless -1 < r < 1 (where the geometric sum
    of the later increments, ``Delta_2 r / (1 - r)``, converges: r <= 0 is a crossing that has settled, its second
    increment noise about zero); r is None where the first increment is zero."""
    d1, d2, d3 = means[-3:]
    step1, step2 = d2 - d1, d3 - d2
    if step1 == 0:
        return None, None
    r = step2 / step1
    return r, (d3 + step2 * r / (1 - r) if -1 < r < 1 else None)


def _trend(rows: list[dict], seed: int = 0) -> dict:
    """The crossing against the budget for one (column, optimiser, rate): ``rows`` are its seed rows over the
    budgets (keys budget, steps, seed, crossing_depth, complete, censored, untrained, below_grid).

    Returns the budgets used - those where every seed is complete and crossed on the grid - with their mean
    crossings, the others in ``dropped`` (``"4x"`` -> why: "2 censored", "1 incomplete", ...); the layers gained per
    4x steps (least squares in log4 steps); and where the last three budgets used are consecutive, the increments'
    ratio r, the geometric limit with its 16-84% interval (``hi`` None: unbounded) over a paired bootstrap of the
    seeds (one draw of seeds applied to every budget: the seeds are shared across budgets), the fraction of draws
    with -1 < r < 1, and the number of draws without a limit (counted as unbounded)."""
    budgets = sorted({r["budget"] for r in rows})
    per = {b: [r for r in rows if r["budget"] == b] for b in budgets}
    usable, dropped = [], {}
    for b in budgets:
        counts = {"incomplete": sum(not r["complete"] for r in per[b]),
                  "censored": sum(r["censored"] for r in per[b] if r["complete"]),
                  "untrained": sum(r["untrained"] for r in per[b]),
                  "below the grid": sum(r["below_grid"] for r in per[b] if r["complete"])}  # fmt: skip
        if any(counts.values()):
            dropped[f"{b}x"] = ", ".join(f"{n} {why}" for why, n in counts.items() if n)
        else:
            usable.append(b)
    crossing = {b: {r["seed"]: r["crossing_depth"] for r in per[b]} for b in usable}
    out: dict = {"budgets": usable, "means": [float(np.mean(list(crossing[b].values()))) for b in usable],
                 "dropped": dropped}  # fmt: skip
    steps = {r["budget"]: r["steps"] for r in rows}
    if len(usable) >= 2:
        x = np.log([steps[b] for b in usable]) / math.log(4)
        out["gain_per_4x"] = float(np.polyfit(x, out["means"], 1)[0])
    last = usable[-3:]
    if len(last) < 3 or budgets.index(last[-1]) - budgets.index(last[0]) != 2:
        return out
    r, limit = _limit(out["means"])
    seeds = sorted(set.intersection(*(set(crossing[b]) for b in last)))
    table = np.array([[crossing[b][s] for s in seeds] for b in last])  # budget x seed
    picks = np.random.default_rng(seed).integers(0, len(seeds), size=(BOOTSTRAP_DRAWS, len(seeds)))
    draws = table[:, picks].mean(axis=2)  # budget x draw: every budget resampled with the same seeds
    limits = np.array([math.inf if lb is None else lb for lb in (_limit(list(d))[1] for d in draws.T)])
    out.update(ratio_of_increments=r, limit=limit, converging_fraction=float(np.mean(np.isfinite(limits))),
               unbounded_draws=int(np.sum(~np.isfinite(limits))))  # fmt: skip
    if limit is not None:  # quantiles of actual draws (no interpolation into inf); inf -> None: unbounded
        lo, hi = (float(q) for q in np.quantile(limits, [0.16, 0.84], method="inverted_cdf"))
        out["limit_interval"] = tuple(v if math.isfinite(v) else None for v in (lo, hi))
    return out


def _state(s: dict) -> str:
    """One budget's summary row in words."""
    if s["untrained"] == s["seeds"]:
        said = "does not train"
    elif s["crossed"] and s["below_grid"] == s["crossed"]:
        said = f"crossing < {s['grid_bottom']} (below the grid)"
    elif s["crossing_mean"] is not None:
        said = f"crossing {s['crossing_mean']:.1f} ({s['ratio']:.2f} x the line)"
    elif 2 * s["censored"] > s["seeds"]:
        said = f"edge beyond the grid (> {s['grid_top']})"
    else:
        said = "no crossing yet"
    return f"{s['steps']} steps: {said}" + (f" (partial: {s['incomplete']} of {s['seeds']} seeds incomplete)"
                                             if s["partial"] else "")  # fmt: skip


def _verdict(summary_rows: list[dict], trend_: dict, line: float) -> tuple[str, bool | None]:
    """What the budget study says about one (column, optimiser, rate): ``(text, consistent)``. False where the
    edge lies beyond the grid at the largest budget (most of its seeds censored: past 1.6 x the line), or the
    crossing is not shown to converge (r outside (-1, 1), or -1 < r < 1 in fewer than :data:`CONVERGE_FRACTION` of
    the draws), or its limit's interval misses the line; None where nothing trains, too few budgets are usable, or
    the limit's 16-84% interval is wider than :data:`MAX_INTERVAL_FRACTION` x the line; True where it converges to a
    limit whose interval holds the line. The text names the budgets left out of the trend and why."""
    rows = sorted(summary_rows, key=lambda s: s["budget"])
    at = {s["budget"]: s for s in rows}
    last = rows[-1]
    beyond = 2 * last["censored"] > last["seeds"]
    dropped = {b: why for b, why in trend_.get("dropped", {}).items() if not (beyond and b == f"{last['budget']}x")}
    left_out = "; left out: " + ", ".join(f"{b} ({why})" for b, why in dropped.items()) if dropped else ""
    edge_beyond = (f"at {last['steps']} steps the edge lies beyond the grid (> {last['grid_top']} = "
                   f"{last['grid_top'] / line:.2f} x the line)")  # fmt: skip
    usable, means = trend_.get("budgets", []), trend_.get("means", [])
    if not usable:
        if all(s["untrained"] == s["seeds"] for s in rows):
            tried = ", ".join(str(s["steps"]) for s in rows)
            return f"does not train within the budgets tried ({tried} steps)", None
        if beyond:
            return edge_beyond + left_out, False
        return "no budget with every seed's crossing on the grid: " + "; ".join(_state(s) for s in rows), None
    first, final = at[usable[0]], at[usable[-1]]
    if len(usable) == 1:
        moved = (f"crossing at {means[0]:.1f} ({means[0] / line:.2f} x the line) after {first['steps']} steps: one "
                 "budget so far")  # fmt: skip
    else:
        moved = (f"the crossing moves from {means[0]:.1f} ({means[0] / line:.2f} x the line) at {first['steps']} "
                 f"steps to {means[-1]:.1f} ({means[-1] / line:.2f} x) at {final['steps']}")  # fmt: skip
        if "gain_per_4x" in trend_:
            moved += f", {trend_['gain_per_4x']:+.1f} layers per 4x steps"
    if beyond:
        return f"{moved}; {edge_beyond}{left_out}", False
    if len(usable) == 1:
        return moved + left_out, None
    if "ratio_of_increments" not in trend_:
        few = "too few budgets" if len(usable) < 3 else "too few consecutive budgets"
        return f"{moved} ({few} for a limit){left_out}", None
    r = trend_["ratio_of_increments"]
    if r is None:
        return moved + "; no first increment (no ratio of increments)" + left_out, None
    if trend_.get("limit") is None:
        return moved + f"; not converging (ratio of increments {r:.2f})" + left_out, False
    lo, hi = trend_.get("limit_interval") or (None, None)
    span = "unbounded" if lo is None else f"{lo:.1f}-{'unbounded' if hi is None else f'{hi:.1f}'}"
    shrinking = 100 * trend_["converging_fraction"]
    text = (f"{moved}; geometric limit {trend_['limit']:.1f} (16-84%: {span}; {trend_['limit'] / line:.2f} x the "
            f"line {line:.1f}), increments shrinking in {shrinking:.0f}% of draws")  # fmt: skip
    if trend_["converging_fraction"] < CONVERGE_FRACTION:
        return text + left_out, False
    if lo is None or hi is None or hi - lo > MAX_INTERVAL_FRACTION * line:
        return f"{text}; limit too uncertain ({span}: wider than {MAX_INTERVAL_FRACTION} x the line){left_out}", None
    return text + left_out, lo <= line <= hi


def analyse(plan: BudgetPlan, results: dict[str, list[dict]]) -> dict:
    """The whole analysis: ``{"seeds", "summary", "trends"}`` (tidy rows); a trend per (column, optimiser, rate)
    with its verdict."""
    seeds = _seed_crossings(plan, results)
    summary = _summarise(seeds)
    trends = []
    for key in dict.fromkeys((r["column"], r["optimizer"], r["lr"]) for r in seeds):
        mine = [r for r in seeds if (r["column"], r["optimizer"], r["lr"]) == key]
        t = _trend(mine)
        line = mine[0]["theory_depth"]
        text, consistent = _verdict([s for s in summary if (s["column"], s["optimizer"], s["lr"]) == key], t, line)
        trends.append({"column": key[0], "optimizer": key[1], "lr": key[2], "theory_depth": line, **t,
                       "verdict": text, "consistent": consistent})  # fmt: skip
    return {"seeds": seeds, "summary": summary, "trends": trends}
