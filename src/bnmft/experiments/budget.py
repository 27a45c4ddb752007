"""The training-budget study: does the trainable edge of ReLU-BN networks converge to the theory's 16 / ln lambda_G
line as training gets longer, and does it depend on the learning rate and optimiser? (docs/budget.md)

Torch-free: this module declares the study's sweeps (run by :func:`bnmft.experiments.sweep.run_sweep`, resumable
through the store) and analyses stored results. Per column (a batch size, or a ghost-batch size), optimiser and
training budget, every seed gives one crossing depth - where its test accuracy falls through halfway between chance
and a shallow reference network's accuracy (:func:`bnmft.experiments.agreement.column_edge`, the heatmaps' rule);
the seeds give the crossing's mean and standard error. Per column and optimiser the crossings against the number of
SGD steps give the trend: the increments between budgets (4x apart), their ratio r and, where 0 < r < 1, the
geometric (Aitken) limit ``d_3 + Delta_2 r / (1 - r)``, with a bootstrap over the seeds for its uncertainty.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import InputError
from .agreement import MIN_GAIN, column_edge, theory_depth_for
from .sweep import Sweep, parse_sweep

#: optimisers: label -> (optimizer, learning rate)
OPTIMIZERS = {
    "sgd": ("sgd", "1e-3*B"),
    "sgd_paper": ("sgd", "1e-5*B"),
    "rmsprop": ("rmsprop", "1e-5*B"),
}
#: optimisers trained over the whole depth grid only where a seed's shallow anchor network learns at that budget
#: (SGD at the paper's rate stays near chance at the quick budget: the issue asks for it "where it trains at all")
PROBED = ("sgd_paper",)
#: a trend converges where at least this fraction of the bootstrap draws has 0 < r < 1 (one-sided 84%: 1 sigma)
CONVERGE_FRACTION = 0.84
BOOTSTRAP_DRAWS = 2000


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


def column_theory(plan: BudgetPlan, column: str) -> float:
    """The theory's maximum trainable depth of a column (16 / ln lambda_G at its batch or ghost size and eps)."""
    config = {"phi": "relu", "eps": 1e-3, **plan.base, **plan.columns[column]}
    depth = theory_depth_for(config, "batch_size", config["batch_size"])
    if depth is None or not math.isfinite(depth):
        raise InputError(f"column {column!r}: no finite theory depth")
    return depth


def depth_grid(plan: BudgetPlan, column: str) -> list[int]:
    """The anchor, then every ``depth_step`` layers from ``depth_range[0]`` to ``depth_range[1]`` x the theory."""
    line = column_theory(plan, column)
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
                    "grid": {"depth": depth_grid(plan, column)},
                }  # fmt: skip
                raw["base"].pop("batch_size")
                raw["grid"]["batch_size"] = [fields_["batch_size"]]
                sweeps.append((label, parse_sweep(raw)))
    return sweeps


def anchor_only(sweep: Sweep, plan: BudgetPlan) -> Sweep:
    """The sweep's shallow anchor cells only (one per seed): the probe of a :data:`PROBED` optimiser."""
    return replace(sweep, grid={**sweep.grid, "depth": [plan.anchor_depth]})


def anchor_learns(results: list[dict], plan: BudgetPlan) -> bool:
    """Whether any seed's anchor network clears chance by :data:`~bnmft.experiments.agreement.MIN_GAIN`."""
    return any(r["result"]["test_accuracy"] >= 0.1 + MIN_GAIN for r in results
               if r["config"]["depth"] == plan.anchor_depth)  # fmt: skip


def seed_crossings(plan: BudgetPlan, results: dict[str, list[dict]]) -> list[dict]:
    """One row per (column, optimiser and rate, budget, seed) with stored results: the crossing depth and whether the
    seed's reference network learned at all; ``results`` maps sweep names to ``Store.results`` lists."""
    rows = []
    for factor in sorted(plan.budgets):
        for column in plan.columns:
            line = column_theory(plan, column)
            for label in plan.optimizers:
                optimizer, lr = OPTIMIZERS[label]
                cells = results.get(sweep_name(column, factor, label), [])
                for seed in plan.seeds:
                    mine = sorted((c for c in cells if c["config"]["seed"] == seed), key=lambda c: c["config"]["depth"])
                    if not mine:
                        continue
                    edge = column_edge([(c["config"]["depth"], c["result"]["test_accuracy"]) for c in mine])
                    rows.append({"column": column, "optimizer": optimizer, "lr": lr, "budget": factor,
                                 "steps": int(np.mean([c["result"]["steps"] for c in mine])), "seed": seed,
                                 "depths": len(mine), "theory_depth": line,
                                 "reference_accuracy": mine[0]["result"]["test_accuracy"], **edge})  # fmt: skip
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per (column, optimiser, rate, budget): the seeds' mean crossing and its standard error (None where fewer than
    two seeds crossed), how many seeds were censored (edge beyond the grid) or did not train."""
    out = []
    for key in dict.fromkeys((r["column"], r["optimizer"], r["lr"], r["budget"]) for r in rows):
        sel = [r for r in rows if (r["column"], r["optimizer"], r["lr"], r["budget"]) == key]
        crossed = [r["crossing_depth"] for r in sel if r["crossing_depth"] is not None]
        mean = float(np.mean(crossed)) if crossed else None
        se = float(np.std(crossed, ddof=1) / math.sqrt(len(crossed))) if len(crossed) >= 2 else None
        line = sel[0]["theory_depth"]
        out.append({"column": key[0], "optimizer": key[1], "lr": key[2], "budget": key[3], "steps": sel[0]["steps"],
                    "seeds": len(sel), "crossed": len(crossed), "censored": sum(r["censored"] for r in sel),
                    "untrained": sum(r["measured_depth"] is None for r in sel), "crossing_mean": mean,
                    "crossing_stderr": se, "theory_depth": line,
                    "ratio": None if mean is None else mean / line})  # fmt: skip
    return out


def _limit(means: list[float]) -> tuple[float | None, float | None]:
    """(r, geometric limit) of the last three means; the limit is None unless 0 < r < 1."""
    d1, d2, d3 = means[-3:]
    step1, step2 = d2 - d1, d3 - d2
    if step1 == 0:
        return None, None
    r = step2 / step1
    return r, (d3 + step2 * r / (1 - r) if 0 < r < 1 else None)


def trend(rows: list[dict], seed: int = 0) -> dict:
    """The crossing against the budget for one (column, optimiser, rate): ``rows`` are its seed rows over the
    budgets. Returns the budgets used (those where every seed crossed), the layers gained per 4x steps (least
    squares in log4 steps), and with three budgets or more the increments' ratio r, the geometric limit with its
    bootstrap standard error and 16-84% interval over the seeds, and the fraction of bootstrap draws with 0 < r < 1."""
    budgets = sorted({r["budget"] for r in rows})
    per = {b: [r["crossing_depth"] for r in rows if r["budget"] == b] for b in budgets}
    usable = [b for b in budgets if per[b] and all(d is not None for d in per[b])]
    out: dict = {"budgets": usable, "means": [float(np.mean(per[b])) for b in usable]}
    steps = {r["budget"]: r["steps"] for r in rows}
    if len(usable) >= 2:
        x = np.log([steps[b] for b in usable]) / math.log(4)
        out["gain_per_4x"] = float(np.polyfit(x, out["means"], 1)[0])
    if len(usable) < 3:
        return out
    r, limit = _limit(out["means"])
    rng = np.random.default_rng(seed)
    draws_r, draws_limit = [], []
    for _ in range(BOOTSTRAP_DRAWS):
        means = [float(np.mean(rng.choice(per[b], size=len(per[b])))) for b in usable[-3:]]
        rb, lb = _limit(means)
        draws_r.append(rb is not None and 0 < rb < 1)
        draws_limit.append(math.inf if lb is None else lb)
    finite = np.array([v for v in draws_limit if math.isfinite(v)])
    out.update(ratio_of_increments=r, limit=limit, converging_fraction=float(np.mean(draws_r)))
    if limit is not None and len(finite) > 1:
        lo, hi = np.quantile(draws_limit, [0.16, 0.84])  # inf draws (no convergence) widen the upper end
        out.update(limit_interval=(float(lo), float(hi)), limit_stderr=float(np.std(finite, ddof=1)))
    return out


def verdict(summary_rows: list[dict], trend_: dict, line: float) -> tuple[str, bool | None]:
    """What the budget study says about one (column, optimiser, rate): ``(text, consistent)``, consistent only where
    the crossing converges (r < 1 in at least :data:`CONVERGE_FRACTION` of the draws) to a limit whose 16-84%
    interval holds the theory's line; None where it does not train or its edge lies beyond the grid."""
    crossed = [s for s in summary_rows if s["crossing_mean"] is not None]
    if not crossed:
        if any(s["censored"] for s in summary_rows):
            return "the edge lies beyond the depth grid at every budget tried", None
        return "does not train within the budgets tried", None
    first, last = crossed[0], crossed[-1]
    if len(crossed) == 1:
        return (f"crossing at {first['crossing_mean']:.1f} ({first['ratio']:.2f} x the line) after {first['steps']} "
                "steps: one budget so far"), None
    moved = (f"the crossing moves from {first['crossing_mean']:.1f} ({first['ratio']:.2f} x the line) at "
             f"{first['steps']} steps to {last['crossing_mean']:.1f} ({last['ratio']:.2f} x) at {last['steps']}")
    if "gain_per_4x" in trend_:
        moved += f", {trend_['gain_per_4x']:+.1f} layers per 4x steps"
    if trend_.get("limit") is None:
        if "ratio_of_increments" in trend_:
            return moved + f"; not converging (ratio of increments {trend_['ratio_of_increments']:.2f})", False
        return moved + " (too few budgets for a limit)", None
    lo, hi = trend_.get("limit_interval", (math.nan, math.nan))
    converges = trend_["converging_fraction"] >= CONVERGE_FRACTION
    text = (f"{moved}; geometric limit {trend_['limit']:.1f} (16-84%: {lo:.1f}-{hi:.1f}; {trend_['limit'] / line:.2f}"
            f" x the line {line:.1f}), increments shrinking in {100 * trend_['converging_fraction']:.0f}% of draws")
    consistent = converges and lo <= line <= hi
    return text, consistent


def analyse(plan: BudgetPlan, results: dict[str, list[dict]]) -> dict:
    """The whole analysis: ``{"seeds", "summary", "trends"}`` (tidy rows); a trend per (column, optimiser, rate)
    with its verdict."""
    seeds = seed_crossings(plan, results)
    summary = summarise(seeds)
    trends = []
    for key in dict.fromkeys((r["column"], r["optimizer"], r["lr"]) for r in seeds):
        mine = [r for r in seeds if (r["column"], r["optimizer"], r["lr"]) == key]
        t = trend(mine)
        line = mine[0]["theory_depth"]
        text, consistent = verdict([s for s in summary if (s["column"], s["optimizer"], s["lr"]) == key], t, line)
        trends.append({"column": key[0], "optimizer": key[1], "lr": key[2], "theory_depth": line, **t,
                       "verdict": text, "consistent": consistent})  # fmt: skip
    return {"seeds": seeds, "summary": summary, "trends": trends}
