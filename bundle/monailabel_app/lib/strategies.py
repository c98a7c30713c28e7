"""Active-learning strategy: the most unfamiliar unlabelled image first."""

from __future__ import annotations

from monailabel.interfaces.tasks.strategy import Strategy


class MostUnfamiliar(Strategy):
    """Return the unlabelled image with the highest stored ``ood_score`` (run the ``ood`` scoring first)."""

    def __init__(self) -> None:
        super().__init__("Unlabelled image with the highest OOD score (least like the training scanners)")

    def __call__(self, request: dict, datastore) -> dict:
        """``{"id": image_id, "ood_score": score}``, or ``{}`` when every image is labelled."""
        candidates = datastore.get_unlabeled_images()
        if not candidates:
            return {}

        def score(image_id: str) -> float:
            value = datastore.get_image_info(image_id).get("ood_score")
            return float(value) if value is not None else float("-inf")

        best = max(candidates, key=score)
        return {"id": best, "ood_score": None if score(best) == float("-inf") else score(best)}
