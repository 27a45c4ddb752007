"""Spatial BN (conv networks, channels -> infinity): the periodic reduction to the MLP at B x positions, the conv
averaging operator's identities, and bad input."""

import math

import numpy as np
import pytest

import bnmft
from bnmft import InputError, conv_theory
from bnmft.meanfield.conv import conv_average


@pytest.mark.parametrize(
    "phi, b, spatial, kernel, kw",
    [("relu", 4, (8, 8), 3, {}), ("tanh", 2, (6, 6), 5, {"gamma": 1.5}), ("relu", 3, (6,), 3, {"eps": 0.1})],
)
def test_periodic_padding_is_the_mlp_at_batch_times_positions(phi, b, spatial, kernel, kw):
    r = conv_theory(phi, b, spatial=spatial, kernel=kernel, **kw)
    n = b * math.prod(spatial)
    t = bnmft.theory(phi, n, **kw)
    assert r.effective_batch_size == n
    assert r.lambda_G == t.lambda_G and r.c_star == t.c_star and r.lambda_G_stderr == 0.0


def _translation_invariant(b, spatial, rng):
    """A random PSD covariance over (example, position) pairs that is invariant under periodic shifts."""
    p = math.prod(spatial)
    feats = rng.standard_normal((b, 5, *spatial))
    # averaging over all shifts makes it translation invariant: Sigma = mean_s (S x)(S x)^T
    rows = []
    for shift in np.ndindex(*spatial):
        rolled = np.roll(feats, shift, axis=tuple(range(2, 2 + len(spatial))))
        rows.append(rolled.transpose(0, *range(2, 2 + len(spatial)), 1).reshape(b * p, 5))
    return sum(r @ r.T for r in rows) / len(rows)


@pytest.mark.parametrize("spatial, kernel", [((5,), 3), ((4, 4), 3), ((3, 5), 3)])
def test_periodic_conv_leaves_translation_invariant_covariances_alone(spatial, kernel):
    sigma = _translation_invariant(2, spatial, np.random.default_rng(0))
    np.testing.assert_allclose(conv_average(sigma, 2, spatial, kernel, "periodic"), sigma, atol=1e-12)


def test_zero_padding_loses_the_offsets_outside_the_image():
    spatial, kernel = (4, 4), 3
    a = conv_average(np.eye(16), 1, spatial, kernel, "zero")
    valid = np.array([[sum(0 <= i + di < 4 and 0 <= j + dj < 4 for di in (-1, 0, 1) for dj in (-1, 0, 1))
                       for j in range(4)] for i in range(4)]).ravel()  # fmt: skip
    np.testing.assert_allclose(np.diag(a), valid / 9)
    np.testing.assert_allclose(a - np.diag(np.diag(a)), 0.0)  # the identity stays diagonal
    # a direct sum over offsets, entry by entry, for a random matrix
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 3))
    s = x @ x.T
    got = conv_average(s, 1, spatial, kernel, "zero")
    p, q = 5, 10
    (pi, pj), (qi, qj) = divmod(p, 4), divmod(q, 4)
    want = 0.0
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            a_ok = 0 <= pi + di < 4 and 0 <= pj + dj < 4
            b_ok = 0 <= qi + di < 4 and 0 <= qj + dj < 4
            if a_ok and b_ok:
                want += s[(pi + di) * 4 + pj + dj, (qi + di) * 4 + qj + dj]
    assert got[p, q] == pytest.approx(want / 9, rel=1e-12)


def test_zero_padding_kernel_one_is_periodic():
    r = conv_theory("relu", 2, spatial=(4, 4), kernel=1, padding="zero")
    assert r.lambda_G == bnmft.theory("relu", 32).lambda_G


def test_zero_padding_lowers_the_rate_and_the_spatial_correlation():
    r = conv_theory("relu", 2, spatial=(4, 4), padding="zero", samples=4000)
    assert r.lambda_G < r.mlp_lambda_G - 5 * r.lambda_G_stderr
    assert r.c_space < r.c_batch  # the border positions have less in common with the rest of their image


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(spatial=(4, 4), kernel=2), "odd"),
        (dict(spatial=(4, 4), padding="reflect"), "padding"),
        (dict(spatial=(0, 4)), "spatial"),
        (dict(spatial=(2, 2, 2)), "spatial"),
        (dict(spatial=(1,), kernel=1), "positions must be >= 4"),
        (dict(spatial=(4, 4), padding="zero", eps=0.1), "eps = 0"),
        (dict(spatial=(32, 32), padding="zero"), "<= 1024"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(InputError, match=match):
        conv_theory("relu", 2, **kwargs)
