"""Benchmarks, written as JSON and a Markdown table (``python -m bundle benchmark``).

Suites run in one process, one after another, so their figures are comparable within a run. The
``synth`` suite measures the synthetic generator against the SPEC 1.3 targets: <= 60 ms per
128x128 image and <= 0.3 s per native image on one core, 1,000 images in a few minutes on 2 cores.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bundle.benchmarks.common import result_row, run_isolated
from bundle.data.synthetic.dataset import write_synthetic_dataset
from bundle.data.synthetic.generator import generate_case
from bundle.utils.atomic import atomic_write_json, atomic_write_text


def _render_times_ms(size: tuple[int, int] | None, per_site: int, sites: int = 3) -> list[float]:
    """Wall time of :func:`generate_case` for ``per_site`` images of each site, in ms."""
    times = []
    for site in range(sites):
        for index in range(per_site):
            start = time.perf_counter()
            generate_case(1234, site, index, size)
            times.append(1000.0 * (time.perf_counter() - start))
    return times


def benchmark_synth(quick: bool = False) -> list[dict]:
    """Measure the synthetic generator.

    Args:
        quick: small counts (seconds) instead of the full measurement.

    Returns:
        result rows with ``name``, ``value``, ``unit``, ``target`` and ``passed``.
    """
    rows = []
    per_site = 2 if quick else 20
    generate_case(0, 0, 0, (128, 128))  # warm caches (fonts, imports)
    for label, size, target_ms in (("128x128", (128, 128), 60.0), ("native", None, 300.0)):
        times = _render_times_ms(size, per_site)
        median = statistics.median(times)
        rows.append(
            {
                "name": f"render one {label} image, one core (median of {len(times)})",
                "value": round(median, 1),
                "unit": "ms",
                "target": f"<= {target_ms:.0f} ms",
                "passed": median <= target_ms,
            }
        )
    n_images = 60 if quick else 1000
    workers = min(2, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_synthetic_dataset(tmp, per_site=n_images // 3, size=(128, 128), workers=workers, progress=False)
        seconds = time.perf_counter() - start
    rows.append(
        {
            "name": f"write {n_images} 128x128 PNGs + datalist, {workers} workers",
            "value": round(seconds, 1),
            "unit": "s",
            "target": "few minutes per 1,000" if not quick else "-",
            "passed": seconds * 1000 / n_images <= 300.0,
        }
    )
    return rows


def _suites() -> dict[str, Callable[[bool], list[dict]]]:
    from bundle.benchmarks import model as model
    from bundle.benchmarks.localizer import benchmark_localizer
    from bundle.benchmarks.streaming import benchmark_streaming

    return {
        "synth": benchmark_synth,
        "pipeline": model.benchmark_pipeline,
        "training": model.benchmark_training,
        "encoder": model.benchmark_encoder,
        "flops": model.benchmark_flops,
        "scaling": model.benchmark_scaling,
        "options": model.benchmark_options,
        "streaming": benchmark_streaming,
        "localizer": benchmark_localizer,
    }


SUITE_NAMES = ("synth", "pipeline", "training", "encoder", "flops", "scaling", "options", "streaming", "localizer")


def _run_suite(name: str, quick: bool) -> list[dict]:
    return _suites()[name](quick)


def run_suite_isolated(name: str, quick: bool) -> list[dict]:
    """Run a suite in a spawned process so its peak memory is its own; adds a peak-memory row."""
    rows, peak = run_isolated(_run_suite, name, quick)
    return [*rows, result_row(f"peak resident memory of the {name} suite", peak, "MB")]


def derived_rows(suites: dict[str, list[dict]]) -> list[dict]:
    """Achieved fraction of the measured matmul peak by training (needs the training and flops suites)."""
    if "training" not in suites or "flops" not in suites:
        return []
    values = {r["name"]: r["value"] for rows in suites.values() for r in rows}
    peak = values.get("measured peak, fp32 matmul")
    rows = []
    for name, rate in values.items():
        if name.startswith("train ") and "bundle engine" in name:
            canvas = name.split()[1]
            flops = values.get(f"CAE training step, {canvas} px")
            if flops and peak:
                achieved = rate * flops
                rows.append(
                    {
                        "name": f"train {canvas} px, achieved (bundle engine)",
                        "value": round(achieved, 2),
                        "unit": "GFLOP/s",
                        "target": "-",
                        "passed": True,
                    }
                )
                rows.append(
                    {
                        "name": f"train {canvas} px, fraction of matmul peak",
                        "value": round(100 * achieved / peak, 1),
                        "unit": "%",
                        "target": "-",
                        "passed": True,
                    }
                )
    return rows


def run_benchmarks(output_dir: str | os.PathLike, suites: list[str] | None = None, quick: bool = False) -> Path:
    """Run benchmark suites and write ``benchmark.json`` and ``benchmark.md``.

    Args:
        output_dir: folder for the results.
        suites: suite names (default: all of :data:`SUITE_NAMES`).
        quick: small counts, for a smoke run.

    Returns:
        path of the Markdown table.

    Raises:
        ValueError: for an unknown suite.
    """
    chosen = suites or list(SUITE_NAMES)
    unknown = [s for s in chosen if s not in SUITE_NAMES]
    if unknown:
        raise ValueError(f"unknown benchmark suite(s) {unknown}; choose from {list(SUITE_NAMES)}")
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    results = {"machine": machine, "quick": quick, "suites": {}}
    for name in chosen:
        print(f"benchmark: running suite '{name}'{' (quick)' if quick else ''} ...", flush=True)
        results["suites"][name] = run_suite_isolated(name, quick)
    derived = derived_rows(results["suites"])
    if derived:
        results["suites"]["efficiency"] = derived
    out = Path(output_dir)
    atomic_write_json(out / "benchmark.json", results)
    lines = [f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs, Python {machine['python']}", ""]
    for name, rows in results["suites"].items():
        lines += [f"### {name}", "", "| measurement | value | target | met |", "|---|---|---|---|"]
        lines += [
            f"| {r['name']} | {r['value']} {r['unit']} | {r['target']} | {'yes' if r['passed'] else 'NO'} |"
            for r in rows
        ]
        lines.append("")
    table = out / "benchmark.md"
    atomic_write_text(table, "\n".join(lines))
    return table
