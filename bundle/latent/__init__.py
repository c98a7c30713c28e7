"""The frozen latent space: latent extraction, OOD scores, the scorer, probes and their figures.

Public names load lazily from their modules (:func:`bundle.utils.lazy.lazy_exports`).
"""

from bundle.utils.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "EPS": "ood",
        "GaussianFit": "ood",
        "LATENT_FIELDS": "latents",
        "LatentScorer": "scoring",
        "PAPER": "probes",
        "ProbeSettings": "probes",
        "QualityProbe": "scoring",
        "RIDGE_ALPHAS": "scoring",
        "SCORE_COLUMNS": "scoring",
        "SPLIT_MARKERS": "figures",
        "auroc": "ood",
        "collect_latents": "latents",
        "concat_splits": "latents",
        "draw_probe_figures": "figures",
        "embedding_figure": "figures",
        "entropy": "probes",
        "fit_gaussian": "ood",
        "fit_quality_probe": "scoring",
        "fit_scorer": "scoring",
        "knn_distance": "ood",
        "l2_normalize": "ood",
        "load_latents": "latents",
        "load_scorer": "scoring",
        "mahalanobis": "ood",
        "ood_flag_rates": "scoring",
        "ood_histogram_figure": "figures",
        "ood_metrics": "probes",
        "ood_scores": "probes",
        "perturbation_figure": "figures",
        "probe_phase": "probes",
        "probes_markdown": "probes",
        "provenance_metrics": "probes",
        "provenance_probabilities": "probes",
        "quality_metrics": "probes",
        "save_latents": "latents",
        "save_scorer": "scoring",
        "select_split": "latents",
        "strip_figure": "figures",
        "train_provenance_probe": "probes",
        "write_probe_report": "probes",
        "write_training_latents": "scoring",
    },
)
