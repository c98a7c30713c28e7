"""Streaming inference at two dataset sizes: peak memory must not grow with the number of images.

``python -m bundle benchmark --suites streaming`` writes 10,000 synthetic 128x128 images, then runs
``configs/inference.json`` (the documented inference command, with its scorer) on the first 1,000
and on all 10,000, each in a fresh process, three times in turn, and compares the median peak
resident memory of the two sizes.
The network is a seeded, untrained CAE and the scorer is fitted on random latents: memory and
speed do not depend on the weights, and a clean checkout has no trained model.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch
from bundle.benchmarks.common import result_row, run_isolated
from bundle.utils.atomic import atomic_write_json
from bundle.utils.paths import INFERENCE_CONFIG, load_config


def _write_model(models_dir: Path, seed: int = 0) -> None:
    """A seeded checkpoint of the config's CAE and a scorer fitted on random latents, as training leaves them."""
    from bundle.latent.scoring import fit_scorer, save_scorer

    parser = load_config(INFERENCE_CONFIG)
    torch.manual_seed(seed)
    models_dir.mkdir(parents=True, exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), models_dir / "model.pt")
    rng, dim = np.random.default_rng(seed), int(parser.get_parsed_content("latent_dim"))
    train = {"z": rng.standard_normal((300, dim)).astype(np.float32), "roi_edge_mae": rng.random(300)}
    val = {"z": rng.standard_normal((60, dim)).astype(np.float32), "roi_edge_mae": rng.random(60)}
    save_scorer(models_dir / "scorer.npz", fit_scorer(train, val))


def _inference_run(datalist: str, models_dir: str, output_dir: str) -> tuple[float, int]:
    """Run the inference config once (in its own process); return seconds and rows of results.csv."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        config_file=str(INFERENCE_CONFIG),
        workflow_type="infer",
        run_id="run",
        dataset_dir=datalist,
        models_dir=models_dir,
        output_dir=output_dir,
        show_progress=False,
    )
    workflow.initialize()
    start = time.perf_counter()
    workflow.run()
    seconds = time.perf_counter() - start
    with open(Path(output_dir) / "results.csv", encoding="utf-8") as handle:
        rows = sum(1 for _ in handle) - 1
    return seconds, rows


def benchmark_streaming(quick: bool = False) -> list[dict]:
    """Peak memory and speed of streaming inference on a small and a ten times larger image set.

    Args:
        quick: 20 and 100 images, once each, instead of 1,000 and 10,000 three times each.

    Returns:
        result rows; the ratio row's target is the issue's "within 10 %".
    """
    from bundle.data.synthetic.dataset import write_synthetic_dataset

    small, large = (20, 100) if quick else (1000, 10000)
    repeats = 1 if quick else 3  # a process's peak varies by about +-25 MB between identical runs (allocator)
    rows, peaks, rates = [], {small: [], large: []}, {small: [], large: []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        write_synthetic_dataset(
            root / "data", per_site=math.ceil(large / 3), size=(128, 128), workers=2, progress=False
        )
        rows.append(result_row(f"write {large} synthetic 128x128 images (2 workers)", time.perf_counter() - start, "s"))
        entries = json.loads((root / "data" / "datalist.json").read_text())["data"]
        _write_model(root / "models")
        for count in (small, large):
            atomic_write_json(root / "data" / f"datalist_{count}.json", {"data": entries[:count]}, indent=None)
        for repeat in range(repeats):  # alternate the sizes so a drifting machine moves both alike
            for count in (small, large):
                datalist = root / "data" / f"datalist_{count}.json"  # beside the images it names
                output = root / f"out_{count}_{repeat}"
                (seconds, written), peak = run_isolated(
                    _inference_run, str(datalist), str(root / "models"), str(output)
                )
                if written != count:
                    raise RuntimeError(f"inference on {count} images wrote {written} rows")
                shutil.rmtree(output)
                peaks[count].append(peak)
                rates[count].append(count / seconds)
    for count in (small, large):
        runs = ", ".join(f"{p:.0f}" for p in peaks[count])
        label = f"inference on {count} images"
        rows.append(
            result_row(f"{label}: peak resident memory (median of {repeats}: {runs} MB)", median(peaks[count]), "MB")
        )
        rows.append(result_row(f"{label}: throughput (median of {repeats})", median(rates[count]), "img/s"))
    ratio = median(peaks[large]) / median(peaks[small])
    rows.append(
        result_row(f"peak memory, {large} / {small} images", ratio, "x", target="<= 1.10", passed=ratio <= 1.10)
    )
    return rows
