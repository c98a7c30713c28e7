"""Each item's letterbox and zoom geometry, decoded from a batch once, however the batch was collated.

Training and evaluation loaders collate with PyTorch's default (a geometry becomes a dict of
batched tensors); inference collates per item (:func:`bundle.deploy.engine.collate_items`: a
list of dicts, ``None`` where an image has no zoom view). :func:`batch_geometries` reads both, so
every consumer (metrics, NT fidelity, figures, inference outputs) maps reconstructions back with
the same :class:`~bundle.data.transforms.LetterboxGeometry` and
:class:`~bundle.data.roi_zoom.ROIZoomGeometry` objects.
"""

from __future__ import annotations

from collections.abc import Mapping

from bundle.data.roi_zoom import ROIZoomGeometry
from bundle.data.transforms import LetterboxGeometry


def item_geometry(collated: Mapping, index: int) -> dict:
    """Geometry dict of item ``index`` from a default-collated batch (lists of tensors become numbers)."""

    def pick(value):
        if isinstance(value, (list, tuple)):
            return [pick(v) for v in value]
        return value[index].item() if hasattr(value, "shape") and value.ndim else value

    return {key: pick(value) for key, value in collated.items()}


def _item(field: object, index: int) -> dict | None:
    """Item ``index`` of a geometry field: per-item (a list of dicts) or default-collated (a dict)."""
    if field is None:
        return None
    if isinstance(field, Mapping):
        return item_geometry(field, index)
    return field[index]


def geometries_of(batch: Mapping, index: int) -> tuple[LetterboxGeometry, ROIZoomGeometry | None]:
    """Letterbox and (when present) zoom geometry of item ``index`` of a batch.

    Args:
        batch: a collated batch with ``letterbox`` (and ``roi_zoom`` for the dual-view model),
            collated by PyTorch's default or per item.
        index: the item.

    Returns:
        ``(letterbox, zoom)``; ``zoom`` is None without a zoom view.
    """
    zoom = _item(batch.get("roi_zoom"), index)
    letterbox = LetterboxGeometry.from_dict(_item(batch["letterbox"], index))
    return letterbox, ROIZoomGeometry.from_dict(zoom) if zoom is not None else None


def batch_geometries(batch: Mapping) -> list[tuple[LetterboxGeometry, ROIZoomGeometry | None]]:
    """:func:`geometries_of` every item of a batch (one per ``case_id``)."""
    return [geometries_of(batch, i) for i in range(len(batch["case_id"]))]
