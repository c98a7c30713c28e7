"""Inference streams its results table to disk (bounded memory) and never leaves a half-written one.

The memory figures at 1,000 and 10,000 images come from ``python -m bundle benchmark --suites streaming``
(docs/reliability.md); these tests check the mechanism on a few images.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import TINY_ARCH, error_messages
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

ROOT = Path(__file__).resolve().parents[2]


def _workflow(root: Path, output: Path) -> ConfigWorkflow:
    settings = {
        "dataset_dir": str(root / "data/datalist.json"),
        "models_dir": str(root / "models"),
        "output_dir": str(output),
        "batch_size": 4,
        **TINY_ARCH,
    }
    workflow = ConfigWorkflow(
        config_file=str(ROOT / "configs/inference.json"), workflow_type="infer", run_id="run", **settings
    )
    workflow.initialize()
    return workflow


def _hidden_tables(output: Path) -> list[Path]:
    return sorted(output.glob(".results.*"))


def test_rows_reach_disk_batch_by_batch_and_the_tables_appear_only_at_the_end(tiny_trained, tmp_path):
    root, _ = tiny_trained
    output = tmp_path / "out"
    workflow = _workflow(root, output)
    evaluator = workflow.parser.get_parsed_content("evaluator")
    seen = []

    @evaluator.on(Events.ITERATION_COMPLETED)
    def look(engine):
        [partial_csv] = [path for path in _hidden_tables(output) if ".csv" in path.name]
        seen.append((len(partial_csv.read_text().splitlines()) - 1, (output / "results.csv").exists()))

    workflow.run()
    n_images = len(json.loads((root / "data/datalist.json").read_text())["data"])
    assert [rows for rows, _ in seen] == [min(4 * (i + 1), n_images) for i in range(len(seen))]
    assert not any(published for _, published in seen)
    assert not _hidden_tables(output)
    with open(output / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == n_images and all(row["status"] == "ok" for row in rows)
    as_json = json.loads((output / "results.json").read_text())
    assert [row["case_id"] for row in as_json] == [row["case_id"] for row in rows]
    assert not hasattr(workflow.parser.get_parsed_content("handlers")[1], "rows")  # nothing kept per image


def test_a_crash_mid_run_keeps_the_previous_tables_and_leaves_no_temporary_file(tiny_trained, tmp_path):
    root, _ = tiny_trained
    output = tmp_path / "out"
    _workflow(root, output).run()
    before = {name: (output / name).read_bytes() for name in ("results.csv", "results.json")}

    workflow = _workflow(root, output)
    evaluator = workflow.parser.get_parsed_content("evaluator")

    @evaluator.on(Events.ITERATION_COMPLETED(once=2))
    def crash(engine):
        raise RuntimeError("simulated crash in the middle of the run")

    with pytest.raises(Exception) as info:  # MONAI wraps the error of the config expression
        workflow.run()
    assert any("simulated crash" in message for message in error_messages(info.value))
    assert {name: (output / name).read_bytes() for name in before} == before
    assert not _hidden_tables(output)
