"""Independent references for the theory tests (written from theory.md, sharing no code with bnmft.theory)."""

import math

import mpmath as mp
import numpy as np


def mp_moments(f, df, batch_size: int, dps: int = 20) -> dict:
    """High-precision spherical moments of a smooth phi by mpmath's tanh-sinh quadrature.

    Coordinates (theory.md section 2): ``x_1 = sqrt(A) t``, t with density ``(1 - t^2)^((B-4)/2)``;
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

    ``d BN(h) / dh = sqrt(B) / r (I - v v^T) G`` with r = ||G h||, v = G h / r (theory.md section 4),
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
