"""Symmetry breaking of alpha_relu: the threshold alpha*, checked by iterating the exact (Laplace) Gram map."""

import itertools
import math

import numpy as np
import pytest

from bnmft import propagate, theory
from bnmft.meanfield.symmetry import symmetry_breaking_alpha


def test_threshold_is_where_the_top_eigenvalue_crosses_one():
    s = symmetry_breaking_alpha(8)
    assert s.eigenvalue == "lambda_L"
    assert theory("alpha_relu", 8, alpha=s.alpha_star).lambda_L == pytest.approx(1.0, abs=1e-8)
    assert 1.0 < s.alpha_star < 2.0


def test_threshold_falls_toward_one_with_batch_size():
    stars = [symmetry_breaking_alpha(b).alpha_star for b in (5, 8, 32, 256)]
    assert all(a > b for a, b in itertools.pairwise(stars))
    assert 1.0 < stars[-1] < 1.02
    assert symmetry_breaking_alpha(4).alpha_star == math.inf  # none below alpha_max = 16


@pytest.mark.parametrize(("offset", "stable"), [(-0.15, True), (0.15, False)])
def test_iterating_the_exact_map_confirms_the_threshold(offset, stable, rng):
    """Just below alpha*, a slightly perturbed BSB1 batch returns to BSB1; just above, it drifts away."""
    b = 8
    alpha = symmetry_breaking_alpha(b).alpha_star + offset
    r = theory("alpha_relu", b, alpha=alpha)
    start = r.q_star * ((1 - r.c_star) * np.eye(b) + r.c_star)
    bump = rng.standard_normal(b) * 1e-3
    start = start * np.sqrt(np.outer(1 + bump, 1 + bump))  # unequal norms: the lambda_L direction
    p = propagate("alpha_relu", start, 30, gram=True, alpha=alpha)
    assert p.method == "laplace"
    assert (p.distance[-1] < p.distance[1]) == stable


def test_bad_arguments():
    with pytest.raises(ValueError, match="finite"):
        symmetry_breaking_alpha(math.inf)
    with pytest.raises(ValueError, match="alpha_max"):
        symmetry_breaking_alpha(8, alpha_max=0.5)
    with pytest.raises(ValueError, match=">= 4"):
        symmetry_breaking_alpha(3)
