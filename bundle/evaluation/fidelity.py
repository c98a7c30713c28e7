"""NT measurement fidelity: whether the NT is still measurable on a reconstruction, and how close it is.

For each image the NT is measured (:func:`bundle.evaluation.nt_measure.measure_nt_in_roi`) inside the native
NT box twice: on the original native image, and on the reconstruction mapped back to native
geometry. The dual-view model's zoom-view reconstruction is mapped back through the zoom inverse;
the single-view (paper) model's canvas reconstruction through the letterbox inverse, so both are
judged on the same native pixels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from bundle.data.readers import read_image
from bundle.data.roi_zoom import ROIZoomGeometry, unzoom_image
from bundle.data.transforms import LetterboxGeometry, unletterbox_image
from bundle.evaluation.nt_measure import measure_nt_in_roi

WITHIN_MM = 0.2
MEASURE = object()  # sentinel of nt_fidelity_row: measure the original there


def canvas_to_zoom(canvas: torch.Tensor, letterbox: LetterboxGeometry, zoom: ROIZoomGeometry) -> torch.Tensor:
    """Resample a (C, S, S) canvas onto the zoom view's (C, R, R) grid (bilinear).

    Lets a single-view reconstruction be scored on the same zoom grid as the dual-view model.
    """
    r = zoom.canvas_size
    centres = (torch.arange(r, dtype=torch.float64) + 0.5).tolist()
    native = zoom.unmap_points(np.array([[c, c] for c in centres]))  # view pixel centres -> native
    s = letterbox.canvas_size
    xs = (letterbox.scale * native[:, 0] + letterbox.dx) / s * 2 - 1  # canvas coords, align_corners=False
    ys = (letterbox.scale * native[:, 1] + letterbox.dy) / s * 2 - 1
    grid_y, grid_x = torch.meshgrid(torch.as_tensor(ys), torch.as_tensor(xs), indexing="ij")
    grid = torch.stack([grid_x, grid_y], dim=-1)[None].to(canvas.dtype)
    return F.grid_sample(canvas[None].float(), grid.float(), mode="bilinear", align_corners=False)[0]


#: the fade of the zoom view into the canvas, as a fraction of the crop's side (see :func:`unzoom_image`)
ZOOM_FEATHER = 0.1


def native_reconstruction(
    views: Mapping[str, torch.Tensor], letterbox: LetterboxGeometry, zoom: ROIZoomGeometry | None
) -> np.ndarray:
    """A reconstruction in native geometry: the zoom view faded into the canvas when there is one, else the canvas.

    The zoom view replaces the canvas inside its crop and fades into it over the outer 10 % of the
    crop (:data:`ZOOM_FEATHER`), inside the margin around the NT box, so the box itself holds the zoom
    view's pixels and no hard-edged rectangle shows where the two reconstructions meet.

    Args:
        views: one item's ``{"global": (1, S, S)}`` and optionally ``"roi": (1, R, R)``.
        letterbox: the item's letterbox geometry.
        zoom: the item's zoom geometry (needed with a ``roi`` view).

    Returns:
        (H, W) float array.
    """
    canvas = unletterbox_image(views["global"].float().cpu(), letterbox)
    if "roi" in views and zoom is not None:
        return unzoom_image(views["roi"].float().cpu(), zoom, background=canvas, feather=ZOOM_FEATHER)[0].numpy()
    return canvas[0].numpy()


def measure_original(original: np.ndarray, entry: Mapping) -> dict | None:
    """The NT measurement of an entry's native original in its box (None where no band was found)."""
    return measure_nt_in_roi(original, entry["roi"], entry["pixel_spacing_mm"])


def nt_fidelity_row(
    original: np.ndarray, reconstruction: np.ndarray, entry: Mapping, measured_original: object = MEASURE
) -> dict:
    """NT (mm) on the original and on the reconstruction inside the entry's native box.

    Args:
        original: the native original (H, W).
        reconstruction: the reconstruction in native geometry (H, W).
        entry: the datalist entry (``roi``, ``pixel_spacing_mm``, ``meta``).
        measured_original: the original's :func:`measure_original`, when several reconstructions of one
            image are compared (measured here by default).

    Returns:
        ``nt_true_mm`` (None when unknown), ``standard_plane`` (``meta.standard_plane``, None when
        unknown), ``nt_original_mm`` and ``nt_recon_mm`` (None where no band was found), and the
        calipers of both measurements (``column``/``upper_row``/``lower_row``).
    """
    spacing = entry["pixel_spacing_mm"]
    meta = entry.get("meta") or {}
    if measured_original is MEASURE:
        measured_original = measure_original(original, entry)
    measured_recon = measure_nt_in_roi(reconstruction, entry["roi"], spacing)
    return {
        "nt_true_mm": meta.get("nt_mm"),
        "standard_plane": meta.get("standard_plane"),
        "nt_original_mm": measured_original["nt_mm"] if measured_original else None,
        "nt_recon_mm": measured_recon["nt_mm"] if measured_recon else None,
        "original_calipers": measured_original,
        "recon_calipers": measured_recon,
    }


def read_native(entry: Mapping) -> np.ndarray:
    """The entry's native image as an (H, W) float array in [0, 1]."""
    return read_image(entry["image"]).array


class OriginalNT:
    """The NT measured on each native original in its box: each image read from disk once, then remembered.

    The measurement depends only on the image, the box and the spacing, not on which network
    reconstructed it, so one instance serves every phase and split of a report.
    """

    def __init__(self) -> None:
        self._measured: dict[tuple, dict | None] = {}

    def __call__(self, entry: Mapping) -> dict | None:
        """:func:`measure_original` of the entry (None where no band was found)."""
        box, spacing = (tuple(np.asarray(entry[k], dtype=float).ravel()) for k in ("roi", "pixel_spacing_mm"))
        key = (str(entry["image"]), box, spacing)
        if key not in self._measured:
            self._measured[key] = measure_original(read_native(entry), entry)
        return self._measured[key]


def is_standard_plane(row: Mapping) -> bool:
    """Whether a fidelity row (as measured, or read back from ``fidelity.csv``) counts as a standard plane.

    An NT is measured on a standard mid-sagittal plane in practice; rows whose ``standard_plane`` is
    unknown count as standard.
    """
    return row.get("standard_plane") in (True, None, "True", "")


def fidelity_by_plane(rows: Sequence[Mapping]) -> dict[str, dict[str, float]]:
    """:func:`fidelity_summary` of all rows (``all_planes``) and of the standard planes (``standard_planes``).

    Standard planes as :func:`is_standard_plane` decides.
    """
    standard = [r for r in rows if is_standard_plane(r)]
    return {"all_planes": fidelity_summary(rows), "standard_planes": fidelity_summary(standard)}


def fidelity_summary(rows: Sequence[Mapping]) -> dict[str, float]:
    """Fidelity figures over rows of :func:`nt_fidelity_row`.

    Returns:
        ``n``; ``original_measurable_pct`` (share of images with a band on the original);
        ``measurable_pct`` (share of those also measurable on the reconstruction);
        ``abs_diff_median_mm`` / ``abs_diff_p90_mm`` / ``within_0.2mm_pct`` / ``bias_mm`` of
        NT(recon) - NT(original); ``recon_mae_vs_truth_mm`` and ``original_mae_vs_truth_mm``.
    """
    measurable = [r for r in rows if r["nt_original_mm"] is not None]
    paired = [r for r in measurable if r["nt_recon_mm"] is not None]
    diff = np.array([r["nt_recon_mm"] - r["nt_original_mm"] for r in paired], dtype=np.float64)

    def mae_vs_truth(key: str) -> float:
        errors = [abs(r[key] - r["nt_true_mm"]) for r in rows if r[key] is not None and r["nt_true_mm"] is not None]
        return float(np.mean(errors)) if errors else float("nan")

    nan = float("nan")
    return {
        "n": len(rows),
        "original_measurable_pct": 100.0 * len(measurable) / max(1, len(rows)),
        "measurable_pct": 100.0 * len(paired) / max(1, len(measurable)),
        "abs_diff_median_mm": float(np.median(np.abs(diff))) if diff.size else nan,
        "abs_diff_p90_mm": float(np.percentile(np.abs(diff), 90)) if diff.size else nan,
        "within_0.2mm_pct": 100.0 * float(np.mean(np.abs(diff) <= WITHIN_MM)) if diff.size else nan,
        "bias_mm": float(np.mean(diff)) if diff.size else nan,
        "recon_mae_vs_truth_mm": mae_vs_truth("nt_recon_mm"),
        "original_mae_vs_truth_mm": mae_vs_truth("nt_original_mm"),
    }
