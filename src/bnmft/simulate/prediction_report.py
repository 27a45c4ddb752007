"""The probe's report from the graph prediction alone (``bnmft predict``): per BatchNorm layer the theory beside
the predicted ln gradient ratio, the repeated blocks, and the verdict with the depth planner's changes - for models
too large to probe (:func:`prediction_report`)."""

from __future__ import annotations

import copy
import math

import torch

from ..errors import InputError
from ..meanfield.graph import predict_graph_resolved
from .model_graph import check_prediction_input, model_graph
from .probe_graph import analyse
from .probe_verdict import make_verdict, theory_rates


def _fan_in(attrs: dict) -> float:
    """A weight op's fan-in: input channels per group times the kernel's taps."""
    return attrs["in_channels"] / attrs["groups"] * math.prod(len(axis[0]) for axis in attrs["source"])


def prediction_report(model: torch.nn.Module, input_shape: tuple[int, ...], batch_size: int, *, seed: int = 0) -> dict:
    """The verdict of :func:`~bnmft.simulate.model_probe.probe` computed from the graph prediction
    (:func:`~bnmft.simulate.model_graph.predict_model`) instead of a measurement, for i.i.d. N(0, 1) inputs.

    Returns:
        a dict: ``bn_layers`` (``name``, ``phi``, ``phi_params``, ``phi_found``, ``batch``, ``eps``, ``gamma``,
        ``beta``, ``sigma_w`` (from the weight layer before it: ``mean(W^2) * fan_in``), ``input_variance`` (the
        predicted channel variance it normalises), ``theory_rate``, ``local_rate`` (:mod:`.probe_verdict`, at the
        predicted input variance), ``predicted_log_grad_ratio``), ``blocks`` (the repeated units and stages, kinds
        as the probe finds them; ``growth`` None), ``growth`` (``predicted``, ``first``, ``last``), ``verdict``
        (:func:`~bnmft.simulate.probe_verdict.make_verdict` with ``source`` ``predicted``), ``tensors`` (every op's
        predicted law and gradient) and ``notes``.

    Raises:
        InputError: as :func:`~bnmft.simulate.model_graph.predict_model`.
    """
    check_prediction_input(model, input_shape, batch_size)
    work = copy.deepcopy(model).train()
    graph = analyse(work)
    ops, notes, blocked = model_graph(work, tuple(input_shape))
    notes = list(graph.notes) + notes
    if blocked:
        raise InputError("model: no prediction: " + "; ".join(blocked))
    prediction = predict_graph_resolved(ops, batch_size, seed)
    modules = dict(work.named_modules())
    first_op = {}
    for i, op in enumerate(ops):
        first_op.setdefault(op.name, i)
    bn_layers = []
    for n in prediction.norm_layers:
        i = first_op[n["name"]]
        module = modules[n["name"]]
        spec, how = graph.phi_after.get(n["name"], (None, "the graph does not say"))
        source = ops[ops[i].inputs[0]] if ops[i].inputs else None
        weighted = source is not None and source.kind == "weight"
        gain = source.attrs["weight_var"] * _fan_in(source.attrs) if weighted else 1.0
        input_var = prediction.tensors[ops[i].inputs[0]]["channel_var"] if ops[i].inputs else 1.0
        gamma, beta = ops[i].attrs["gamma"], ops[i].attrs["beta"]
        rates = theory_rates(spec, gamma, beta, n["batch"], float(module.eps), gain, input_var)
        if rates["why"] and spec is not None:
            notes.append(f"{n['name']}: no theory rate: {rates['why']}")
        bn_layers.append({"name": n["name"], "kind": type(module).__name__, "phi": None if spec is None else spec[0],
                          "phi_params": {} if spec is None else spec[1], "phi_found": how, "batch": n["batch"],
                          "eps": float(module.eps), "gamma": gamma, "beta": beta, "sigma_w": math.sqrt(gain),
                          "input_variance": input_var, "theory_rate": rates["theory_rate"],
                          "local_rate": rates["local_rate"],
                          "predicted_log_grad_ratio": n["log_grad_ratio"]})  # fmt: skip
    classes = {name: type(m).__name__ for name, m in work.named_modules()}
    kinds = {"weight": lambda op: "linear" if not op.attrs["source"] else "conv", "norm": lambda op: "batchnorm"}
    blocks = []
    for name in [*graph.blocks, *graph.stages]:
        first = next((kinds[op.kind](op) for op in ops if op.name.startswith(name + ".") and op.kind in kinds), None)
        blocks.append({"name": name, "level": "stage" if name in graph.stages else "block", "class": classes[name],
                       "kind": graph.blocks.get(name, "stage"), "first_layer": first, "growth": None})  # fmt: skip
    growth = {"predicted": prediction.growth, "first": prediction.first, "last": prediction.last}
    verdict = make_verdict({"measured": None, **growth}, blocks, bn_layers)
    return {"bn_layers": bn_layers, "blocks": blocks, "growth": growth, "verdict": verdict,
            "tensors": prediction.tensors, "notes": notes}  # fmt: skip


__all__ = ["prediction_report"]
