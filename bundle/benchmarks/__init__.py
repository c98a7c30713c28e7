"""Benchmarks (``python -m bundle benchmark``): suites compared against plain-PyTorch baselines.

Public names load lazily from their modules (:func:`bundle.utils.lazy.lazy_exports`).
"""

from bundle.utils.lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "PRESETS": "model",
        "SUITE_NAMES": "runner",
        "TRAINING_OPTIONS": "model",
        "benchmark_encoder": "model",
        "benchmark_flops": "model",
        "benchmark_options": "model",
        "benchmark_pipeline": "model",
        "benchmark_scaling": "model",
        "benchmark_streaming": "streaming",
        "benchmark_synth": "runner",
        "benchmark_training": "model",
        "derived_rows": "runner",
        "measured_peak_gflops": "model",
        "result_row": "common",
        "run_benchmarks": "runner",
        "run_isolated": "common",
        "run_suite_isolated": "runner",
        "training_flops_per_image": "model",
        "training_settings": "model",
    },
)
