"""The leave-one-hospital-out protocol: variants, run orchestration, studies and their write-up.

Public names load lazily from their modules (:func:`bundle.utils.lazy.lazy_exports`).
"""

from bundle.utils.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "FIDELITY_FIGURES": "runner",
        "MAIN": "runner",
        "PAPER_FORM": "runner",
        "PAPER_MODEL": "runner",
        "ProtocolSettings": "runner",
        "REPORT_METRICS": "runner",
        "ROTATION_COLUMNS": "probes",
        "SPLIT_NAMES": "runner",
        "Variant": "runner",
        "fidelity_study": "runner",
        "jitter_study": "runner",
        "probe_study": "probes",
        "probe_table": "probes",
        "protocol_figures": "runner",
        "protocol_markdown": "runner",
        "read_rows": "runner",
        "run_protocol": "runner",
        "summarize_protocol": "runner",
        "train_run": "runner",
    },
)
