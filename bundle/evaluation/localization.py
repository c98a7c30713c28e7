"""How well the NT localiser finds the box: IoU, centre error in mm, and "NT visible" on NT and NT-free views.

For every entry with a box: the localiser's box on the native image (given box hidden), its IoU with
the given box (:func:`monai.data.box_utils.box_iou`), the distance between the two centres in
pixels and, where the spacing is known, in mm; and the confidence on an NT-free view of the same
image (the largest strip beside the box, :func:`nt_free_strip`, the rule the localiser's training
uses for its NT-free views), so the visibility figure has negatives to be judged on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from bundle.data.readers import read_image
from bundle.model.localizer import NTLocalizer
from monai.data.box_utils import box_centers, box_iou

IOU_TARGET = 0.5


def nt_free_strip(box: Sequence[float], width: int, height: int, min_fraction: float = 0.3) -> list[int] | None:
    """The largest full-height or full-width strip of an image that does not touch the NT box (None if all are thin).

    Args:
        box: the NT box ``[x0, y0, x1, y1]``.
        width: image width.
        height: image height.
        min_fraction: the strip must span this share of the image along its short side.
    """
    x0, y0, x1, y1 = box
    strips = [
        ([0, 0, math.floor(x0), height], math.floor(x0) / width),
        ([math.ceil(x1), 0, width, height], (width - math.ceil(x1)) / width),
        ([0, 0, width, math.floor(y0)], math.floor(y0) / height),
        ([0, math.ceil(y1), width, height], (height - math.ceil(y1)) / height),
    ]
    window, share = max(strips, key=lambda s: s[1])
    return window if share >= min_fraction else None


def box_agreement(predicted: Sequence[float], given: Sequence[float], pixel_spacing_mm: Sequence[float] | None) -> dict:
    """IoU and centre distance (px, and mm when the (row, column) spacing is known) of two native boxes."""
    a = torch.as_tensor([list(predicted)], dtype=torch.float64)
    b = torch.as_tensor([list(given)], dtype=torch.float64)
    dx, dy = (box_centers(a) - box_centers(b))[0].tolist()
    mm = None
    if pixel_spacing_mm is not None:
        mm = float(math.hypot(dx * float(pixel_spacing_mm[1]), dy * float(pixel_spacing_mm[0])))
    return {"iou": float(box_iou(a, b)[0, 0]), "centre_error_px": float(math.hypot(dx, dy)), "centre_error_mm": mm}


def locate_entries(network: NTLocalizer, entries: Sequence[Mapping]) -> list[dict]:
    """The localiser on every entry with a box (the box hidden from it), and on an NT-free strip of each image.

    Args:
        network: the trained localiser.
        entries: datalist entries (``image``, ``roi``, ``pixel_spacing_mm``, ``meta``).

    Returns:
        per entry: ``case_id``, ``site``, ``standard_plane``, ``nonstandard_reason``, ``given_roi``,
        ``predicted_roi``, ``confidence``, ``visible`` (confidence at or above the threshold), the
        :func:`box_agreement` figures and ``nt_free_confidence`` (None where no strip is wide enough).
    """
    threshold = network.settings["threshold"]
    rows = []
    for entry in entries:
        if entry.get("roi") is None:
            continue
        image = torch.from_numpy(np.ascontiguousarray(read_image(entry["image"]).array, dtype=np.float32))[None]
        box, confidence = network.locate(image)
        height, width = image.shape[-2:]
        strip = nt_free_strip(entry["roi"], int(width), int(height))
        free = None
        if strip is not None:
            free = network.locate(image[:, strip[1] : strip[3], strip[0] : strip[2]])[1]
        meta = entry.get("meta") or {}
        rows.append(
            {
                "case_id": entry["case_id"],
                "site": int(entry["site"]),
                "standard_plane": meta.get("standard_plane"),
                "nonstandard_reason": meta.get("nonstandard_reason"),
                "given_roi": [float(v) for v in entry["roi"]],
                "predicted_roi": [round(v, 2) for v in box],
                "confidence": confidence,
                "visible": confidence >= threshold,
                **box_agreement(box, entry["roi"], entry.get("pixel_spacing_mm")),
                "nt_free_confidence": free,
                "nt_free_visible": None if free is None else free >= threshold,
            }
        )
    return rows


def localization_summary(rows: Sequence[Mapping]) -> dict:
    """Figures over :func:`locate_entries` rows: IoU, centre error, and visibility by plane and on NT-free views.

    Returns:
        ``n``, ``iou_median``, ``iou_ge_0.5_pct``, ``centre_error_median_mm`` / ``_p90_mm`` (NaN without
        spacing), ``centre_error_median_px``, ``visible_standard_pct`` / ``visible_nonstandard_pct``
        (share called visible), ``nt_free_called_absent_pct`` and ``visibility_balanced_accuracy``
        (mean of the share of NT views called visible and NT-free views called absent).
    """
    nan = float("nan")

    def pct(values) -> float:
        values = [bool(v) for v in values]
        return 100.0 * float(np.mean(values)) if values else nan

    def stat(values, fn) -> float:
        values = [v for v in values if v is not None]
        return float(fn(values)) if values else nan

    iou = [r["iou"] for r in rows]
    mm = [r["centre_error_mm"] for r in rows]
    free = [not r["nt_free_visible"] for r in rows if r["nt_free_visible"] is not None]
    visible = [r["visible"] for r in rows]
    balanced = 0.5 * (float(np.mean(visible)) + float(np.mean(free))) if visible and free else nan
    return {
        "n": len(rows),
        "iou_median": stat(iou, np.median),
        "iou_ge_0.5_pct": pct([v >= IOU_TARGET for v in iou]),
        "centre_error_median_mm": stat(mm, np.median),
        "centre_error_p90_mm": stat(mm, lambda v: np.percentile(v, 90)),
        "centre_error_median_px": stat([r["centre_error_px"] for r in rows], np.median),
        "visible_standard_pct": pct([r["visible"] for r in rows if r["standard_plane"] is not False]),
        "visible_nonstandard_pct": pct([r["visible"] for r in rows if r["standard_plane"] is False]),
        "nt_free_called_absent_pct": pct(free),
        "visibility_balanced_accuracy": balanced,
    }


def localization_by_plane(rows: Sequence[Mapping]) -> dict[str, dict]:
    """:func:`localization_summary` of all rows and of the standard planes (unknown counts as standard)."""
    standard = [r for r in rows if r["standard_plane"] is not False]
    return {"all_planes": localization_summary(rows), "standard_planes": localization_summary(standard)}


def predicted_entries(rows: Sequence[Mapping], entries: Sequence[Mapping]) -> list[dict]:
    """Copies of ``entries`` whose ``roi`` is the localiser's box (entries where it found no NT are left out)."""
    found = {r["case_id"]: r["predicted_roi"] for r in rows if r["visible"]}
    return [{**e, "roi": found[e["case_id"]]} for e in entries if e["case_id"] in found]


def localization_table(groups: Mapping[object, Mapping[str, Mapping]], first_column: str, label=str) -> list[str]:
    """Markdown rows of :func:`localization_by_plane` figures: one row per group (a split, a rotation) and planes.

    Args:
        groups: group -> ``{planes: figures}``.
        first_column: the heading of the group column.
        label: how a group is written.

    Returns:
        the header and one row per (group, planes).
    """
    lines = [
        f"| {first_column} | planes | n | IoU median | IoU >= 0.5 | centre error median | centre error p90 | "
        "called visible (standard / non-standard) | NT-free views called absent | visible / absent balanced accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group, by_planes in groups.items():
        for planes, f in by_planes.items():
            visible = f"{f['visible_standard_pct']:.1f} %"
            if planes == "all_planes":
                visible += f" / {f['visible_nonstandard_pct']:.1f} %"
            lines.append(
                f"| {label(group)} | {planes.replace('_', ' ')} | {f['n']:.0f} | {f['iou_median']:.3f} | "
                f"{f['iou_ge_0.5_pct']:.1f} % | {f['centre_error_median_mm']:.3f} mm | "
                f"{f['centre_error_p90_mm']:.3f} mm | {visible} | {f['nt_free_called_absent_pct']:.1f} % | "
                f"{f['visibility_balanced_accuracy']:.3f} |"
            )
    return lines
