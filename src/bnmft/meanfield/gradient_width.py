"""The 1/N coefficient of the gradient growth rate at finite width: ``lambda_G(N) = lambda_G + b/N`` (eps = 0).

The simulator's estimate is the mean per-layer ratio ``r_k = ||g_k||^2 / ||g_{k+1}||^2`` (g_k = dL/dh^k). Given the
forward pass and the normalised gradient Gram ``Gamma_hat`` above, and with the backward weights independent of the
forward ones, ``E r_k = tr(Gamma_hat_{k+1} M_k)`` with ``M_k = (1/N) sum_j A_j^T A_j`` (A_j unit j's BN-phi Jacobian),
exactly; the backward sampling noise has no effect at 1/N (``tr(Gamma_hat E M) = lambda_G`` for every trace-1 Gram on
im P). Three pieces remain (docs/finite_width.md section 6; the derivation is ours):

* **A - the trace part** ``E tr(P M_k)/(B-1) - lambda_G``: BN's Jacobian scales as ``1/s``, s the centred scale of
  the layer below (its variance and its bias from the Gram map's curvature), and the curvature of
  ``E_{u ~ N(0, S)} tr(P A^T A)`` in the state S (a likelihood-ratio expansion to second order, averaged over the
  linear-noise covariance ``Sigma_L Pi_L + Sigma_M Pi_M`` of :mod:`.linear_noise`).
* **B - the forward-backward correlation** ``E tr(gamma_{k+1} M_k)``, gamma the traceless part of Gamma_hat: per
  irrep X, ``d_X kappa_X (lambda_X nu_X Sigma_X + c_X) sum_n (tau_X lambda_X)^n / (mu* E tr(A P A^T))`` - kappa, nu
  the first-order responses of the backward operator and of ``A^T A`` to the state, c_X the same-layer covariance
  of the forward noise with ``A^T A``, tau_X the backward operator's eigenvalue on X relative to lambda_G.
* **W - the same weights forward and backward**: given the forward pass, ``W^T g = (I - Pi_X) Z + X (X^T X)^{-1} Q``
  with ``Q = H^T g``. The projection removes ``-E[(f^T Sigma*^{-1} f) tr(P A^T A)]/(B-1)`` (W1); Q (order 1,
  mean zero) adds ``E|A Q^T Sigma*^{-1} f|^2`` (W2), with Q's covariance from its own recursion over all layers
  above, ``Q_k = (fresh_k + L(Q_{k+1})) / sqrt(lambda_G)``, ``L(Q) = E[h f^T Sigma*^{-1} Q A^T]``. Q lives in the
  S_B-irreps std (twice), M and the antisymmetric one: a 2x2 block and two numbers per operator.

Every constant is a one-neuron expectation at BSB1 (h ~ N(0, Sigma*), f = phi(BN h)), estimated by Monte Carlo with
per-sample traces over each irrep (O(B^2) per sample); the standard error comes from batch means of the whole
combination. ``window=None`` gives the stationary state (geometric sums, a Lyapunov equation); a window (start, stop)
of a network of ``depth`` layers fed Gaussian inputs of dimension N follows the forward variances from the input and
the backward quantities from the readout layer by layer, and averages b over the simulator's ratio layers
``[start, stop - 1)``.

Measured accuracy (ours; simulator with the exact conditional sampler, window 20-57 of depth 60, lambda_G held at
its theory value and ``N (lambda_G(N) - lambda_G)`` fitted as ``b + c/N [+ d/N^2]``): relu B = 8 predicted
0.395 +- 0.014, simulated 0.45 +- 0.10 (N = 64..512, 4000 networks each); tanh B = 8: 0.137 +- 0.009 against
0.25 +- 0.09 (0.07 +- 0.20 with d); tanh B = 32: 3.00 +- 0.02 against 2.93 +- 0.07 (N = 64..1024). Pieces:
``b_A + b_B`` against runs with the backward weights drawn independently (tanh B = 8: 4.79 vs 4.90 +- 0.10;
relu B = 8 trace and correlation parts separately, tests), ``b_W`` against paired exact-minus-independent runs
(relu 8: -4.13 vs -4.06 +- 0.07 at N = 256; tanh 8: -4.65 vs -4.67 +- 0.03 at N = 512; tanh 32: -5.34 vs
-5.27 +- 0.05 at N = 512). A fit ``a + b/N`` with a free intercept over N = 64..2048 is biased by the large
O(1/N^2) terms (the expansion parameter is the squared distance to BSB1, ``E D^2`` = 12/N (relu 8), 19/N (tanh 8),
81/N (relu 32), 170/N (tanh 32), 380/N (relu 128), 870/N (tanh 128)): our tanh B = 32 data fitted that way give
2.32, against 3.00. Not covered: the outlier state of relu at large B (docs/outlier.md), where the chain leaves
BSB1 and the expansion does not apply. Cost: about 6 s (B = 8), 12 s (B = 32), 20 s (B = 128, 8 000 samples,
standard error about 0.3 for tanh; 96 000 samples give 0.05).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InputError
from ..nonlinearity import Nonlinearity
from .api import theory_resolved
from .linear_noise import variance_path

#: one-neuron samples: about WORK / B^2 (between MIN_SAMPLES and MAX_SAMPLES), in BATCHES batches (standard error)
WORK, MIN_SAMPLES, MAX_SAMPLES, BATCHES = 6e7, 8_000, 200_000, 16
#: per chunk of samples: about this many B x B entries per array
CHUNK_ENTRIES = 600_000
#: the irreps of Q-space (B x B matrices Q with Q 1 = 0, tr Q = 0) and their multiplicities
Q_IRREPS = (("std", 2), ("M", 1), ("AS", 1))


def default_samples(b: int) -> int:
    """The default one-neuron draws for lambda_G's coefficient at batch size b: about WORK / B^2, within
    [MIN_SAMPLES, MAX_SAMPLES], a multiple of BATCHES."""
    n = int(min(MAX_SAMPLES, max(MIN_SAMPLES, WORK / b**2)))
    return BATCHES * max(1, n // BATCHES)


def _centre(x: np.ndarray) -> np.ndarray:
    """P X P for a stack (n, B, B)."""
    x = x - x.mean(axis=2, keepdims=True)
    return x - x.mean(axis=1, keepdims=True)


def _lm(x: np.ndarray, b: int, p: np.ndarray) -> np.ndarray:
    """The centred traceless part of a symmetric stack: the L + M content."""
    y = _centre(x)
    return y - np.trace(y, axis1=1, axis2=2)[:, None, None] * p / (b - 1)


def _irrep_products(x: np.ndarray, y: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the L and M parts of <x, y> for centred traceless stacks (|Pi_L X|^2 = |diag X|^2 / (1 - 2/B))."""
    on_l = np.einsum("nii,nii->n", x, y) / (1 - 2 / b)
    return on_l, np.einsum("nij,nij->n", x, y) - on_l


def _sandwich(v2: np.ndarray, y: np.ndarray, v1: np.ndarray) -> np.ndarray:
    """``(P - v2 v2^T) Y (P - v1 v1^T)`` for stacks (v unit vectors in im P): O(B^2) per sample."""
    py = _centre(y)
    pyv1 = np.einsum("nij,nj->ni", py, v1)
    v2py = np.einsum("ni,nij->nj", v2, py)
    v2yv1 = np.einsum("ni,ni->n", v2, pyv1)
    return (py - pyv1[:, :, None] * v1[:, None, :] - v2[:, :, None] * v2py[:, None, :]
            + v2yv1[:, None, None] * v2[:, :, None] * v1[:, None, :])  # fmt: skip


def _q_traces(alpha: np.ndarray, psi: np.ndarray, beta: np.ndarray, b: int) -> dict[str, np.ndarray]:
    """Per sample, ``G_X[j, i] = sum_a alpha^T E^(j)_a Psi E^(i)_a^T beta`` summed over an orthonormal basis of each
    Q-space irrep X (intertwined bases: std1 ``1 w^T / sqrt B``, L ``P diag(w) P / sqrt(1 - 2/B)``; M; AS):
    {"std": (n, 2, 2), "M": (n,), "AS": (n,)}."""
    cl2 = 1 - 2 / b
    pt = _centre(psi)
    pa = alpha - alpha.mean(axis=1, keepdims=True)
    pb = beta - beta.mean(axis=1, keepdims=True)
    sa, sb = alpha.sum(axis=1), beta.sum(axis=1)
    p = np.eye(b) - 1.0 / b
    tr = np.trace(pt, axis1=1, axis2=2)
    ptp = pt * p  # Psi~_kl P_kl
    g = np.empty((len(alpha), 2, 2))
    g[:, 0, 0] = sa * sb * tr / b
    g[:, 0, 1] = sa * np.einsum("nkl,nl->n", ptp, pb) / math.sqrt(b * cl2)
    g[:, 1, 0] = sb * np.einsum("nk,nkl->n", pa, ptp) / math.sqrt(b * cl2)
    g[:, 1, 1] = np.einsum("nk,nkl,nl->n", pa, ptp, pb) / cl2
    apb = np.einsum("ni,ni->n", pa, pb)
    cross = np.einsum("nj,njk,nk->n", pb, pt, pa)  # (P alpha)^T Psi~^T (P beta)
    sym = (apb * tr + cross) / 2
    triv = np.einsum("nj,njk,nk->n", pa, pt, pb) / (b - 1)
    return {"std": g, "M": sym - triv - g[:, 1, 1], "AS": (apb * tr - cross) / 2}


def _one_neuron(effective: Nonlinearity, b: int, mu: float, var_one: float, rng, n: int) -> dict[str, Any]:
    """Sums over n one-neuron samples of every per-sample quantity (keys: see :func:`_combine`)."""
    p = np.eye(b) - 1.0 / b
    sinv = p / mu + (np.ones((b, b)) / (b * var_one) if var_one > 0 else 0.0)  # Sigma*^{-1} (pseudo-inverse)
    sums: dict[str, Any] = {}

    def add(key: str, values: np.ndarray) -> None:
        sums[key] = sums.get(key, 0.0) + values.sum(axis=0)

    chunk = max(64, int(CHUNK_ENTRIES // b**2))
    for first in range(0, n, chunk):
        m = min(chunk, n - first)
        g = rng.standard_normal((m, b))
        mean = g.mean(axis=1, keepdims=True)
        u = g - mean  # u ~ N(0, P): the state S = P in u-units
        r = np.linalg.norm(u, axis=1)
        v = u / r[:, None]
        x = math.sqrt(b) * v
        f, d = effective(x), effective.derivative(x)
        h = math.sqrt(mu) * u + math.sqrt(max(var_one, 0.0)) * mean  # h ~ N(0, Sigma*)
        c2 = b / r**2
        proj = p - v[:, :, None] * v[:, None, :]  # P - v v^T
        a_u = np.sqrt(c2)[:, None, None] * proj * d[:, None, :]  # BN-phi Jacobian, transposed: g = A y
        abar = c2[:, None, None] * proj * (d[:, :, None] * d[:, None, :])  # A^T A
        dpd = np.einsum("ni,ij->nij", d, p) * d[:, None, :]
        apa = c2[:, None, None] * _sandwich(v, dpd, v)  # A P A^T
        aat = c2[:, None, None] * _sandwich(v, np.einsum("ni,ij->nij", d**2, np.eye(b)), v)  # A A^T
        tr_pa = np.einsum("nii->n", _centre(abar))
        # A: scale and curvature
        pl = np.sum((v**2 - 1 / b) ** 2, axis=1) / (1 - 2 / b)
        phid = tr_pa / c2 / (b - 1)
        pf = f - f.mean(axis=1, keepdims=True)
        s1 = np.sum(pf**2, axis=1) / (b - 1)
        add("F", tr_pa / (b - 1))
        add("pl", pl)
        add("phiD", phid)
        add("phiD_pl", phid * pl)
        add("s", s1)
        add("s_sq", s1**2)
        add("s_pl", s1 * pl)
        # B: responses and covariances on the irreps L, M of the state
        noise = (pf[:, :, None] * pf[:, None, :] - s1[:, None, None] * p) / mu  # the derivative of S at BSB1
        uu = _lm(u[:, :, None] * u[:, None, :], b, p)
        lm_abar, lm_apa, lm_aat = _lm(abar, b, p), _lm(apa, b, p), _lm(aat, b, p)
        for key, left, right, factor in (("sig", noise, noise, 1.0), ("nu", lm_abar, uu, 0.5),
                                         ("kappa", lm_apa, uu, 0.5), ("kappa_top", lm_aat, uu, 0.5),
                                         ("c", noise, lm_abar, 1.0)):  # fmt: skip
            on_l, on_m = _irrep_products(left, right, b)
            add(key + "_L", factor * on_l)
            add(key + "_M", factor * on_m)
        at = a_u - a_u.mean(axis=2, keepdims=True)  # A P (the backward operator on Sym(im P): G -> At G At^T)
        total = (np.einsum("nii->n", at) ** 2 + np.einsum("nij,nji->n", at, at)) / 2
        on_l = np.einsum("ij,nij,nij->n", p, at, at) / (1 - 2 / b)
        add("tau_L", on_l)
        add("tau_M", total - np.einsum("nij,nij->n", at, at) / (b - 1) - on_l)
        add("tr_apa", np.einsum("nii->n", apa))
        add("tr_aat", np.einsum("nii->n", aat))
        # W: the same weights forward and backward (h-units: A_h = a_u / sqrt(mu))
        phi_s = f @ sinv
        add("W1", -np.einsum("ni,ni->n", phi_s, f) * tr_pa / (mu * (b - 1)))
        fresh = apa / (mu * (b - 1))  # A Gamma A^T with Gamma = P/(B-1)
        top = aat / mu
        for key, args in (("L", (phi_s, np.transpose(a_u, (0, 2, 1)) / math.sqrt(mu), h)),
                          ("R", (phi_s, abar / mu, phi_s)), ("Cd", (h, fresh, h)), ("Ct", (h, top, h)),
                          ("T", (h, a_u / math.sqrt(mu), f))):  # fmt: skip
            for irrep, values in _q_traces(args[0], args[1], args[2], b).items():
                add(f"{key}_{irrep}", values)
    return sums


def _regression(theta: np.ndarray, irrep: str, b: int, mu: float, var_one: float) -> np.ndarray:
    """The part of the fresh Q-noise covariance that the projection onto the layer's activations removes:
    ``sum_a tr(beta_a Sigma*^{-1} beta_a^T P) / (B - 1)`` per component, ``beta_a = E[w(E_a) x^T]``,
    ``w(E) = A^T E^T h``. By Schur's lemma beta maps irrep X into the X-copies of R^B (x) R^B: one each for M
    and AS (``beta(E) = theta E``), three for std (``1 w^T``, ``w 1^T``, ``P diag(w) P``; the first is killed by
    the P of the backward noise). ``theta`` (per component): ``E sum_a h^T E_a A F_a x``, from :func:`_q_traces`
    with (h, A, x): column 0 pairs ``w 1^T`` (weight 1/var_one: Sigma*^{-1} on the ones vector), column 1 the
    diagonal copy (weight 1/mu*)."""
    if irrep != "std":
        return np.array([[theta[0, 0] ** 2 / (mu * (b - 1))]])
    ones = np.outer(theta[:, 0], theta[:, 0]) / var_one if var_one > 0 else 0.0
    return (ones + np.outer(theta[:, 1], theta[:, 1]) / mu) / (b - 1)


def _combine(m: dict[str, Any], t: Any, b: int, window: tuple[int, int] | None, depth: int | None,
             var_one: float) -> dict[str, Any]:  # fmt: skip
    """The pieces of b from the one-neuron means ``m``, the engine's BSB1 values ``t`` and Sigma*'s eigenvalue on
    the ones vector ``var_one`` (module docstring)."""
    mu, lam = t.mu_star, t.lambda_G
    dims = {"L": b - 1, "M": b * (b - 3) // 2}
    qdims = {"std": b - 1, "M": b * (b - 3) // 2, "AS": (b - 1) * (b - 2) // 2}
    lam_x = {"L": t.lambda_L, "M": t.lambda_M}
    sig = {x: m[f"sig_{x}"] / dims[x] for x in dims}  # forward noise per component (times N)
    nu = {x: m[f"nu_{x}"] / dims[x] for x in dims}
    kappa = {x: m[f"kappa_{x}"] / dims[x] for x in dims}
    kappa_top = {x: m[f"kappa_top_{x}"] / dims[x] for x in dims}
    cov = {x: m[f"c_{x}"] / dims[x] for x in dims}
    tau = {x: m[f"tau_{x}"] / dims[x] / (lam * mu) for x in dims}
    # (B^2 - 1)/8 Cov(F, p_L): the second-order response of a direction-only E F to the state noise, per
    # (Sigma_L - Sigma_M); a 1/|u|^2 factor adds 2 E[phiD] (d_L Sigma_L + d_M Sigma_M) / ((B^2 - 1)(B - 3))
    g_s = (b * b - 1) / 8 * (m["s_pl"] - m["s"] * m["pl"])
    g_phid = (b * b - 1) / 8 * (m["phiD_pl"] - m["phiD"] * m["pl"])
    var_s = m["s_sq"] - m["s"] ** 2

    def piece_a(s1: dict[str, float], s2: dict[str, float]) -> tuple[float, float, float]:
        """(1/s variance, 1/s bias, curvature) with the state variances s1 (layer k-1) and s2 (layer k-2)."""
        curv = b * (g_phid * (s1["L"] - s1["M"]) / (b + 1)
                    + m["phiD"] * 2 * (dims["L"] * s1["L"] + dims["M"] * s1["M"]) / ((b * b - 1) * (b - 3))) / mu
        return lam * var_s / mu**2, -lam * g_s * (s2["L"] - s2["M"]) / mu, curv  # fmt: skip

    def piece_b(s1: dict[str, float], steps: float) -> dict[str, float]:
        """Per irrep: the lagged and the same-layer correlation; ``steps`` layers above k + 1 (inf: stationary)."""
        out = {}
        for x in dims:
            q = tau[x] * lam_x[x]
            if math.isinf(steps):
                weight = kappa[x] / m["tr_apa"] / (1 - q)
            else:
                weight = kappa[x] / m["tr_apa"] * (1 - q**steps) / (1 - q) + kappa_top[x] / m["tr_aat"] * q**steps
            out[x + "_lag"] = dims[x] * weight * lam_x[x] * nu[x] * s1[x] / mu
            out[x + "_same"] = dims[x] * weight * cov[x] / mu
        return out

    blocks = {}
    for irrep, k in Q_IRREPS:
        def block(key: str, irrep: str = irrep, k: int = k) -> np.ndarray:
            return np.reshape(m[f"{key}_{irrep}"], (k, k)) / qdims[irrep]

        lop = block("L").T / math.sqrt(lam)  # Q's coordinates -> those of L(Q) / sqrt(lambda)
        fresh = (block("Cd") - _regression(block("T"), irrep, b, mu, var_one)) / lam
        top = block("Ct") / (m["tr_aat"] / mu)  # readout: Q_top / ||g_top||
        blocks[irrep] = (lop, fresh, top, block("R"))

    def w2(cov_q: dict[str, np.ndarray]) -> float:
        return float(sum(qdims[x] * np.sum(cov_q[x] * blocks[x][3]) for x in blocks))

    out: dict[str, Any] = {"sigma2": sig, "nu": nu, "kappa": kappa, "c": cov, "tau": tau, "W1": m["W1"]}
    out["lambda_mc"] = m["F"] / mu
    if window is None:
        s_stat = {x: sig[x] / (1 - lam_x[x] ** 2) for x in dims}
        out["A_scale_var"], out["A_scale_bias"], out["A_curvature"] = piece_a(s_stat, s_stat)
        out["B"] = piece_b(s_stat, math.inf)
        cov_q = {}
        for x, (lop, fresh, _, _) in blocks.items():
            k = len(lop)
            if max(abs(np.linalg.eigvals(lop))) >= 1:
                raise InputError(f"phi={t.phi!r}, batch_size={b}: the Q recursion of the same-weight term does "
                                 "not contract here: no stationary 1/N coefficient (give a window)")  # fmt: skip
            vec = np.linalg.solve(np.eye(k * k) - np.kron(lop, lop), fresh.reshape(-1))
            cov_q[x] = vec.reshape(k, k)
        out["W2"] = w2(cov_q)
        out["W2_one_layer"] = w2({x: blk[1] for x, blk in blocks.items()})
    else:
        start, stop = window
        assert depth is not None  # a window comes with its network's depth (checked by the caller)
        layers = range(start, stop - 1)
        # from Gaussian inputs of dimension N (a Wishart Gram: 2 per component)
        path = variance_path([lam_x[x] for x in dims], [sig[x] for x in dims], [2.0] * len(dims), depth)
        s_hist = [dict(zip(dims, map(float, row), strict=True)) for row in path]
        state = {k: s_hist[k + 1] for k in range(-1, depth)}  # state[k]: after layer k (k = -1: the input)
        cov_q = {x: blk[2] for x, blk in blocks.items()}  # at the top layer
        q_at = {depth - 1: cov_q}
        for k in range(depth - 2, -1, -1):
            cov_q = {x: blocks[x][1] + blocks[x][0] @ cov_q[x] @ blocks[x][0].T for x in blocks}
            q_at[k] = cov_q
        parts: dict[str, list] = {"A_scale_var": [], "A_scale_bias": [], "A_curvature": [], "B": [], "W2": []}
        for k in layers:
            a = piece_a(state[k - 1], state[k - 2])
            for key, val in zip(("A_scale_var", "A_scale_bias", "A_curvature"), a, strict=True):
                parts[key].append(val)
            parts["B"].append(piece_b(state[k - 1], depth - 2 - k))
            parts["W2"].append(w2(q_at[k + 1]))
        for key in ("A_scale_var", "A_scale_bias", "A_curvature", "W2"):
            out[key] = float(np.mean(parts[key]))
        out["B"] = {key: float(np.mean([p[key] for p in parts["B"]])) for key in parts["B"][0]}
    out["b_A"] = out["A_scale_var"] + out["A_scale_bias"] + out["A_curvature"]
    out["b_B"] = float(sum(out["B"].values()))
    out["b_W"] = out["W1"] + out["W2"]
    out["b"] = out["b_A"] + out["b_B"] + out["b_W"]
    return out


def coefficient_pieces_resolved(base: Nonlinearity, effective: Nonlinearity, b: int, settings: dict, *,
                                window: tuple[int, int] | None = None, depth: int | None = None,
                                seed: int = 0, samples: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Every piece of b (keys ``b``, ``b_A``, ``b_B``, ``b_W`` and their parts) and ``stderr``: a dict of the
    standard errors of the scalar pieces (batch means); ``samples`` one-neuron draws (default: about WORK / B^2).
    Input checked by the caller."""
    if settings.get("eps", 0.0) != 0.0:
        raise InputError(f"eps must be 0 for the 1/N coefficient (derived at eps = 0), got {settings['eps']!r}")
    t = theory_resolved(base, effective, float(b), **settings)
    if t.lambda_L is None or t.lambda_M is None or not t.bsb1_stable:
        raise InputError(f"phi={base.name!r}, batch_size={b}: BSB1 is not an attracting fixed point, no 1/N expansion")
    var_one = (t.q_star or 0.0) * (1 + (b - 1) * (t.c_star or 0.0))  # Sigma*'s eigenvalue on the ones vector
    if var_one < 1e-12 * (t.q_star or 1.0):
        var_one = 0.0
    rng = np.random.default_rng(seed)
    n = default_samples(b) if samples is None else BATCHES * max(1, samples // BATCHES)
    per = n // BATCHES
    batches = [_one_neuron(effective, b, t.mu_star, var_one, rng, per) for _ in range(BATCHES)]
    means = {key: sum(s[key] for s in batches) / n for key in batches[0]}
    out = _combine(means, t, b, window, depth, var_one)
    scalar = [k for k, v in out.items() if isinstance(v, float | np.floating)]
    runs = [_combine({k: s[k] / per for k in s}, t, b, window, depth, var_one) for s in batches]
    out["stderr"] = {k: float(np.std([r[k] for r in runs], ddof=1) / math.sqrt(BATCHES)) for k in scalar}
    out["samples"] = n
    return out


def lambda_g_coefficient_resolved(base: Nonlinearity, effective: Nonlinearity, b: int, settings: dict, *,
                                  window: tuple[int, int] | None = None, depth: int | None = None,
                                  seed: int = 0, samples: int | None = None) -> tuple[float, float]:  # fmt: skip
    """``(b, stderr)``: lambda_G's 1/N coefficient and its Monte Carlo standard error (module docstring; input
    checked by the caller, :func:`bnmft.finite_width`; B >= 6, eps = 0)."""
    out = coefficient_pieces_resolved(base, effective, b, settings, window=window, depth=depth, seed=seed,
                                      samples=samples)
    return float(out["b"]), out["stderr"]["b"]


__all__ = ["coefficient_pieces_resolved", "lambda_g_coefficient_resolved"]
