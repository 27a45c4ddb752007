"""The probe's view of a model's graph: which layers it measures, the nonlinearity after each normalisation layer
along the graph, the repeated units (blocks) and stages, and everything it does not recognise.

The graph comes from :func:`torch.fx.symbolic_trace` where the model traces; where it does not (data-dependent
control flow), the probe falls back to the modules' call order seen by forward hooks (said in a note). The
nonlinearity after a normalisation layer is the first activation - a module of
:data:`~bnmft.simulate.torch_phi.TORCH_MODULES` or a call of :data:`~bnmft.simulate.torch_phi.TORCH_CALLS` -
reached from its output through transparent operations (dropout, pooling, flatten, reshapes, additions,
concatenations); a Linear/Conv/normalisation layer or the output reached first means phi = identity. Blocks are the
repeated units of the model: non-leaf modules holding a normalisation layer whose parent holds at least
one more module of their class that holds one (torchvision's BasicBlock, Bottleneck, dense layers, inverted
residuals; a VGG's ``features`` beside its ``classifier`` is no block); a stage is a module holding at least two
blocks. A block is ``residual`` when torch.fx sees an addition joining paths inside
it, ``dense`` for a concatenation.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .torch_phi import call_phi, module_phi

NORMS: dict[type, str] = {
    torch.nn.BatchNorm1d: "batchnorm",
    torch.nn.BatchNorm2d: "batchnorm",
    torch.nn.BatchNorm3d: "batchnorm",
    torch.nn.LayerNorm: "layernorm",
    torch.nn.GroupNorm: "groupnorm",
    torch.nn.InstanceNorm1d: "instancenorm",
    torch.nn.InstanceNorm2d: "instancenorm",
    torch.nn.InstanceNorm3d: "instancenorm",
}
WEIGHTED: dict[type, str] = {
    torch.nn.Linear: "linear",
    torch.nn.Conv1d: "conv",
    torch.nn.Conv2d: "conv",
    torch.nn.Conv3d: "conv",
}
#: leaf modules the signal passes through without a theory of their own
TRANSPARENT_MODULES = (
    torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.MaxPool3d, torch.nn.AvgPool1d, torch.nn.AvgPool2d,
    torch.nn.AvgPool3d, torch.nn.AdaptiveAvgPool1d, torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool3d,
    torch.nn.AdaptiveMaxPool1d, torch.nn.AdaptiveMaxPool2d, torch.nn.AdaptiveMaxPool3d, torch.nn.Flatten,
    torch.nn.Unflatten, torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d,
    torch.nn.AlphaDropout,
)  # fmt: skip
#: functions and tensor methods the signal passes through (additions and concatenations join paths)
TRANSPARENT_CALLS: set = {
    operator.add, operator.iadd, operator.mul, operator.getitem, torch.add, torch.cat, torch.concat, torch.flatten,
    torch.mean, torch.reshape, F.dropout, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
    F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool2d,
    torch.chunk, torch.split, getattr,
    "add", "add_", "mul", "mul_", "view", "reshape", "flatten", "mean", "contiguous", "size", "chunk", "split",
    "permute", "transpose", "squeeze", "unsqueeze", "view_as", "expand_as", "__getitem__",
}  # fmt: skip
JOINS = {operator.add: "residual", operator.iadd: "residual", torch.add: "residual", "add": "residual",
         "add_": "residual", torch.cat: "dense", torch.concat: "dense"}  # fmt: skip


def layer_kind(module: torch.nn.Module) -> str | None:
    """``batchnorm``, ``layernorm``, ``groupnorm``, ``instancenorm``, ``linear``, ``conv`` or None (exact classes
    and their subclasses)."""
    for cls, kind in (*NORMS.items(), *WEIGHTED.items()):
        if isinstance(module, cls):
            return kind
    return None


def is_norm(module: torch.nn.Module) -> bool:
    return isinstance(module, tuple(NORMS))


@dataclass
class GraphInfo:
    """``traced``: torch.fx traced the model; ``phi_after``: normalisation layer's name -> (phi spec or None,
    how it was found); ``blocks``: block name -> kind (``residual``, ``dense`` or ``unit``); ``stages``: names;
    ``notes``: what was not recognised, or how the fallback paired layers."""

    traced: bool
    phi_after: dict[str, tuple[tuple[str, dict] | None, str]]
    blocks: dict[str, str]
    stages: list[str]
    notes: list[str] = field(default_factory=list)


def _call_spec(node) -> tuple[str, dict] | None:
    if node.op in ("call_function", "call_method"):
        return call_phi(node.target, tuple(node.args[1:]), dict(node.kwargs))
    return None


def _phi_along_fx(gm, start, modules: dict[str, torch.nn.Module]) -> tuple[tuple[str, dict] | None, str]:
    """Breadth-first from ``start``'s users to the first activation (module docstring)."""
    frontier, seen = list(start.users), set()
    while frontier:
        node = frontier.pop(0)
        if node in seen:
            continue
        seen.add(node)
        if node.op == "output":
            return ("identity", {}), "the model's output follows"
        if node.op == "call_module":
            module = modules[str(node.target)]
            spec = module_phi(module)
            if spec is not None:
                return spec, f"module {node.target}"
            if layer_kind(module) is not None:
                return ("identity", {}), f"{node.target} follows with no activation between"
            if isinstance(module, TRANSPARENT_MODULES):
                frontier.extend(node.users)
                continue
            return None, f"followed by {node.target} ({type(module).__name__}), which the probe does not recognise"
        spec = _call_spec(node)
        if spec is not None:
            return spec, f"call {getattr(node.target, '__name__', node.target)}"
        if node.target in TRANSPARENT_CALLS:
            frontier.extend(node.users)
            continue
        return None, f"followed by {getattr(node.target, '__name__', node.target)}, which the probe does not recognise"
    return ("identity", {}), "nothing follows"


def _blocks(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """The repeated units holding a normalisation layer, and the stages holding >= 2 of them (module docstring)."""
    blocks = []
    for name, parent in model.named_modules():
        children = [(n, c) for n, c in parent.named_children()
                    if list(c.children()) and any(is_norm(m) for m in c.modules())]  # fmt: skip
        counts = Counter(type(c) for _, c in children)  # siblings of a class, each holding a normalisation layer
        for child_name, child in children:
            if counts[type(child)] >= 2:
                blocks.append(f"{name}.{child_name}" if name else child_name)
    inner = {b for b in blocks if any(other.startswith(b + ".") for other in blocks)}  # holding blocks: stages
    blocks = [b for b in blocks if b not in inner]
    stages = [name for name, m in model.named_modules()
              if name and sum(1 for b in blocks if b.startswith(name + ".")) >= 2]  # fmt: skip
    return blocks, stages


def _fx_notes(gm, modules) -> tuple[list[str], dict[str, set[str]]]:
    """Unrecognised calls and modules of a traced graph; the joins (additions, concatenations) per module."""
    unknown: list[str] = []
    joins: dict[str, set[str]] = {}
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        if node.op == "call_module":
            module = modules[str(node.target)]
            known = layer_kind(module) is not None or module_phi(module) is not None
            if not known and not isinstance(module, TRANSPARENT_MODULES):
                unknown.append(f"{node.target} ({type(module).__name__})")
            continue
        if node.target in JOINS:
            tensors = [a for a in node.args if isinstance(a, torch.fx.Node)]
            if node.target in (torch.cat, torch.concat) and node.args and isinstance(node.args[0], list | tuple):
                tensors = [a for a in node.args[0] if isinstance(a, torch.fx.Node)]
            if len(tensors) >= 2:
                stack = node.meta.get("nn_module_stack") or {}
                for owner in stack:  # every module the join is inside
                    joins.setdefault(str(stack[owner][0]), set()).add(JOINS[node.target])
            continue
        if _call_spec(node) is None and node.target not in TRANSPARENT_CALLS:
            unknown.append(str(getattr(node.target, "__name__", node.target)))
    return unknown, joins


def analyse(model: torch.nn.Module) -> GraphInfo:
    """The graph of ``model`` (module docstring): torch.fx where it traces, else a record for the hook fallback
    (``traced`` False; :func:`phi_in_call_order` then pairs the layers)."""
    import torch.fx

    modules = dict(model.named_modules())
    blocks, stages = _blocks(model)
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as err:  # any tracing failure means the fallback, said in the note
        why = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        note = f"torch.fx cannot trace the model ({type(err).__name__}: {why}): layers paired in call order"
        return GraphInfo(False, {}, dict.fromkeys(blocks, "unit"), stages, [note])
    unknown, joins = _fx_notes(gm, modules)
    phi_after: dict[str, tuple[tuple[str, dict] | None, str]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and is_norm(modules[str(node.target)]) and str(node.target) not in phi_after:
            phi_after[str(node.target)] = _phi_along_fx(gm, node, modules)
    notes = []
    if unknown:
        shown = ", ".join(dict.fromkeys(unknown))
        notes.append(f"not recognised (measured through, no theory of their own): {shown}")
    kinds = {b: "+".join(sorted(joins[b])) if b in joins else "unit" for b in blocks}
    return GraphInfo(True, phi_after, kinds, stages, notes)


def phi_in_call_order(norm: torch.nn.Module, order: list[tuple[str, torch.nn.Module]]):
    """The fallback: the first activation module called after ``norm`` and before the next Linear/Conv/normalisation
    layer (identity if none)."""
    seen = False
    for name, m in order:
        if m is norm:
            seen = True
            continue
        if not seen:
            continue
        if layer_kind(m) is not None:
            return ("identity", {}), f"{name} follows in call order"
        spec = module_phi(m)
        if spec is not None:
            return spec, f"module {name} (call order)"
    return ("identity", {}), "nothing follows in call order"


__all__ = ["NORMS", "WEIGHTED", "GraphInfo", "analyse", "is_norm", "layer_kind", "phi_in_call_order"]
