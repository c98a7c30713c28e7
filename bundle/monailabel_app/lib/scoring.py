"""Scoring method: each datastore image's OOD score, stored in the datastore."""

from __future__ import annotations

import logging

from lib.trainers import roi_from_mask
from monailabel.interfaces.tasks.scoring import ScoringMethod

logger = logging.getLogger(__name__)


class OODScoring(ScoringMethod):
    """Score every datastore image with the bundle and store ``ood_score`` (Mahalanobis) in its info.

    The dual-view model needs each image's NT box: it is taken from the image's ``final`` label (the
    NT mask) or from an ``roi`` in its info; an image with neither is listed under ``failed`` with
    the fix.

    Args:
        model: a :class:`lib.model.SharedReconstructor`.
    """

    def __init__(self, model) -> None:
        super().__init__("OOD score (Mahalanobis distance to the training latents) of every image")
        self.model = model

    def __call__(self, request: dict, datastore) -> dict:
        """Score all images; unreadable ones are listed with their error."""
        reconstructor = self.model.get()
        scored, failed = {}, {}
        for image_id in datastore.list_images():
            try:
                scores = reconstructor.run(datastore.get_image_uri(image_id), image_roi(datastore, image_id))["scores"]
            except Exception as error:  # one bad image (unreadable, a bomb, a broken label) never stops the rest
                failed[image_id] = str(error)
                logger.warning("OOD scoring: %s not scored: %s", image_id, error)
                continue
            info = {
                "ood_score": scores.get("ood_mahalanobis"),
                "ood_knn": scores.get("ood_knn"),
                "ood_flag": scores.get("ood_flag"),
            }
            datastore.update_image_info(image_id, info)
            scored[image_id] = info["ood_score"]
        logger.info("OOD scoring: %d images scored, %d failed", len(scored), len(failed))
        return {"scored": scored, "failed": failed}


def image_roi(datastore, image_id: str) -> list[float] | None:
    """An image's NT box: from its ``final`` NT-mask label, else ``roi`` in its info, else None."""
    label = datastore.get_label_by_image_id(image_id, "final")
    if label:
        roi = roi_from_mask(datastore.get_label_uri(label, "final"))
        if roi is not None:
            return roi
    roi = (datastore.get_image_info(image_id) or {}).get("roi")
    return [float(v) for v in roi] if roi else None
