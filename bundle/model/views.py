"""How the global letterbox view and the ROI-zoom view travel as one tensor.

MONAI's engines, ``verify_net_in_out``, ``ckpt_export`` and MONAI Label hand a network one tensor
and expect one back. The dual-view model therefore reads and writes a *view mosaic*: the
``S x S`` letterbox canvas in columns ``0 .. S-1`` and the ``R x R`` zoom view in rows ``0 .. R-1``
of columns ``S .. S+R-1`` (zeros below it), shape (B, C, S, S + R). The single-view (``paper``)
model's layout is the canvas alone. :class:`ViewLayout` is the one place that knows this.
"""

from __future__ import annotations

import torch

GLOBAL, ROI = "global", "roi"


class ViewLayout:
    """Pack and split the views of a model's input and output tensors.

    Args:
        canvas_size: side ``S`` of the letterbox canvas.
        roi_canvas_size: side ``R`` of the zoom view (``R <= S``), or None for the single-view layout.

    Example::

        layout = ViewLayout(128, 64)
        x = layout.pack(canvas, roi_view)  # (B, 1, 128, 192)
        layout.split(x)["roi"].shape  # (B, 1, 64, 64)
    """

    def __init__(self, canvas_size: int, roi_canvas_size: int | None = None) -> None:
        self.canvas_size = int(canvas_size)
        self.roi_canvas_size = None if roi_canvas_size in (None, 0) else int(roi_canvas_size)
        if self.roi_canvas_size is not None and not 0 < self.roi_canvas_size <= self.canvas_size:
            raise ValueError(f"roi_canvas_size {roi_canvas_size} must lie in 1..canvas_size ({canvas_size})")

    @property
    def dual_view(self) -> bool:
        """Whether the layout carries the ROI-zoom view beside the canvas."""
        return self.roi_canvas_size is not None

    @property
    def views(self) -> tuple[str, ...]:
        """Names of the views: ``("global",)`` or ``("global", "roi")``."""
        return (GLOBAL,) if self.roi_canvas_size is None else (GLOBAL, ROI)

    @property
    def spatial_shape(self) -> tuple[int, int]:
        """(H, W) of the packed tensor."""
        s, r = self.canvas_size, self.roi_canvas_size or 0
        return s, s + r

    def pack(self, canvas: torch.Tensor, roi_view: torch.Tensor | None = None) -> torch.Tensor:
        """Pack (B, C, S, S) and (B, C, R, R) into the layout (the canvas alone for single view)."""
        if self.roi_canvas_size is None:
            return canvas
        if roi_view is None:
            raise ValueError("the dual-view layout needs the ROI-zoom view (roi_view)")
        s, r = self.canvas_size, self.roi_canvas_size
        right = canvas.new_zeros((*canvas.shape[:-2], s, r))
        right[..., :r, :] = roi_view.to(canvas.dtype)
        return torch.cat([canvas, right], dim=-1)

    def split(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"global": (..., S, S)}`` plus ``"roi": (..., R, R)`` for the dual-view layout."""
        s = self.canvas_size
        out = {GLOBAL: x[..., :s, :s]}
        if self.roi_canvas_size is not None:
            r = self.roi_canvas_size
            out[ROI] = x[..., :r, s : s + r]
        return out

    @classmethod
    def of(cls, network: torch.nn.Module) -> ViewLayout:
        """The layout a network reads: its ``layout`` attribute, else single view at its canvas size."""
        layout = getattr(network, "layout", None)
        if isinstance(layout, ViewLayout):
            return layout
        return cls(int(getattr(network, "canvas_size", 0) or 0) or 1)
