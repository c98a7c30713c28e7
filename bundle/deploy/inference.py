"""Streaming inference: per image the reconstruction in the original geometry, the latent, metrics and scores.

The pieces plug into a MONAI ``SupervisedEvaluator`` (``configs/inference.json``); each lives in the
module that owns its job and is re-exported here, so configs and callers import from one place:

- ``bundle.data.items``: :func:`inference_items` lists a folder of images or a datalist (an NT box is
  optional);
- ``bundle.data.safe_transforms``: :class:`SafeLoadUltrasoundImaged` loads an image or, when the file
  cannot be read, records the error and puts a blank placeholder in its place so the run goes on;
  :class:`SafeROIZoomd` adds the ROI-zoom view the dual-view model reads (an image without an NT box
  becomes an error row naming the file and the fix);
- ``bundle.deploy.engine``: :func:`collate_items` stacks the images and keeps every other field as a
  per-item list (boxes may be missing), :class:`InferenceBatch` packs the network input, :class:`LatentInferer`
  returns the reconstruction and the latent from one encoder pass, :func:`batch_metrics` scores them;
- ``bundle.deploy.writer``: :class:`InferenceWriter` maps each reconstruction back through the
  letterbox inverse (and the dual-view model's zoom view through the zoom inverse, pasted over the NT
  region) and writes it (same format as the input where sensible, PNG otherwise), the latent as
  ``.npy``, and one row of ``results.csv`` / ``results.json`` per image, all atomically; rows are
  streamed to temporary files as batches complete and renamed into place when the run completes, so
  memory does not grow with the number of images;
- here: :class:`Reconstructor` runs the same chain on one image at a time (the MONAI Label API).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from bundle.data.geometry import geometries_of
from bundle.data.items import inference_items
from bundle.data.readers import ImageReadError
from bundle.data.safe_transforms import SafeLoadUltrasoundImaged, SafeROIZoomd
from bundle.deploy.engine import InferenceBatch, LatentInferer, batch_metrics, collate_items, prepare_image
from bundle.deploy.writer import ROW_COLUMNS, InferenceWriter, to_uint8
from bundle.evaluation.fidelity import native_reconstruction
from bundle.model.metrics import split_views
from bundle.model.views import ViewLayout

__all__ = [
    "ROW_COLUMNS",
    "InferenceBatch",
    "InferenceWriter",
    "LatentInferer",
    "Reconstructor",
    "SafeLoadUltrasoundImaged",
    "SafeROIZoomd",
    "batch_metrics",
    "collate_items",
    "inference_items",
    "prepare_image",
    "to_uint8",
]


class Reconstructor:
    """The bundle's inference for one image at a time, built from ``configs/inference.json``.

    This is the Python API the MONAI Label adapters call. The network, canvas and checkpoint come
    from the config through :class:`monai.bundle.ConfigParser` (so ``--conf``-style overrides such as
    ``models_dir`` or ``canvas_size`` work), and the scorer from ``scorer_path`` when it exists.

    Args:
        config_file: the inference config (default: the bundle's ``configs/inference.json``).
        overrides: config overrides, e.g. ``{"models_dir": "/path/models"}``.

    Example::

        result = Reconstructor().run("scan.png", roi=[412, 398, 583, 452])
        result["reconstruction"].shape  # original (H, W)
        result["scores"]["ood_mahalanobis"]
        Reconstructor().run("new_scan.png")["roi_source"]  # "predicted": the NT localiser's box
    """

    def __init__(self, config_file: str | os.PathLike | None = None, overrides: dict | None = None) -> None:
        from bundle.utils.checkpoints import load_model_weights
        from bundle.utils.paths import INFERENCE_CONFIG, load_config

        config_file = config_file or INFERENCE_CONFIG
        parser = load_config(config_file, overrides)
        self.device = parser.get_parsed_content("device")
        self.preprocessing = parser.get_parsed_content("preprocessing")
        self.network = load_model_weights(
            parser.get_parsed_content("network_def"), parser.get_parsed_content("ckpt_path")
        )
        self.network = self.network.to(self.device).eval()
        scorer_path = parser.get_parsed_content("scorer_path")
        self.scorer = None
        if os.path.exists(scorer_path):
            from bundle.latent.scoring import load_scorer

            self.scorer = load_scorer(scorer_path)

    @torch.no_grad()
    def run(self, image_path: str | os.PathLike, roi: Sequence[float] | None = None) -> dict:
        """Reconstruct one image.

        Args:
            image_path: PNG/JPG/DICOM/NIfTI file.
            roi: optional NT box ``[x0, y0, x1, y1]`` in original pixels; without it the NT localiser's
                box is used (``models/localizer.pt``). A given box always wins.

        Returns:
            ``reconstruction`` (H, W) float32 in [0, 1] in the original geometry, ``latent`` (128,)
            float32, ``metrics`` (dict), ``scores`` (dict; empty without a scorer), and the box used:
            ``roi_source`` (``given`` / ``predicted``), ``nt_box`` (native pixels) and ``roi_confidence``
            (the localiser's, None for a given box).

        Raises:
            ImageReadError: when the file cannot be read (file, reason and fix in the message).
            ValueError: when the dual-view model has no box: the localiser found no NT (or there is no
                localiser); the message says which and how to give a box.
        """
        item = self.preprocessing({"image": str(image_path), "roi": None if roi is None else list(roi)})
        if item["error"]:
            raise ImageReadError(item["error"])
        dual_view = ViewLayout.of(self.network).dual_view
        if dual_view and item.get("no_nt"):
            raise ValueError(f"{image_path}: {item['no_nt']}")
        batch = collate_items([item])
        inputs, _ = InferenceBatch(dual_view)(batch, self.device)
        output = LatentInferer()(inputs, self.network)
        views = split_views(output["pred"].float().cpu())
        latent = output["latent"][0].float().cpu().numpy()
        geometry, zoom = geometries_of(batch, 0)
        scores = {}
        if self.scorer is not None:
            scores = {name: values[0].item() for name, values in self.scorer.score(latent[None]).items()}
        recon = native_reconstruction({k: v[0] for k, v in views.items()}, geometry, zoom)
        return {
            "reconstruction": np.clip(recon, 0, 1).astype(np.float32),
            "latent": latent,
            "metrics": batch_metrics(views, batch)[0],
            "scores": scores,
            "roi_source": item.get("roi_source") or ("given" if roi is not None else "none"),
            "nt_box": item.get("nt_box"),
            "roi_confidence": item.get("roi_confidence"),
        }
