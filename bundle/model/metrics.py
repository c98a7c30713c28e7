"""Reconstruction metrics (SPEC 4, 5): one implementation serves the losses, validation and reports.

All functions take batches (B, 1, H, W) with intensities in [0, 1] and return one value per image
(B,). ``target`` tensors of the engines carry the image and the ROI mask stacked on the channel
axis (see :func:`split_target`).

SSIM, MS-SSIM and PSNR are written here rather than taken from ``monai.metrics``: the same function
is the phase-1 loss (differentiable, per image, several views in one batched pass) and the metric;
they equal MONAI's ``SSIMMetric`` / ``MultiScaleSSIMMetric`` to 1e-5 (``tests/test_losses.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from bundle.model.views import GLOBAL, ROI, ViewLayout
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003
MAX_MS_SSIM_SCALES = len(MS_SSIM_WEIGHTS)
SSIM_KERNEL_SIZE, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def split_target(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split an engine target (B, 2, H, W) into the image (B, 1, H, W) and ROI mask (B, 1, H, W)."""
    return target[:, :1], target[:, 1:2]


def split_views(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The views of a model tensor by its shape: a square canvas, or a (S, S + R) view mosaic.

    Returns:
        ``{"global": (..., S, S)}`` plus ``"roi": (..., R, R)`` for a mosaic (:class:`~bundle.model.views.ViewLayout`).
    """
    height, width = x.shape[-2:]
    return ViewLayout(height, width - height if width > height else None).split(x)


def roi_terms_view(x: torch.Tensor) -> str:
    """The view the ROI terms act on: the zoom view of a mosaic, else the canvas."""
    return ROI if x.shape[-1] > x.shape[-2] else GLOBAL


def _gaussian_kernel_1d(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(SSIM_KERNEL_SIZE, device=device, dtype=dtype) - (SSIM_KERNEL_SIZE - 1) / 2
    g = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return g / g.sum()


def _gaussian_filter(x: torch.Tensor) -> torch.Tensor:
    """Valid (unpadded) 11x11 Gaussian filtering per channel, done as two 1-D passes (5x cheaper)."""
    g = _gaussian_kernel_1d(x.device, x.dtype)
    channels = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _ssim_and_cs(x: torch.Tensor, y: torch.Tensor, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean SSIM and contrast-structure term over the valid (unpadded) window positions."""
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    filtered = _gaussian_filter(torch.cat([x, y, x * x, y * y, x * y], dim=1))
    mu_x, mu_y, xx, yy, xy = filtered.chunk(5, dim=1)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs_map
    return ssim_map.flatten(1).mean(1), cs_map.flatten(1).mean(1)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """SSIM per image (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03), shape (B,)."""
    return _ssim_and_cs(x, y, data_range)[0]


def ms_ssim_scales(side: int, max_scales: int = MAX_MS_SSIM_SCALES) -> int:
    """Number of MS-SSIM scales a side allows: the coarsest scale must still hold an 11-pixel window.

    5 scales need a side > 160 (the ``paper`` preset's 256 canvas), 4 scales > 80 (the ``quick``
    preset's 128 canvas), 3 scales > 40.
    """
    scales = 1
    while scales < max_scales and side > (SSIM_KERNEL_SIZE - 1) * 2**scales:
        scales += 1
    return scales


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, scales: int | None = None) -> torch.Tensor:
    """Multi-scale SSIM per image, shape (B,).

    Args:
        x: prediction (B, C, H, W).
        y: reference (B, C, H, W).
        data_range: intensity range.
        scales: number of scales; by default as many as the side allows (:func:`ms_ssim_scales`),
            with the standard weights truncated and renormalised.

    Returns:
        MS-SSIM values; negative contrast-structure terms are clipped at 0 (as in common
        implementations) so fractional powers stay defined.
    """
    n = scales or ms_ssim_scales(min(x.shape[-2:]))
    weights = torch.tensor(MS_SSIM_WEIGHTS[:n], device=x.device, dtype=x.dtype)
    weights = weights / weights.sum()
    values = []
    for level in range(n):
        ssim_value, cs = _ssim_and_cs(x, y, data_range)
        values.append(F.relu(cs if level < n - 1 else ssim_value))
        if level < n - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stacked = torch.stack(values, dim=1)  # (B, n)
    return torch.prod(stacked ** weights[None, :], dim=1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR (dB) per image, over the whole image or over ``mask``; MSE floored at 1e-10."""
    squared = (x - y) ** 2
    if mask is None:
        mse = squared.flatten(1).mean(1)
    else:
        mse = (squared * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-10))


def roi_mae(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error inside the ROI mask, per image."""
    return ((x - y).abs() * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel_magnitude(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """3x3 Sobel gradient magnitude of (B, 1, H, W) images on the whole canvas (replicate padding)."""
    kernel = torch.stack([_SOBEL_X, _SOBEL_X.T])[:, None].to(device=x.device, dtype=x.dtype)
    gradients = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel)
    return torch.sqrt(gradients[:, :1] ** 2 + gradients[:, 1:] ** 2 + eps)


def roi_edge_error(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """ROI Edge-MAE per image: mean over the ROI of ``|G(x)/m - G(y)/m|``, ``m = max_ROI G(y) + eps``.

    ``G`` is the Sobel magnitude computed on the whole canvas and then masked; ``m`` normalises
    each image by the strongest reference edge in its ROI. The same function is the phase-2 edge
    loss and the ROI Edge-MAE metric.

    Args:
        x: prediction (B, 1, H, W).
        y: reference (B, 1, H, W).
        mask: ROI mask (B, 1, H, W) of 0/1.
        eps: keeps the normalisation finite for a flat ROI.

    Returns:
        values (B,).
    """
    gx, gy = sobel_magnitude(x), sobel_magnitude(y)
    m = (gy * mask).flatten(1).amax(1).view(-1, 1, 1, 1) + eps
    return ((gx - gy).abs() / m * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)


#: the blurs :func:`roi_blur_px` tries: 0 to 3 px in 1/8 px steps
BLUR_SIGMAS_PX = tuple(0.125 * k for k in range(25))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, H, W) images, ``sigma`` in pixels (replicate padding; 0: a copy)."""
    if sigma <= 0:
        return x.clone()
    radius = max(1, int(3 * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))


def roi_blur_px(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Effective blur of a reconstruction inside the ROI, per image (pixels).

    The sigma of :data:`BLUR_SIGMAS_PX` whose Gaussian blur of the original is closest (MSE over
    the ROI) to the reconstruction: 0 for one as sharp as the original, 3 for 3 px or blurrier.
    ``python -m bundle zoom-floor`` shows what a given blur of the zoom view costs the NT measurement.

    Args:
        x: prediction (B, 1, H, W).
        y: original (B, 1, H, W).
        mask: ROI mask (B, 1, H, W) of 0/1.

    Returns:
        sigmas (B,).
    """
    area = mask.flatten(1).sum(1).clamp_min(1)
    errors = torch.stack(
        [(((gaussian_blur(y, s) - x) ** 2) * mask).flatten(1).sum(1) / area for s in BLUR_SIGMAS_PX], dim=1
    )
    return torch.as_tensor(BLUR_SIGMAS_PX, device=x.device, dtype=x.dtype)[errors.argmin(1)]


#: the per-image metrics of one view, ``(pred, image, roi_mask) -> (B,)``: the one table that validation
#: (:class:`ReconstructionMetric`), the report and inference score with (:func:`view_metrics`)
PER_IMAGE_METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    "psnr": lambda p, y, m: psnr(p, y),
    "ssim": lambda p, y, m: ssim(p, y),
    "ms_ssim": lambda p, y, m: ms_ssim(p, y),
    "roi_mae": roi_mae,
    "roi_psnr": lambda p, y, m: psnr(p, y, mask=m),
    "roi_edge_mae": roi_edge_error,
    "roi_blur_px": roi_blur_px,
}
WHOLE_VIEW_METRICS = ("psnr", "ssim", "ms_ssim")
ROI_METRICS = ("roi_mae", "roi_psnr", "roi_edge_mae", "roi_blur_px")


def view_metrics(
    pred: torch.Tensor,
    image: torch.Tensor,
    mask: torch.Tensor | None = None,
    names: Sequence[str] | None = None,
    prefix: str = "",
) -> dict[str, torch.Tensor]:
    """Per-image metrics of one view from :data:`PER_IMAGE_METRICS`.

    Args:
        pred: reconstructions (B, 1, H, W) in [0, 1].
        image: the originals (B, 1, H, W).
        mask: ROI masks (B, 1, H, W); None scores only the whole-view metrics.
        names: metrics to score (default: all, or :data:`WHOLE_VIEW_METRICS` without a mask).
        prefix: prepended to each name in the result (``zoom_`` for the zoom view).

    Returns:
        ``{prefix + name: values (B,)}`` in the order of ``names``.
    """
    if names is None:
        names = tuple(PER_IMAGE_METRICS) if mask is not None else WHOLE_VIEW_METRICS
    missing = [n for n in names if n in ROI_METRICS] if mask is None else []
    if missing:
        raise ValueError(f"metrics {missing} need an ROI mask")
    return {f"{prefix}{name}": PER_IMAGE_METRICS[name](pred, image, mask) for name in names}


def _named(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-image metric by name: plain names score the canvas, ``zoom_`` names the zoom view."""
    view, base = (ROI, name[len("zoom_") :]) if name.startswith("zoom_") else (GLOBAL, name)
    if base not in PER_IMAGE_METRICS:
        raise ValueError(f"unknown metric {name!r}; choose from {sorted(METRIC_NAMES + ZOOM_METRIC_NAMES)}")
    fn = PER_IMAGE_METRICS[base]

    def per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        preds, targets = split_views(pred), split_views(target)
        if view not in preds:
            raise ValueError(f"metric {name!r} needs the dual-view model's zoom view")
        image, mask = split_target(targets[view])
        return fn(preds[view], image, mask)

    return per_image


METRIC_NAMES = ("psnr", "ssim", "ms_ssim", "roi_mae", "roi_psnr", "roi_edge_mae", "roi_blur_px")
ZOOM_METRIC_NAMES = tuple(f"zoom_{name}" for name in METRIC_NAMES)


def _engine_output(output: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return output["pred"], output["label"]


class ReconstructionMetric(Metric):
    """Ignite metric: the mean over images of a per-image reconstruction metric.

    Args:
        name: one of :data:`METRIC_NAMES`, used when ``fn`` is None.
        fn: callable ``(pred, target) -> (B,)`` (e.g. a loss module's ``per_image``), instead of ``name``.
        output_transform: maps the engine output to ``(pred, target)``; by default the batch
            tensors under ``pred`` and ``label`` (engines run with ``decollate=False``).
        device: where the running sums live.

    Example::

        evaluator = SupervisedEvaluator(..., key_val_metric={"val_ms_ssim": ReconstructionMetric("ms_ssim")})
    """

    def __init__(
        self,
        name: str | None = None,
        fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        output_transform: Callable = _engine_output,
        device: str | torch.device = "cpu",
    ) -> None:
        if (name is None) == (fn is None):
            raise ValueError("give exactly one of name or fn")
        self.fn = fn if fn is not None else _named(name)
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        """Clear the running sums."""
        self._sum = torch.tensor(0.0, dtype=torch.float64, device=self._device)
        self._count = torch.tensor(0, dtype=torch.long, device=self._device)

    @reinit__is_reduced
    def update(self, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Add one batch."""
        pred, target = output
        with torch.no_grad():
            values = self.fn(pred.float(), target.float())
        self._sum += values.double().sum().to(self._device)
        self._count += values.numel()

    @sync_all_reduce("_sum", "_count")
    def compute(self) -> float:
        """Mean over all images seen (all processes under DDP)."""
        if self._count.item() == 0:
            raise RuntimeError("ReconstructionMetric needs at least one image before compute()")
        return (self._sum / self._count).item()


def reconstruction_metrics(*names: str, prefix: str = "", **functions: Callable) -> dict[str, ReconstructionMetric]:
    """An evaluator's metrics by name: ``{prefix + name: ReconstructionMetric(name)}``, then ``functions``.

    Args:
        names: metric names (:data:`METRIC_NAMES`, or ``zoom_`` ones).
        prefix: put before each name (``val_`` in the training validators).
        functions: metric name -> per-image callable (e.g. ``val_objective=loss.per_image``).

    Returns:
        the metrics, in the order given, for ``key_val_metric`` / ``additional_metrics``.

    Example::

        "additional_metrics": "$metrics.reconstruction_metrics('psnr', 'roi_mae', prefix='val_')"
    """
    metrics = {f"{prefix}{name}": ReconstructionMetric(name) for name in names}
    return {**metrics, **{name: ReconstructionMetric(fn=fn) for name, fn in functions.items()}}
