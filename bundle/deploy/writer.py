"""The inference writer: reconstructions in native geometry, latents and the results table, all atomic."""

from __future__ import annotations

import io
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
from bundle.data.geometry import geometries_of
from bundle.data.roi_zoom import view_to_crop
from bundle.deploy.engine import batch_metrics
from bundle.evaluation.fidelity import native_reconstruction
from bundle.model.metrics import split_views
from bundle.utils.atomic import AtomicTextFile, atomic_path, csv_lines
from ignite.engine import Engine, Events

logger = logging.getLogger("fetal_nt_roi_cae")

ROW_COLUMNS = (
    "case_id",
    "image",
    "status",
    "error",
    "note",
    "roi_source",
    "nt_box",
    "roi_confidence",
    "original_width",
    "original_height",
    "reconstruction",
    "roi_reconstruction",
    "latent",
    "psnr",
    "ssim",
    "ms_ssim",
    "roi_mae",
    "roi_edge_mae",
    "roi_psnr",
    "roi_blur_px",
    "zoom_roi_mae",
    "zoom_roi_edge_mae",
    "zoom_roi_blur_px",
    "ood_mahalanobis",
    "ood_knn",
    "ood_flag",
    "predicted_roi_edge_mae",
)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An image in [0, 1] as 8-bit grey levels (rounded, clipped)."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _write_reconstruction(path_in: str, recon: np.ndarray, out_dir: Path, case_id: str) -> Path:
    """Write a (H, W) reconstruction in [0, 1] as the input's format where sensible, PNG otherwise."""
    name = path_in.lower()
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        target = out_dir / f"{case_id}.nii.gz"
        with atomic_path(target) as tmp:
            nib.save(nib.Nifti1Image(recon.T.astype(np.float32), np.eye(4)), str(tmp))
        return target
    if name.endswith((".dcm", ".dicom")):
        target = out_dir / f"{case_id}.dcm"
        _write_derived_dicom(path_in, recon, target)
        return target
    return _write_png(recon, out_dir / f"{case_id}.png")


def _write_png(image: np.ndarray, target: Path) -> Path:
    """Write an (H, W) image in [0, 1] as an 8-bit PNG, atomically."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="PNG")
    with atomic_path(target) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return target


def box_fields(batch: dict, i: int) -> dict:
    """Where item ``i``'s NT box came from: ``roi_source``, ``nt_box`` (native pixels), ``roi_confidence``, ``note``.

    Items that did not pass :class:`~bundle.model.localizer.LocalizeNTd` count as given boxes (or none).
    """

    def field(key: str):
        values = batch.get(key)
        return values[i] if values is not None else None

    box = field("nt_box")
    source = field("roi_source") or ("given" if field("roi") is not None else "none")
    return {
        "roi_source": source,
        "nt_box": "" if box is None else json.dumps([round(float(v), 2) for v in box]),
        "roi_confidence": "" if field("roi_confidence") is None else field("roi_confidence"),
        "note": field("no_nt") or "",
    }


def _write_derived_dicom(source: str, recon: np.ndarray, target: Path) -> None:
    """A derived 8-bit grey DICOM: the source's header (patient/study kept), new series and instance UIDs."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.dcmread(source, stop_before_pixels=True)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SeriesDescription = "fetal_nt_roi_cae reconstruction"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    for tag in ("PlanarConfiguration", "NumberOfFrames", "RedPaletteColorLookupTableData"):
        if tag in ds:
            delattr(ds, tag)
    ds.Rows, ds.Columns = recon.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = to_uint8(recon).tobytes()
    ds["PixelData"].VR = "OB"  # 8-bit pixels; without a VR pydicom cannot write the ambiguous OB/OW
    with atomic_path(target) as tmp:
        ds.save_as(str(tmp), enforce_file_format=True)


class InferenceWriter:
    """Ignite handler: write reconstructions, latents and the results table of an inference run.

    Args:
        output_dir: output folder (``reconstructions/``, ``latents/``, ``results.csv``, ``results.json``).
        scorer_path: fitted :class:`~bundle.latent.scoring.LatentScorer` (``models/scorer.npz``); scores are
            left empty when the file does not exist.
        progress: show a progress bar over images.
    """

    def __init__(
        self, output_dir: str | os.PathLike, scorer_path: str | os.PathLike | None = None, progress: bool = False
    ) -> None:
        self.output_dir = Path(output_dir)
        self.scorer = None
        if scorer_path is not None and os.path.exists(scorer_path):
            from bundle.latent.scoring import load_scorer

            self.scorer = load_scorer(scorer_path)
        elif scorer_path is not None:
            logger.warning("no scorer at %s: OOD and quality columns stay empty (run save_latents)", scorer_path)
        self.progress = progress
        self.counts = {"images": 0, "errors": 0, "no_nt": 0, "predicted": 0}
        self._tables: dict[str, AtomicTextFile] = {}
        self._bar = None

    def attach(self, engine: Engine) -> None:
        """Write each batch as it completes and publish the tables when the run completes."""
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write_batch)
        engine.add_event_handler(Events.COMPLETED, self._finish)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._abort)

    def _start(self, engine: Engine) -> None:
        from tqdm import tqdm

        self.counts = {"images": 0, "errors": 0, "no_nt": 0, "predicted": 0}
        self._tables = {name: AtomicTextFile(self.output_dir / name) for name in ("results.csv", "results.json")}
        self._tables["results.csv"].write(csv_lines([], list(ROW_COLUMNS)))
        self._tables["results.json"].write("[")
        total = len(engine.state.dataloader.dataset) if hasattr(engine.state.dataloader, "dataset") else None
        self._bar = tqdm(total=total, desc="inference", unit="img", disable=not self.progress)

    def _write_batch(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        views = split_views(output["pred"]["pred"].detach().float().cpu())
        latents = output["pred"]["latent"].detach().float().cpu().numpy()
        scores = self.scorer.score(latents) if self.scorer is not None else None
        metrics = batch_metrics(views, batch)
        rows = [
            self._row(batch, i, case_id, {k: v[i] for k, v in views.items()}, latents[i], metrics[i], scores)
            for i, case_id in enumerate(batch["case_id"])
        ]
        self._tables["results.csv"].write(csv_lines(rows, list(ROW_COLUMNS), header=False))
        for row in rows:
            clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            self._tables["results.json"].write(("\n" if not self.counts["images"] else ",\n") + json.dumps(clean))
            self.counts["images"] += 1
            self.counts["errors"] += row["status"] == "error"
            self.counts["no_nt"] += row["status"] == "no_nt"
            self.counts["predicted"] += row["roi_source"] == "predicted"
        for table in self._tables.values():
            table.flush()
        if self._bar is not None:
            self._bar.update(len(rows))

    def _row(self, batch: dict, i: int, case_id: str, pred, latent, metrics: dict, scores) -> dict:
        row = dict.fromkeys(ROW_COLUMNS, "")
        row.update({"case_id": case_id, "image": str(batch["image_path"][i])})
        if batch["error"][i]:
            row.update({"status": "error", "error": batch["error"][i]})
            logger.warning("skipped %s", batch["error"][i])
            return row
        row.update(box_fields(batch, i))
        if row["note"] and "roi" in pred:  # the dual-view model has no zoom view to draw; the paper model goes on
            row["status"] = "no_nt"
            logger.warning("%s: %s", row["image"], row["note"])
            return row
        geometry, zoom = geometries_of(batch, i)
        recon = np.clip(native_reconstruction(pred, geometry, zoom), 0, 1)
        width, height = geometry.original_size
        row.update({"status": "ok", "original_width": width, "original_height": height})
        row["reconstruction"] = str(
            _write_reconstruction(row["image"], recon, self.output_dir / "reconstructions", case_id)
        )
        if "roi" in pred and zoom is not None:  # the zoom view alone, at native resolution
            crop = view_to_crop(pred["roi"], zoom)
            row["roi_reconstruction"] = str(
                _write_png(crop[0].clamp(0, 1).numpy(), self.output_dir / "reconstructions" / f"{case_id}_roi.png")
            )
        latent_path = self.output_dir / "latents" / f"{case_id}.npy"
        with atomic_path(latent_path) as tmp, open(tmp, "wb") as handle:
            np.save(handle, latent.astype(np.float32))
        row["latent"] = str(latent_path)
        row.update(metrics)
        if scores is not None:
            row.update({name: values[i].item() for name, values in scores.items()})
        return row

    def _finish(self, engine: Engine) -> None:
        if self._bar is not None:
            self._bar.close()
        self._tables["results.json"].write("\n]\n")
        for table in self._tables.values():
            table.commit()
        self._tables = {}
        logger.info(
            "inference: %d images, %d reconstructed (%d with a predicted NT box), %d without a visible NT, "
            "%d unreadable; outputs in %s (results.csv, reconstructions/, latents/)",
            self.counts["images"],
            self.counts["images"] - self.counts["errors"] - self.counts["no_nt"],
            self.counts["predicted"],
            self.counts["no_nt"],
            self.counts["errors"],
            self.output_dir,
        )

    def _abort(self, engine: Engine, error: BaseException) -> None:
        """Remove the unfinished tables (earlier complete ones stay) and let the error through."""
        if self._bar is not None:
            self._bar.close()
        for table in self._tables.values():
            table.discard()
        self._tables = {}
        raise error
