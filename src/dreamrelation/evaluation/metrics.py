"""The arithmetic of the paper's metrics, as pure NumPy functions of embeddings and features.

Models (CLIP, I3D, VideoMAE, a VLM judge) only produce the vectors; everything that turns vectors
into a number lives here, so it can be checked against a hand computation.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg


def _as_matrix(name: str, array: np.ndarray, min_rows: int) -> np.ndarray:
    matrix = np.asarray(array, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows, dims), got shape {matrix.shape}")
    if matrix.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {matrix.shape[0]}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return matrix


def _unit_rows(matrix: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{name} contains an all-zero embedding; its cosine similarity is undefined")
    return matrix / norms


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets, (N, D) and (M, D):
    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` with unbiased sample covariances
    (the FID/FVD formula). The matrix square root is scipy's; a tiny ridge is added only when
    it fails to be finite (singular covariances, e.g. fewer samples than dimensions)."""
    a = _as_matrix("features_a", features_a, 2)
    b = _as_matrix("features_b", features_b, 2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    sigma_a = np.atleast_2d(np.cov(a, rowvar=False))
    sigma_b = np.atleast_2d(np.cov(b, rowvar=False))
    covmean = scipy.linalg.sqrtm(sigma_a @ sigma_b)
    if not np.all(np.isfinite(covmean)):
        ridge = np.eye(sigma_a.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma_a + ridge) @ (sigma_b + ridge))
    # Round-off gives a negligible imaginary part; a large one means the inputs are broken.
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    value = diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))


def clip_t(frame_embeddings: np.ndarray, text_embedding: np.ndarray) -> float:
    """CLIP-T: mean over frames of cos(image embedding of frame f, text embedding); (F, D), (D,).
    Raw cosine (the paper reports ~0.32), not CLIPScore's 2.5·max(cos, 0) or 100·cos."""
    frames = _unit_rows(_as_matrix("frame_embeddings", frame_embeddings, 1), "frame_embeddings")
    text = np.asarray(text_embedding, dtype=np.float64)
    if text.ndim != 1 or text.shape[0] != frames.shape[1]:
        raise ValueError(
            f"text_embedding must have shape ({frames.shape[1]},) to match the frames, got {text.shape}"
        )
    text = _unit_rows(text[None], "text_embedding")[0]
    return float(np.mean(frames @ text))


def temporal_consistency(frame_embeddings: np.ndarray) -> float:
    """Mean cosine similarity of the CLIP image embeddings of consecutive frames; (F, D), F >= 2."""
    frames = _unit_rows(_as_matrix("frame_embeddings", frame_embeddings, 2), "frame_embeddings")
    return float(np.mean(np.sum(frames[:-1] * frames[1:], axis=-1)))


def evenly_spaced_indices(total: int, count: int) -> list[int]:
    """``count`` frame indices spread evenly over ``total`` frames, first and last included
    (all frames when ``count >= total``)."""
    if total < 1 or count < 1:
        raise ValueError(f"need total >= 1 and count >= 1, got {total} and {count}")
    if count >= total:
        return list(range(total))
    if count == 1:
        return [(total - 1) // 2]
    return [round(i * (total - 1) / (count - 1)) for i in range(count)]
