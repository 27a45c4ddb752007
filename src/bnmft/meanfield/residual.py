"""Residual BN networks (docs/theory.md section 9; derivation in docs/residual.md): exact mean field per block.

Network: ``x^(l+1) = x^l + a_l F(x^l)``, l = 0 .. D-1, ``a_l`` the branch scale (``branch_scale``);
the branch F is ``K x [BN -> phi -> linear]`` (``branch="bn_first"``) or ``linear -> K x [BN -> phi -> linear]``
(``"linear_first"``), weights ``N(0, sigma_w^2 / N)``, BN with eps over the batch. Inputs: every neuron of x^0 an
independent Gaussian batch vector with the BSB1 covariance ``q_in ((1 - c_in) I + c_in 11^T)`` (i.i.d. Gaussian
inputs: c_in = 0).

The state is exact in two numbers per block, forward and backward (docs/residual.md):

* Forward. Each branch's BN sees a BSB1 input, so its output is BSB1 (docs/theory.md 2, 6) and the stream stays BSB1:
  ``Sigma^l = m_l G + n_l 11^T / B``. A BN -> phi layer whose input has centred eigenvalue ``mu_h`` (``G Sigma_h G
  = mu_h G``) returns ``E[phi phi^T] = (Q - P) I + P 11^T`` with ``Q, P`` the chi-averages of the spherical moments
  at ``s = chi^2 / (chi^2 + B eps / mu_h)`` (``mu_h``-independent at eps = 0). The branch adds
  ``a_l^2 sigma_w^2 ((Q - P) G + (Q + (B-1) P) 11^T / B)`` to the stream (cross terms vanish: the last linear
  layer's weights are independent of x^l and have mean zero).
* Backward. The gradient covariance w.r.t. x^l is ``a_l G + b_l 11^T / B`` exactly, starting from ``a_D = b_D = 1``
  (a loss linear in the output: an i.i.d. gradient). The skip passes both parts; the branch maps the pair to a
  multiple of G: ``a_l = a_(l+1) (1 + a_l^2 g_l) + b a_l^2 u_l``, ``b_l = 1`` (the a_l in the factors is the
  branch scale), where g_l (the G -> G gain)
  and u_l (11^T/B -> G) are products over the branch's layers of ``sigma_w^2 lambda_hat(e) / mu_h`` and, for the
  last layer of the u-path, ``sigma_w^2 (t_hat(e) - lambda_hat(e)) / mu_h``, with
  ``lambda_hat = E_chi[K(s) / (chi^2 + B e)]`` (docs/theory.md 6.4) and
  ``t_hat = B/(B-1) E_chi[((B-1) E[d^2] - (2s - s^2) E[x^2 d^2]) / (chi^2 + B e)]``, ``e = eps / mu_h``.
  ``E||dL/dx^l||^2 / E||dL/dx^D||^2 = ((B-1) a_l + 1) / B``.

Asymptotics: the stream's centred variance grows linearly, the first BN's ``e`` tends to 0, and
``E||g^0||^2 / E||g^D||^2 ~ (m_D / m_0)^exponent`` with ``exponent = lim m_l g_l / (sigma_w^2 F_K)``
(``lambda_G^K`` at eps = 0). Trainable depth: the largest D whose ``ln(E||g^0||^2 / E||g^D||^2)`` stays within
``criterion`` (16: the paper's ``16 / ln lambda_G`` layers of a plain network are exactly a total growth e^16).

Accuracy: the spherical moments to ~1e-13 (eps = 0), the eps > 0 curves to ~1e-10 (module :mod:`.eps`); the
recursions are exact. Beyond :data:`EXACT_BLOCKS` blocks with eps > 0, the first layer's e = eps / m_l (< 1e-3
typically) is replaced by its e -> 0 limit when searching the trainable depth; the error this makes in the log
gradient ratio is below ``exponent * eps / m`` at that block (stated in the result's ``notes``).
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..nonlinearity import Nonlinearity, PhiSpec, resolve, takes_parameter
from ..options import check_batch_size, check_bn_options, check_in_range, check_int, check_real
from .eps import chi_rule, moment_curves
from .eps import solve as solve_eps
from .moments import spherical_moments_resolved

BRANCHES = ("bn_first", "linear_first")
#: the gradient at the output: i.i.d. (a loss linear in x^D) or centred over the batch (a BN after x^D, as in a
#: pre-activation ResNet's final BN -> phi -> classifier): b_D = 1 or 0
OUTPUT_GRADIENTS = ("iid", "centred")
#: the paper's trainable depth 16 / ln(lambda_G) is a total gradient growth of e^16
DEFAULT_CRITERION = 16.0
#: deepest network computed block by block (D); the trainable-depth search goes on in closed form past it
MAX_DEPTH = 100_000
#: blocks computed exactly (eps > 0) in the trainable-depth search before the first layer's e -> 0 limit is used
EXACT_BLOCKS = 500
#: the trainable-depth search stops here (reported as "beyond")
MAX_SEARCH_DEPTH = 10**8
#: blocks per vectorised chunk of that search
CHUNK = 2**21
#: sigma_w and the branch scale: sigma_w^2, a^2 sigma_w^2 and the stream variance over MAX_SEARCH_DEPTH blocks stay
#: within double precision (as the simulator's float64 limits)
SIGMA_W_RANGE = (1e-100, 1e100)
MAX_BRANCH_SCALE = 1e100
#: the criterion is a natural log of the gradient growth: e^700 is close to the largest double
MAX_CRITERION = 700.0
#: the largest branch depth K (each block evaluates K layers)
MAX_BRANCH_DEPTH = 1000
#: the most layers D x K computed one by one (each a Python step: 10^7 take some 6 s, and design repeats them)
MAX_LAYERS = 10**7
#: past EXACT_BLOCKS the search takes the first layer's e -> 0; a larger relative change of the block gain there
#: means eps is still large against the stream variance and that limit would not be an approximation
MAX_TAIL_EFFECT = 0.5


@dataclass(frozen=True)
class LayerValues:
    """One BN -> phi layer at ``e = eps / mu_h``: forward Q = E[phi_1^2], P = E[phi_1 phi_2], and the backward
    lambda_hat, t_hat (module docstring); the layer's centred output eigenvalue is ``F = Q - P`` (computed without
    cancellation)."""

    F: float
    Q: float
    P: float
    lam_hat: float
    t_hat: float


class _Layer:
    """The BN -> phi layer map of one phi and batch size, at any e = eps / mu_h >= 0."""

    def __init__(self, phi: Nonlinearity, b: int, with_eps: bool):
        self.b = b
        m = spherical_moments_resolved(phi, b)
        k1 = (b - 1) * m.d2 + m.dd - m.xd  # K(1) of docs/theory.md 6.4
        self.zero = LayerValues(
            F=m.mu,
            Q=m.second,
            P=m.cross,
            lam_hat=k1 / (b - 3),
            t_hat=b / (b - 1) * ((b - 1) * m.d2 - m.x2d2) / (b - 3),
        )
        self.curves = moment_curves(phi, b) if with_eps else None
        chi2, w = chi_rule(b - 1)
        keep = w > 1e-17 * w.max()  # nodes below this weight change no digit (half of them): twice as fast
        self.chi2, self.w = chi2[keep], w[keep] / w[keep].sum()

    def __call__(self, e: float) -> LayerValues:
        if e == 0.0:
            return self.zero
        assert self.curves is not None
        b, chi2 = self.b, self.chi2
        denom = chi2 + b * e
        s = chi2 / denom
        mu, q, p, k1, xd, d2, x2d2 = self.curves(s)
        k = k1 - (2 * s - s * s) * xd
        t = b / (b - 1) * ((b - 1) * d2 - (2 * s - s * s) * x2d2)
        w = self.w
        return LayerValues(
            F=float(w @ mu),
            Q=float(w @ q),
            P=float(w @ p),
            lam_hat=float(w @ (k / denom)),
            t_hat=float(w @ (t / denom)),
        )


@dataclass(frozen=True)
class _Block:
    """One residual block at stream centred eigenvalue m: the branch's output (F, Q, P of its last layer) and its
    backward gains g (G -> G) and u (11^T/B -> G), both without the squared branch scale."""

    F: float
    Q: float
    P: float
    g: float
    u: float


@dataclass(frozen=True)
class ResidualResult:
    """Per-block mean field of a residual BN network (module docstring).

    ``blocks``: one dict per block l = 0 .. D (x^0 the input, x^D the output) with ``block``, ``branch_scale``
    (the block's; None at l = D), ``stream_variance`` (per-neuron centred, biased batch variance
    ``m_l (B-1)/B``), ``stream_second_moment`` (``tr Sigma^l / B``), ``distance_to_bsb1`` (0: the stream is
    exactly BSB1 in mean field), ``grad_norm_sq`` (``E||dL/dx^l||^2 / E||dL/dx^D||^2``) and ``log_grad_ratio``
    (its log; 0 at l = D). ``exponent``: the power law ``E||g^0||^2 / E||g^D||^2 ~ (stream variance ratio)^exponent``;
    ``lambda_G``: the plain network's rate at eps (``exponent = lambda_G^K`` at eps = 0);
    ``max_trainable_depth``: the largest D with ``log_grad_ratio[0] <= criterion`` for this branch scale (a
    per-block sequence: its last value continues), None when beyond :data:`MAX_SEARCH_DEPTH`. ``branch_scale``: one
    number, or one per block (``alpha`` is its deprecated name).
    """

    phi: str
    batch_size: int
    depth: int
    branch_depth: int
    branch: str
    branch_scale: float | tuple[float, ...]
    eps: float
    sigma_w: float
    gamma: float
    beta: float
    input_variance: float
    input_correlation: float
    output_gradient: str
    exponent: float
    lambda_G: float
    criterion: float
    max_trainable_depth: int | None
    blocks: list[dict] = field(repr=False)
    notes: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)

    def rows(self) -> list[dict]:
        """Tidy records: one per block, with the settings in every row."""
        settings = {k: v for k, v in asdict(self).items() if k not in ("blocks", "notes", "params", "branch_scale")}
        return [dict(settings, **row) for row in self.blocks]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["branch_scale"] = list(self.branch_scale) if isinstance(self.branch_scale, tuple) else self.branch_scale
        out["notes"] = list(self.notes)
        return out

    @property
    def alpha(self) -> float | tuple[float, ...]:
        """Deprecated name of :attr:`branch_scale`."""
        warnings.warn("ResidualResult.alpha is deprecated: use branch_scale", DeprecationWarning, stacklevel=2)
        return self.branch_scale


def check_branch_scale(branch_scale, depth: int) -> tuple[float, ...]:
    """The branch scales: one number for every block, or one per block; finite and >= 0 (theory and simulator)."""
    if isinstance(branch_scale, numbers.Real) and not isinstance(branch_scale, bool):
        values = [branch_scale] * depth
    elif isinstance(branch_scale, Sequence) and not isinstance(branch_scale, str):
        values = list(branch_scale)
        if len(values) != depth:
            raise InputError(f"branch_scale: one value per block (depth={depth}), got {len(values)}")
    else:
        raise InputError(f"branch_scale must be a number or a sequence of depth numbers, got {branch_scale!r}")
    return tuple(check_real("branch_scale", v, minimum=0.0) for v in values)


def check_residual_shape(depth: Any, branch_depth: Any, branch: Any) -> tuple[int, int]:
    """The shape of a residual network: ``depth`` blocks (1 .. MAX_DEPTH), ``branch_depth`` layers per branch
    (1 .. MAX_BRANCH_DEPTH), at most MAX_LAYERS layers in all, and the branch kind (:data:`BRANCHES`); returns
    ``(depth, branch_depth)``."""
    depth = check_int("depth", depth)
    if depth > MAX_DEPTH:
        raise InputError(f"depth must be <= {MAX_DEPTH} blocks for residual networks, got {depth}")
    k = check_int("branch_depth", branch_depth)
    if k > MAX_BRANCH_DEPTH:
        raise InputError(f"branch_depth must be <= {MAX_BRANCH_DEPTH}, got {k}")
    if depth * k > MAX_LAYERS:
        raise InputError(
            f"depth x branch_depth must be <= {MAX_LAYERS:.0e} layers (the theory maps them one by one, some 6 s per "
            f"1e7), got {depth} x {k} = {depth * k:.3g}"
        )
    if branch not in BRANCHES:
        raise InputError(f"branch must be one of {BRANCHES}, got {branch!r}")
    return depth, k


def check_residual_scales(sigma_w: float, scales: Sequence[float], criterion: Any) -> float:
    """sigma_w in :data:`SIGMA_W_RANGE`, branch scales <= :data:`MAX_BRANCH_SCALE` (both already checked finite) and
    the criterion in (0, MAX_CRITERION]; returns the criterion as a float."""
    why = "sigma_w^2 and the stream variance must stay within double precision"
    check_in_range("sigma_w", sigma_w, *SIGMA_W_RANGE, f"residual networks: {why}")
    check_in_range("branch_scale", max(scales, default=0.0), 0.0, MAX_BRANCH_SCALE, why)
    crit = check_real("criterion", criterion)
    return check_in_range(
        "criterion", crit, 0.0, MAX_CRITERION, "a natural log of the gradient growth; e^700 is near the largest double",
        open_low=True,
    )  # fmt: skip


def branch_scale_and_params(
    phi: Any, branch_scale: Any, params: dict[str, Any], *, stacklevel: int = 3
) -> tuple[Any, dict[str, Any]]:
    """The branch scale and phi's parameters from a call that may use the deprecated ``alpha=`` for the branch scale.

    ``alpha=`` is phi's parameter when phi is a registered name that takes one (alpha_relu, elu); otherwise (any
    other phi, or a sequence of numbers) it is the old name of ``branch_scale``: used as such, with a
    DeprecationWarning. ``branch_scale`` None means 1 (every block unscaled).

    Raises:
        InputError: both ``branch_scale`` and the deprecated ``alpha`` given.
    """
    params = dict(params)
    alpha = params.get("alpha")
    if alpha is not None and (not takes_parameter(phi, "alpha") or not isinstance(alpha, numbers.Real)):
        del params["alpha"]
        if branch_scale is not None:
            raise InputError(
                "give branch_scale only: alpha is its deprecated name (and the parameter of alpha_relu, elu)"
            )
        warnings.warn(
            "alpha= for the residual branch scale is deprecated: use branch_scale= (alpha= is the parameter of "
            "alpha_relu and elu)",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
        branch_scale = alpha
    return (1.0 if branch_scale is None else branch_scale), params


class _Branch:
    """The branch of K layers: block values as a function of the stream's centred eigenvalue m."""

    def __init__(self, layer: _Layer, k: int, branch: str, eps: float, sigma_w: float):
        self.layer = layer
        self.b, self.k, self.eps, self.sw2 = layer.b, k, eps, sigma_w * sigma_w
        self.first_scale = self.sw2 if branch == "linear_first" else 1.0

    def __call__(self, m: float | None) -> _Block:
        """m = None: the m -> infinity limit of the first layer (e -> 0), gains multiplied by m."""
        sw2 = self.sw2
        mu_h = self.first_scale * (1.0 if m is None else m)  # the limit: gains times m (not first_scale m)
        layers: list[tuple[LayerValues, float]] = []
        for _ in range(self.k):
            v = self.layer(0.0 if m is None and not layers else self.eps / mu_h)
            layers.append((v, mu_h))
            mu_h = sw2 * v.F
        gain = self.first_scale  # linear_first: the first W^T
        for v, mh in layers[:-1]:
            gain *= sw2 * v.lam_hat / mh
        last, mh = layers[-1]
        g = gain * sw2 * last.lam_hat / mh
        u = gain * sw2 * (last.t_hat - last.lam_hat) / mh
        return _Block(F=last.F, Q=last.Q, P=last.P, g=g, u=u)


def residual_theory(
    phi: PhiSpec,
    batch_size: int,
    *,
    depth: int,
    branch_depth: int = 1,
    branch_scale: float | Sequence[float] | None = None,
    branch: str = "bn_first",
    eps: float = 0.0,
    sigma_w: float = 1.0,
    gamma: float = 1.0,
    beta: float = 0.0,
    input_variance: float = 1.0,
    input_correlation: float = 0.0,
    criterion: float = DEFAULT_CRITERION,
    output_gradient: str = "iid",
    trainable_depth: bool = True,
    derivative: Callable[[np.ndarray], np.ndarray] | None = None,
    kinks: tuple[float, ...] = (),
    **params: Any,
) -> ResidualResult:
    """Mean field of a residual BN network, block by block (module docstring).

    Args:
        phi: any phi specification (as for :func:`bnmft.theory`), used as ``phi(gamma z + beta)``.
        batch_size: B, an integer >= 4 (finite).
        depth: D, the number of residual blocks (1 .. MAX_DEPTH).
        branch_depth: K >= 1, the BN -> phi -> linear layers in each branch.
        branch_scale: the branch scale a_l of ``x + a_l F(x)``, one number or one per block (>= 0); None: 1.
        branch: ``"bn_first"`` (pre-activation, ResNet v2) or ``"linear_first"``.
        eps, sigma_w: BN's eps and the weight scale (every BN, every linear layer).
        input_variance, input_correlation: the input's BSB1 covariance ``q_in ((1-c_in) I + c_in 11^T)``,
            q_in > 0, c_in in (-1/(B-1), 1).
        criterion: the trainable depth is the largest D with ``ln(E||g^0||^2/E||g^D||^2) <= criterion``.
        output_gradient: ``"iid"`` (a loss linear in x^D: ``a_D = b_D = 1``) or ``"centred"`` (a BN follows x^D:
            the gradient has no batch-mean part, ``b = 0``; the ratio is then ``a_l``).
        trainable_depth: False skips the search for ``max_trainable_depth`` (then None).
        derivative, kinks, **params: as for :func:`bnmft.theory`. ``alpha=`` is phi's parameter when phi is a
            registered name that takes one (alpha_relu, elu: ``residual_theory("elu", 8, depth=4, alpha=0.5)`` is
            elu with alpha 0.5 and branch scale 1); for any other phi it is the deprecated name of
            ``branch_scale`` (DeprecationWarning), as it was before the rename.

    Returns:
        :class:`ResidualResult` (tidy per-block rows, exponent, trainable depth).

    Raises:
        InputError: a bad phi, batch size (finite, >= 4), depth, branch depth, branch, branch scale, BN option,
            input covariance, output gradient or criterion; both ``branch_scale`` and the deprecated ``alpha``; a
            phi constant on the batch law.
    """
    scale, params = branch_scale_and_params(phi, branch_scale, params)
    b = check_batch_size(batch_size)
    if math.isinf(b):
        raise InputError("batch_size must be finite for residual networks (the block maps average over ||G h||)")
    b = int(b)
    depth, k = check_residual_shape(depth, branch_depth, branch)
    scales = check_branch_scale(scale, depth)
    eps, sigma_w, gamma, beta = check_bn_options(eps=eps, sigma_w=sigma_w, gamma=gamma, beta=beta)
    crit = check_residual_scales(sigma_w, scales, criterion)
    if gamma == 0:
        raise InputError("gamma must be nonzero: with gamma = 0, phi(gamma z + beta) is constant")
    q_in = check_real("input_variance", input_variance, positive=True)
    c_in = check_real("input_correlation", input_correlation)
    if not (-1.0 / (b - 1) < c_in < 1.0):
        raise InputError(f"input_correlation must be in (-1/(B-1), 1) = ({-1 / (b - 1):.4g}, 1), got {c_in!r}")
    if output_gradient not in OUTPUT_GRADIENTS:
        raise InputError(f"output_gradient must be one of {OUTPUT_GRADIENTS}, got {output_gradient!r}")
    base, effective = resolve(phi, gamma=gamma, beta=beta, derivative=derivative, kinks=kinks, **params)
    return residual_theory_resolved(
        base, effective, b, depth=depth, branch_depth=k, branch=branch,
        branch_scale=scales[0] if len(set(scales)) == 1 and isinstance(scale, numbers.Real) else scales,
        eps=eps, sigma_w=sigma_w, gamma=gamma, beta=beta, input_variance=q_in, input_correlation=c_in,
        output_gradient=output_gradient, criterion=crit, trainable_depth=trainable_depth,
    )  # fmt: skip


def residual_theory_resolved(
    base: Nonlinearity,
    effective: Nonlinearity,
    b: int,
    *,
    depth: int,
    branch_depth: int,
    branch: str,
    branch_scale: float | tuple[float, ...],
    eps: float,
    sigma_w: float,
    gamma: float,
    beta: float,
    input_variance: float,
    input_correlation: float,
    output_gradient: str,
    criterion: float,
    trainable_depth: bool,
) -> ResidualResult:
    """The kernel of :func:`residual_theory`: phi resolved (``effective = base(gamma z + beta)``), every setting
    checked (``branch_scale`` one number, or a tuple of ``depth``). Internal code (the planner) calls this.

    Raises:
        InputError: phi constant on the batch law, or numbers that leave double precision at these settings (every
            number of the result is checked finite; nothing returns NaN).
    """
    scales = (branch_scale,) * depth if isinstance(branch_scale, int | float) else tuple(branch_scale)
    mean_part = 1.0 if output_gradient == "iid" else 0.0
    given = {"gamma": gamma, "beta": beta, "eps": eps, "sigma_w": sigma_w, "branch_scale": max(scales)}
    defaults = {"gamma": 1.0, "beta": 0.0, "eps": 0.0, "sigma_w": 1.0, "branch_scale": 1.0}
    overflow = InputError(
        f"phi={base.name!r}, batch_size={b}, depth={depth}, branch_depth={branch_depth}"
        + "".join(f", {k}={v:g}" for k, v in given.items() if v != defaults[k])
        + ": the residual theory's numbers overflow double precision; use settings closer to the defaults"
    )
    # overflow and invalid values are detected below (every number is checked finite), not printed as warnings
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        try:
            layer = _Layer(effective, b, eps > 0)
            if not all(math.isfinite(v) for v in asdict(layer.zero).values()):
                raise overflow
            if layer.zero.F <= 1e-14 * max(layer.zero.Q, 1e-300):
                raise InputError(f"phi={base.name!r} with gamma={gamma:g}, beta={beta:g} is constant on the batch law")
            branch_map = _Branch(layer, branch_depth, branch, eps, sigma_w)
            sw2 = sigma_w * sigma_w
            q_in, c_in = input_variance, input_correlation
            m0, n0 = q_in * (1 - c_in), q_in * (1 + (b - 1) * c_in)
            rows, blocks = block_rows(branch_map, scales, m0, n0, mean_part)
            limit = branch_map(None)
            exponent = limit.g / (sw2 * limit.F)
            lam = _plain_rate(effective, branch_map)
            max_depth, notes = (
                _trainable_depth(branch_map, blocks, scales, m0, b, sw2, criterion, mean_part)
                if trainable_depth
                else (None, [])
            )
        except (OverflowError, ZeroDivisionError) as err:
            raise overflow from err
    numbers = [exponent, lam] + [v for row in rows for v in row.values() if isinstance(v, float)]
    if not all(math.isfinite(v) for v in numbers):
        raise overflow
    return ResidualResult(
        phi=base.name,
        batch_size=b,
        depth=depth,
        branch_depth=branch_depth,
        branch=branch,
        branch_scale=branch_scale,
        eps=eps,
        sigma_w=sigma_w,
        gamma=gamma,
        beta=beta,
        input_variance=q_in,
        input_correlation=c_in,
        output_gradient=output_gradient,
        exponent=exponent,
        lambda_G=lam,
        criterion=criterion,
        max_trainable_depth=max_depth,
        blocks=rows,
        notes=tuple(notes),
        params=dict(base.parameters),
    )


def block_rows(
    branch_map: _Branch, alphas: Sequence[float], m0: float, n0: float, mean_part: float
) -> tuple[list[dict], list[_Block]]:
    """The per-block rows of :class:`ResidualResult` (forward from the input, backward from the output), and the
    blocks' values (which the trainable-depth search reuses)."""
    b, sw2 = branch_map.b, branch_map.sw2
    m, n = [m0], [n0]
    blocks = []
    for a in alphas:
        blk = branch_map(m[-1])
        blocks.append(blk)
        m.append(m[-1] + a * a * sw2 * blk.F)
        n.append(n[-1] + a * a * sw2 * (blk.Q + (b - 1) * blk.P))
    depth = len(alphas)
    a_coef = [1.0] * (depth + 1)
    for layer in range(depth - 1, -1, -1):
        blk, a2 = blocks[layer], alphas[layer] ** 2
        a_coef[layer] = a_coef[layer + 1] * (1 + a2 * blk.g) + a2 * blk.u * mean_part
    rows = []
    for layer in range(depth + 1):
        ratio = ((b - 1) * a_coef[layer] + mean_part) / (b - 1 + mean_part)
        rows.append(
            {
                "block": layer,
                "branch_scale": alphas[layer] if layer < depth else None,
                "stream_variance": m[layer] * (b - 1) / b,
                "stream_second_moment": (m[layer] * (b - 1) + n[layer]) / b,
                "distance_to_bsb1": 0.0,
                "grad_norm_sq": ratio,
                "log_grad_ratio": math.log(ratio),
            }
        )
    return rows, blocks


def _plain_rate(effective: Nonlinearity, branch_map: _Branch) -> float:
    """lambda_G of the plain network at the same eps and sigma_w (eps = 0: lam_hat / mu*; eps > 0: the eps theory at
    kappa = eps / sigma_w^2, :func:`bnmft.eps_theory`, in both phases)."""
    layer, sw2, eps = branch_map.layer, branch_map.sw2, branch_map.eps
    if eps == 0:
        return layer.zero.lam_hat / layer.zero.F
    return solve_eps(effective, branch_map.b, eps / sw2).lambda_G


def _trainable_depth(branch_map, known, alphas, m0, b, sw2, crit, mean_part) -> tuple[int | None, list[str]]:
    """The largest D with ``ln(((B-1) a_0(D) + 1) / B) <= crit``. ``a_0(D) = P_D + S_D`` with
    ``P_D = prod_(l<D) r_l``, ``S_D = sum_(l<D) alpha_l^2 u_l P_l`` (``r_l = 1 + alpha_l^2 g_l``): both cumulative in
    D, so one forward pass gives every D. Past the given alphas (and, eps > 0, past EXACT_BLOCKS) the blocks use
    alpha_tail and the first layer's e -> 0 limit (exact at eps = 0: the gains are then exactly c / m_l), vectorised
    in chunks. ``known``: the values of the first blocks, already computed (:func:`block_rows`)."""
    notes: list[str] = []
    alpha_tail = alphas[-1]
    log_target = math.log(((b - 1 + mean_part) * math.exp(crit) - mean_part) / (b - 1))  # ln a_0 at the criterion
    log_p, ratio, m, block = 0.0, 0.0, m0, 0  # ln P_D and S_D / P_D (no exp(ln P_D) that could overflow)
    exact_until = max(len(alphas), EXACT_BLOCKS) if branch_map.eps > 0 else len(alphas)
    while block < exact_until:
        a2 = (alphas[block] if block < len(alphas) else alpha_tail) ** 2
        blk = known[block] if block < len(known) else branch_map(m)
        ratio = (ratio + a2 * blk.u * mean_part) / (1.0 + a2 * blk.g)
        log_p += math.log1p(a2 * blk.g)
        m += a2 * sw2 * blk.F
        block += 1
        if log_p + math.log1p(ratio) > log_target:
            return block - 1, notes
    s_sum = ratio * math.exp(log_p)  # log_p <= log_target <= MAX_CRITERION + ln 2 here
    limit = branch_map(None)
    if branch_map.eps > 0:
        here = branch_map(m)
        delta = abs(here.g * m - limit.g) / limit.g
        if not delta <= MAX_TAIL_EFFECT:
            raise InputError(
                f"eps={branch_map.eps:g} is too large for the trainable-depth search: after {block} blocks the stream "
                f"variance is {m:.3g}, eps/m = {branch_map.eps / m:.2g} still changes the block gain by "
                f"{min(delta, 1.0):.0%} (allowed: up to {MAX_TAIL_EFFECT:.0%}); use a smaller eps, or a larger "
                "sigma_w or branch scale"
            )
        notes.append(
            f"trainable depth past block {block}: the first layer's e = eps/m (<= {branch_map.eps / m:.2g}) "
            "taken as 0; "
            f"its relative effect on the block gain there is {delta:.2g}, on the log gradient ratio below "
            f"{limit.g / (sw2 * limit.F) * delta:.2g}"
        )
    a2 = alpha_tail * alpha_tail
    if a2 == 0:
        return None, notes
    step = a2 * sw2 * limit.F
    count = 1024
    while block < MAX_SEARCH_DEPTH:
        count = min(count, MAX_SEARCH_DEPTH - block)
        ms = m + step * np.arange(count)
        cum = log_p + np.concatenate([[0.0], np.cumsum(np.log1p(a2 * limit.g / ms))])
        coef = a2 * limit.u * mean_part / ms
        s_cum = s_sum + np.cumsum(np.where(coef == 0, 0.0, coef * np.exp(cum[:-1])))  # no 0 * inf
        log_a0 = np.log(np.exp(cum[1:]) + s_cum)  # +inf where exp overflows: beyond any criterion <= 700
        over = np.nonzero(~(log_a0 <= log_target))[0]
        if over.size:
            if math.isnan(log_a0[over[0]]):
                raise OverflowError("the trainable-depth search left double precision")
            return block + int(over[0]), notes
        log_p, s_sum, m = float(cum[-1]), float(s_cum[-1]), float(ms[-1] + step)
        block += count
        count = min(4 * count, CHUNK)
    return None, notes


def local_rate(
    phi: PhiSpec,
    batch_size: int,
    *,
    input_variance: float,
    eps: float,
    weight_gain: float,
    gamma: float = 1.0,
    beta: float = 0.0,
    derivative: Callable[[np.ndarray], np.ndarray] | None = None,
    kinks: tuple[float, ...] = (),
    **params: float,
) -> float:
    """The mean-field gradient growth across one ``linear -> BN -> phi`` layer at its *measured* state, not at the
    fixed point: ``weight_gain * lambda_hat(e) / mu_h`` with ``mu_h = input_variance B/(B-1)`` the centred eigenvalue
    of BN's input (``input_variance`` its per-channel biased variance), ``e = eps / mu_h`` and ``weight_gain`` the
    backward factor of the layer's weights (``E||W^T g||^2 / ||g||^2``: sigma_w^2 for ``N(0, sigma_w^2/fan_in)``,
    ``mean(W^2) * fan_in`` in general). At the fixed point this is lambda_G (docs/theory.md 6.4); away from it
    (eps comparable to the variance, the collapsed phase, shrinking variances) it follows the layer (docs/residual.md
    section 2 for lambda_hat). Used by :func:`bnmft.probe`."""
    b = int(check_batch_size(batch_size))
    v = check_real("input_variance", input_variance, positive=True)
    eps = check_real("eps", eps, minimum=0.0)
    gain = check_real("weight_gain", weight_gain, positive=True)
    _, effective = resolve(phi, gamma=gamma, beta=beta, derivative=derivative, kinks=kinks, **params)
    return local_rate_resolved(effective, b, input_variance=v, eps=eps, weight_gain=gain)


def local_rate_resolved(
    effective: Nonlinearity, b: int, *, input_variance: float, eps: float, weight_gain: float
) -> float:
    """The kernel of :func:`local_rate`: phi resolved (gamma, beta included), the numbers checked."""
    mu_h = input_variance * b / (b - 1)
    values = _Layer(effective, b, eps > 0)(eps / mu_h)
    return weight_gain * values.lam_hat / mu_h
