"""A probe for any PyTorch model: per-layer forward statistics and backward gradient norms at initialisation (and
after a few optimizer steps), along the model's graph, with the theory beside every BatchNorm layer and a verdict.

The model is never modified: the probe works on a deep copy (weights, buffers, running statistics, train/eval mode
and ``.grad`` of the user's model stay as they were), in training mode (BatchNorm uses batch statistics: what the
theory describes). Forward hooks on every normalisation layer (BatchNorm1d/2d/3d, LayerNorm, GroupNorm,
InstanceNorm), every Linear/Conv layer and every block (:mod:`.probe_graph`) record the layer's output and hand the
rest of the network a copy of it, so in-place operations downstream (``ReLU(inplace=True)``, ``x += ...``) never
touch the recorded tensor: its gradient is the gradient at the layer's output as autograd sees it. Recorded per
layer: per-channel mean and variance over (batch, positions) averaged over channels (channel axis 1, or the last
axis of a 2-D output), the batch correlation (mean off-diagonal correlation of the examples' flattened outputs), the
distance of the centred batch Gram matrix to the BSB1 shape (as in the simulator), the squared norm of the loss
gradient w.r.t. the output and, for layers with weights, of the weight gradient. The inputs are made to require a
gradient, so frozen parameters are measured through.

The loss is ``loss(output)`` if given, else ``sum(R * output)`` with a fixed Gaussian R (an i.i.d. gradient at the
output, the theory's setting). ``bn_layers``: per BatchNorm layer ``measured_rate`` = the growth of the squared
gradient norm from it back to the nearest normalisation layer upstream *along the autograd graph* (``previous``),
``theory_rate`` and ``local_rate`` (:mod:`.probe_verdict`), ``log_grad_ratio`` = ln of its squared gradient norm
over the last normalisation layer's. ``blocks``: per block and stage ``growth`` = ln of the squared gradient norm at
its input over that at its output. ``growth``: ln of the first normalisation layer's squared gradient norm over the
last's. With ``draws=K`` every measured number is the mean over K fresh initialisations with its standard error
(``*_stderr``). ``steps=n``: n SGD steps (``lr``) on a copy with the step loss - ``loss`` if given, else the
cross-entropy against ``labels`` (random labels from the seed when none) for a (B, classes) output, else half the
mean squared output - and the layers recorded again (rows with ``step = n``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from .network import Segment, gram_stats
from .probe_graph import GraphInfo, analyse, is_norm, layer_kind, phi_in_call_order
from .probe_verdict import is_norm_kind, make_verdict, theory_rates


@dataclass
class ProbeResult:
    """``layers``: tidy rows (one per recorded layer and step, ``name`` the module's qualified name);
    ``bn_layers``: one per BatchNorm layer; ``blocks``: blocks and stages with their ln gradient growth;
    ``growth``: ``measured`` (+ ``measured_stderr``), ``first``, ``last``; ``verdict``: :mod:`.probe_verdict`;
    ``steps``, ``draws``, ``traced`` (torch.fx traced the model), ``notes``."""

    layers: list[dict]
    bn_layers: list[dict]
    steps: int
    notes: list[str] = field(default_factory=list)
    blocks: list[dict] = field(default_factory=list)
    growth: dict = field(default_factory=dict)
    verdict: dict = field(default_factory=dict)
    draws: int = 1
    traced: bool = False
    mode: str = "train (batch statistics)"

    def to_dict(self) -> dict:
        return {"layers": self.layers, "bn_layers": self.bn_layers, "blocks": self.blocks, "growth": self.growth,
                "verdict": self.verdict, "steps": self.steps, "draws": self.draws, "traced": self.traced,
                "mode": self.mode, "notes": self.notes}  # fmt: skip


def _per_channel(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() > 2 else x.T  # (channels, B x positions)


def _forward_stats(out: torch.Tensor) -> dict:
    x = out.detach().double()
    b = x.shape[0]
    var, mean = torch.var_mean(_per_channel(x), dim=1, unbiased=False)
    flat = x.reshape(b, -1)
    gram = flat @ flat.T / flat.shape[1]
    diag = torch.diagonal(gram)
    corr = gram / torch.sqrt(torch.outer(diag, diag)).clamp_min(1e-300)
    off = (corr.sum() - torch.diagonal(corr).sum()) / max(b * (b - 1), 1)
    dist = gram_stats(flat[None], Segment(0, b, b))[2][0] if b > 1 else float("nan")  # the simulator's distance
    return {
        "shape": list(x.shape),
        "channel_mean": float(mean.mean()),
        "channel_var": float(var.mean()),
        "batch_correlation": float(off),
        "bsb1_distance": float(dist),
    }


def _norm_sq(t: torch.Tensor | None) -> float | None:
    return None if t is None else float(t.detach().double().pow(2).sum())


def _nearest_upstream(start, owners: dict) -> str | None:
    """Breadth-first up the autograd graph from ``start`` to the nearest node that produced a recorded norm output."""
    frontier, seen = [start], set()
    while frontier:
        nxt: list = []
        for fn in frontier:
            if fn is None or fn in seen:
                continue
            seen.add(fn)
            if fn in owners:
                return owners[fn]
            nxt.extend(f for f, _ in fn.next_functions)
        frontier = nxt
    return None


def _record(model: torch.nn.Module, inputs: torch.Tensor, loss, r_seed: int, step: int, block_names):
    """One forward and backward pass on ``model`` (the probe's copy): rows (forward order), per norm layer its
    module and upstream norm layer, per block its input and output gradient norms, the call order."""
    entries: list[tuple[str, torch.nn.Module, torch.Tensor, dict]] = []
    order: list[tuple[str, torch.nn.Module]] = []
    names = {m: n for n, m in model.named_modules()}
    block_io: dict[str, list] = {}
    owners: dict = {}
    upstream: dict[str, object] = {}
    hooks = []

    def hook(module, args, out):
        order.append((names[module], module))
        kind = layer_kind(module)
        if kind is None or not isinstance(out, torch.Tensor):
            return None
        stats = _forward_stats(out)
        if args and isinstance(args[0], torch.Tensor):  # the input's per-channel biased variance
            stats["input_var"] = float(_per_channel(args[0].detach().double()).var(dim=1, unbiased=False).mean())
            if is_norm(module):
                upstream[names[module]] = args[0].grad_fn
        if out.grad_fn is not None and is_norm(module):
            owners[out.grad_fn] = names[module]
        out.retain_grad()
        entries.append((names[module], module, out, stats))
        return out.clone()  # downstream in-place operations modify the copy, never the recorded output

    def block_in(module, args):
        if not args or not isinstance(args[0], torch.Tensor) or not args[0].requires_grad:
            return None
        kept = args[0].clone()
        kept.retain_grad()
        block_io[names[module]] = [kept, None]
        return (kept.clone(), *args[1:])

    def block_out(module, args, out):
        if names[module] not in block_io or not isinstance(out, torch.Tensor):
            return None
        out.retain_grad()
        block_io[names[module]][1] = out
        return out.clone()

    blocks = set(block_names)
    for m in model.modules():
        if m is not model or layer_kind(m) is not None:
            hooks.append(m.register_forward_hook(hook))
        if names[m] in blocks:
            hooks.append(m.register_forward_pre_hook(block_in))
            hooks.append(m.register_forward_hook(block_out))
    x = inputs.detach().clone().requires_grad_(inputs.is_floating_point())
    try:
        output = model(x)
    except Exception as err:  # the user's forward: its own message, as bad input
        first = str(err).splitlines()[0] if str(err) else ""
        raise InputError(f"model: its forward raised {type(err).__name__}: {first}") from err
    finally:
        for h in hooks:
            h.remove()
    if not isinstance(output, torch.Tensor):
        raise InputError("model: its forward must return one tensor (the probe backpropagates from it)")
    if not output.requires_grad:
        raise InputError("model: its output does not depend on its inputs or parameters (nothing to backpropagate)")
    model.zero_grad(set_to_none=True)
    if loss is None:
        gen = torch.Generator().manual_seed(r_seed)
        value = (output * torch.randn(output.shape, generator=gen, dtype=output.dtype).to(output.device)).sum()
    else:
        value = loss(output)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise InputError("loss: must return a scalar tensor")
    value.backward()
    rows = []
    for index, (name, module, out, stats) in enumerate(entries):
        row = {"step": step, "index": index, "name": name, "kind": layer_kind(module), **stats,
               "grad_norm_sq": _norm_sq(out.grad)}  # fmt: skip
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            row["weight_norm_sq"] = _norm_sq(weight)
            row["weight_grad_norm_sq"] = _norm_sq(weight.grad)
        rows.append(row)
    previous = {name: _nearest_upstream(fn, owners) for name, fn in upstream.items()}
    io = {n: (_norm_sq(a.grad), _norm_sq(b.grad) if b is not None else None) for n, (a, b) in block_io.items()}
    return rows, entries, order, previous, io


def seeded_model(factory: Callable[[], object], seed: int, what: str = "model") -> torch.nn.Module:
    """``factory()`` after ``torch.manual_seed(seed)`` (so the model's initial weights follow the seed).

    Raises:
        InputError: the factory returned something other than a ``torch.nn.Module`` (``what`` names it).
    """
    torch.manual_seed(seed)
    model = factory()  # an exception inside the user's own code keeps its traceback
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"{what} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _linear_input_shape(model: torch.nn.Module) -> tuple[int, ...] | None:
    """``(in_features,)`` of the first Linear layer when no convolution comes before it, else None."""
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            return (m.in_features,)
        if isinstance(m, torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Conv3d):
            return None
    return None


def gaussian_inputs(model: torch.nn.Module, batch_size: int, shape: tuple[int, ...] | None, seed: int) -> torch.Tensor:
    """A ``(batch_size, *shape)`` batch of i.i.d. N(0, 1) inputs drawn from ``seed``; without ``shape``, the first
    Linear layer's ``in_features`` (before any convolution).

    Raises:
        InputError: no shape given and the model does not start with a Linear layer.
    """
    if shape is None:
        shape = _linear_input_shape(model)
    if shape is None:
        raise InputError("shape: needed, the model does not start with a Linear layer (CLI: --input-shape)")
    return torch.randn(batch_size, *shape, generator=torch.Generator().manual_seed(seed))


def _fresh(model, seed: int) -> torch.nn.Module:
    """A copy of ``model`` (a module) re-initialised from ``seed`` (every submodule's ``reset_parameters``), or
    ``model()`` after ``torch.manual_seed(seed)`` (a factory: its own initialisation)."""
    if isinstance(model, torch.nn.Module):
        fresh = copy.deepcopy(model)
        torch.manual_seed(seed)
        with torch.no_grad():
            for m in fresh.modules():
                reset = getattr(m, "reset_parameters", None)
                if callable(reset):
                    reset()
        return fresh
    return seeded_model(model, seed)


def _bn_rows(rows, entries, graph: GraphInfo, order, previous) -> tuple[list[dict], list[str]]:
    by_name = {row["name"]: row for row in rows}
    bn_layers: list[dict] = []
    notes: list[str] = []
    for row, (name, module, out, stats) in zip(rows, entries, strict=True):
        if row["kind"] != "batchnorm" or any(b["name"] == name for b in bn_layers):
            continue
        b = out.shape[0]
        batch = b * math.prod(out.shape[2:]) if out.dim() > 2 else b
        spec, how = graph.phi_after.get(name) or phi_in_call_order(module, order)
        if spec is None:
            notes.append(f"{name}: no theory rate: {how}")
        gamma = float(module.weight.detach().double().mean()) if getattr(module, "weight", None) is not None else 1.0
        beta = float(module.bias.detach().double().mean()) if getattr(module, "bias", None) is not None else 0.0
        weighted = None
        up = previous.get(name)
        for _, m in order:  # the last Linear/Conv called before this layer: its weight scale
            if m is module:
                break
            if layer_kind(m) in ("linear", "conv"):
                weighted = m
        gain = 1.0
        if weighted is not None:
            w = weighted.weight.detach().double()
            gain = float(w.pow(2).mean()) * w[0].numel()
        rates = theory_rates(spec, gamma, beta, batch, float(module.eps), gain, stats.get("input_var", float("nan")))
        if rates["why"] and spec is not None:
            notes.append(f"{name}: no theory rate: {rates['why']}")
        measured = None
        if up is not None and by_name[up]["grad_norm_sq"] and row["grad_norm_sq"]:
            measured = by_name[up]["grad_norm_sq"] / row["grad_norm_sq"]
        bn_layers.append({"name": name, "kind": type(module).__name__, "phi": None if spec is None else spec[0],
                          "phi_params": {} if spec is None else spec[1], "phi_found": how, "batch": batch,
                          "eps": float(module.eps), "gamma": gamma, "beta": beta, "sigma_w": math.sqrt(gain),
                          "previous": up, "grad_norm_sq": row["grad_norm_sq"], "measured_rate": measured,
                          "theory_rate": rates["theory_rate"], "local_rate": rates["local_rate"]})  # fmt: skip
    return bn_layers, notes


def _mean_se(values: list) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if len(vals) < len(values) or not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, math.sqrt(var / len(vals))


def _average(draws: list[list[dict]], keys: tuple[str, ...]) -> list[dict]:
    """Draw 0's rows with ``keys`` replaced by their mean over the draws and ``key_stderr`` added."""
    out = []
    for i, row in enumerate(draws[0]):
        merged = dict(row)
        for key in keys:
            if key in row:
                merged[key], merged[f"{key}_stderr"] = _mean_se([d[i].get(key) for d in draws])
        out.append(merged)
    return out


def _one_draw(model, inputs, loss, seed, graph, block_names, classes):
    rows, entries, order, previous, io = _record(model, inputs, loss, seed, 0, block_names)
    bn_layers, notes = _bn_rows(rows, entries, graph, order, previous)
    norms = [r for r in rows if is_norm_kind(r["kind"])]
    last = norms[-1]["grad_norm_sq"] if norms else None
    for b in bn_layers:
        b["log_grad_ratio"] = math.log(b["grad_norm_sq"] / last) if b["grad_norm_sq"] and last else None
    growth = {"measured": None, "first": norms[0]["name"] if norms else None,
              "last": norms[-1]["name"] if norms else None}  # fmt: skip
    if len(norms) >= 2 and norms[0]["grad_norm_sq"] and last:
        growth["measured"] = math.log(norms[0]["grad_norm_sq"] / last)
    blocks = []
    for name in block_names:
        g_in, g_out = io.get(name, (None, None))
        level = "stage" if name in graph.stages else "block"
        first = next((r["kind"] for r in rows if r["name"].startswith(name + ".")), None)  # its first layer called
        blocks.append({"name": name, "level": level, "class": classes[name], "kind": graph.blocks.get(name, "stage"),
                       "first_layer": first,
                       "growth": math.log(g_in / g_out) if g_in and g_out else None})  # fmt: skip
    return rows, bn_layers, blocks, growth, notes


def _predict(model: torch.nn.Module, inputs: torch.Tensor, seed: int):
    """The graph prediction at the inputs' shape, batch size and moments (notes say why where there is none)."""
    from .model_graph import predict_model

    x = inputs.detach().double()
    moments = (float(x.mean()), float(x.pow(2).mean()))
    try:
        return predict_model(model, tuple(inputs.shape[1:]), int(inputs.shape[0]), input_moments=moments, seed=seed)
    except InputError as err:  # no graph (torch.fx cannot trace it), or degenerate inputs: measured only
        return None, [f"no prediction: {err}"]


def _step_loss(loss, labels):
    if loss is not None:
        return loss

    def default(output: torch.Tensor) -> torch.Tensor:
        if output.dim() == 2 and output.shape[1] >= 2:
            target = (
                labels.to(output.device)
                if labels is not None
                else torch.randint(output.shape[1], (output.shape[0],), generator=torch.Generator().manual_seed(0)).to(
                    output.device
                )
            )
            return torch.nn.functional.cross_entropy(output, target)
        return 0.5 * output.pow(2).mean()

    return default


def probe(
    model: torch.nn.Module | Callable[[], torch.nn.Module],
    inputs: torch.Tensor,
    loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    labels: torch.Tensor | None = None,
    steps: int = 0,
    lr: float = 0.01,
    seed: int = 0,
    draws: int = 1,
    predict: bool = True,
) -> ProbeResult:
    """Probe ``model`` on ``inputs`` of shape (B, ...) (module docstring); the model itself is never modified.

    Args:
        model: a ``torch.nn.Module``, or a callable returning one (then ``draws`` call it, after
            ``torch.manual_seed(seed + k)``, keeping its own initialisation).
        inputs: (B, ...) with B >= 2 when the model has BatchNorm (batch statistics).
        loss: ``loss(output)`` a scalar; default ``sum(R * output)`` with a Gaussian R drawn from the seed.
        labels: (B,) integer class labels: the default step loss is then the cross-entropy against them.
        steps, lr: SGD steps on a copy after the measurement (the default step loss in the module docstring;
            lr 0.01).
        predict: also predict every BatchNorm layer's ln gradient ratio from the graph
            (:func:`~bnmft.simulate.model_graph.predict_model`, at the inputs' mean and second moment):
            ``bn_layers[].predicted_log_grad_ratio`` and ``growth["predicted"]`` (None with a note where the graph
            has a node without a mean-field rule).
        draws: K >= 1; K > 1 measures K fresh initialisations (a module: its layers' ``reset_parameters``, torch's
            default initialisation; a factory: its own) and reports means with standard errors.

    Returns:
        :class:`ProbeResult`.

    Raises:
        InputError: not a module, inputs not (B, ...), B = 1 with BatchNorm, bad steps/lr/draws/labels, no layer
            to probe, a forward that raises (its message), an output that is not one tensor.
    """
    factory = None
    if not isinstance(model, torch.nn.Module):
        if not callable(model):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        factory, model = model, seeded_model(model, seed)
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2:
        raise InputError("inputs must be a tensor of shape (B, ...) with B the batch size")
    for name, value, low in (("steps", steps, 0), ("draws", draws, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    if not (isinstance(lr, int | float) and 0 < lr < math.inf):
        raise InputError(f"lr must be a finite number > 0, got {lr!r}")
    if labels is not None and (not isinstance(labels, torch.Tensor) or labels.shape != (inputs.shape[0],)):
        raise InputError(f"labels must be a tensor of shape ({inputs.shape[0]},)")
    if not any(layer_kind(m) is not None for m in model.modules()):
        raise InputError("model: no BatchNorm/LayerNorm/GroupNorm/InstanceNorm, Linear or Conv layer to probe")
    if inputs.shape[0] < 2 and any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise InputError("batch size: 1 with BatchNorm in train mode (batch statistics need B >= 2; the theory B >= 4)")
    return probe_resolved(model, inputs, loss, factory=factory, labels=labels, steps=steps, lr=lr, seed=seed,
                          draws=draws, predict=predict)  # fmt: skip


def probe_resolved(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    factory: Callable[[], torch.nn.Module] | None = None,
    labels: torch.Tensor | None = None,
    steps: int = 0,
    lr: float = 0.01,
    seed: int = 0,
    draws: int = 1,
    predict: bool = True,
    verdict: bool = True,
) -> ProbeResult:
    """The kernel of :func:`probe` (every input checked; ``model`` a module, ``factory`` the callable it came from
    or None). ``verdict=False`` skips the verdict (its design search costs most of a deep model's probe):
    ``ProbeResult.verdict`` is then empty."""
    work = copy.deepcopy(model)  # the user's model is never touched
    work.train()
    graph = analyse(work)
    prediction, predict_notes = _predict(work, inputs, seed) if predict else (None, [])
    classes = {n: type(m).__name__ for n, m in work.named_modules()}
    block_names = [*graph.blocks, *graph.stages]
    results = [_one_draw(work, inputs, loss, seed, graph, block_names, classes)]
    if draws > 1:
        results = []
        for k in range(draws):
            fresh = _fresh(factory or model, seed + k)
            fresh.train()
            results.append(_one_draw(fresh, inputs, loss, seed + k, graph, block_names, classes))
    rows = _average([r[0] for r in results], ("grad_norm_sq", "channel_var", "channel_mean", "batch_correlation",
                                              "bsb1_distance", "weight_grad_norm_sq"))  # fmt: skip
    bn_layers = _average([r[1] for r in results], ("grad_norm_sq", "measured_rate", "log_grad_ratio", "theory_rate",
                                                   "local_rate"))  # fmt: skip
    blocks = _average([r[2] for r in results], ("growth",))
    growth = _average([[r[3]] for r in results], ("measured",))[0]
    notes = [f"mode: {ProbeResult.mode}; graph: {'torch.fx' if graph.traced else 'hooks (call order)'}"]
    notes += graph.notes + list(dict.fromkeys(n for r in results for n in r[4])) + predict_notes
    if prediction is not None:
        predicted = {n["name"]: n["log_grad_ratio"] for n in prediction.norm_layers}
        for b in bn_layers:
            b["predicted_log_grad_ratio"] = predicted.get(b["name"])
        growth["predicted"] = prediction.growth
    if not any(is_norm(m) for m in work.modules()):
        notes.append("no normalisation layer: the gradient profile of the Linear/Conv layers only, no theory")
    for row in rows:
        if row["kind"] in ("layernorm", "groupnorm", "instancenorm"):  # the theory is BatchNorm's
            row["theory"] = "none: the mean field theory covers BatchNorm only"
            notes.append(f"{row['name']} ({row['kind']}): measured; no theory (the mean field theory is BatchNorm's)")
    judged = make_verdict(growth, blocks, bn_layers) if verdict else {}
    if steps:
        stepped = copy.deepcopy(work)
        opt = torch.optim.SGD(stepped.parameters(), lr=lr)
        step_loss = _step_loss(loss, labels)
        for _ in range(steps):
            _record(stepped, inputs, step_loss, seed, 0, [])
            opt.step()
        after = _record(stepped, inputs, loss, seed, steps, [])[0]
        rows += after
        norms = [r for r in after if is_norm_kind(r["kind"])]
        if len(norms) >= 2 and norms[0]["grad_norm_sq"] and norms[-1]["grad_norm_sq"]:
            growth["after_steps"] = math.log(norms[0]["grad_norm_sq"] / norms[-1]["grad_norm_sq"])
    return ProbeResult(rows, bn_layers, steps, notes, blocks, growth, judged, draws, graph.traced)


def fit_inputs(
    model: torch.nn.Module, examples, native: tuple[int, ...], labels, shape: tuple[int, ...] | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Examples ``(B, d)`` (numpy) of shape ``native`` as the model's inputs: ``shape`` if given (reshaped when the
    sizes agree; images resized bilinearly, channels repeated from 1 or averaged to 1, otherwise), else the first
    Linear layer's ``in_features`` when the model starts with one (flattened), else ``native``.

    Raises:
        InputError: the examples cannot be brought to the shape (the message names both shapes).
    """
    x = torch.as_tensor(examples, dtype=torch.float32).reshape(len(examples), *native)
    y = None if labels is None else torch.as_tensor(labels, dtype=torch.int64)
    if shape is None:
        shape = _linear_input_shape(model)
    if shape is None or tuple(shape) == tuple(native):
        return x, y
    if math.prod(shape) == math.prod(native):
        return x.reshape(len(x), *shape), y
    if len(shape) == 3 and len(native) == 3 and (shape[0] == native[0] or 1 in (shape[0], native[0])):
        x = torch.nn.functional.interpolate(x, size=tuple(shape[1:]), mode="bilinear", align_corners=False)
        if x.shape[1] != shape[0]:
            x = x.expand(-1, shape[0], -1, -1).clone() if x.shape[1] == 1 else x.mean(dim=1, keepdim=True)
        return x, y
    raise InputError(f"--data: examples of shape {'x'.join(map(str, native))} cannot be brought to the model's input "
                     f"shape {'x'.join(map(str, shape))} (give --input-shape as CxHxW or a matching size)")  # fmt: skip
