"""Out-of-distribution scores on latent vectors (SPEC 6): Mahalanobis, KNN and AUROC.

All functions take and return NumPy arrays; a higher score always means "less like the training
latents".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

EPS = 1e-12


@dataclass
class GaussianFit:
    """One Gaussian fitted on reference latents.

    Args:
        mean: (D,) mean.
        precision: (D, D) inverse of the (shrunk) covariance.
        shrinkage: Ledoit-Wolf shrinkage coefficient in [0, 1] (``nan`` when given explicitly).
    """

    mean: np.ndarray
    precision: np.ndarray
    shrinkage: float = float("nan")


def fit_gaussian(latents: np.ndarray, shrinkage: float | None = None) -> GaussianFit:
    """Fit mean and shrinkage covariance of reference latents.

    Args:
        latents: (N, D) reference latents (the training set).
        shrinkage: None for the Ledoit-Wolf estimate; otherwise the fixed coefficient ``a`` in
            ``(1 - a) * S + a * trace(S) / D * I`` with ``S`` the maximum-likelihood covariance.

    Returns:
        the fitted :class:`GaussianFit`.
    """
    latents = np.asarray(latents, dtype=np.float64)
    if latents.ndim != 2 or len(latents) < 2:
        raise ValueError(f"need (N >= 2, D) latents to fit a Gaussian, got shape {latents.shape}")
    mean = latents.mean(0)
    if shrinkage is None:
        estimator = LedoitWolf().fit(latents)
        return GaussianFit(mean, estimator.precision_, float(estimator.shrinkage_))
    centred = latents - mean
    covariance = centred.T @ centred / len(latents)
    dim = covariance.shape[0]
    shrunk = (1 - shrinkage) * covariance + shrinkage * np.trace(covariance) / dim * np.eye(dim)
    return GaussianFit(mean, np.linalg.inv(shrunk), float(shrinkage))


def mahalanobis(latents: np.ndarray, fit: GaussianFit) -> np.ndarray:
    """Mahalanobis distance ``sqrt((z - mu)^T P (z - mu))`` of each row to a fitted Gaussian."""
    centred = np.asarray(latents, dtype=np.float64) - fit.mean
    squared = np.einsum("nd,de,ne->n", centred, fit.precision, centred)
    return np.sqrt(np.maximum(squared, 0.0))


def l2_normalize(latents: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    latents = np.asarray(latents, dtype=np.float64)
    return latents / np.maximum(np.linalg.norm(latents, axis=1, keepdims=True), EPS)


def knn_distance(queries: np.ndarray, bank: np.ndarray, k: int = 5, exclude_self: bool = False) -> np.ndarray:
    """Euclidean distance from each L2-normalised query to its k-th nearest L2-normalised bank latent.

    Args:
        queries: (M, D) latents to score.
        bank: (N, D) reference latents (normalised here too).
        k: neighbour rank (1 = nearest).
        exclude_self: the queries are the bank itself; skip each one's zero distance to itself.

    Returns:
        (M,) distances.
    """
    if k < 1 or k + int(exclude_self) > len(bank):
        raise ValueError(f"k={k} needs at least {k + int(exclude_self)} reference latents, got {len(bank)}")
    q, b = l2_normalize(queries), l2_normalize(bank)
    squared = np.maximum((q**2).sum(1, keepdims=True) + (b**2).sum(1) - 2.0 * q @ b.T, 0.0)
    rank = k if exclude_self else k - 1
    return np.sqrt(np.partition(squared, rank, axis=1)[:, rank])


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve for "positive scores are higher" (``sklearn.metrics.roc_auc_score``; ties count half).

    Args:
        negatives: scores of in-distribution samples (source-site validation).
        positives: scores of out-of-distribution samples (the held-out site).

    Returns:
        AUROC in [0, 1]; 1 means every positive scores above every negative.

    Raises:
        ValueError: without a negative or a positive score.
    """
    negatives, positives = np.asarray(negatives, float).ravel(), np.asarray(positives, float).ravel()
    if len(negatives) == 0 or len(positives) == 0:
        raise ValueError("AUROC needs at least one negative and one positive score")
    labels = np.concatenate([np.zeros(len(negatives)), np.ones(len(positives))])
    return float(roc_auc_score(labels, np.concatenate([negatives, positives])))
