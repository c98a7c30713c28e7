"""Train task: the bundle's two-phase training on the labelled datastore images."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
from monailabel.interfaces.tasks.train import TrainTask

logger = logging.getLogger(__name__)


def roi_from_mask(path: str) -> list[float] | None:
    """Bounding box ``[x0, y0, x1, y1]`` (pixel edges) of the non-zero pixels of a label mask."""
    from bundle.data.readers import read_image

    mask = read_image(path).array > 0  # the bundle's reader: documented formats only, never a decoder by content
    if not mask.any():
        return None
    rows, cols = np.nonzero(mask)
    return [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]


class BundleTrain(TrainTask):
    """Run ``train_phase1`` and ``train_phase2`` of ``configs/train.json`` on the labelled images.

    The label of an image is a mask of its NT box; the image info may carry an integer ``site``
    (default 0). No site is held out; the source validation split selects the best checkpoints.
    Request parameters: ``phase1_epochs``, ``phase2_epochs`` (bundle defaults otherwise).

    Args:
        model: the shared reconstructor (reloaded after training).
        bundle_root: repository root holding ``configs/``.
        work_dir: where the datalist and run folder go.
        overrides: architecture and ``models_dir`` overrides shared with inference.
    """

    def __init__(self, model, bundle_root: str, work_dir: str, overrides: dict) -> None:
        super().__init__("Two-phase ROI-aware CAE training on the labelled datastore images")
        self.model = model
        self.bundle_root = bundle_root
        self.work_dir = work_dir
        self.overrides = overrides

    def datalist(self, datastore) -> list[dict]:
        """Entries of every labelled image with its NT box from the label mask."""
        entries = []
        for image_id in datastore.get_labeled_images():
            label = datastore.get_label_by_image_id(image_id, "final")
            try:
                roi = roi_from_mask(datastore.get_label_uri(label, "final")) if label else None
            except OSError as error:  # a label file that is not an image (uploaded before 0.9.0's checks)
                logger.warning("label of %s is not a readable mask (%s); left out of training", image_id, error)
                continue
            if roi is None:
                continue
            info = datastore.get_image_info(image_id)
            entries.append(
                {
                    "image": datastore.get_image_uri(image_id),
                    "roi": roi,
                    "site": int(info.get("site", 0)),
                    "case_id": image_id,
                }
            )
        return entries

    def __call__(self, request: dict, datastore) -> dict:
        """Train; returns the paths of the new checkpoints and the number of images used."""
        entries = self.datalist(datastore)
        if len(entries) < 4:
            return {"error": f"need at least 4 labelled images with an NT box mask, found {len(entries)}"}
        data_dir = os.path.join(self.work_dir, "data")
        os.makedirs(data_dir, exist_ok=True)
        with open(os.path.join(data_dir, "datalist.json"), "w") as handle:
            sites = {str(site): f"site {site}" for site in sorted({e["site"] for e in entries})}
            json.dump({"sites": sites, "data": entries}, handle)
        settings = {"bundle_root": self.work_dir, "dataset_dir": data_dir, "held_out_site": -1}
        settings.update({k: v for k, v in self.overrides.items() if k != "device"})
        for key in ("phase1_epochs", "phase2_epochs"):
            if key in request:
                settings[key] = int(request[key])
        for run_id in ("train_phase1", "train_phase2"):
            command = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", "configs/train.json"]
            for key, value in settings.items():
                command += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
            subprocess.run(command, cwd=self.bundle_root, check=True)
        self.model.reload()
        models = settings.get("models_dir", os.path.join(self.work_dir, "models"))
        return {"images": len(entries), "model": os.path.join(models, "model.pt")}
