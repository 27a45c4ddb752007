"""A torch model as the mean-field graph of :mod:`bnmft.meanfield.graph`: the torch adapter of the whole-model
prediction (:func:`predict_model`).

torch.fx traces the model and propagates shapes (one forward of a single zero example, eval mode, no gradient); every
node becomes a
:class:`~bnmft.meanfield.graph.GraphOp` through the name tables below - weight layers with their measured weight
scale ``mean(W^2)`` and their valid taps per output position (zero padding, stride, dilation), BatchNorm with its
eps and the means of gamma, gamma^2 and beta, activations through :mod:`.torch_phi`, pooling with each window's
valid count and divisor, additions, concatenations on the channel axis, dropout in training mode, scalar
multiplications, flatten and reshapes. A node the tables do not know is passed through unchanged when it keeps its
input's shape, and named in ``notes``; one that changes the shape (or a LayerNorm/GroupNorm, whose theory bnmft
does not have) makes the prediction unavailable, saying why.
"""

from __future__ import annotations

import copy
import math
import operator
import time

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..meanfield.graph import GraphOp, GraphPrediction, predict_graph_resolved
from ..nonlinearity import get_nonlinearity
from .probe_graph import NORMS
from .torch_phi import call_phi, module_phi

ADDS = {operator.add, operator.iadd, torch.add, "add", "add_"}
MULS = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
DIVS = {operator.truediv, operator.itruediv, torch.div, "div", "div_"}
CATS = {torch.cat, torch.concat}
FLATTENS = {torch.flatten, torch.reshape, "view", "reshape", "flatten"}
PASS = {"contiguous", "clone", "detach", operator.getitem}
MAX_POOLS = (torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.MaxPool3d)
AVG_POOLS = (torch.nn.AvgPool1d, torch.nn.AvgPool2d, torch.nn.AvgPool3d)
ADAPTIVE_AVG = (torch.nn.AdaptiveAvgPool1d, torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool3d)
ADAPTIVE_MAX = (torch.nn.AdaptiveMaxPool1d, torch.nn.AdaptiveMaxPool2d, torch.nn.AdaptiveMaxPool3d)
DROPOUTS = (torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d, torch.nn.Dropout3d)
FUNCTIONAL_POOLS = {F.max_pool1d: "max", F.max_pool2d: "max", F.max_pool3d: "max", F.avg_pool1d: "avg",
                    F.avg_pool2d: "avg", F.avg_pool3d: "avg"}  # fmt: skip
FUNCTIONAL_ADAPTIVE = {F.adaptive_avg_pool1d: "avg", F.adaptive_avg_pool2d: "avg", F.adaptive_avg_pool3d: "avg",
                       F.adaptive_max_pool1d: "max", F.adaptive_max_pool2d: "max"}  # fmt: skip


def _tuple(value, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (int(value),) * n


def _conv_axes(size: tuple[int, ...], kernel, stride, padding, dilation, periodic: bool) -> tuple[list, tuple]:
    """Per axis: for each output index, the input index each tap reads (-1 on zero padding; wrapped around with
    periodic padding); the output size."""
    n = len(size)
    kernel, stride, dilation = _tuple(kernel, n), _tuple(stride, n), _tuple(dilation, n)
    padding = _tuple(padding, n)
    source, out = [], []
    for h, k, s, p, d in zip(size, kernel, stride, padding, dilation, strict=True):
        m = (h + 2 * p - d * (k - 1) - 1) // s + 1
        reads = [[o * s - p + t * d for t in range(k)] for o in range(m)]
        source.append([[i % h if periodic else (i if 0 <= i < h else -1) for i in r] for r in reads])
        out.append(m)
    return source, tuple(out)


def _pool_axes(size, kernel, stride, padding, dilation, ceil_mode: bool, include_pad: bool) -> tuple[list, list, tuple]:
    """Per axis: each output index's window (the input index of each entry, -1 on the padding) and divisor
    (torch's pooling windows); the output size."""
    n = len(size)
    kernel, dilation, padding = _tuple(kernel, n), _tuple(dilation, n), _tuple(padding, n)
    stride = _tuple(stride if stride not in (None, []) else kernel, n)
    source, divisor, out = [], [], []
    for h, k, s, p, d in zip(size, kernel, stride, padding, dilation, strict=True):
        span = h + 2 * p - d * (k - 1) - 1
        m = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (m - 1) * s >= h + p:
            m -= 1
        reads = [[o * s - p + t * d for t in range(k)] for o in range(m)]
        source.append([[i if 0 <= i < h else -1 for i in r] for r in reads])
        divisor.append([sum(-p <= i < h + p for i in r) if include_pad else sum(0 <= i < h for i in r) for r in reads])
        out.append(m)
    return source, divisor, tuple(out)


def _adaptive_axes(size, output_size) -> tuple[list, list, tuple]:
    n = len(size)
    output_size = tuple(h if o is None else o for h, o in zip(size, _tuple(output_size, n), strict=True))
    source, divisor = [], []
    for h, m in zip(size, output_size, strict=True):
        windows = [list(range((o * h) // m, math.ceil((o + 1) * h / m))) for o in range(m)]
        width = max(len(w) for w in windows)
        source.append([w + [-1] * (width - len(w)) for w in windows])
        divisor.append([len(w) for w in windows])
    return source, divisor, output_size


def _shape(node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


class _Builder:
    def __init__(self, model: torch.nn.Module):
        self.modules = dict(model.named_modules())
        self.ops: list[GraphOp] = []
        self.index: dict = {}
        self.notes: list[str] = []
        self.blocked: list[str] = []

    def add(self, node, kind: str, inputs: list, **attrs) -> None:
        sources = tuple(self.index[i] for i in inputs)
        self.index[node] = len(self.ops)
        name = str(node.target) if node.op == "call_module" else node.name
        self.ops.append(GraphOp(name, kind, sources, attrs))

    def tensor_args(self, node) -> list:
        args = list(node.args)
        if args and isinstance(args[0], list | tuple):
            args = list(args[0])
        return [a for a in args if isinstance(a, torch.fx.Node) and a in self.index]

    def weight(self, node, m: torch.nn.Module, x) -> None:
        shape = _shape(x)
        w = m.weight.detach().double()
        bias = getattr(m, "bias", None)
        b = bias.detach().double() if isinstance(bias, torch.Tensor) else torch.zeros(1, dtype=torch.float64)
        attrs = {"weight_var": float(w.pow(2).mean()), "bias_mean": float(b.mean()),
                 "bias_var": float(b.pow(2).mean() - b.mean() ** 2)}  # fmt: skip
        if isinstance(m, torch.nn.Linear):
            if shape is None or len(shape) != 2:
                self.blocked.append(f"{node.target}: a Linear layer on a tensor of shape {shape} (only (B, features))")
                return self.add(node, "identity", [x])
            attrs.update(in_channels=m.in_features, out_channels=m.out_features, groups=1, source=[], in_spatial=(),
                         spatial=())  # fmt: skip
        else:  # periodic/reflect padding: every tap sees the image
            source, out = _conv_axes(shape[2:], m.kernel_size, m.stride, m.padding, m.dilation,
                                     m.padding_mode != "zeros")  # fmt: skip
            attrs.update(in_channels=m.in_channels, out_channels=m.out_channels, groups=m.groups, source=source,
                         in_spatial=shape[2:], spatial=out, stride=_tuple(m.stride, len(out)))  # fmt: skip
        self.add(node, "weight", [x], **attrs)

    def module(self, node, m: torch.nn.Module) -> None:
        x = self.tensor_args(node)
        spec = module_phi(m)
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            g = m.weight.detach().double() if m.weight is not None else torch.ones(1, dtype=torch.float64)
            b = m.bias.detach().double() if m.bias is not None else torch.zeros(1, dtype=torch.float64)
            self.add(node, "norm", x, eps=float(m.eps), gamma=float(g.mean()), gamma2=float(g.pow(2).mean()),
                     beta=float(b.mean()))  # fmt: skip
        elif isinstance(m, tuple(NORMS)):
            self.blocked.append(f"{node.target} ({type(m).__name__}): no mean-field rule (BatchNorm only)")
            self.add(node, "identity", x)
        elif isinstance(m, torch.nn.Linear | torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Conv3d):
            self.weight(node, m, x[0])
        elif spec is not None:
            self.act(node, x, spec)
        elif isinstance(m, MAX_POOLS + AVG_POOLS):
            shape = _shape(x[0])
            source, divisor, out = _pool_axes(shape[2:], m.kernel_size, m.stride, m.padding,
                                              getattr(m, "dilation", 1), m.ceil_mode,
                                              getattr(m, "count_include_pad", True))  # fmt: skip
            self.pool(node, x, "max" if isinstance(m, MAX_POOLS) else "avg", source, divisor, out)
        elif isinstance(m, ADAPTIVE_AVG + ADAPTIVE_MAX):
            source, divisor, out = _adaptive_axes(_shape(x[0])[2:], m.output_size)
            self.pool(node, x, "avg" if isinstance(m, ADAPTIVE_AVG) else "max", source, divisor, out)
        elif isinstance(m, (*DROPOUTS, torch.nn.AlphaDropout)):
            self.dropout(node, x, m.p if m.training else 0.0)
        elif isinstance(m, torch.nn.Flatten):
            self.add(node, "flatten", x)
        else:
            self.unknown(node, x, f"{node.target} ({type(m).__name__})")

    def pool(self, node, x: list, mode: str, source: list, divisor: list, out: tuple) -> None:
        """kernel and stride per axis (for the spatial correlation) from the windows the source lists give."""
        kernel = tuple(len(axis[0]) for axis in source)
        stride = tuple((axis[1][0] - axis[0][0]) if len(axis) > 1 else len(axis[0]) for axis in source)
        self.add(node, "pool", x[:1], mode=mode, source=source, divisor=divisor, in_spatial=_shape(x[0])[2:],
                 spatial=out, kernel=kernel, stride=stride)  # fmt: skip

    def act(self, node, x: list, spec) -> None:
        name, params = spec
        self.add(node, "act", x[:1], phi=get_nonlinearity(name, **params))

    def dropout(self, node, x: list, p: float) -> None:
        if p > 0:
            self.add(node, "dropout", x[:1], p=float(p))
        else:
            self.add(node, "identity", x[:1])

    def unknown(self, node, x: list, what: str) -> None:
        if x and _shape(node) == _shape(x[0]):
            self.notes.append(f"{what}: no mean-field rule, passed through unchanged")
            self.add(node, "identity", x[:1])
        else:
            self.blocked.append(f"{what}: no mean-field rule, and it changes the tensor's shape")
            if x:
                self.add(node, "identity", x[:1])

    def call(self, node) -> None:
        x = self.tensor_args(node)
        target = node.target
        spec = call_phi(target, tuple(node.args[1:]), dict(node.kwargs)) if x else None
        scalars = [a for a in node.args if isinstance(a, int | float) and not isinstance(a, bool)]
        if not x:
            return  # sizes, attributes: not tensors
        if spec is not None:
            self.act(node, x, spec)
        elif target in ADDS and len(x) >= 2:
            self.add(node, "add", x)
        elif target in MULS | DIVS and len(x) == 1 and len(scalars) == 1:
            factor = float(scalars[0]) if target in MULS else 1 / float(scalars[0])
            self.add(node, "scale", x, factor=factor)
        elif target in CATS:
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            if dim in (1, -len(_shape(node) or ())) and len(_shape(node) or ()) >= 2:
                self.add(node, "cat", x)
            else:
                self.unknown(node, x, f"{node.name} (a concatenation along dim {dim})")
        elif target in FLATTENS:
            out = _shape(node)
            self.add(node, "flatten" if out is not None and len(out) == 2 and len(_shape(x[0])) > 2 else "identity",
                     x[:1])  # fmt: skip
        elif target in FUNCTIONAL_POOLS:
            shape, args = _shape(x[0]), list(node.args[1:]) + [None] * 5
            kw = node.kwargs
            kernel = kw.get("kernel_size", args[0])
            stride = kw.get("stride", args[1])
            padding = kw.get("padding", args[2] if args[2] is not None else 0)
            mode = FUNCTIONAL_POOLS[target]
            source, divisor, out = _pool_axes(shape[2:], kernel, stride, padding, 1,
                                              bool(kw.get("ceil_mode", False)), bool(kw.get("count_include_pad", True)))
            self.pool(node, x, mode, source, divisor, out)
        elif target in FUNCTIONAL_ADAPTIVE:
            size = node.args[1] if len(node.args) > 1 else node.kwargs["output_size"]
            source, divisor, out = _adaptive_axes(_shape(x[0])[2:], size)
            self.pool(node, x, FUNCTIONAL_ADAPTIVE[target], source, divisor, out)
        elif target in (torch.mean, "mean") and _shape(node) is not None and len(_shape(node)) == 2:
            shape = _shape(x[0])  # a global average over the spatial axes
            source, divisor, out = _adaptive_axes(shape[2:], (1,) * len(shape[2:]))
            self.pool(node, x, "avg", source, divisor, out)
            self.add(node, "flatten", [node])
        elif target is F.dropout:
            p = node.kwargs.get("p", node.args[1] if len(node.args) > 1 else 0.5)
            training = node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True)
            self.dropout(node, x, p if training else 0.0)
        elif target in PASS:
            self.add(node, "identity", x[:1])
        else:
            self.unknown(node, x, str(getattr(target, "__name__", target)))


def model_graph(
    model: torch.nn.Module, input_shape: tuple[int, ...], input_moments: tuple[float, float] = (0.0, 1.0)
) -> tuple[list[GraphOp], list[str], list[str]]:
    """``(ops, notes, blocked)``: the mean-field graph of ``model`` on inputs of shape ``(B, *input_shape)`` with
    i.i.d. entries of mean and second moment ``input_moments`` (module docstring); ``blocked`` says why no
    prediction can be made (empty when it can).

    Raises:
        InputError: the model cannot be traced by torch.fx, or its shapes cannot be propagated.
    """
    import torch.fx
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as err:  # any tracing failure: the prediction needs the graph (said as the model's problem)
        raise InputError(f"model: torch.fx cannot trace it ({type(err).__name__}: {str(err).splitlines()[0][:160]}); "
                         "the prediction needs the graph (the probe's measurement does not)") from err  # fmt: skip
    training = model.training
    try:  # shapes from one forward of one example in eval mode (batch statistics need no batch for shapes)
        with torch.no_grad():
            ShapeProp(gm.eval()).propagate(torch.zeros(1, *input_shape))
    except Exception as err:  # the model's own shape error on these inputs
        raise InputError(f"input_shape: the model does not run on inputs of shape {tuple(input_shape)} "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:160]})") from err  # fmt: skip
    finally:
        gm.train(training)
    b = _Builder(model)
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op == "placeholder" and node not in b.index and not b.ops:
            shape = tuple(input_shape)
            b.add(node, "input", [], channels=shape[0], spatial=shape[1:], mean=input_moments[0],
                  second_moment=input_moments[1])  # fmt: skip
        elif node.op == "call_module":
            b.module(node, modules[str(node.target)])
        elif node.op in ("call_function", "call_method"):
            b.call(node)
        elif node.op == "output":
            outs = node.args[0] if isinstance(node.args[0], list | tuple) else [node.args[0]]
            for o in outs:
                if isinstance(o, torch.fx.Node) and o in b.index:
                    b.ops.append(GraphOp("output", "output", (b.index[o],), {}))
    return b.ops, list(dict.fromkeys(b.notes)), b.blocked


def check_prediction_input(model: object, input_shape: object, batch_size: object) -> None:
    """The checks every prediction entry makes.

    Raises:
        InputError: not a module, a shape that is not positive integers, a batch size below 2.
    """
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
        raise InputError(f"batch_size must be an integer >= 2 (batch statistics), got {batch_size!r}")
    shape = tuple(input_shape) if isinstance(input_shape, list | tuple) else ()
    if not shape or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
        raise InputError(f"input_shape must be positive integers (one example's shape), got {input_shape!r}")


def predict_model(
    model: torch.nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int,
    *,
    input_moments: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> tuple[GraphPrediction | None, list[str]]:
    """The mean-field prediction of ``model``'s signal propagation at initialisation, without running it: every
    tensor's law and every normalisation layer's squared gradient norm relative to the last one
    (:mod:`bnmft.meanfield.graph`), for i.i.d. N(0, 1) inputs of shape ``(batch_size, *input_shape)`` and an
    i.i.d. gradient at the output, in training mode (batch statistics).

    Args:
        model: a ``torch.nn.Module`` that torch.fx can trace (its current weights set the weight scales).
        input_shape: one example's shape, e.g. ``(3, 32, 32)``.
        batch_size: B >= 2.
        input_moments: the inputs' mean and second moment (i.i.d. entries; the probe passes its batch's).
        seed: the stratified sample's permutations (the prediction's Monte Carlo part, docs/graph.md section 1).

    Returns:
        ``(prediction, notes)``; prediction None when a node blocks it (the notes say which and why).

    Raises:
        InputError: not a module, a bad shape or batch size, a model torch.fx cannot trace.
    """
    check_prediction_input(model, input_shape, batch_size)
    work = copy.deepcopy(model).train()
    start = time.perf_counter()
    mean, second = (float(v) for v in input_moments)
    if not (math.isfinite(mean) and math.isfinite(second) and second > mean**2):
        raise InputError(f"input_moments must be a finite mean and a larger second moment, got {input_moments!r}")
    ops, notes, blocked = model_graph(work, tuple(input_shape), (mean, second))
    if blocked:
        return None, notes + [f"no prediction: {why}" for why in blocked]
    prediction = predict_graph_resolved(ops, batch_size, seed)
    notes.append(f"predicted from {len(ops)} graph operations in {time.perf_counter() - start:.2f} s")
    return prediction, notes


__all__ = ["check_prediction_input", "model_graph", "predict_model"]
