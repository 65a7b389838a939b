"""Each metric's arithmetic against an independent computation."""

from __future__ import annotations

import numpy as np
import pytest

from dreamrelation.evaluation import clip_t, frechet_distance, temporal_consistency
from dreamrelation.evaluation.metrics import evenly_spaced_indices


def _samples_with_moments(n: int, mean: np.ndarray, cov_root: np.ndarray, seed: int) -> np.ndarray:
    """n samples whose *sample* mean and unbiased covariance are exactly mean and R R^T."""
    rng = np.random.default_rng(seed)
    d = mean.shape[0]
    x = rng.standard_normal((n, d))
    x -= x.mean(axis=0)
    # whiten so the sample covariance is exactly I, then colour it
    chol = np.linalg.cholesky(np.cov(x, rowvar=False))
    x = x @ np.linalg.inv(chol).T
    return x @ cov_root.T + mean


def test_frechet_distance_of_diagonal_gaussians_matches_the_closed_form() -> None:
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    sd_a, sd_b = np.array([1.0, 2.0, 0.5]), np.array([3.0, 1.0, 0.5])
    a = _samples_with_moments(200, mu_a, np.diag(sd_a), 0)
    b = _samples_with_moments(150, mu_b, np.diag(sd_b), 1)
    # for diagonal covariances: |mu_a - mu_b|^2 + sum (sd_a - sd_b)^2
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((sd_a - sd_b) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_an_eigenvalue_computation_for_full_covariances() -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((64, 6)) @ rng.standard_normal((6, 6))
    b = rng.standard_normal((80, 6)) @ rng.standard_normal((6, 6)) + 0.3
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # tr (Sa Sb)^(1/2) = sum sqrt(eig(Sa^(1/2) Sb Sa^(1/2))), a symmetric PSD matrix
    w, v = np.linalg.eigh(sa)
    sa_half = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(sa_half @ sb @ sa_half), 0, None)))
    diff = a.mean(0) - b.mean(0)
    expected = diff @ diff + np.trace(sa) + np.trace(sb) - 2 * tr_covmean
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-8)


def test_frechet_distance_survives_fewer_samples_than_dimensions() -> None:
    rng = np.random.default_rng(0)
    value = frechet_distance(rng.standard_normal((5, 32)), rng.standard_normal((6, 32)) + 1.0)
    assert np.isfinite(value) and value > 32 * 0.5  # the mean shift alone contributes 32


def test_frechet_distance_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="2-D"):
        frechet_distance(np.zeros(3), np.zeros((4, 3)))


def test_clip_t_is_the_mean_raw_cosine_over_frames() -> None:
    frames = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    text = np.array([2.0, 0.0])
    expected = (1.0 + 0.0 + np.sqrt(0.5)) / 3
    assert clip_t(frames, text) == pytest.approx(expected)
    rng = np.random.default_rng(1)
    f, t = rng.standard_normal((7, 16)), rng.standard_normal(16)
    by_hand = np.mean([fi @ t / np.linalg.norm(fi) / np.linalg.norm(t) for fi in f])
    assert clip_t(f, t) == pytest.approx(by_hand)
    with pytest.raises(ValueError, match="text_embedding must have shape"):
        clip_t(f, np.ones(15))


def test_temporal_consistency_is_the_mean_cosine_of_consecutive_frames() -> None:
    frames = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 5.0]])
    assert temporal_consistency(frames) == pytest.approx(np.sqrt(0.5))
    assert temporal_consistency(np.ones((4, 3))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 rows"):
        temporal_consistency(np.ones((1, 3)))
    with pytest.raises(ValueError, match="all-zero"):
        temporal_consistency(np.zeros((3, 3)))


def test_evenly_spaced_indices_cover_first_and_last_frame() -> None:
    assert evenly_spaced_indices(61, 8) == [0, 9, 17, 26, 34, 43, 51, 60]
    assert evenly_spaced_indices(3, 8) == [0, 1, 2]
    assert evenly_spaced_indices(5, 1) == [2]
