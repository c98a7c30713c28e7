"""Per-image scores for users: OOD distance to the training latents and a predicted ROI quality.

A :class:`LatentScorer` is fitted on the training latents saved at the end of training
(``models/train_latents.npz``) and stored beside the encoder (``models/scorer.npz``). It needs
only the 128-D latent, so it works with the exported TorchScript or ONNX encoder.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np
from bundle.latent.ood import GaussianFit, fit_gaussian, knn_distance, l2_normalize, mahalanobis
from bundle.utils.atomic import atomic_path
from bundle.utils.checkpoints import CheckpointError
from sklearn.linear_model import RidgeCV
from torch import nn

logger = logging.getLogger("fetal_nt_roi_cae")

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 13))
SCORE_COLUMNS = ("ood_mahalanobis", "ood_knn", "ood_flag", "predicted_roi_edge_mae")


@dataclass
class QualityProbe:
    """Ridge regression from standardised latents to a per-image quality target (ROI Edge-MAE).

    Args:
        mean: (D,) latent mean used for standardisation.
        scale: (D,) latent standard deviation used for standardisation.
        coef: (D,) ridge coefficients on standardised latents.
        intercept: ridge intercept.
        alpha: ridge penalty chosen by leave-one-out cross-validation.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    alpha: float

    def predict(self, latents: np.ndarray) -> np.ndarray:
        """Predicted target of each latent."""
        return ((np.asarray(latents, np.float64) - self.mean) / self.scale) @ self.coef + self.intercept


def fit_quality_probe(
    latents: np.ndarray, target: np.ndarray, alphas: tuple[float, ...] = RIDGE_ALPHAS
) -> QualityProbe:
    """Fit :class:`QualityProbe` with the ridge penalty chosen among ``alphas`` by leave-one-out CV."""
    latents = np.asarray(latents, np.float64)
    mean, scale = latents.mean(0), latents.std(0) + 1e-8
    ridge = RidgeCV(alphas=alphas).fit((latents - mean) / scale, np.asarray(target, np.float64))
    return QualityProbe(mean, scale, ridge.coef_, float(ridge.intercept_), float(ridge.alpha_))


@dataclass
class LatentScorer:
    """OOD scores (Mahalanobis and KNN) and the ROI-quality probe, fitted on training latents.

    Args:
        gaussian: Gaussian fitted on the training latents (Ledoit-Wolf shrinkage).
        bank: (N, D) L2-normalised training latents for the KNN score.
        k: neighbour rank of the KNN score.
        quality: ridge probe latent -> ROI Edge-MAE.
        threshold_mahalanobis: Mahalanobis distance above which an image is flagged.
        threshold_knn: KNN distance above which an image is flagged.
        percentile: percentile of the source-validation scores the thresholds were set at.
        info: free-form provenance (canvas size, number of training latents, ...), strings only.
    """

    gaussian: GaussianFit
    bank: np.ndarray
    k: int
    quality: QualityProbe
    threshold_mahalanobis: float
    threshold_knn: float
    percentile: float
    info: dict[str, str] = field(default_factory=dict)

    def score(self, latents: np.ndarray) -> dict[str, np.ndarray]:
        """Scores of each latent: ``ood_mahalanobis``, ``ood_knn``, ``ood_flag`` and ``predicted_roi_edge_mae``.

        ``ood_flag`` is True when either distance exceeds its threshold; the two thresholds are set
        together on the source-site validation images so that about ``100 - percentile`` % of
        familiar images are flagged by the pair (:func:`joint_thresholds`), not by each score.
        """
        latents = np.asarray(latents, np.float64)
        if latents.ndim != 2 or latents.shape[1] != self.bank.shape[1]:
            raise ValueError(f"expected latents of shape (N, {self.bank.shape[1]}), got {latents.shape}")
        maha = mahalanobis(latents, self.gaussian)
        knn = knn_distance(latents, self.bank, self.k)
        return {
            "ood_mahalanobis": maha,
            "ood_knn": knn,
            "ood_flag": (maha > self.threshold_mahalanobis) | (knn > self.threshold_knn),
            "predicted_roi_edge_mae": np.clip(self.quality.predict(latents), *self.quality_range()),
        }

    def quality_range(self) -> tuple[float, float]:
        """The range of the ROI Edge-MAE seen in training; a prediction outside it is extrapolation, clipped.

        Scorers of 0.9.x without the range clip at 0 (an error is never negative).
        """
        low = float(self.info.get("quality_min", 0.0))
        high = float(self.info.get("quality_max", "inf"))
        return max(low, 0.0), high

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every field as a plain array (for :func:`save_scorer`)."""
        arrays = {
            "gaussian_mean": self.gaussian.mean,
            "gaussian_precision": self.gaussian.precision,
            "gaussian_shrinkage": np.float64(self.gaussian.shrinkage),
            "bank": self.bank.astype(np.float32),
            "k": np.int64(self.k),
            "quality_mean": self.quality.mean,
            "quality_scale": self.quality.scale,
            "quality_coef": self.quality.coef,
            "quality_intercept": np.float64(self.quality.intercept),
            "quality_alpha": np.float64(self.quality.alpha),
            "threshold_mahalanobis": np.float64(self.threshold_mahalanobis),
            "threshold_knn": np.float64(self.threshold_knn),
            "percentile": np.float64(self.percentile),
        }
        arrays.update({f"info_{key}": np.asarray(str(value)) for key, value in self.info.items()})
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> LatentScorer:
        """Inverse of :meth:`to_arrays`."""
        return cls(
            gaussian=GaussianFit(
                arrays["gaussian_mean"], arrays["gaussian_precision"], float(arrays["gaussian_shrinkage"])
            ),
            bank=arrays["bank"],
            k=int(arrays["k"]),
            quality=QualityProbe(
                arrays["quality_mean"],
                arrays["quality_scale"],
                arrays["quality_coef"],
                float(arrays["quality_intercept"]),
                float(arrays["quality_alpha"]),
            ),
            threshold_mahalanobis=float(arrays["threshold_mahalanobis"]),
            threshold_knn=float(arrays["threshold_knn"]),
            percentile=float(arrays["percentile"]),
            info={key[5:]: str(value) for key, value in arrays.items() if key.startswith("info_")},
        )


def conformal_allowance(n: int, percentile: float = 95.0) -> int:
    """How many of ``n`` validation images may lie above a threshold meant to flag ``100 - percentile`` % of new ones.

    The split-conformal rule: put the threshold at the ``ceil((n + 1) (1 - alpha))``-th smallest
    validation score (``alpha = 1 - percentile / 100``); a new image exchangeable with them then
    exceeds it with probability at most ``alpha``. A plain ``percentile``-th percentile of a few
    dozen images sits lower and flags more than ``alpha`` of new images (0.9.0 measured 5-10 % on
    fresh source-site images with 44 validation images).

    Args:
        n: number of validation images.
        percentile: share of familiar images to keep unflagged, in percent.

    Returns:
        the number of validation images that may lie above the threshold (0 for small ``n``).
    """
    alpha = 1.0 - percentile / 100.0
    return max(0, n - math.ceil((n + 1) * (1.0 - alpha) - 1e-9))


def joint_thresholds(maha: np.ndarray, knn: np.ndarray, percentile: float = 95.0) -> tuple[float, float, float]:
    """Thresholds for "either score too high" that flag at most ``100 - percentile`` % of new familiar images.

    Each score alone at its ``percentile``-th percentile flags up to twice that share when the two
    disagree (0.7.0 measured 7.5-10 % false flags on fresh source-site images). Both thresholds are
    therefore put at a common, higher percentile ``q``: the lowest ``q`` (in 0.1 steps) at which the
    pair flags no more validation images than :func:`conformal_allowance` allows.

    Args:
        maha: Mahalanobis distances of the validation images.
        knn: their KNN distances.
        percentile: the share of familiar images to keep unflagged, in percent.

    Returns:
        (Mahalanobis threshold, KNN threshold, the common percentile ``q``).
    """
    maha, knn = np.asarray(maha, np.float64), np.asarray(knn, np.float64)
    allowed = conformal_allowance(len(maha), percentile)
    for q in np.arange(percentile, 100.0 + 1e-9, 0.1):
        t_maha, t_knn = float(np.percentile(maha, q)), float(np.percentile(knn, q))
        if int(np.sum((maha > t_maha) | (knn > t_knn))) <= allowed:
            return t_maha, t_knn, float(round(q, 1))
    return float(maha.max()), float(knn.max()), 100.0


def fit_scorer(
    train: dict[str, np.ndarray],
    val: dict[str, np.ndarray],
    k: int = 5,
    percentile: float = 95.0,
    info: dict[str, str] | None = None,
) -> LatentScorer:
    """Fit a :class:`LatentScorer` on training latents; set the flag thresholds on validation latents.

    Args:
        train: latent table of the training images (``z``, ``roi_edge_mae``), see
            :func:`bundle.latent.latents.collect_latents`.
        val: latent table of source-site validation images (never used for fitting, only for
            thresholds, because training latents are closer to their own fit than new images).
        k: KNN neighbour rank.
        percentile: share of validation images left unflagged by the pair of thresholds, in percent
            (:func:`joint_thresholds`).
        info: provenance strings stored with the scorer.

    Returns:
        the fitted scorer.
    """
    gaussian = fit_gaussian(train["z"])
    bank = l2_normalize(train["z"]).astype(np.float32)  # stored as float32; score with what is stored
    quality = fit_quality_probe(train["z"], train["roi_edge_mae"])
    val_maha = mahalanobis(val["z"], gaussian)
    val_knn = knn_distance(val["z"], bank, k)
    t_maha, t_knn, common = joint_thresholds(val_maha, val_knn, percentile)
    target = np.asarray(train["roi_edge_mae"], np.float64)
    info = {**(info or {}), "quality_min": f"{target.min():.6g}", "quality_max": f"{target.max():.6g}"}
    return LatentScorer(
        gaussian=gaussian,
        bank=bank,
        k=k,
        quality=quality,
        threshold_mahalanobis=t_maha,
        threshold_knn=t_knn,
        percentile=percentile,
        info={**info, "threshold_percentile_each": f"{common:.1f}"},
    )


def save_scorer(path: str | os.PathLike, scorer: LatentScorer) -> None:
    """Write a scorer as ``.npz`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **scorer.to_arrays())


def load_scorer(path: str | os.PathLike) -> LatentScorer:
    """Read a scorer written by :func:`save_scorer` (no pickled objects accepted).

    Raises:
        FileNotFoundError: with the command that makes the file when it is missing.
        CheckpointError: for a truncated, incomplete or pickled file, naming it and the fix.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: no fitted scorer; it is written at the end of training "
            "(python -m monai.bundle run save_latents --config_file configs/train.json makes it from models/model.pt)"
        )
    remake = "make it again: python -m monai.bundle run save_latents --config_file configs/train.json"
    try:
        with np.load(path, allow_pickle=False) as data:
            return LatentScorer.from_arrays({name: data[name] for name in data.files})
    except KeyError as error:
        raise CheckpointError(f"{path}: not a complete scorer (no {error} array); {remake}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        reason = "pickled objects are refused" if "allow_pickle" in str(error) else f"{type(error).__name__}: {error}"
        raise CheckpointError(f"{path}: not a readable scorer ({reason}); {remake}") from None


def write_training_latents(
    template: nn.Module,
    model_path: str | os.PathLike,
    loaders: dict,
    models_dir: str | os.PathLike,
    device,
    canvas_size: int,
    k: int = 5,
    check_loader=None,
    held_out_site: int | None = None,
    report_dir: str | os.PathLike | None = None,
) -> LatentScorer:
    """Encode the training and validation images with the final model; save latents and the scorer.

    With ``check_loader`` (fresh native-size images, none used for fitting or thresholds) the flag
    rates on its source-site and held-out-site images are measured and written to
    ``report_dir/ood_check.json`` (:func:`ood_flag_rates`).

    Args:
        template: a network of the trained architecture (copied, not modified).
        model_path: the final weights (``models/model.pt``).
        loaders: ``{"train": loader, "val": loader}`` without augmentation.
        models_dir: where ``train_latents.npz`` and ``scorer.npz`` go (beside the encoder).
        device: where to run the network.
        canvas_size: stored with the scorer so that users preprocess at the right size.
        k: KNN neighbour rank.
        check_loader: loader of fresh images for the flag-rate check (None: skip).
        held_out_site: the unseen site of the check.
        report_dir: where ``ood_check.json`` goes.

    Returns:
        the fitted scorer.
    """
    from bundle.latent.latents import collect_latents, concat_splits, save_latents
    from bundle.utils.checkpoints import load_model_weights, state_dict_sha256

    network = load_model_weights(copy.deepcopy(template).cpu(), model_path).to(device)
    tables = {split: collect_latents(network, loader, device) for split, loader in loaders.items()}
    save_latents(os.path.join(models_dir, "train_latents.npz"), concat_splits(tables))
    info = {
        "canvas_size": str(canvas_size),
        "model": str(model_path),
        "n_train": str(len(tables["train"]["z"])),
        "encoder_sha256": state_dict_sha256(network.encoder),  # score refuses an encoder with other weights
    }
    scorer = fit_scorer(tables["train"], tables["val"], k=k, info=info)
    save_scorer(os.path.join(models_dir, "scorer.npz"), scorer)
    logger.info(
        "saved %d training latents and the OOD/quality scorer to %s (thresholds: Mahalanobis %.2f, KNN %.3f)",
        len(tables["train"]["z"]),
        models_dir,
        scorer.threshold_mahalanobis,
        scorer.threshold_knn,
    )
    if check_loader is not None and report_dir is not None:
        from bundle.utils.atomic import atomic_write_json

        rates = ood_flag_rates(template, model_path, scorer, check_loader, int(held_out_site), device)
        atomic_write_json(os.path.join(report_dir, "ood_check.json"), rates)
        logger.info(
            "OOD check on fresh native images: %.1f %% of %d source-site images flagged (target <= 5 %%), "
            "%.1f %% of %d held-out-site images",
            rates["source_flag_pct"],
            rates["n_source"],
            rates["held_out_flag_pct"],
            rates["n_held_out"],
        )
    return scorer


def ood_flag_rates(
    template: nn.Module, model_path: str | os.PathLike, scorer: LatentScorer, loader, held_out_site: int, device
) -> dict[str, float | int]:
    """Share of images the scorer flags as unfamiliar, on source-site and held-out-site images of ``loader``.

    Args:
        template: a network of the trained architecture (copied).
        model_path: the final weights.
        scorer: the fitted scorer.
        loader: preprocessed images none of which were used to fit the scorer or its thresholds.
        held_out_site: site index that counts as unseen.
        device: where to run the network.

    Returns:
        ``source_flag_pct`` (false flags; target <= 5 %), ``held_out_flag_pct`` and the image counts.
    """
    from bundle.latent.latents import collect_latents
    from bundle.utils.checkpoints import load_model_weights

    network = load_model_weights(copy.deepcopy(template).cpu(), model_path).to(device)
    table = collect_latents(network, loader, device)
    flags = scorer.score(table["z"])["ood_flag"].astype(bool)
    source = table["site"] != held_out_site
    return {
        "source_flag_pct": 100.0 * float(flags[source].mean()) if source.any() else float("nan"),
        "held_out_flag_pct": 100.0 * float(flags[~source].mean()) if (~source).any() else float("nan"),
        "n_source": int(source.sum()),
        "n_held_out": int((~source).sum()),
    }
