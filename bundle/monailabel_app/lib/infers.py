"""Infer task: reconstruction PNG plus JSON (metrics, OOD scores, latent)."""

from __future__ import annotations

import os
import tempfile

from bundle.deploy.inference import to_uint8
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from PIL import Image


class ReconstructionInfer(InferTask):
    """Reconstruct an image with the bundle; request param ``roi`` = [x0, y0, x1, y1] (else the localiser's box).

    Args:
        model: a :class:`lib.model.SharedReconstructor`.
    """

    def __init__(self, model) -> None:
        super().__init__(
            type=InferType.OTHERS,
            labels=None,
            dimension=2,
            description="Reconstruction in the original geometry, metrics, OOD score and 128-D latent",
            config={"roi": ""},
        )
        self.model = model

    def is_valid(self) -> bool:
        """Always offered; a missing checkpoint is reported when the task runs."""
        return True

    def __call__(self, request: dict) -> tuple[str, dict]:
        """Run the bundle's :meth:`~bundle.deploy.inference.Reconstructor.run` on ``request["image"]``."""
        roi = request.get("roi") or None  # checked by the app (lib.guards.parse_roi)
        result = self.model.get().run(request["image"], roi)
        fd, path = tempfile.mkstemp(suffix=".png", prefix="reconstruction_")
        os.close(fd)
        Image.fromarray(to_uint8(result["reconstruction"])).save(path)
        scores = result["scores"]
        return path, {
            "metrics": result["metrics"],
            "ood_score": scores.get("ood_mahalanobis"),
            "ood_knn": scores.get("ood_knn"),
            "ood_flag": scores.get("ood_flag"),
            "predicted_roi_edge_mae": scores.get("predicted_roi_edge_mae"),
            "latent": [float(v) for v in result["latent"]],
            "size": list(result["reconstruction"].shape[::-1]),
            "roi_source": result["roi_source"],
            "nt_box": result["nt_box"],
            "roi_confidence": result["roi_confidence"],
        }
