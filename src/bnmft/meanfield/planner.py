"""The depth planner: settings that make a given depth trainable by the theory, staying as nonlinear as possible.

For each knob on its own (the others at the given values) the planner finds the setting closest to the nonlinear
end that still reaches the target depth D:

* ``gamma`` (tanh-like phi: both tails grow, ``phi(gamma z)`` is linear as gamma -> 0): the *largest* gamma;
* ``beta`` (relu-like phi: one tail flat, ``phi(z + beta)`` is linear as beta -> inf): the *smallest* beta >= 0;
* ``eps`` (any phi; eps -> large makes BN a linear map, docs/theory.md section 6): the *smallest* eps;
* ``branch_scale`` (residual networks, docs/theory.md section 9): the *largest* branch scale a of ``x + a F(x)``.

"Reaches D": a plain network's predicted trainable depth ``16 / ln max(lambda_G, lambda_W)``
(:func:`bnmft.theory`) is >= D; a residual network's ``ln(E||g^0||^2 / E||g^D||^2)`` at depth D is <= the
criterion (16, :func:`bnmft.residual_theory`). Search: :data:`SCAN_POINTS` values over the knob's range
(log-spaced for gamma, eps, branch_scale; linear for beta) walked from the nonlinear end until one reaches D, then
bisection to a relative tolerance of 1e-4 against the value before it (the predicted depth is monotone in each knob
for the nonlinearities we checked). ``at_bound``: already the nonlinear end of the range reaches D.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..nonlinearity import Nonlinearity, PhiSpec, resolve
from ..options import check_batch_size, check_bn_options, check_int, check_real
from .api import check_theory_input, theory_resolved
from .residual import (
    DEFAULT_CRITERION,
    branch_scale_and_params,
    check_residual_scales,
    check_residual_shape,
    residual_theory_resolved,
)

#: (low, high, log-spaced, the nonlinear end is "high") per knob
RANGES = {
    "gamma": (1e-3, 4.0, True, True),
    "beta": (0.0, 10.0, False, False),
    "eps": (1e-6, 100.0, True, False),
    "branch_scale": (1e-4, 1.0, True, True),
}
#: old knob names: still accepted, with a DeprecationWarning
DEPRECATED_KNOBS = {"alpha": "branch_scale"}
SCAN_POINTS = 25
BISECTION_TOL = 1e-4
#: theory evaluations per knob, about at most (the scan, eps = 0, the bisection, the full one): progress's unit
EVALUATIONS_PER_KNOB = SCAN_POINTS + 20


@dataclass(frozen=True)
class DesignOption:
    """One knob's setting: ``value``; ``predicted_depth`` (the theory's trainable depth there; None: beyond the
    search); ``lambda_G`` (the plain network's per-layer rate there) and, for residual networks, ``exponent``;
    ``at_bound``: the value is the end of the searched range (every value up to it reaches D)."""

    knob: str
    value: float
    predicted_depth: float | None
    lambda_G: float
    exponent: float | None
    at_bound: bool


@dataclass(frozen=True)
class DesignResult:
    """``options``: one :class:`DesignOption` per knob that reaches D; ``unreachable``: knob -> why not."""

    phi: str
    batch_size: int
    depth: int
    residual: bool
    branch_depth: int | None
    settings: dict
    options: list[DesignOption]
    unreachable: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _knobs_for(effective, residual_net: bool) -> list[str]:
    """gamma for tanh-like phi, beta for relu-like (one flat tail), neither for affine phi; eps; branch_scale
    (residual)."""
    knobs = []
    if effective.affine is None:
        tails = effective(np.array([-20.0, 20.0]))
        relu_like = abs(tails[0]) < 0.1 * abs(tails[1]) or abs(tails[1]) < 0.1 * abs(tails[0])
        knobs.append("beta" if relu_like else "gamma")
    knobs.append("eps")
    if residual_net:
        knobs.append("branch_scale")
    return knobs


def design(
    phi: PhiSpec,
    batch_size: int,
    depth: int,
    *,
    residual_network: bool = False,
    branch_depth: int = 1,
    branch: str = "bn_first",
    branch_scale: float | None = None,
    eps: float = 0.0,
    sigma_w: float = 1.0,
    gamma: float = 1.0,
    beta: float = 0.0,
    knobs: list[str] | None = None,
    criterion: float = DEFAULT_CRITERION,
    derivative: Callable[[np.ndarray], np.ndarray] | None = None,
    kinks: tuple[float, ...] = (),
    progress: Callable[[int, int], None] | None = None,
    **params: Any,
) -> DesignResult:
    """Settings that make ``depth`` trainable by the theory, as nonlinear as possible (module docstring).

    Args:
        phi, batch_size: the nonlinearity and B (finite, >= 4).
        depth: the target depth D (layers of a plain network, blocks of a residual one).
        residual_network: plan a residual network (:func:`bnmft.residual_theory`) with ``branch_depth``,
            ``branch``.
        branch_scale, eps, sigma_w, gamma, beta: the other knobs' values while one is searched (branch_scale None:
            1).
        knobs: which knobs to search (default: gamma or beta by phi's shape, eps, and branch_scale for residual
            networks; ``"alpha"`` is branch_scale's deprecated name).
        criterion: residual networks: the largest allowed ``ln(E||g^0||^2 / E||g^D||^2)``.
        derivative, kinks, **params: phi's, as for :func:`bnmft.theory`; ``alpha=`` as for
            :func:`bnmft.residual_theory` (phi's parameter for alpha_relu and elu, else the deprecated branch scale).
        progress: called as ``progress(done, total)`` after each evaluation of the theory (a residual network of
            D x K layers costs some 6 s per 1e7 layers each; ``total``: EVALUATIONS_PER_KNOB per knob and one).

    Returns:
        :class:`DesignResult`.

    Raises:
        InputError: bad settings (named before any search: a constant phi or an overflow at the given settings,
            a residual depth above MAX_DEPTH, options of residual networks without ``residual_network``), or no
            knob reaches D (the message gives each knob's best predicted depth).
    """
    scale, phi_params = branch_scale_and_params(phi, branch_scale, params)
    scale_given = branch_scale is not None or len(phi_params) < len(params)  # or the deprecated alpha=
    params = phi_params
    b = check_batch_size(batch_size)
    if math.isinf(b):
        raise InputError("batch_size must be finite for the planner")
    b = int(b)
    eps, sigma_w, gamma, beta = check_bn_options(eps=eps, sigma_w=sigma_w, gamma=gamma, beta=beta)
    if residual_network:
        depth, branch_depth = check_residual_shape(depth, branch_depth, branch)
        scale = check_real("branch_scale", scale, minimum=0.0)
        crit = check_residual_scales(sigma_w, [scale], criterion)
    else:
        residual_only = {
            "branch_depth": branch_depth != 1,
            "branch": branch != "bn_first",
            "branch_scale": scale_given,
            "criterion": criterion != DEFAULT_CRITERION,
        }
        for name, given in residual_only.items():
            if given:
                raise InputError(
                    f"{name} applies to residual networks only (residual_network=True); a plain network's depth is "
                    "16 / ln max(lambda_G, lambda_W)"
                )
        depth, crit = check_int("depth", depth), DEFAULT_CRITERION
    base, effective = resolve(phi, gamma=gamma, beta=beta, derivative=derivative, kinks=kinks, **params)
    if knobs is not None:
        for old in set(knobs) & set(DEPRECATED_KNOBS):
            new = DEPRECATED_KNOBS[old]
            warnings.warn(f"knob {old!r} is deprecated: use {new!r}", DeprecationWarning, stacklevel=2)
        knobs = [DEPRECATED_KNOBS.get(k, k) for k in knobs]
    return design_resolved(
        base, effective, b, depth, residual_network=residual_network, branch_depth=branch_depth, branch=branch,
        branch_scale=scale, eps=eps, sigma_w=sigma_w, gamma=gamma, beta=beta, knobs=knobs, criterion=crit,
        progress=progress,
    )  # fmt: skip


def design_resolved(
    base: Nonlinearity,
    effective: Nonlinearity,
    b: int,
    depth: int,
    *,
    residual_network: bool,
    branch_depth: int,
    branch: str,
    branch_scale: float,
    eps: float,
    sigma_w: float,
    gamma: float,
    beta: float,
    knobs: list[str] | None,
    criterion: float,
    progress: Callable[[int, int], None] | None = None,
) -> DesignResult:
    """The kernel of :func:`design`: phi resolved (``base``, and ``effective`` with gamma and beta folded in), every
    setting already checked (finite B >= 4, depth, branch, criterion > 0, BN options; ``knobs`` with the deprecated
    names mapped). The probe's verdict calls it with a model's measured setting.

    Raises:
        InputError: a knob that does not apply, or no knob reaches ``depth``.
    """
    scale, crit = branch_scale, criterion
    for knob in knobs or []:
        if knob not in RANGES or (knob == "branch_scale" and not residual_network):
            allowed = tuple(k for k in RANGES if residual_network or k != "branch_scale")
            raise InputError(f"knobs: {knob!r} is not one of {allowed}")
    settings = {"gamma": gamma, "beta": beta, "eps": eps, "branch_scale": scale}
    chosen = knobs if knobs is not None else _knobs_for(effective, residual_network)
    total = 1 + len(chosen) * EVALUATIONS_PER_KNOB
    count = {"done": 0, "ceiling": 1}  # evaluations reported, and the most the current knob may report

    def tick(skip_to: int | None = None) -> None:
        count["done"] = min(count["done"] + 1, count["ceiling"]) if skip_to is None else skip_to
        if progress is not None:
            progress(count["done"], total)

    def evaluate(values: dict, full: bool = False):
        """(reaches D, predicted depth or None, lambda_G, exponent) at these settings: phi is not resolved again,
        only BN's gamma and beta are folded into it (:meth:`Nonlinearity.affine_input`)."""
        tick()
        _, checked = check_theory_input(b, eps=values["eps"], sigma_w=sigma_w, gamma=values["gamma"],
                                        beta=values["beta"])  # fmt: skip
        here = base.affine_input(checked["gamma"], checked["beta"])
        if not residual_network:
            t = theory_resolved(base, here, b, **checked)
            finite = math.isfinite(t.max_trainable_depth)
            return t.max_trainable_depth >= depth, t.max_trainable_depth if finite else None, t.lambda_G, None
        r = residual_theory_resolved(
            base, here, b, depth=depth, branch_depth=branch_depth, branch=branch,
            branch_scale=float(values["branch_scale"]), eps=checked["eps"], sigma_w=sigma_w,
            gamma=checked["gamma"], beta=checked["beta"], input_variance=1.0, input_correlation=0.0,
            output_gradient="iid", criterion=crit, trainable_depth=full,
        )  # fmt: skip
        return r.blocks[0]["log_grad_ratio"] <= crit, r.max_trainable_depth, r.lambda_G, r.exponent

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # the kernels check every number they return
        evaluate(settings)  # the given settings themselves (a constant phi, an overflow) are named, not searched past
    options, unreachable = [], {}
    for i, knob in enumerate(chosen):
        tick(skip_to=1 + i * EVALUATIONS_PER_KNOB)  # the knobs before this one are done
        count["ceiling"] = 1 + (i + 1) * EVALUATIONS_PER_KNOB
        low, high, log_scale, high_is_nonlinear = RANGES[knob]

        def reaches(v: float, knob: str = knob) -> bool:
            try:
                # the kernels check every number: overflow at a setting is their InputError, not a warning
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    return evaluate(dict(settings, **{knob: v}))[0]
            except InputError:  # e.g. a constant phi at this setting: not a usable design
                return False

        grid = np.geomspace(low, high, SCAN_POINTS) if log_scale else np.linspace(low, high, SCAN_POINTS)
        if high_is_nonlinear:
            grid = grid[::-1]  # from the nonlinear end toward the linear end
        if knob == "eps":
            grid = np.concatenate([[0.0], grid])  # eps = 0 (the paper's BN) is the nonlinear end
        # the first value (from the nonlinear end) that reaches D, then bisection against the one before it
        first = next((j for j, v in enumerate(grid) if reaches(float(v))), None)
        if first is None:
            unreachable[knob] = f"no {knob} in [{low:g}, {high:g}] reaches depth {depth}"
            continue
        best, at_bound = float(grid[first]), first == 0
        if not at_bound:
            good, bad = best, float(grid[first - 1])
            while abs(bad - good) > BISECTION_TOL * max(abs(good), abs(bad), 1e-12):
                mid = math.sqrt(good * bad) if log_scale and good > 0 else 0.5 * (good + bad)
                good, bad = (mid, bad) if reaches(mid) else (good, mid)
            best = good
        _, predicted, lam, exponent = evaluate(dict(settings, **{knob: best}), full=True)
        options.append(DesignOption(knob, best, predicted, lam, exponent, at_bound))
    tick(skip_to=total)
    if not options:
        raise InputError(
            f"no setting reaches depth {depth} for phi={base.name!r}, B={b}"
            + (f", residual branch_depth={branch_depth}" if residual_network else "")
            + ": "
            + "; ".join(unreachable.values())
            + (" (try a residual network: --residual)" if not residual_network else "")
        )
    return DesignResult(
        phi=base.name,
        batch_size=b,
        depth=depth,
        residual=residual_network,
        branch_depth=branch_depth if residual_network else None,
        settings={**settings, "sigma_w": sigma_w, **({"branch": branch} if residual_network else {})},
        options=options,
        unreachable=unreachable,
    )
