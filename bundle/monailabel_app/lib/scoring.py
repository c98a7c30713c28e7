"""Scoring method: each datastore image's OOD score, stored in the datastore."""

from __future__ import annotations

import logging

from monailabel.interfaces.tasks.scoring import ScoringMethod

logger = logging.getLogger(__name__)


class OODScoring(ScoringMethod):
    """Score every datastore image with the bundle and store ``ood_score`` (Mahalanobis) in its info.

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
                scores = reconstructor.run(datastore.get_image_uri(image_id))["scores"]
            except ValueError as error:
                failed[image_id] = str(error)
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
