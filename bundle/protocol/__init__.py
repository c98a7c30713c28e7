"""The leave-one-hospital-out protocol, one module per job.

- ``variants``: the methods compared and the settings of every run (:class:`ProtocolSettings`).
- ``runs``: training one run in a subprocess, and reading back what finished runs wrote.
- ``studies``: pooled statistics, ablations, ROI jitter and NT measurement fidelity.
- ``probes``: frozen-latent probes per rotation.
- ``writeup``: ``protocol.md`` and the figures.
- ``runner``: :func:`run_protocol`, which runs the jobs above in order.

Public names load lazily from their modules (:func:`bundle.utils.lazy.lazy_exports`).
"""

from bundle.utils.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "FIDELITY_FIGURES": "studies",
        "MAIN": "variants",
        "PAPER_FORM": "writeup",
        "PAPER_MODEL": "variants",
        "PER_IMAGE_COLUMNS": "runner",
        "ProtocolSettings": "variants",
        "REPORT_METRICS": "variants",
        "ROTATION_COLUMNS": "probes",
        "RunPaths": "variants",
        "SPLIT_NAMES": "writeup",
        "VARIANTS": "variants",
        "Variant": "variants",
        "fidelity_study": "studies",
        "finished_main_runs": "runs",
        "jitter_study": "studies",
        "probe_study": "probes",
        "probe_table": "probes",
        "protocol_figures": "writeup",
        "protocol_markdown": "writeup",
        "read_rows": "runs",
        "run_protocol": "runner",
        "summarize_protocol": "studies",
        "train_run": "runs",
    },
)
