"""Training: the two-phase workflow steps, the Ignite handlers the configs attach, and stop signals.

Public names load lazily from their modules (:func:`bundle.utils.lazy.lazy_exports`).
"""

from bundle.utils.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "BestModelSaver": "handlers",
        "EarlyStopOnValidation": "handlers",
        "GradientCalibrationHandler": "handlers",
        "ModelSaver": "handlers",
        "PerImageMetricsSaver": "handlers",
        "PhaseCompleteHandler": "handlers",
        "ProgressBarHandler": "handlers",
        "ReconstructionGridHandler": "handlers",
        "ResumeCheckpointHandler": "handlers",
        "RunStopped": "signals",
        "check_run_settings": "workflow",
        "check_writable": "workflow",
        "datalist_path": "workflow",
        "freeze": "workflow",
        "is_rank0": "handlers",
        "log_phase_skip": "workflow",
        "phase_is_complete": "workflow",
        "prepare_datalist": "workflow",
        "reconstruction_grid": "handlers",
        "require_file": "workflow",
        "restore_signals": "signals",
        "run_phase": "workflow",
        "save_models": "handlers",
        "setup_logging": "workflow",
        "stop_on_signals": "signals",
        "trainable_parameters": "workflow",
    },
)
