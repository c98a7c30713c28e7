"""Embed and score images with an exported encoder: ``python -m bundle score DATALIST --encoder models/encoder.ts``.

For each image: letterbox to the encoder's canvas, encode with the TorchScript (``.ts``) or ONNX
(``.onnx``) encoder, then score the latent with the :class:`~bundle.latent.scoring.LatentScorer` saved
beside it (OOD distances, a flag, and the predicted ROI Edge-MAE). The dual-view encoder reads the
NT region too: an image without a box gets the NT localiser's (``localizer.pt`` beside the
encoder), recorded in ``roi_source`` / ``nt_box`` / ``roi_confidence``. An image that cannot be read
gets a row with its error, one where the localiser finds no NT a row saying so; the others are
still scored.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from bundle.latent.scoring import SCORE_COLUMNS, LatentScorer, load_scorer
from bundle.utils.atomic import atomic_write_csv
from bundle.utils.checkpoints import CheckpointError

logger = logging.getLogger("fetal_nt_roi_cae")

COLUMNS = ("image", "case_id", "site", *SCORE_COLUMNS, "error", "note", "roi_source", "nt_box", "roi_confidence")


class ExportedEncoder:
    """An exported encoder file (TorchScript ``.ts`` or ONNX ``.onnx``) and its canvas size.

    The dual-view encoder has a second input, the ROI-zoom view (``roi_view``), whose side is read
    from the embedded metadata too; its images need an NT box.

    Args:
        path: the exported file.
        canvas_size: input side; read from the embedded metadata when None.
        roi_margin: margin of the zoom view around the NT box (the training setting ``roi_margin``).
    """

    def __init__(self, path: str | os.PathLike, canvas_size: int | None = None, roi_margin: float = 0.5) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no exported encoder; run python -m bundle export first")
        kind = "ONNX" if self.path.suffix == ".onnx" else "TorchScript"
        try:
            meta = self._load_onnx() if kind == "ONNX" else self._load_torchscript()
        except Exception as error:  # torch, onnx and onnxruntime raise many types for a file that is not theirs
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise CheckpointError(
                f"{self.path}: not a readable {kind} encoder ({reason}); export it again with python -m bundle "
                "export (.ts from TorchScript, .onnx from ONNX; a renamed checkpoint is neither)"
            ) from None
        inputs = meta.get("encoder_data_format", {}).get("inputs", {})
        shape = inputs.get("image", {}).get("spatial_shape")
        self.canvas_size = int(canvas_size or (shape[0] if shape else 0))
        if self.canvas_size <= 0:
            raise ValueError(f"{self.path}: no canvas size in the embedded metadata; pass --canvas-size")
        self.weights_sha256 = meta.get("encoder_sha256")  # exports before 0.10.0 have none
        roi_shape = inputs.get("roi_view", {}).get("spatial_shape")
        self.roi_canvas_size = int(roi_shape[0]) if roi_shape else None
        self.roi_margin = roi_margin

    def _load_onnx(self) -> dict:
        import onnx
        import onnxruntime

        metadata = {p.key: p.value for p in onnx.load(str(self.path), load_external_data=False).metadata_props}
        self._session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        return json.loads(metadata.get("metadata", "{}"))

    def _load_torchscript(self) -> dict:
        extra = {"metadata.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript loading
            self._module = torch.jit.load(str(self.path), map_location="cpu", _extra_files=extra).eval()
        return json.loads(extra["metadata.json"] or "{}")

    def __call__(self, images: np.ndarray, roi_views: np.ndarray | None = None) -> np.ndarray:
        """Latents (B, D) of letterboxed images (B, 1, S, S) in [0, 1] (and zoom views (B, 1, R, R))."""
        arrays = [np.asarray(images, np.float32)]
        if self.roi_canvas_size is not None:
            if roi_views is None:
                raise ValueError(f"{self.path}: the dual-view encoder needs the ROI-zoom views too")
            arrays.append(np.asarray(roi_views, np.float32))
        if self.path.suffix == ".onnx":
            return self._session.run(["latent"], dict(zip(("image", "roi_view"), arrays, strict=False)))[0]
        with torch.no_grad():
            return self._module(*(torch.as_tensor(a) for a in arrays)).numpy()


def _batches(
    encoder: ExportedEncoder, entries: list[dict], batch_size: int, localizer_path: str | os.PathLike | None = None
) -> Iterator[tuple[list[dict], list | None]]:
    """Yield (entries, encoder inputs) batches; an entry that cannot be encoded comes alone with ``None``.

    Such an entry carries ``error`` (unreadable, or no box and no localiser) or ``note`` (the
    localiser found no NT). Every entry carries the box fields of
    :func:`bundle.deploy.writer.box_fields`.
    """
    from bundle.data.safe_transforms import SafeLoadUltrasoundImaged, SafeROIZoomd
    from bundle.data.transforms import LetterboxROId
    from bundle.deploy.writer import box_fields
    from bundle.model.localizer import LocalizeNTd
    from monai.transforms import Compose

    steps = [SafeLoadUltrasoundImaged(keys="image")]
    if encoder.roi_canvas_size is not None:
        steps.append(LocalizeNTd(keys="image", localizer_path=localizer_path))
        steps.append(SafeROIZoomd(keys="image", canvas_size=encoder.roi_canvas_size, margin=encoder.roi_margin))
    load = Compose([*steps, LetterboxROId(keys="image", canvas_size=encoder.canvas_size)])
    keys = ["image"] + (["roi_view"] if encoder.roi_canvas_size is not None else [])
    good: list[dict] = []
    arrays: dict[str, list] = {key: [] for key in keys}
    for entry in entries:
        item = load(dict(entry))
        fields = {**box_fields({k: [v] for k, v in item.items()}, 0), "error": item["error"] or ""}
        if item["error"] or fields["note"]:
            yield [{**entry, **fields}], None
            continue
        good.append({**entry, **fields})
        for key in keys:
            arrays[key].append(torch.as_tensor(item[key]).numpy())
        if len(good) == batch_size:
            yield good, [np.stack(arrays[key]) for key in keys]
            good, arrays = [], {key: [] for key in keys}
    if good:
        yield good, [np.stack(arrays[key]) for key in keys]


def check_same_encoder(encoder: ExportedEncoder, scorer: LatentScorer, scorer_path: object) -> None:
    """Refuse a scorer fitted on another encoder's latents (its distances and predictions would be meaningless).

    Both carry the SHA-256 of the encoder weights (:func:`bundle.utils.checkpoints.state_dict_sha256`);
    files from before 0.10.0 lack it and are used with a warning.

    Raises:
        CheckpointError: naming both files and the fix.
    """
    expected = scorer.info.get("encoder_sha256")
    if expected is None or encoder.weights_sha256 is None:
        logger.warning(
            "%s / %s: cannot check that they come from one training run (made before 0.10.0)", encoder.path, scorer_path
        )
        return
    if expected != encoder.weights_sha256:
        raise CheckpointError(
            f"{scorer_path}: fitted on the latents of another encoder (weights {expected[:12]}) than {encoder.path} "
            f"(weights {encoder.weights_sha256[:12]}); use the scorer.npz of the run that exported this encoder, "
            "or remake it with python -m monai.bundle run save_latents --config_file configs/train.json"
        )


def score_images(
    source: str | os.PathLike,
    encoder: str | os.PathLike,
    scorer: str | os.PathLike | LatentScorer | None = None,
    batch_size: int = 16,
    latents_out: str | os.PathLike | None = None,
    progress: bool = False,
    localizer: str | os.PathLike | None = None,
) -> list[dict]:
    """Embed and score every image of a datalist or folder.

    Args:
        source: datalist JSON or image folder (see :func:`bundle.data.items.inference_items`).
        encoder: exported encoder (``.ts`` or ``.onnx``).
        scorer: fitted scorer or its ``.npz`` (default: ``scorer.npz`` beside the encoder).
        batch_size: images per encoder call.
        latents_out: optional ``.npz`` for the latents of the readable images (``case_id``, ``z``).
        progress: show a progress bar.
        localizer: NT localiser for images without a box (default: ``localizer.pt`` beside the encoder).

    Returns:
        one row per image with :data:`COLUMNS` (scores empty and ``error`` or ``note`` set when not scored).
    """
    from bundle.data.items import inference_items
    from tqdm import tqdm

    if int(batch_size) < 1:
        raise ValueError(f"batch size {batch_size}: give a whole number >= 1 (e.g. --batch-size 16)")
    model = ExportedEncoder(encoder)
    scorer_path = scorer or Path(encoder).with_name("scorer.npz")
    fitted = scorer if isinstance(scorer, LatentScorer) else load_scorer(scorer_path)
    check_same_encoder(model, fitted, scorer_path)
    entries = inference_items(source)
    rows, case_ids, latents = [], [], []
    with tqdm(total=len(entries), desc="score", unit="img", disable=not progress) as bar:
        localizer = localizer or Path(encoder).with_name("localizer.pt")
        for batch, inputs in _batches(model, entries, batch_size, localizer):
            if inputs is None:
                rows.append(dict(batch[0]))
                logger.warning("skipped %s: %s", batch[0]["image"], batch[0]["error"] or batch[0]["note"])
            else:
                z = model(*inputs)
                scores = fitted.score(z)
                for i, entry in enumerate(batch):
                    row = dict(entry)
                    row.update({name: scores[name][i].item() for name in SCORE_COLUMNS})
                    rows.append(row)
                case_ids += [e["case_id"] for e in batch]
                latents.append(z)
            bar.update(len(batch))
    if latents_out is not None and latents:
        from bundle.latent.latents import save_latents

        save_latents(latents_out, {"case_id": np.asarray(case_ids), "z": np.concatenate(latents)})
    return rows


def write_rows_csv(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write score rows as CSV atomically (:data:`COLUMNS`)."""
    atomic_write_csv(path, rows, list(COLUMNS))
