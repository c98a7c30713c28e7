"""Counterfactual metrics as the Diff-ICE paper defines them (arXiv 2403.08700, Table 2; SPEC 7).

Every metric is computed on the inputs the guide calls non-standard. Validity: flip ratio (share of
counterfactuals the guide calls standard), BKL (mean ``1 - p_SP(x_c)``) and MAD (mean change of the
guide's probability, ``|p_SP(x_c) - p_SP(x)|``: a probability, not pixels). Realism: FID and FSD,
Frechet distances between the *inputs* and their *valid* counterfactuals. Similarity: SonoSim, the
cosine of classifier features, counterfactual vs input. Quality: MQD, the oracle's mean rise over
the inputs it calls non-standard, ``(1/N) sum 1[o(x) < 0.5] (o(x_c) - o(x))``. The pixel change
has its own name (:func:`pixel_change`). Frechet distances use ``monai.metrics.FIDMetric`` on
features of local networks (no ImageNet download).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from monai.metrics import FIDMetric

__all__ = [
    "flip_ratio",
    "bkl",
    "mean_absolute_difference",
    "pixel_change",
    "frechet_distance",
    "paired_cosine",
    "mean_quality_difference",
]


def flip_ratio(p_sp: torch.Tensor, threshold: float = 0.5) -> float:
    """Flip ratio: share of counterfactuals the guide classifies as standard plane (``p_SP > threshold``)."""
    return float((p_sp > threshold).float().mean())


def bkl(p_sp: torch.Tensor) -> float:
    """BKL = mean of ``1 - p_SP(x_c)``: how far from a certain standard plane the counterfactuals are."""
    return float((1.0 - p_sp).mean())


def mean_absolute_difference(p_counterfactual: torch.Tensor, p_input: torch.Tensor) -> float:
    """MAD = mean ``|p_SP(x_c) - p_SP(x)|`` under the guide: how far the edit moved the decision."""
    return float((p_counterfactual - p_input).abs().mean())


def pixel_change(counterfactual: torch.Tensor, original: torch.Tensor) -> float:
    """Mean absolute pixel change from input to counterfactual, in [0, 1] grey-level units (not the paper's MAD)."""
    return float((counterfactual - original).abs().mean())


def frechet_distance(features: torch.Tensor, reference: torch.Tensor) -> float:
    """Frechet distance between two feature sets (N, D) with ``monai.metrics.FIDMetric``; NaN below 2 per set."""
    if len(features) < 2 or len(reference) < 2:
        return float("nan")
    with warnings.catch_warnings():
        # fewer images than feature dimensions give singular covariances (stated in docs/diffice.md);
        # MONAI's matrix square root also passes an argument SciPy deprecates
        warnings.filterwarnings("ignore", message=".*singular.*")
        warnings.filterwarnings("ignore", message=".*disp.*", category=DeprecationWarning)
        return float(FIDMetric()(features.double(), reference.double()))


def paired_cosine(features: torch.Tensor, reference: torch.Tensor) -> float:
    """SonoSim: mean cosine similarity of paired feature vectors (counterfactual vs its input)."""
    return float(F.cosine_similarity(features.flatten(1), reference.flatten(1), dim=1).mean())


def mean_quality_difference(o_counterfactual: torch.Tensor, o_input: torch.Tensor, threshold: float = 0.5) -> float:
    """MQD = ``(1/N) sum_i 1[o(x_i) < threshold] (o(x_c,i) - o(x_i))`` with the oracle's ``o = p_SP``.

    Args:
        o_counterfactual: the oracle's standard-plane probability of each counterfactual (N,).
        o_input: the oracle's probability of each input (N,).
        threshold: inputs the oracle already calls standard contribute 0.

    Returns:
        the mean over all ``N`` inputs.
    """
    if len(o_input) == 0:
        return float("nan")
    indicator = (o_input < threshold).to(o_input.dtype)
    return float((indicator * (o_counterfactual - o_input)).mean())
