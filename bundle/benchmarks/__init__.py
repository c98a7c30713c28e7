"""Benchmarks (``python -m bundle benchmark``): suites compared against plain-PyTorch baselines.

Modules (import names from them; the package itself exports nothing):

- ``common``: What every benchmark suite shares: one result-row format and isolated runs with their peak memory.
- ``gpu_check``: Summary of the prepared GPU check (``.ci/gpu_check.sh``): one results file with the card's figures.
- ``localizer``: Benchmark suite ``localizer``: why the NT localiser is a centre heatmap and not MONAI's RetinaNet.
- ``model``: Model benchmarks: training, data pipeline, encoder inference, FLOPs and the machine's peak.
- ``runner``: Benchmarks, written as JSON and a Markdown table (``python -m bundle benchmark``).
- ``streaming``: Streaming inference at two dataset sizes: peak memory must not grow with the number of images.
"""
