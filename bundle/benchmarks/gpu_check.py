"""Summary of the prepared GPU check (``.ci/gpu_check.sh``): one results file with the card's figures.

The script runs the Diff-ICE GPU quick preset end to end and a few epochs of the CAE paper preset;
this module reads their reports and the step timings and writes ``gpu_check.json`` and
``gpu_check.md`` (device name, seconds per step, the Diff-ICE headline beside the unguided control,
the CAE's held-out PSNR and ROI errors).

Usage: ``python -m bundle.benchmarks.gpu_check --diffice RUN --cae RUN --timings FILE --output DIR``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from bundle.utils.atomic import atomic_write_json, atomic_write_text

__all__ = ["summarize", "main"]


def _device_name() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    return f"CPU only (torch {torch.__version__})"


def _read_timings(path: Path) -> dict[str, float]:
    """``name seconds`` per line, as the script writes them."""
    timings = {}
    for line in path.read_text().splitlines():
        name, _, seconds = line.rpartition(" ")
        if name:
            timings[name] = float(seconds)
    return timings


def summarize(diffice_run: Path, cae_run: Path, timings_file: Path) -> dict:
    """Collect the figures of a GPU check.

    Args:
        diffice_run: the Diff-ICE run folder (holding ``report/results.json``).
        cae_run: the CAE run folder (holding ``report/metrics.json``).
        timings_file: the script's ``name seconds`` lines.

    Returns:
        the summary written to ``gpu_check.json``.

    Raises:
        FileNotFoundError: naming a report the script did not produce.
    """
    diffice_file, cae_file = Path(diffice_run) / "report" / "results.json", Path(cae_run) / "report" / "metrics.json"
    for path in (diffice_file, cae_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; the step that writes it failed (see the log above it)")
    diffice = json.loads(diffice_file.read_text())
    cae = json.loads(cae_file.read_text())
    methods = {
        name: {k: result["iterations"][-1][k] for k in ("iteration", "flip_ratio", "mad", "bkl", "mqd", "fid")}
        for name, result in diffice["methods"].items()
    }
    held_out = {phase: splits.get("held_out", {}) for phase, splits in cae["phases"].items()}
    return {
        "device": _device_name(),
        "seconds": _read_timings(Path(timings_file)),
        "diffice": {
            "preset": diffice["settings"].get("image_size"),
            "guide_balanced_accuracy": diffice["guide"]["balanced_accuracy"],
            "oracle_balanced_accuracy": diffice["oracle"]["balanced_accuracy"],
            "inputs": diffice["inputs"],
            "methods": methods,
        },
        "cae_held_out": held_out,
    }


def _markdown(summary: dict) -> str:
    lines = [f"# GPU check on {summary['device']}", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds:.0f} |" for name, seconds in summary["seconds"].items()]
    d = summary["diffice"]
    lines += [
        "",
        f"Diff-ICE (image size {d['preset']}): guide balanced accuracy {d['guide_balanced_accuracy']:.3f}, "
        f"oracle {d['oracle_balanced_accuracy']:.3f}, {d['inputs']} inputs.",
        "",
        "| method | iteration | flip ratio | MAD | BKL | MQD |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in d["methods"].items():
        lines.append(
            f"| {name} | {row['iteration']} | {row['flip_ratio']:.3f} | {row['mad']:.3f} | {row['bkl']:.3f} | "
            f"{row['mqd']:+.3f} |"
        )
    lines += ["", "CAE paper preset (a few epochs), held-out site:", ""]
    for phase, metrics in summary["cae_held_out"].items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        lines.append(f"- {phase}: {shown}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    """Write ``gpu_check.json`` and ``gpu_check.md`` in ``--output``; returns the JSON path."""
    parser = argparse.ArgumentParser(prog="python -m bundle.benchmarks.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--diffice", required=True, type=Path, help="Diff-ICE run folder")
    parser.add_argument("--cae", required=True, type=Path, help="CAE run folder")
    parser.add_argument("--timings", required=True, type=Path, help="the script's timings file")
    parser.add_argument("--output", required=True, type=Path, help="folder of gpu_check.json / .md")
    args = parser.parse_args(argv)
    summary = summarize(args.diffice, args.cae, args.timings)
    atomic_write_json(args.output / "gpu_check.json", summary)
    atomic_write_text(args.output / "gpu_check.md", _markdown(summary))
    print(f"GPU check results: {args.output / 'gpu_check.md'} (and gpu_check.json)")
    return args.output / "gpu_check.json"


if __name__ == "__main__":
    main()
