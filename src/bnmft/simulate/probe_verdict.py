"""The theory beside each BatchNorm layer of a probed model, and the probe's verdict.

``theory_rate``: the fixed-point lambda_G (:func:`bnmft.theory`'s kernel) for the nonlinearity that follows the
layer along the graph, at the layer's gamma and beta (their means), its eps, the weight scale of the Linear/Conv
before it (``sigma_w^2 = mean(W^2) fan_in``; only ``kappa = eps / sigma_w^2`` matters) and its effective batch:
B for BatchNorm1d, B x positions for BatchNorm2d/3d (the periodic-padding conv theory). It is what a deep stack of
such layers settles to: the rate to compare with a layer deep inside a network. ``local_rate``
(:func:`bnmft.meanfield.local_rate`): the rate at the layer's *measured* state (its measured pre-BN variance against
eps, the actual weight gain), lambda_G at the fixed point and different away from it - after the first layers,
after pooling to small images, with eps comparable to the variance (the collapsed phase).

The verdict: the total ln gradient growth from the last normalisation layer back to the first against the paper's
criterion (16: trainable with SGD when below), the blocks where it concentrates, the repeated unit's predicted
maximum trainable depth (:func:`bnmft.residual_theory` for residual units - ``branch`` ``bn_first`` when the unit's
first layer is a normalisation layer, else ``linear_first``, ``branch_depth`` its number of normalisation layers -
and :func:`bnmft.theory`'s depth divided by that number for plain ones, at the setting of the unit's first
BatchNorm layer: its phi, effective batch, eps, gamma, beta and sigma_w; a model without repeated blocks, a VGG,
counts as a plain stack of its BatchNorm layers at the setting of the one with the largest ``theory_rate``, named
in ``setting_of``) and the depth planner's changes
(:func:`bnmft.design` at that setting) with their predicted effect, for a target depth of the current number of
units when the network is not trainable, four times it when it is.
"""

from __future__ import annotations

import math
from collections import Counter
from functools import lru_cache

from ..errors import InputError

CRITERION = 16.0
NORM_KINDS = ("batchnorm", "layernorm", "groupnorm", "instancenorm")


def is_norm_kind(kind: str | None) -> bool:
    """``kind`` (a probe row's) is a normalisation layer's."""
    return kind in NORM_KINDS


@lru_cache(maxsize=256)
def _setting(name: str, params: tuple, gamma: float, beta: float, batch: int, eps: float, sigma_w: float):
    """A measured setting checked and phi resolved, once: ``(base, effective, B, settings)`` for the engine's
    kernels (``settings``: method, eps, sigma_w, gamma, beta as checked floats)."""
    from ..meanfield.api import check_theory_input
    from ..nonlinearity import resolve

    b, settings = check_theory_input(batch, eps=eps, sigma_w=sigma_w, gamma=gamma, beta=beta)
    base, effective = resolve(name, gamma=settings["gamma"], beta=settings["beta"], **dict(params))
    return base, effective, int(b), settings


def _unit_setting(unit: dict):
    return _setting(unit["phi"], tuple(sorted(unit["params"].items())), unit["gamma"], unit["beta"], unit["batch"],
                    unit["eps"], unit["sigma_w"])  # fmt: skip


def theory_rates(spec, gamma: float, beta: float, batch: int, eps: float, gain: float, input_var: float) -> dict:
    """``theory_rate`` and ``local_rate`` (module docstring) for one BatchNorm layer, and ``why`` where one is None
    (too small a batch, gamma = 0, a phi the theory refuses)."""
    from ..meanfield.residual import local_rate_resolved

    out: dict = {"theory_rate": None, "local_rate": None, "why": None}
    if spec is None:
        out["why"] = "no recognised nonlinearity after it"
        return out
    if batch < 4:
        out["why"] = f"its statistics run over {batch} values (< 4)"
        return out
    from ..meanfield.api import theory_resolved

    name, params = spec
    try:
        base, effective, b, settings = _setting(name, tuple(sorted(params.items())), gamma, beta, batch, eps,
                                                math.sqrt(gain))  # fmt: skip
        out["theory_rate"] = theory_resolved(base, effective, b, **settings).lambda_G
        if input_var > 0 and math.isfinite(input_var):
            out["local_rate"] = local_rate_resolved(effective, batch, input_variance=input_var, eps=eps,
                                                    weight_gain=gain)  # fmt: skip
    except InputError as err:  # the theory's own refusal (gamma = 0, ...): reported beside the layer
        out["why"] = str(err)
    return out


def _unit(blocks: list[dict], bn_layers: list[dict]) -> dict | None:
    """The repeated unit: the most frequent block class, with the setting of its first BatchNorm layer; without
    blocks, a plain stack of the BatchNorm layers (``kind`` ``plain``, one unit per layer) at the setting of the one
    with the largest ``theory_rate`` (the stack's fastest gradient growth)."""
    if not blocks:
        rated = [b for b in bn_layers if b["theory_rate"] is not None]
        if len(rated) < 2:
            return None
        ref = max(rated, key=lambda b: b["theory_rate"])
        return {"class": "BatchNorm layer", "count": len(rated), "kind": "plain", "branch": "linear_first",
                "norm_layers": 1, "setting_of": ref["name"], "phi": ref["phi"], "params": ref["phi_params"],
                "batch": ref["batch"], "eps": ref["eps"], "gamma": ref["gamma"], "beta": ref["beta"],
                "sigma_w": ref["sigma_w"]}  # fmt: skip
    cls, count = Counter(b["class"] for b in blocks).most_common(1)[0]
    members = [b for b in blocks if b["class"] == cls]
    first = members[0]["name"] + "."
    bns = [b for b in bn_layers if b["name"].startswith(first) and b["phi"] is not None]
    if not bns:
        return None
    per_unit = min(sum(1 for b in bn_layers if b["name"].startswith(m["name"] + ".")) for m in members)
    ref = bns[0]
    branch = "bn_first" if is_norm_kind(members[0].get("first_layer")) else "linear_first"
    return {"class": cls, "count": count, "kind": members[0]["kind"], "branch": branch, "norm_layers": per_unit,
            "setting_of": ref["name"], "phi": ref["phi"], "params": ref["phi_params"], "batch": ref["batch"],
            "eps": ref["eps"], "gamma": ref["gamma"], "beta": ref["beta"], "sigma_w": ref["sigma_w"]}  # fmt: skip


def _unit_depth(unit: dict) -> tuple[float | None, str | None]:
    """The unit's predicted maximum trainable depth (in units) at its measured setting."""
    from ..meanfield.api import theory_resolved
    from ..meanfield.residual import DEFAULT_CRITERION, residual_theory_resolved

    try:
        base, effective, b, s = _unit_setting(unit)
        if "residual" in unit["kind"]:
            r = residual_theory_resolved(
                base, effective, b, depth=unit["count"], branch_depth=max(unit["norm_layers"], 1),
                branch=unit["branch"], branch_scale=1.0, eps=s["eps"], sigma_w=s["sigma_w"], gamma=s["gamma"],
                beta=s["beta"], input_variance=1.0, input_correlation=0.0, output_gradient="iid",
                criterion=DEFAULT_CRITERION, trainable_depth=True,
            )  # fmt: skip
            return (None if r.max_trainable_depth is None else float(r.max_trainable_depth)), None  # fmt: skip
        t = theory_resolved(base, effective, b, **s)
        return t.max_trainable_depth / max(unit["norm_layers"], 1), None
    except InputError as err:
        return None, str(err)


def _changes(unit: dict, target: int, blocks: list[dict]) -> tuple[list[dict], str | None]:
    from ..meanfield.planner import design_resolved
    from ..meanfield.residual import DEFAULT_CRITERION

    residual = "residual" in unit["kind"]
    changes = []
    why = None
    try:
        base, effective, b, s = _unit_setting(unit)
        d = design_resolved(base, effective, b, target, residual_network=residual,
                            branch_depth=max(unit["norm_layers"], 1), branch=unit["branch"], branch_scale=1.0,
                            eps=s["eps"], sigma_w=s["sigma_w"], gamma=s["gamma"], beta=s["beta"], knobs=None,
                            criterion=DEFAULT_CRITERION)  # fmt: skip
        needless = [o.knob for o in d.options if o.at_bound]  # every value in the knob's range reaches the target
        for o in d.options:
            if o.at_bound:
                continue
            depth = "beyond the search range" if o.predicted_depth is None else f"{o.predicted_depth:.4g} units"
            changes.append({"knob": o.knob, "value": o.value, "predicted_depth": o.predicted_depth,
                            "effect": f"predicted trainable depth {depth} (lambda_G {o.lambda_G:.4g})"})  # fmt: skip
        if needless:
            why = f"{', '.join(needless)}: any value in the planner's range reaches {target} units, no change needed"
    except InputError as err:
        why = str(err)
    if residual:
        grown = [b["growth"] for b in blocks if "residual" in b["kind"] and b["growth"] is not None]
        what = f"their ln growth {sum(grown):.3g} drops" if grown else "the blocks' gradient growth drops"
        changes.append({"knob": "zero_init_last_bn_gamma", "value": 0.0, "predicted_depth": None,
                        "effect": f"the residual branches start switched off: {what} to 0 at initialisation"})
    return changes, why


def make_verdict(growth: dict, blocks: list[dict], bn_layers: list[dict], criterion: float = CRITERION) -> dict:
    """The verdict object (module docstring): ``source`` (``measured``, or ``predicted`` when only the graph
    prediction is there), ``criterion``, ``log_growth``, ``trainable``, ``margin``
    (criterion - growth), ``concentrated_in`` (blocks with the largest growth, their share of the total),
    ``unit`` (the repeated unit and its ``predicted_max_depth``), ``changes`` and a one-line ``summary``."""
    g = growth.get("measured")
    source = "measured"
    if g is None and growth.get("predicted") is not None:  # bnmft predict: no measurement, the graph prediction
        g, source = growth["predicted"], "predicted"
    out: dict = {"source": source, "predicted_log_growth": growth.get("predicted"), "criterion": criterion,
                 "log_growth": g, "trainable": None, "margin": None, "concentrated_in": [], "unit": None,
                 "changes": [], "summary": ""}  # fmt: skip
    if g is None:
        out["summary"] = "no gradient growth measured (fewer than two normalisation layers)"
        return out
    out["trainable"] = bool(g <= criterion)
    out["margin"] = criterion - g
    grown = sorted((b for b in blocks if b["growth"] is not None and b["level"] == "block"),
                   key=lambda b: -b["growth"])  # fmt: skip
    positive = sum(b["growth"] for b in grown if b["growth"] > 0)
    for b in grown[:3]:
        if b["growth"] > 0 and positive > 0:
            out["concentrated_in"].append({"name": b["name"], "growth": b["growth"], "share": b["growth"] / positive})
    unit = _unit([b for b in blocks if b["level"] == "block"], bn_layers)
    verb = "trainable" if out["trainable"] else "NOT trainable"
    summary = (f"{'predicted ' if source == 'predicted' else ''}ln gradient growth {g:.3g} vs criterion "
               f"{criterion:g}: {verb} with SGD (margin {criterion - g:.3g})")  # fmt: skip
    if unit is not None:
        depth, why = _unit_depth(unit)
        unit["predicted_max_depth"] = depth
        if why:
            unit["why"] = why
        target = unit["count"] if not out["trainable"] else 4 * unit["count"]
        unit["design_target_depth"] = target
        out["changes"], why = _changes(unit, target, blocks)
        if why:
            unit["design_note"] = why
        if depth is not None:
            if unit["kind"] == "plain":
                summary += f"; a plain stack of such BatchNorm layers trains to ~{depth:.3g} ({unit['count']} now)"
            else:
                summary += f"; the repeated {unit['class']} stacks to ~{depth:.3g} units ({unit['count']} now)"
    out["unit"] = unit
    out["summary"] = summary
    return out


__all__ = ["CRITERION", "make_verdict", "theory_rates"]
