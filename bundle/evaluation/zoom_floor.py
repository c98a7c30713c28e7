"""How much NT measurement fidelity the ROI-zoom view itself allows, and how sharp a reconstruction must be.

No network is involved. For every image with a pixel spacing, the NT is measured (as in the report,
:func:`bundle.evaluation.fidelity.nt_fidelity_row`) on the native original and on the zoom view mapped
back to native pixels, once as it is (the **floor**: what resampling to ``R x R`` and back costs)
and once after a Gaussian blur of ``sigma`` zoom-view pixels for each requested ``sigma`` (what a
reconstruction as blurred as that would cost). Comparing a trained model's fidelity with these rows
says whether the zoom setting (``roi_canvas_size``, ``roi_margin``) or the reconstruction's
sharpness limits it: ``python -m bundle zoom-floor DATALIST``.

Blurring the original keeps part of its speckle, which no reconstruction draws. With an
``ideal_reader`` (``--ideal K``: for synthetic data, the same scene averaged over K speckle draws,
:mod:`bundle.data.synthetic.ideal`) the same rows are measured on the **ideal** zoom view too: what a
perfect denoising reconstruction allows, and how much blur of it a model may add. A trained model's
figures read against these rows in the same units.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from bundle.data.roi_zoom import ROIZoomGeometry, unzoom_image, zoom_image
from bundle.evaluation.fidelity import fidelity_by_plane, measure_original, nt_fidelity_row, read_native
from bundle.model.metrics import gaussian_blur
from tqdm import tqdm

DEFAULT_SIGMAS = (0.5, 0.75, 1.0, 1.25)
FLOOR = 0.0
ORIGINAL, IDEAL = "original", "ideal"


def zoom_round_trips(
    original: np.ndarray, geometry: ROIZoomGeometry, sigmas: Sequence[float], source: np.ndarray | None = None
) -> dict[float, np.ndarray]:
    """The native image with its zoom region replaced by the zoom view, blurred by each ``sigma``.

    Args:
        original: (H, W) native image.
        geometry: the image's zoom geometry.
        sigmas: Gaussian blurs in zoom-view pixels; 0 leaves the view as it is. The blur is the one
            :func:`bundle.model.metrics.roi_blur_px` matches reconstructions against, so the two
            read in the same units.
        source: (H, W) image whose zoom view is pasted (e.g. the speckle-free ideal); ``original``
            when None.

    Returns:
        ``{sigma: (H, W) array}``.
    """
    native = torch.as_tensor(original, dtype=torch.float32)[None]
    pasted = native if source is None else torch.as_tensor(source, dtype=torch.float32)[None]
    view = zoom_image(pasted, geometry)[None]  # (1, 1, R, R)
    return {float(s): unzoom_image(gaussian_blur(view, s)[0], geometry, background=native)[0].numpy() for s in sigmas}


def zoom_floor(
    entries: Iterable[Mapping],
    roi_canvas_size: int = 64,
    roi_margin: float = 0.5,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    reader: Callable[[Mapping], np.ndarray] = read_native,
    ideal_reader: Callable[[Mapping], np.ndarray] | None = None,
    progress: bool = False,
) -> dict:
    """NT fidelity of the zoom view's round trip, plain and blurred.

    Args:
        entries: datalist entries (``image``, ``roi``, ``pixel_spacing_mm``; ``meta.nt_mm`` and
            ``meta.standard_plane`` when known); entries without a spacing are skipped.
        roi_canvas_size: side ``R`` of the zoom view.
        roi_margin: the zoom view's margin around the box.
        sigmas: blurs to test, in zoom-view pixels.
        reader: reads an entry's native (H, W) image in [0, 1].
        ideal_reader: reads an entry's speckle-free ideal, pixel for pixel on its image
            (:func:`bundle.data.synthetic.ideal.ideal_reader`); None measures the original only.
        progress: show a progress bar over the entries.

    Returns:
        ``{"roi_canvas_size", "roi_margin", "n_images", "mm_per_zoom_row" (median), "rows"}`` with
        ``rows`` a list of ``{"source", "sigma_px", **fidelity_by_plane(...)}``: ``source`` is
        ``original`` (its zoom view, the floor at sigma 0 first), then ``ideal`` when measured. The
        NT of every row is compared with the NT measured on the original.

    Raises:
        ValueError: when no entry has a pixel spacing.
    """
    levels = [FLOOR, *(float(s) for s in sigmas if s > 0)]
    sources = [ORIGINAL] if ideal_reader is None else [ORIGINAL, IDEAL]
    per_level: dict[tuple[str, float], list[dict]] = {(src, s): [] for src in sources for s in levels}
    row_mm = []
    for entry in tqdm(entries, desc="zoom-floor", unit="img", disable=not progress):
        if not entry.get("pixel_spacing_mm"):
            continue
        original = reader(entry)
        height, width = original.shape
        geometry = ROIZoomGeometry.compute(entry["roi"], width, height, roi_canvas_size, roi_margin)
        row_mm.append((geometry.crop_box[3] - geometry.crop_box[1]) / roi_canvas_size * entry["pixel_spacing_mm"][0])
        measured = measure_original(original, entry)
        for src in sources:
            pasted = None if src == ORIGINAL else _ideal_on(original, ideal_reader(entry), entry)
            for sigma, image in zoom_round_trips(original, geometry, levels, pasted).items():
                per_level[(src, sigma)].append(nt_fidelity_row(original, image, entry, measured))
    if not row_mm:
        raise ValueError("zoom-floor needs entries with pixel_spacing_mm (the NT is measured in mm)")
    return {
        "roi_canvas_size": int(roi_canvas_size),
        "roi_margin": float(roi_margin),
        "n_images": len(row_mm),
        "mm_per_zoom_row": float(np.median(row_mm)),
        "rows": [{"source": src, "sigma_px": s, **fidelity_by_plane(per_level[(src, s)])} for (src, s) in per_level],
    }


def _ideal_on(original: np.ndarray, ideal: np.ndarray, entry: Mapping) -> np.ndarray:
    """The ideal, checked to lie pixel for pixel on the original."""
    if ideal.shape != original.shape:
        raise ValueError(
            f"{entry.get('image')}: its speckle-free ideal is {ideal.shape[1]}x{ideal.shape[0]} but the image is "
            f"{original.shape[1]}x{original.shape[0]}; was the image resized after `synth` wrote it?"
        )
    return ideal


def zoom_floor_markdown(result: Mapping) -> str:
    """A Markdown table of :func:`zoom_floor` (standard planes), one row per source and blur."""
    lines = [
        f"ROI-zoom view {result['roi_canvas_size']} px, margin {result['roi_margin']}: {result['n_images']} images, "
        f"median {result['mm_per_zoom_row']:.3f} mm per zoom-view row. |NT(view) - NT(original)| on standard planes:",
        "",
        "| zoom view | measurable | median | p90 | within 0.2 mm | bias |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        s = row["standard_planes"]
        blurred = f"blurred, sigma {row['sigma_px']:g} px"
        if row.get("source") == IDEAL:
            label = "ideal (speckle-free)" if row["sigma_px"] == FLOOR else f"ideal, {blurred}"
        else:
            label = "as is (floor)" if row["sigma_px"] == FLOOR else blurred
        lines.append(
            f"| {label} | {s['measurable_pct']:.0f} % | {s['abs_diff_median_mm']:.3f} mm | "
            f"{s['abs_diff_p90_mm']:.3f} mm | {s['within_0.2mm_pct']:.0f} % | {s['bias_mm']:+.3f} mm |"
        )
    return "\n".join(lines) + "\n"
