"""Independent references for the theory tests (written from docs/theory.md, sharing no code with bnmft.theory)."""

import math

import mpmath as mp
import numpy as np


def mp_moments(f, df, batch_size: int, dps: int = 20) -> dict:
    """High-precision spherical moments of a smooth phi by mpmath's tanh-sinh quadrature.

    Coordinates (docs/theory.md section 2.3): ``x_1 = sqrt(A) t``, t with density ``(1 - t^2)^((B-4)/2)``;
    ``x_2 = sqrt(A)(rho t + sqrt(1 - rho^2) sqrt(1 - t^2) w)``, w with density ``(1 - w^2)^((B-5)/2)``.
    f, df: mpmath functions (phi and phi').
    """
    with mp.workdps(dps):
        b = batch_size
        big_a = mp.mpf(b - 1)
        rho = -1 / big_a
        s_a, s_r = mp.sqrt(big_a), mp.sqrt(1 - rho**2)
        ea, eb = mp.mpf(b - 4) / 2, mp.mpf(b - 5) / 2
        n1 = mp.quad(lambda t: (1 - t * t) ** ea, [-1, 1])
        n2 = mp.quad(lambda w: (1 - w * w) ** eb, [-1, 1])

        def one(g):
            return mp.quad(lambda t: (1 - t * t) ** ea * g(s_a * t), [-1, 0, 1]) / n1

        def two(g):
            def integrand(t, w):
                x1 = s_a * t
                x2 = s_a * (rho * t + s_r * mp.sqrt(1 - t * t) * w)
                return (1 - t * t) ** ea * (1 - w * w) ** eb * g(x1, x2)

            return mp.quad(integrand, [-1, 0, 1], [-1, 1]) / (n1 * n2)

        out = {
            "second": one(lambda x: f(x) ** 2),
            "d2": one(lambda x: df(x) ** 2),
            "mu": two(lambda x, y: (f(x) - f(y)) ** 2) / 2,
            "dd": two(lambda x, y: df(x) * df(y)),
            "xd": two(lambda x, y: (x * df(x) - y * df(y)) ** 2) / 2,
        }
        lam = ((b - 1) * out["d2"] + out["dd"] - out["xd"]) / ((b - 3) * out["mu"])
        return {k: float(v) for k, v in out.items()} | {"lambda_G": float(lam)}


def sample_sphere_batch(rng, n: int, batch_size: int) -> np.ndarray:
    """n batch-normalised batches: ``sqrt(B) G z / ||G z||`` for z ~ N(0, I_B); shape (n, B)."""
    z = rng.standard_normal((n, batch_size))
    g = z - z.mean(axis=1, keepdims=True)
    return math.sqrt(batch_size) * g / np.linalg.norm(g, axis=1, keepdims=True)


def batch_norm(h: np.ndarray) -> np.ndarray:
    """Training-mode batch norm of each row (a neuron's batch vector), eps = 0, biased variance."""
    centred = h - h.mean(axis=-1, keepdims=True)
    return centred / np.sqrt((centred**2).mean(axis=-1, keepdims=True))


def bn_phi_jacobian(h: np.ndarray, dphi) -> np.ndarray:
    """Exact Jacobian of ``h -> phi(BN(h))`` for each row of h: shape (n, B, B).

    ``d BN(h) / dh = sqrt(B) / r (I - v v^T) G`` with r = ||G h||, v = G h / r (docs/theory.md 3.1),
    times diag(phi'(BN(h))).
    """
    b = h.shape[1]
    g_mat = np.eye(b) - 1.0 / b
    centred = h @ g_mat
    r = np.linalg.norm(centred, axis=1)
    v = centred / r[:, None]
    proj = np.eye(b)[None] - v[:, :, None] * v[:, None, :]
    jac_bn = math.sqrt(b) / r[:, None, None] * proj @ g_mat
    return dphi(math.sqrt(b) * v)[:, :, None] * jac_bn


def arccos_series(alpha: float, c: float) -> tuple[float, float]:
    """The normalised arc-cosine kernel J and J' by its power series (written for the tests; the library uses
    hypergeometric functions): ``E[u+^a v+^b] = 2^((a+b)/2) / (4 pi) (1 - c^2)^((a+b+1)/2)
    sum_k (2c)^k / k! Gamma((a+k+1)/2) Gamma((b+k+1)/2)``."""
    from scipy.special import gammaln

    def series(a: float, c: float, shift: float) -> float:
        """``sum_k (2c)^k / k! * Gamma((a + k + shift) / 2)^2``, summed until the terms drop below 1e-18."""
        if c == 0.0:
            return math.exp(2 * gammaln((a + shift) / 2))
        total, k = 0.0, 0
        sign = 1.0 if c > 0 else -1.0
        log2c = math.log(2 * abs(c))
        while True:
            term = math.exp(k * log2c - gammaln(k + 1) + 2 * gammaln((a + k + shift) / 2))
            total += sign**k * term
            if k > 8 and term < 1e-18 * abs(total):
                return total
            k += 1
            if k > 5000:  # pragma: no cover - |c| <= 1/3 converges in < 100 terms
                raise RuntimeError("arc-cosine series did not converge")

    a = float(alpha)
    norm = 2 * math.sqrt(math.pi) * math.exp(gammaln(a + 0.5))
    j = (1 - c * c) ** (a + 0.5) * series(a, c, 1.0) / norm
    dj = a * a * (1 - c * c) ** (a - 0.5) * series(a, c, 0.0) / (2 * norm) if a > 0.5 else math.inf
    return j, dj
