"""The model: networks, view mosaics, batch packing for the engines, losses, metrics and gradient calibration.

Public names load lazily from their modules (:func:`bundle.utils.lazy.lazy_exports`).
"""

from bundle.utils.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "CAEDecoder": "network",
        "CAEEncoder": "network",
        "DualViewCAE": "network",
        "DualViewEncoder": "network",
        "METRIC_NAMES": "metrics",
        "MODELS": "network",
        "MSSSIMLoss": "losses",
        "MS_SSIM_WEIGHTS": "metrics",
        "ROIAwareCAE": "network",
        "ROIBatch": "batches",
        "ROICompositeLoss": "losses",
        "ROIEdgeLoss": "losses",
        "ROIL1Loss": "losses",
        "ReconstructionMetric": "metrics",
        "TERMS": "losses",
        "ViewLayout": "views",
        "WEIGHTINGS": "losses",
        "ZOOM_METRIC_NAMES": "metrics",
        "build_autoencoder": "network",
        "build_encoder": "network",
        "calibrate_loss_weights": "calibration",
        "conv_stages": "network",
        "full_precision": "losses",
        "gradient_norm": "calibration",
        "ms_ssim": "metrics",
        "ms_ssim_scales": "metrics",
        "network_input": "batches",
        "network_target": "batches",
        "plain_tensor": "batches",
        "psnr": "metrics",
        "roi_edge_error": "metrics",
        "roi_mae": "metrics",
        "roi_terms_view": "metrics",
        "roi_view_pair": "losses",
        "sobel_magnitude": "metrics",
        "split_target": "metrics",
        "split_views": "metrics",
        "ssim": "metrics",
        "weights_from_gradient_norms": "calibration",
    },
)
