"""Counterfactual metrics (SPEC 7, the paper's Table 2): flip ratio, MAD, BKL, FID/FSD-like, SonoSim-like, MQD.

All take tensors in [0, 1] or plain probabilities/features and return floats. Frechet distances use
``monai.metrics.FIDMetric`` on features of local networks (no ImageNet/RadImageNet download).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from monai.metrics import FIDMetric

__all__ = [
    "flip_ratio",
    "mean_absolute_difference",
    "bkl",
    "frechet_distance",
    "paired_cosine",
    "mean_quality_difference",
    "segmentation_features",
]


def flip_ratio(p_sp: torch.Tensor, threshold: float = 0.5) -> float:
    """Share of counterfactuals the guide classifies as standard plane (``p_SP > threshold``)."""
    return float((p_sp > threshold).float().mean())


def mean_absolute_difference(counterfactual: torch.Tensor, original: torch.Tensor) -> float:
    """MAD: mean absolute pixel difference between counterfactual and input, in [0, 1] units."""
    return float((counterfactual - original).abs().mean())


def bkl(p_sp: torch.Tensor) -> float:
    """BKL = mean of ``1 - p_SP(x_c)``: how far from certain standard plane the counterfactuals are."""
    return float((1.0 - p_sp).mean())


def frechet_distance(features: torch.Tensor, reference: torch.Tensor) -> float:
    """Frechet distance between two feature sets (N, D) with ``monai.metrics.FIDMetric``."""
    if len(features) < 2 or len(reference) < 2:
        raise ValueError("the Frechet distance needs at least 2 feature vectors per set")
    with warnings.catch_warnings():
        # fewer images than feature dimensions give singular covariances (stated in docs/diffice.md);
        # MONAI's matrix square root also passes an argument SciPy deprecates
        warnings.filterwarnings("ignore", message=".*singular.*")
        warnings.filterwarnings("ignore", message=".*disp.*", category=DeprecationWarning)
        return float(FIDMetric()(features.double(), reference.double()))


def paired_cosine(features: torch.Tensor, reference: torch.Tensor) -> float:
    """SonoSim-like: mean cosine similarity of paired feature vectors (counterfactual vs its input)."""
    return float(F.cosine_similarity(features.flatten(1), reference.flatten(1), dim=1).mean())


def mean_quality_difference(p_counterfactual: torch.Tensor, p_original: torch.Tensor) -> float:
    """MQD: mean rise of the oracle's standard-plane probability from input to counterfactual."""
    return float((p_counterfactual - p_original).mean())


def segmentation_features(probabilities: torch.Tensor, grid: int = 4) -> torch.Tensor:
    """FSD-like features: structure probabilities (B, K, H, W) averaged on a ``grid`` x ``grid`` layout."""
    return F.adaptive_avg_pool2d(probabilities, grid).flatten(1)
