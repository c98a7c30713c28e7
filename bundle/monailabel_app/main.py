"""MONAI Label app for fetal_nt_roi_cae: thin adapters over the bundle's own Python API.

- infer ``reconstruction`` (type "others"): the reconstruction as PNG plus JSON with metrics, the
  OOD scores and the 128-value latent (:class:`bundle.deploy.inference.Reconstructor`);
- scoring ``ood``: stores each image's OOD score in the datastore;
- strategy ``most_unfamiliar``: the unlabelled image with the highest OOD score (review the most
  unfamiliar images first);
- train ``reconstruction``: the bundle's two-phase training on the labelled datastore images (the
  label of an image is its NT box drawn as a mask).

Start it from the repository root after ``bash bundle/monailabel_app/install.sh`` (see docs/monailabel.md)::

    MONAI_LABEL_AUTO_UPDATE_SCORING=false monailabel start_server --app bundle/monailabel_app
        --studies path/to/pngs --conf zoo_source github

``--conf upload_limit_mb N`` sets the largest upload (default 64 MB; a larger request gets 413 before
its body is read).
"""

from __future__ import annotations

import json
import logging
import os

from bundle import __version__
from bundle.model.architecture import ARCHITECTURE_KEYS
from bundle.utils.paths import REPO_ROOT
from fastapi import HTTPException
from lib.guards import guard_datastore, guard_endpoints, inferable_image, parse_roi
from lib.infers import ReconstructionInfer
from lib.model import SharedReconstructor
from lib.scoring import OODScoring
from lib.strategies import MostUnfamiliar
from lib.trainers import BundleTrain
from lib.uploads import DEFAULT_LIMIT_MB, install, redact
from monailabel.interfaces.app import MONAILabelApp

logger = logging.getLogger(__name__)


def remove_log_config_copies(app_dir: str) -> None:
    """Delete the copies of MONAI Label's logging config that its start script leaves in the temporary folder.

    ``monailabel start_server`` writes ``logging.json`` with this app's log file filled in to a fresh
    temporary file and never removes it; logging is configured by the time the app starts, so the
    copies that name this app's ``logs/app.log`` are no longer needed.
    """
    import tempfile
    from pathlib import Path

    log_file = json.dumps(os.path.join(app_dir, "logs", "app.log"))
    for path in Path(tempfile.gettempdir()).glob("tmp*.json"):
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        if '"disable_existing_loggers"' in text and log_file in text:
            path.unlink(missing_ok=True)


# --conf keys passed on to configs/inference.json (JSON values, except paths).
CONFIG_OVERRIDES = ("models_dir", *ARCHITECTURE_KEYS, "device")


def config_overrides(conf: dict) -> dict:
    """The ``--conf`` values that are bundle config overrides."""
    overrides = {}
    for key in CONFIG_OVERRIDES:
        if key in conf:
            value = conf[key]
            overrides[key] = value if key in ("models_dir", "device", "model") else json.loads(value)
    if "device" in overrides:
        overrides["device"] = f"$torch.device('{overrides['device']}')"
    return overrides


class FetalNTApp(MONAILabelApp):
    """The app: one shared model for inference and scoring, the bundle's training for the train task."""

    def __init__(self, app_dir: str, studies: str, conf: dict) -> None:
        install(float(conf.get("upload_limit_mb", DEFAULT_LIMIT_MB)))  # uploads: size limit, private folder
        guard_endpoints()  # bad params: 400; uploads removed on every failure
        self.overrides = config_overrides(conf)
        self.model = SharedReconstructor(self.overrides)
        self.bundle_root = str(REPO_ROOT)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="fetal_nt_roi_cae",
            description="ROI-aware autoencoder for first-trimester NT ultrasound: reconstruction, latent, OOD score",
            version=__version__,
        )
        remove_log_config_copies(app_dir)

    def init_datastore(self):
        """MONAI Label's datastore, with ids, tags and uploads checked (:mod:`lib.guards`)."""
        store = super().init_datastore()
        guard_datastore(store)
        return store

    def infer(self, request: dict, datastore=None) -> dict:
        """Infer on a datastore image or this request's upload, with a valid ``roi`` if any (4xx otherwise).

        An error the bundle raises for the input (unreadable image, no NT box for the dual-view
        model) becomes a 400 with its message, server paths removed (the endpoint wrapper of
        :func:`lib.guards.guard_endpoints` deletes the upload on every failure).
        """
        from bundle.data.readers import ImageReadError

        if request.get("model") not in self._infers:
            served = sorted(self._infers)
            detail = f"no model {request.get('model')!r}; this app serves {served}"
            raise HTTPException(status_code=404, detail=detail)
        inferable_image(request.get("image"), datastore or self.datastore())
        request["roi"] = parse_roi(request.get("roi"))
        try:
            return super().infer(request, datastore)
        except (ImageReadError, ValueError) as error:
            message = redact(str(error).replace(str(request.get("image")), "the image"))
            if "no NT box" in message or "no NT found" in message:
                message += "; over MONAI Label, pass the box as roi=x0,y0,x1,y1 (pixels) with the request"
            raise HTTPException(status_code=400, detail=message) from None

    def init_infers(self) -> dict:
        """The reconstruction task."""
        return {"reconstruction": ReconstructionInfer(self.model)}

    def init_scoring_methods(self) -> dict:
        """The OOD scoring method."""
        return {"ood": OODScoring(self.model)}

    def init_strategies(self) -> dict:
        """Most unfamiliar unlabelled image first."""
        return {"most_unfamiliar": MostUnfamiliar()}

    def init_trainers(self) -> dict:
        """The bundle's training on the labelled datastore images."""
        work_dir = os.path.join(self.app_dir, "train_runs")
        return {"reconstruction": BundleTrain(self.model, self.bundle_root, work_dir, self.overrides)}
