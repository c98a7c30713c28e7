"""Utilities without domain knowledge: atomic writes, run locks, checkpoints, seeded randomness, paths and configs.

Public names load lazily from their modules (:func:`bundle.utils.lazy.lazy_exports`).
"""

from bundle.utils.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "AtomicTextFile": "atomic",
        "CONFIGS_DIR": "paths",
        "CheckpointError": "checkpoints",
        "INFERENCE_CONFIG": "paths",
        "METADATA_FILE": "paths",
        "REPO_ROOT": "paths",
        "RunLockError": "locks",
        "TRAIN_CONFIG": "paths",
        "UnsafeCheckpointError": "checkpoints",
        "acquire_run_locks": "locks",
        "atomic_path": "atomic",
        "atomic_write_bytes": "atomic",
        "atomic_write_csv": "atomic",
        "atomic_write_json": "atomic",
        "atomic_write_text": "atomic",
        "capture_random_state": "rng",
        "checked_checkpoint": "checkpoints",
        "config_file": "paths",
        "csv_lines": "atomic",
        "load_config": "paths",
        "load_model_weights": "checkpoints",
        "read_checkpoint": "checkpoints",
        "release_run_locks": "locks",
        "reseed": "rng",
        "restore_random_state": "rng",
        "transform_generators": "rng",
    },
)
