"""A measured agreement, not only a picture: per heatmap column, the deepest network that still trains against the
theory's maximum trainable depth (docs/theory.md sections 8 and 12).

Torch-free (reads stored results). The measured maximum trainable depth of a column is the deepest depth whose test
accuracy is above a threshold halfway between chance and the shallowest network's accuracy in that column (the
paper's heatmaps show a sharp edge: where it sits hardly depends on the exact level); a column whose shallowest
network is less than MIN_GAIN above chance has no measured depth. The theory's depth is
``16 / ln max(lambda_G, lambda_W)`` at the column's settings (batch size or ghost size, gamma, beta, eps, sigma_w).
"""

from __future__ import annotations

import math
import statistics
import warnings

from ..errors import InputError
from ..meanfield import residual_theory, theory
from .sweep import grid_table

#: the fraction of the way from chance to the shallowest accuracy that counts as "trains"
THRESHOLD_FRACTION = 0.5
#: a column whose shallowest network is not this much above chance does not train at all (no measured depth)
MIN_GAIN = 0.1


def theory_depth_for(config: dict, x: str, value) -> float | None:
    """The theory's maximum trainable depth for a training cell (``x`` set to ``value``): 16 / ln of the larger of
    lambda_G and lambda_W at the cell's eps and sigma_w (docs/theory.md sections 6 and 8; at eps -> 0 this is the
    paper's 16 / ln lambda_G line); ``inf`` where no gradient explodes; None for batch sizes below 4.

    Residual cells (``branch_depth`` >= 1, in blocks): the deepest network whose gradient grows by at most e^16 from
    the last block to the first (:func:`bnmft.residual_theory`) - the stream starts as ``BN(W_0 x)``, centred variance
    gamma^2 per neuron (its shape taken as BSB1), and ends in a BN, so the output gradient is centred."""
    cfg = dict(config, **{x: value})
    b = cfg.get("ghost_size") or cfg["batch_size"]
    if b < 4:
        return None
    params = {"alpha": cfg["alpha"]} if cfg.get("alpha") is not None else {}
    if cfg.get("branch_depth"):
        try:
            res = residual_theory(
                cfg["phi"],
                b,
                depth=1,
                branch_depth=cfg["branch_depth"],
                branch_scale=cfg.get("branch_scale", 1.0),
                gamma=cfg.get("gamma", 1.0),
                beta=cfg.get("beta", 0.0),
                eps=cfg.get("eps", 0.0),
                sigma_w=cfg.get("sigma_w", 1.0),
                input_variance=cfg.get("gamma", 1.0) ** 2 * b / (b - 1),
                output_gradient="centred",
                **params,
            )
        except InputError as err:
            warnings.warn(f"no theory depth for {x} = {value!r}: {err}", stacklevel=2)
            return None
        return math.inf if res.max_trainable_depth is None else float(res.max_trainable_depth)
    try:
        r = theory(
            cfg["phi"],
            b,
            gamma=cfg.get("gamma", 1.0),
            beta=cfg.get("beta", 0.0),
            eps=cfg.get("eps", 0.0),
            sigma_w=cfg.get("sigma_w", 1.0),
            **params,
        )
    except InputError as err:  # no theory for this cell (e.g. a constant phi): the heatmap says so, no line
        warnings.warn(f"no theory depth for {x} = {value!r}: {err}", stacklevel=2)
        return None
    return r.max_trainable_depth


def trainable_depths(results: list[dict], x: str, *, chance: float = 0.1) -> list[dict]:
    """One row per column of a sweep's heatmap.

    Args:
        results: stored cells (``Store.results``).
        x: the heatmap's horizontal axis.
        chance: the accuracy of guessing (0.1 for the ten-class data sets).

    Returns:
        Rows ``{x, threshold, measured_depth, crossing_depth, theory_depth, ratio, crossing_ratio, censored}``:
        ``measured_depth`` is the deepest grid depth above the threshold (None when even the shallowest network
        does not clear it); ``crossing_depth`` interpolates, linearly in log depth, where the accuracy falls through
        the threshold between that depth and the next one (less biased by a coarse grid); ``censored`` is True when
        the deepest network of the grid still trains (the edge lies beyond the grid: the depths are lower bounds);
        ``ratio`` and ``crossing_ratio`` are measured / theory where both are finite.
    """
    xs, depths, table = grid_table(results, x)
    base = results[0]["config"]
    rows = []
    for j, value in enumerate(xs):
        edge = column_edge([(d, row[j]) for d, row in zip(depths, table, strict=True) if row[j] is not None], chance)
        measured, crossing = edge["measured_depth"], edge["crossing_depth"]
        predicted = theory_depth_for(base, x, value)
        finite = predicted is not None and math.isfinite(predicted) and predicted > 0
        rows.append(
            {
                "x": value,
                **edge,
                "theory_depth": predicted,
                "ratio": measured / predicted if measured is not None and finite else None,
                "crossing_ratio": crossing / predicted if crossing is not None and finite else None,
            }
        )
    return rows


def column_edge(column: list[tuple[int, float]], chance: float = 0.1) -> dict:
    """Where one column's accuracy falls through the threshold (the rule of :func:`trainable_depths`).

    Args:
        column: ``(depth, test accuracy)`` pairs in increasing depth (the first is the reference shallow network).
        chance: the accuracy of guessing.

    Returns:
        ``{threshold, measured_depth, crossing_depth, censored}``: the threshold halfway from chance to the shallowest
        accuracy (None for an empty column), the deepest depth above it (None when the shallowest network is less
        than :data:`MIN_GAIN` above chance), the crossing interpolated linearly in log depth to the next depth (None
        when censored or nothing trains), and whether the deepest depth still trains.
    """
    shallow = column[0][1] if column else None
    threshold = None if shallow is None else chance + THRESHOLD_FRACTION * (shallow - chance)
    learns = shallow is not None and shallow >= chance + MIN_GAIN
    trained = [i for i, (_, acc) in enumerate(column) if learns and threshold is not None and acc > threshold]
    censored = bool(trained) and trained[-1] == len(column) - 1
    crossing = None
    if trained and not censored:
        (d0, a0), (d1, a1) = column[trained[-1]], column[trained[-1] + 1]
        f = (a0 - threshold) / (a0 - a1) if a0 != a1 else 0.0
        crossing = math.exp(math.log(d0) + f * (math.log(d1) - math.log(d0)))
    return {
        "threshold": threshold,
        "measured_depth": column[trained[-1]][0] if trained else None,
        "crossing_depth": crossing,
        "censored": censored,
    }


def median_ratio(rows: list[dict], key: str = "crossing_ratio") -> float | None:
    """The median of a table's finite ratios (``"crossing_ratio"`` or ``"ratio"``), leaving out censored columns
    (whose edge lies beyond the grid); None if there is none."""
    ratios = [r[key] for r in rows if r[key] is not None and not r["censored"]]
    return statistics.median(ratios) if ratios else None


__all__ = ["MIN_GAIN", "THRESHOLD_FRACTION", "column_edge", "median_ratio", "theory_depth_for", "trainable_depths"]
