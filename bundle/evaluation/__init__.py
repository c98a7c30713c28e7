"""Evaluation: the main job's report, NT measurement and fidelity, robustness metrics, statistics.

Public names load lazily from their modules (:func:`bundle.utils.lazy.lazy_exports`).
"""

from bundle.utils.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "ALL_METRICS": "report",
        "CONTENT_METRICS": "report",
        "FIDELITY_ROWS": "report",
        "JITTER_SCALES": "robustness",
        "JITTER_SHIFTS_PX": "robustness",
        "LOWER_IS_BETTER": "report",
        "PAPER_DELTAS": "report",
        "SHIFT_DIRECTIONS": "robustness",
        "WITHIN_MM": "fidelity",
        "batch_geometries": "report",
        "bootstrap_ci": "statistics",
        "canvas_to_zoom": "fidelity",
        "evaluate_network": "report",
        "fidelity_by_plane": "fidelity",
        "fidelity_summary": "fidelity",
        "item_geometry": "fidelity",
        "jitter_perturbations": "robustness",
        "measure_nt_in_roi": "nt_measure",
        "measure_nt_profile": "nt_measure",
        "native_reconstruction": "fidelity",
        "nt_crops_figure": "report",
        "nt_fidelity_row": "fidelity",
        "paired_comparison": "statistics",
        "per_image_rows": "report",
        "perturb_box": "robustness",
        "phase_deltas": "report",
        "read_native": "fidelity",
        "roi_jitter_metrics": "robustness",
        "seed_spread": "statistics",
        "summarize": "report",
        "write_report": "report",
        "zoom_predictions": "report",
    },
)
