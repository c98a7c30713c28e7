"""Streaming inference: per image the reconstruction in the original geometry, the latent, metrics and scores.

The pieces plug into a MONAI ``SupervisedEvaluator`` (``configs/inference.json``):

- :func:`inference_items` lists a folder of images or a datalist (an NT box is optional);
- :class:`SafeLoadUltrasoundImaged` loads an image or, when the file cannot be read, records the
  error and puts a blank placeholder in its place so the run goes on;
- :class:`SafeROIZoomd` adds the ROI-zoom view the dual-view model reads (an image without an NT
  box becomes an error row naming the file and the fix);
- :func:`collate_items` stacks the images and keeps every other field as a per-item list (boxes
  may be missing for some images);
- :class:`LatentInferer` returns the reconstruction and the latent from one encoder pass;
- :class:`InferenceWriter` maps each reconstruction back through the letterbox inverse (and the
  dual-view model's zoom view through the zoom inverse, pasted over the NT region) and writes
  it (same format as the input where sensible, PNG otherwise), the latent as ``.npy``, and one
  row of ``results.csv`` / ``results.json`` per image, all atomically. Rows are streamed to
  temporary files as batches complete (nothing per image stays in memory) and renamed into place
  when the run completes, so memory does not grow with the number of images.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from bundle.data.readers import IMAGE_SUFFIXES, ImageReadError
from bundle.data.roi_zoom import ROIZoomd, ROIZoomGeometry, view_to_crop
from bundle.data.transforms import LetterboxGeometry, LoadUltrasoundImage
from bundle.evaluation.fidelity import native_reconstruction
from bundle.model.batches import pack_views, plain_tensor
from bundle.model.metrics import ms_ssim, psnr, roi_edge_error, roi_mae, split_views, ssim
from bundle.model.views import ViewLayout
from bundle.utils.atomic import AtomicTextFile, atomic_path, csv_lines
from ignite.engine import Engine, Events
from monai.config import KeysCollection
from monai.inferers import Inferer
from monai.transforms import MapTransform
from torch import nn

logger = logging.getLogger("fetal_nt_roi_cae")

ROW_COLUMNS = (
    "case_id",
    "image",
    "status",
    "error",
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
    "zoom_roi_mae",
    "zoom_roi_edge_mae",
    "ood_mahalanobis",
    "ood_knn",
    "ood_flag",
    "predicted_roi_edge_mae",
)


def _case_name(path: Path, root: Path | None) -> str:
    relative = path.relative_to(root) if root is not None else Path(path.name)
    name = str(relative)
    for suffix in (".nii.gz", *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "image"


def inference_items(source: str | os.PathLike) -> list[dict]:
    """Inference items from a folder of images or a datalist JSON.

    Args:
        source: a folder (searched recursively for PNG/JPG/BMP/TIFF, DICOM and NIfTI files) or a
            datalist JSON whose entries have ``image`` and optionally ``roi`` ``[x0, y0, x1, y1]``
            (original pixels) and ``case_id``.

    Returns:
        items with ``image`` and ``image_path`` (the path), ``roi`` (list or None), ``site`` (or "")
        and a unique, file-name-safe ``case_id``.

    Raises:
        DatalistError: when the datalist cannot be read.
        ValueError: when the folder holds no supported image or an entry has no image path.
    """
    from bundle.data.datalist import read_datalist_json, resolve_path

    path = Path(source)
    items = []
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
        if not files:
            raise ValueError(
                f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder; pass a folder or datalist"
            )
        items = [
            {"image": str(p), "image_path": str(p), "roi": None, "case_id": _case_name(p, path), "site": ""}
            for p in files
        ]
    else:
        datalist = read_datalist_json(path, keep_fields=("image", "roi", "case_id", "site"))
        for index, entry in enumerate(datalist["data"]):
            image = entry.get("image") if isinstance(entry, dict) else None
            if not isinstance(image, str):
                raise ValueError(f"{path}: data[{index}] has no 'image' path; every entry needs one")
            roi = entry.get("roi")
            case = entry.get("case_id") or _case_name(Path(image), None)
            resolved = str(resolve_path(image, path.parent))
            items.append(
                {
                    "image": resolved,
                    "image_path": resolved,
                    "roi": [float(v) for v in roi] if roi is not None else None,
                    "case_id": re.sub(r"[^A-Za-z0-9._-]+", "_", str(case)),
                    "site": entry.get("site", ""),
                }
            )
    seen: dict[str, int] = {}
    for item in items:  # two files with the same name in different entries must not overwrite each other
        count = seen.get(item["case_id"], 0)
        seen[item["case_id"]] = count + 1
        if count:
            item["case_id"] = f"{item['case_id']}_{count}"
    return items


class SafeLoadUltrasoundImaged(MapTransform):
    """Load images like :class:`~bundle.data.transforms.LoadUltrasoundImaged`, recording unreadable files.

    An unreadable file (or one with NaN/Inf pixels) gets ``error`` set to the reader's message
    (file, reason, fix) and a blank 8x8 placeholder image, so a batch run reports it and goes on.

    Args:
        keys: keys holding file paths.
        error_key: item key for the error message (None when the image loaded).
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(self, keys: KeysCollection, error_key: str = "error", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadUltrasoundImage()
        self.error_key = error_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        """Load every key; see the class docstring."""
        d = dict(data)
        d.setdefault(self.error_key, None)
        for key in self.key_iterator(d):
            try:
                d[key] = self.loader(d[key])
            except (ImageReadError, OSError, ValueError) as error:
                d[self.error_key] = str(error)
                d[key] = torch.zeros(1, 8, 8)
        return d


class SafeROIZoomd(ROIZoomd):
    """:class:`~bundle.data.roi_zoom.ROIZoomd` for inference: a missing or broken box becomes the item's error.

    The dual-view model needs the NT box of every image; an image without one (a plain folder, or a
    datalist entry without ``roi``) gets an error row naming the file and the fix instead of
    stopping the run, and a blank view so the batch still stacks.

    Args:
        keys: the native image key.
        canvas_size: side ``R`` of the view.
        margin: fraction of the box size added on each side.
        error_key: item key of the error message (set by :class:`SafeLoadUltrasoundImaged`).
    """

    def __init__(
        self, keys: KeysCollection = "image", canvas_size: int = 64, margin: float = 0.5, error_key: str = "error"
    ) -> None:
        super().__init__(keys, canvas_size, margin)
        self.error_key = error_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        """Add the view, or record why there is none; see the class docstring."""
        d = dict(data)
        if not d.get(self.error_key):
            try:
                return super().__call__(d)
            except ValueError as error:
                d[self.error_key] = str(error)
        size = self.zoom.canvas_size
        d[self.view_key] = torch.zeros(1, size, size)
        d[self.mask_key] = torch.zeros(1, size, size)
        d[self.geometry_key] = None
        return d


def collate_items(items: Sequence[dict]) -> dict:
    """Stack ``image`` (and ``roi_view``) ; keep every other field as a per-item list (boxes may be None)."""
    batch: dict = {key: [item.get(key) for item in items] for key in items[0]}
    for key in ("image", "roi_view"):
        if key in batch:
            batch[key] = torch.stack([plain_tensor(item[key]).float() for item in items])
    return batch


class InferenceBatch:
    """``prepare_batch`` for inference: the network input (canvas, or view mosaic with ``dual_view``) and no target.

    Args:
        dual_view: pack ``roi_view`` beside the canvas (:class:`~bundle.model.views.ViewLayout`).
    """

    def __init__(self, dual_view: bool = False) -> None:
        self.dual_view = dual_view

    def __call__(self, batchdata: dict, device=None, non_blocking: bool = False, **kwargs) -> tuple[torch.Tensor, None]:
        """Return ``(inputs, None)`` on ``device``."""
        return pack_views(batchdata, "image", "roi_view", self.dual_view, device, non_blocking=non_blocking), None


def prepare_image(batchdata: dict, device=None, non_blocking: bool = False, **kwargs) -> tuple[torch.Tensor, None]:
    """``prepare_batch`` of the single-view model: the images on ``device`` and no target."""
    return InferenceBatch(False)(batchdata, device, non_blocking)


class LatentInferer(Inferer):
    """Run an autoencoder once and return ``{"pred": reconstruction, "latent": z}``."""

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args, **kwargs) -> dict[str, torch.Tensor]:
        """Encode and decode ``inputs`` with ``network`` (``encode``/``decode``; DDP-wrapped is fine)."""
        module = network.module if hasattr(network, "module") else network
        z = module.encode(inputs)
        return {"pred": module.decode(z), "latent": z}


def batch_metrics(views: dict[str, torch.Tensor], batch: dict) -> list[dict[str, float]]:
    """Whole-canvas PSNR/SSIM/MS-SSIM per image, and ROI metrics for images with a box, in one batched pass.

    Args:
        views: the batch's reconstructions by view (:func:`~bundle.model.metrics.split_views`): ``global``
            (B, 1, S, S) and, for the dual-view model, ``roi`` (B, 1, R, R).
        batch: the collated batch: ``image`` (letterboxed inputs), ``roi`` (per image the NT box in
            canvas pixels or None) and, with a ``roi`` view, ``roi_view`` / ``roi_view_mask``.

    Returns:
        one dict of metric values per image (ROI metrics only for images with a box; ``zoom_roi_mae``
        and ``zoom_roi_edge_mae`` on the zoom view of the dual-view model).
    """
    from bundle.data.transforms import roi_mask

    p, y = views["global"].float(), torch.as_tensor(batch["image"]).float()
    rois = batch["roi"]
    height, width = y.shape[-2:]
    whole = {"psnr": psnr(p, y), "ssim": ssim(p, y), "ms_ssim": ms_ssim(p, y)}
    rows = [{name: float(v[i]) for name, v in whole.items()} for i in range(len(y))]
    boxed = [i for i, roi in enumerate(rois) if roi is not None]
    if boxed:  # roi_mask is never empty: a box off the canvas marks the nearest pixel
        masks = torch.stack([roi_mask([float(v) for v in rois[i]], height, width) for i in boxed]).float()
        p_roi, y_roi = p[boxed], y[boxed]
        in_box = {
            "roi_mae": roi_mae(p_roi, y_roi, masks),
            "roi_edge_mae": roi_edge_error(p_roi, y_roi, masks),
            "roi_psnr": psnr(p_roi, y_roi, mask=masks),
        }
        if "roi" in views:
            zoom_masks = torch.stack([plain_tensor(batch["roi_view_mask"][i]).float() for i in boxed])
            p_zoom, y_zoom = views["roi"][boxed].float(), torch.as_tensor(batch["roi_view"])[boxed].float()
            in_box["zoom_roi_mae"] = roi_mae(p_zoom, y_zoom, zoom_masks)
            in_box["zoom_roi_edge_mae"] = roi_edge_error(p_zoom, y_zoom, zoom_masks)
        for j, i in enumerate(boxed):
            rows[i].update({name: float(v[j]) for name, v in in_box.items()})
    return rows


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


def _zoom_geometry(batch: dict, i: int) -> ROIZoomGeometry | None:
    geometries = batch.get("roi_zoom")
    return ROIZoomGeometry.from_dict(geometries[i]) if geometries and geometries[i] is not None else None


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
        self.counts = {"images": 0, "errors": 0}
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

        self.counts = {"images": 0, "errors": 0}
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
        geometry = LetterboxGeometry.from_dict(batch["letterbox"][i])
        zoom = _zoom_geometry(batch, i)
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
            "inference: %d images, %d unreadable; outputs in %s (results.csv, reconstructions/, latents/)",
            self.counts["images"],
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
            roi: optional NT box ``[x0, y0, x1, y1]`` in original pixels (adds ROI metrics).

        Returns:
            ``reconstruction`` (H, W) float32 in [0, 1] in the original geometry, ``latent`` (128,)
            float32, ``metrics`` (dict) and ``scores`` (dict; empty without a scorer).

        Raises:
            ImageReadError: when the file cannot be read (file, reason and fix in the message).
        """
        item = self.preprocessing({"image": str(image_path), "roi": None if roi is None else list(roi)})
        if item["error"]:
            raise ImageReadError(item["error"])
        batch = collate_items([item])
        inputs, _ = InferenceBatch(ViewLayout.of(self.network).dual_view)(batch, self.device)
        output = LatentInferer()(inputs, self.network)
        views = split_views(output["pred"].float().cpu())
        latent = output["latent"][0].float().cpu().numpy()
        geometry = LetterboxGeometry.from_dict(item["letterbox"])
        scores = {}
        if self.scorer is not None:
            scores = {name: values[0].item() for name, values in self.scorer.score(latent[None]).items()}
        recon = native_reconstruction({k: v[0] for k, v in views.items()}, geometry, _zoom_geometry(batch, 0))
        return {
            "reconstruction": np.clip(recon, 0, 1).astype(np.float32),
            "latent": latent,
            "metrics": batch_metrics(views, batch)[0],
            "scores": scores,
        }
