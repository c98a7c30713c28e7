"""Transforms for batch runs that must go on past a bad image: the error is recorded, not raised.

Inference, embedding and scoring read images a user brought; one unreadable file or missing NT box
must become an error row naming the file and the fix, not stop the run.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from bundle.data.datalist import _check_roi
from bundle.data.readers import ImageReadError
from bundle.data.roi_zoom import ROIZoomd
from bundle.data.transforms import LoadUltrasoundImage
from monai.config import KeysCollection
from monai.transforms import MapTransform


class SafeLoadUltrasoundImaged(MapTransform):
    """Load images like :class:`~bundle.data.transforms.LoadUltrasoundImaged`, recording unreadable files.

    An unreadable file (or one with NaN/Inf pixels) gets ``error`` set to the reader's message
    (file, reason, fix) and a blank 8x8 placeholder image, so a batch run reports it and goes on.
    An NT box outside the loaded image is an error too (the training validator's rule), and an
    item that already carries an error (a malformed box) is not read at all.

    Args:
        keys: keys holding file paths.
        error_key: item key for the error message (None when the image loaded).
        roi_key: item key of the NT box ``[x0, y0, x1, y1]`` (or None).
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(
        self, keys: KeysCollection, error_key: str = "error", roi_key: str = "roi", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadUltrasoundImage()
        self.error_key = error_key
        self.roi_key = roi_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        """Load every key; see the class docstring."""
        d = dict(data)
        d.setdefault(self.error_key, None)
        for key in self.key_iterator(d):
            if d[self.error_key]:
                d[key] = torch.zeros(1, 8, 8)
                continue
            path = d[key]
            try:
                d[key] = self.loader(path)
            except (ImageReadError, OSError, ValueError) as error:
                d[self.error_key] = str(error)
                d[key] = torch.zeros(1, 8, 8)
                continue
            roi = d.get(self.roi_key)
            height, width = d[key].shape[-2:]
            problems = _check_roi({"roi": roi}, (int(width), int(height))) if roi is not None else []
            if problems:
                message, fix = problems[0]
                d[self.error_key] = f"{path}: field '{self.roi_key}': {message}; fix: {fix}"
                d[self.roi_key] = None
        return d


class SafeROIZoomd(ROIZoomd):
    """:class:`~bundle.data.roi_zoom.ROIZoomd` for inference: a missing or broken box becomes the item's error.

    The dual-view model needs the NT box of every image; an image without one (a plain folder, or a
    datalist entry without ``roi``, and no localiser) gets an error row naming the file and the fix
    instead of stopping the run, and a blank view so the batch still stacks. An image where the NT
    localiser found no NT (``no_nt`` set by :class:`~bundle.model.localizer.LocalizeNTd`) gets the
    blank view without an error: the writer reports it as "no NT found".

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
        if not d.get(self.error_key) and not d.get("no_nt"):
            try:
                return super().__call__(d)
            except ValueError as error:
                d[self.error_key] = str(error)
        size = self.zoom.canvas_size
        d[self.view_key] = torch.zeros(1, size, size)
        d[self.mask_key] = torch.zeros(1, size, size)
        d[self.geometry_key] = None
        return d
