"""Benchmark: how well :class:`bnmft.experiments.groups.CostModel` predicts a batched group's wall time.

Reads a sweep store (by default the budget study's, ``docs/budget/sweeps.db``) and predicts every cell as a
time-limited run would have before training it: from the finished cells of its kind (optimiser, batch and ghost size,
width, ...) at smaller training budgets only - the 4x cells from the 1x cells, the 16x cells from the 1x and 4x ones.
Prints, per kind and budget, the ratio actual / estimated (median, min, max) of the groups' wall times. A ratio
above 1 is an underestimate: ``LIMIT_MARGIN`` (1.5) in ``bnmft.experiments.sweep`` covers the usual ones.

The cells' times are whatever the store's machine measured (the budget study: 2 workers on 2 cores, the machine
shared with other work at times), so this is the estimate's accuracy on that history, not a timing of this machine.

Usage: ``.venv/bin/python benchmarks/cost_model.py [--store docs/budget/sweeps.db] [--json]``
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bnmft.experiments.groups import KIND_KEYS, CostModel
from bnmft.experiments.store import Store


def _budget(config: dict) -> int:
    return config["epochs"] * (config.get("train_subset") or 60_000)


def ratios(rows: list[dict]) -> dict[tuple, list[float]]:
    """(kind, budget) -> actual / estimated wall time of each stored group, estimated from smaller budgets."""
    out: dict[tuple, list[float]] = {}
    for row in rows:
        config, result = row["config"], row["result"]
        k = result.get("batched", 1)
        kind = tuple(config.get(key) for key in KIND_KEYS)
        earlier = [r for r in rows if tuple(r["config"].get(key) for key in KIND_KEYS) == kind
                   and _budget(r["config"]) < _budget(config)]  # fmt: skip
        if not earlier or "seconds" not in result:
            continue
        estimate = CostModel(earlier).seconds([config] * k)
        if estimate:
            out.setdefault((kind, _budget(config)), []).append(result["seconds"] * k / estimate)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=str(Path(__file__).resolve().parents[1] / "docs/budget/sweeps.db"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    store = Store(args.store)
    try:
        rows = store.results()
    finally:
        store.close()
    table = [{"kind": dict(zip(KIND_KEYS, kind, strict=True)), "examples_seen": budget, "groups": len(v),
              "median": statistics.median(v), "min": min(v), "max": max(v)}
             for (kind, budget), v in sorted(ratios(rows).items(), key=str)]  # fmt: skip
    if args.json:
        print(json.dumps(table, indent=1))
        return
    print(f"{len(rows)} cells in {args.store}; actual / estimated wall time (estimated from smaller budgets)")
    for t in table:
        kind = ", ".join(f"{k} {v}" for k, v in t["kind"].items() if v is not None)
        print(f"  {kind}; {t['examples_seen']} examples: {t['groups']} cells, median {t['median']:.2f} "
              f"(min {t['min']:.2f}, max {t['max']:.2f})")
    every = [r for v in ratios(rows).values() for r in v]
    if every:
        print(f"all: median {statistics.median(every):.2f}, 10-90%: "
              f"{statistics.quantiles(every, n=10)[0]:.2f}-{statistics.quantiles(every, n=10)[-1]:.2f}")


if __name__ == "__main__":
    main()
