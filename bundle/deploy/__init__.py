"""Deployment: inference, encoder export and embedding, the zoo package.

Public names load lazily from their modules (:func:`bundle.utils.lazy.lazy_exports`).
"""

from bundle.utils.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "COLUMNS": "embed",
        "DEFAULT_CONFIG": "export",
        "DEFAULT_META": "export",
        "ExportedEncoder": "embed",
        "FIXED_TIME": "package",
        "FOLDERS": "package",
        "InferenceBatch": "inference",
        "InferenceWriter": "inference",
        "LatentInferer": "inference",
        "MAX_FILE_BYTES": "package",
        "META_ROI_SHAPE": "export",
        "META_SHAPE": "export",
        "MODEL_SUFFIXES": "package",
        "NAME": "package",
        "ROW_COLUMNS": "inference",
        "Reconstructor": "inference",
        "SKIP_PARTS": "package",
        "SafeLoadUltrasoundImaged": "inference",
        "SafeROIZoomd": "inference",
        "TOLERANCE": "export",
        "TOP_FILES": "package",
        "batch_metrics": "inference",
        "collate_items": "inference",
        "encoder_inputs": "export",
        "export_encoder": "export",
        "export_onnx": "export",
        "export_torchscript": "export",
        "inference_items": "inference",
        "max_latent_difference": "export",
        "onnx_latents": "export",
        "package_bundle": "package",
        "prepare_image": "inference",
        "score_images": "embed",
        "to_uint8": "inference",
        "write_rows_csv": "embed",
    },
)
