"""A probe for any PyTorch model: per-layer forward statistics and backward gradient norms at initialisation (and
after a few optimizer steps), with the theory's per-layer rate beside every BatchNorm layer.

Hooks on every normalisation layer (BatchNorm1d/2d/3d, LayerNorm, GroupNorm) and every Linear/Conv layer record,
in forward order, the layer's output: per-channel mean and variance over (batch, positions) averaged over channels
(channel axis 1, or the last axis of a 2-D output), the batch correlation (mean off-diagonal correlation of the
examples' flattened outputs) and the scale-free distance of the centred batch Gram matrix to the BSB1 shape
(as in the simulator); and, after the backward pass, the squared norm of the loss gradient w.r.t. that output and,
for layers with weights, of the weight gradient.

The loss is ``loss(output)`` if given, else ``sum(R * output)`` with a fixed Gaussian R (an i.i.d. gradient at
the output, as in the simulator). ``bn_layers``: for each BatchNorm layer after the first, ``measured_rate`` is the
growth of the squared gradient norm across the block it ends, ``||dL/d out(BN_(i-1))||^2 / ||dL/d out(BN_i)||^2``;
``theory_rate`` is the mean-field lambda_G for the nonlinearity that follows the layer (the first activation
module after it in forward order; :data:`bnmft.simulate.torch_phi.TORCH_MODULES`: ``nn.ReLU`` -> relu, ...), BN's
gamma and beta (their means) and the batch size the statistics run over: B for BatchNorm1d, B x positions for
BatchNorm2d/3d (the periodic-padding conv theory, ``docs/convolutional.md``; zero padding and pooling make it
approximate), taken
*locally* at the layer's measured state (:func:`bnmft.meanfield.local_rate`: BN's eps against the measured pre-BN
variance, the preceding Linear/Conv's weight scale), which is lambda_G at the fixed point and follows the layer
away from it (large eps, shrinking variances).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from .network import Segment, gram_stats
from .torch_phi import module_phi

NORMS = {
    torch.nn.BatchNorm1d: "batchnorm",
    torch.nn.BatchNorm2d: "batchnorm",
    torch.nn.BatchNorm3d: "batchnorm",
    torch.nn.LayerNorm: "layernorm",
    torch.nn.GroupNorm: "groupnorm",
}
WEIGHTED = {
    torch.nn.Linear: "linear",
    torch.nn.Conv1d: "conv",
    torch.nn.Conv2d: "conv",
    torch.nn.Conv3d: "conv",
}


@dataclass
class ProbeResult:
    """``layers``: tidy rows (one per recorded layer and step); ``bn_layers``: one per BatchNorm layer at step 0
    (name, measured_rate, theory_rate, phi, batch the statistics run over); ``steps``: optimizer steps taken."""

    layers: list[dict]
    bn_layers: list[dict]
    steps: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"layers": self.layers, "bn_layers": self.bn_layers, "steps": self.steps, "notes": self.notes}


def _kind(module: torch.nn.Module) -> str | None:
    for cls, kind in (*NORMS.items(), *WEIGHTED.items()):
        if isinstance(module, cls):
            return kind
    return None


def _forward_stats(out: torch.Tensor) -> dict:
    x = out.detach().double()
    b = x.shape[0]
    per_channel = x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() > 2 else x.T  # (channels, B x positions)
    var, mean = torch.var_mean(per_channel, dim=1, unbiased=False)
    flat = x.reshape(b, -1)
    gram = flat @ flat.T / flat.shape[1]
    diag = torch.diagonal(gram)
    corr = gram / torch.sqrt(torch.outer(diag, diag)).clamp_min(1e-300)
    off = (corr.sum() - torch.diagonal(corr).sum()) / max(b * (b - 1), 1)
    dist = gram_stats(flat[None], Segment(0, b, b))[2][0]  # the simulator's distance to BSB1
    return {
        "shape": list(x.shape),
        "channel_mean": float(mean.mean()),
        "channel_var": float(var.mean()),
        "batch_correlation": float(off),
        "bsb1_distance": float(dist),
    }


def _record(model: torch.nn.Module, inputs: torch.Tensor, loss, gen, step: int):
    """One forward and backward pass: rows (forward order), and per BN layer its module and pre-BN variance."""
    entries: list[tuple[str, torch.nn.Module, torch.Tensor, dict]] = []
    order: list[tuple[str, torch.nn.Module]] = []  # every module in call order (to find the activations)
    names = {m: n for n, m in model.named_modules()}
    hooks = []

    def hook(module, args, out):
        order.append((names[module], module))
        kind = _kind(module)
        if kind is None or not isinstance(out, torch.Tensor):
            return None
        stats = _forward_stats(out)
        if args and isinstance(args[0], torch.Tensor):  # the input's per-channel biased variance
            inp = args[0].detach().double()
            per_channel = inp.transpose(0, 1).reshape(inp.shape[1], -1) if inp.dim() > 2 else inp.T
            stats["input_var"] = float(per_channel.var(dim=1, unbiased=False).mean())
        out.retain_grad()
        entries.append((names[module], module, out, stats))
        return None

    for m in model.modules():
        if m is not model or _kind(m) is not None:
            hooks.append(m.register_forward_hook(hook))
    try:
        output = model(inputs)
    finally:
        for h in hooks:
            h.remove()
    if not isinstance(output, torch.Tensor):
        raise InputError("model: its forward must return one tensor (the probe backpropagates from it)")
    if not output.requires_grad:
        raise InputError("model: its output does not depend on any parameter or on the probed layers")
    model.zero_grad(set_to_none=True)
    if loss is None:
        value = (output * torch.randn(output.shape, generator=gen, dtype=output.dtype).to(output.device)).sum()
    else:
        value = loss(output)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise InputError("loss: must return a scalar tensor")
    value.backward()
    rows = []
    for index, (name, module, out, stats) in enumerate(entries):
        grad = out.grad
        row = {
            "step": step,
            "index": index,
            "name": name,
            "kind": _kind(module),
            **stats,
            "grad_norm_sq": float(grad.double().pow(2).sum()) if grad is not None else None,
        }
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.grad is not None:
            row["weight_norm_sq"] = float(weight.detach().double().pow(2).sum())
            row["weight_grad_norm_sq"] = float(weight.grad.double().pow(2).sum())
        rows.append(row)
    return rows, entries, order, value


def _phi_after(bn: torch.nn.Module, order: list[tuple[str, torch.nn.Module]]) -> tuple[str, dict] | None:
    """The nonlinearity of the first activation module called after ``bn`` and before the next weighted layer."""
    seen = False
    for _, m in order:
        if m is bn:
            seen = True
            continue
        if not seen:
            continue
        if _kind(m) in ("linear", "conv", "batchnorm", "layernorm", "groupnorm"):
            return None
        phi = module_phi(m)
        if phi is not None:
            return phi
    return None


def _weight_before(bn: torch.nn.Module, order: list[tuple[str, torch.nn.Module]]) -> torch.nn.Module | None:
    """The last Linear/Conv layer called before ``bn``."""
    last = None
    for _, m in order:
        if m is bn:
            return last
        if _kind(m) in ("linear", "conv"):
            last = m
    return None


def _theory_rate(bn, phi_spec, batch: int, input_var: float, weighted) -> tuple[float | None, str | None]:
    from ..meanfield.residual import local_rate_resolved
    from ..nonlinearity import resolve
    from ..options import check_batch_size, check_real

    if phi_spec is None:
        return None, "no activation module found after it"
    if batch < 4:
        return None, f"its statistics run over {batch} values (< 4)"
    name, params = phi_spec
    gamma = float(bn.weight.detach().mean()) if getattr(bn, "weight", None) is not None else 1.0
    beta = float(bn.bias.detach().mean()) if getattr(bn, "bias", None) is not None else 0.0
    # the weights' backward gain E||W^T g||^2 / ||g||^2 = mean(W^2) fan_in (fan_in = in_channels/groups x k^d)
    gain = 1.0
    if weighted is not None:
        w = weighted.weight.detach().double()
        gain = float(w.pow(2).mean()) * w[0].numel()
    try:
        # this layer's phi(gamma z + beta), resolved once (gamma, beta are this BN layer's)
        _, effective = resolve(name, gamma=gamma, beta=beta, **params)
        rate = local_rate_resolved(
            effective, int(check_batch_size(batch)), input_variance=check_real("input_variance", input_var,
            positive=True), eps=check_real("eps", float(bn.eps), minimum=0.0), weight_gain=check_real("weight_gain",
            gain, positive=True),
        )  # fmt: skip
        return rate, None
    except InputError as err:
        return None, str(err)


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


def gaussian_inputs(model: torch.nn.Module, batch_size: int, shape: tuple[int, ...] | None, seed: int) -> torch.Tensor:
    """A ``(batch_size, *shape)`` batch of i.i.d. N(0, 1) inputs drawn from ``seed``; without ``shape``, the first
    Linear layer's ``in_features`` (before any convolution).

    Raises:
        InputError: no shape given and the model does not start with a Linear layer.
    """
    if shape is None:
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                shape = (m.in_features,)
                break
            if isinstance(m, torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Conv3d):
                break
    if shape is None:
        raise InputError("shape: needed, the model does not start with a Linear layer (CLI: --input-shape)")
    return torch.randn(batch_size, *shape, generator=torch.Generator().manual_seed(seed))


def probe(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    steps: int = 0,
    lr: float = 0.01,
    seed: int = 0,
) -> ProbeResult:
    """Probe ``model`` on ``inputs`` (module docstring). The model is put in training mode (BN uses batch
    statistics). With ``steps`` > 0, that many SGD steps (``lr``) on the loss follow, and the layers are recorded
    again (rows with ``step = steps``).

    Returns:
        :class:`ProbeResult`.
    """
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, torch.Tensor) or inputs.dim() < 2:
        raise InputError("inputs must be a tensor of shape (B, ...) with B the batch size")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise InputError(f"steps must be an integer >= 0, got {steps!r}")
    if not any(_kind(m) is not None for m in model.modules()):
        raise InputError("model: no BatchNorm/LayerNorm/GroupNorm, Linear or Conv layer to probe")
    model.train()
    gen = torch.Generator().manual_seed(seed)
    rows, entries, order, _ = _record(model, inputs, loss, gen, 0)
    if not entries:
        raise InputError("model: no BatchNorm/LayerNorm/GroupNorm, Linear or Conv layer to probe")
    bn_layers, notes, previous = [], [], None
    for row, (name, module, out, stats) in zip(rows, entries, strict=True):
        if row["kind"] != "batchnorm":
            continue
        b = out.shape[0]
        batch = b * math.prod(out.shape[2:]) if out.dim() > 2 else b
        spec = _phi_after(module, order)
        weighted = _weight_before(module, order)
        rate, why = _theory_rate(module, spec, batch, stats.get("input_var", 1.0), weighted)
        if why:
            notes.append(f"{name}: no theory rate: {why}")
        measured = None
        if previous is not None and previous["grad_norm_sq"] and row["grad_norm_sq"]:
            measured = previous["grad_norm_sq"] / row["grad_norm_sq"]
        bn_layers.append(
            {
                "name": name,
                "kind": type(module).__name__,
                "phi": None if spec is None else spec[0],
                "batch": batch,
                "measured_rate": measured,
                "theory_rate": rate,
            }
        )
        previous = row
    if steps:
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for _ in range(steps):
            _record(model, inputs, loss, torch.Generator().manual_seed(seed), 0)
            opt.step()  # the gradients of the loss (same R each step), as _record left them
        rows += _record(model, inputs, loss, torch.Generator().manual_seed(seed), steps)[0]
    return ProbeResult(rows, bn_layers, steps, notes)
