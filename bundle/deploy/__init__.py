"""Deployment: inference (engine glue, writer, one-image API), encoder export and embedding, the zoo package.

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
        "InferenceBatch": "engine",
        "InferenceWriter": "writer",
        "LatentInferer": "engine",
        "MAX_FILE_BYTES": "package",
        "META_ROI_SHAPE": "export",
        "META_SHAPE": "export",
        "MODEL_SUFFIXES": "package",
        "NAME": "package",
        "ROW_COLUMNS": "writer",
        "Reconstructor": "inference",
        "SKIP_PARTS": "package",
        "TOLERANCE": "export",
        "TOP_FILES": "package",
        "batch_metrics": "engine",
        "collate_items": "engine",
        "encoder_inputs": "export",
        "export_encoder": "export",
        "export_onnx": "export",
        "export_torchscript": "export",
        "max_latent_difference": "export",
        "onnx_latents": "export",
        "package_bundle": "package",
        "prepare_image": "engine",
        "score_images": "embed",
        "to_uint8": "writer",
        "write_rows_csv": "embed",
        "zoom_geometry": "writer",
    },
)
