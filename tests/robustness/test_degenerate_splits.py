"""Splits that cannot train both phases are refused before training, with the fix (issue 19.4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bundle.cli import main
from bundle.data.splits import split_by_site
from conftest import TINY_TRAINING
from monai.bundle import ConfigWorkflow

ROOT = Path(__file__).resolve().parents[2]


def _entries(per_site: int, sites=(0, 1, 2)) -> list[dict]:
    return [{"site": s, "case_id": f"s{s}_{i}", "image": f"s{s}_{i}.png"} for s in sites for i in range(per_site)]


@pytest.mark.parametrize(
    "entries, held_out, val_fraction, expected",
    [
        (_entries(5), 2, 0.0, "no validation images (val_fraction 0.0"),
        (_entries(1), 2, 0.15, "no validation images"),
        (_entries(4, sites=(2,)), 2, 0.15, "every image is in the held-out site 2"),
    ],
    ids=["val_fraction 0", "one image per source site", "no source site left"],
)
def test_each_degenerate_split_is_refused_with_the_fix(entries, held_out, val_fraction, expected):
    with pytest.raises(ValueError, match="--") as caught:
        split_by_site(entries, held_out, val_fraction, seed=0)
    assert expected in str(caught.value)


def test_val_fraction_0_stops_before_anything_is_written(tmp_path):
    settings = {"bundle_root": str(tmp_path), "dataset_dir": str(tmp_path / "data"), **TINY_TRAINING}
    workflow = ConfigWorkflow(
        config_file=str(ROOT / "configs/train.json"), workflow_type="train", run_id="training", **settings
    )
    workflow.parser["val_fraction"] = 0.0
    with pytest.raises(RuntimeError) as caught:
        workflow.initialize()  # the settings are checked in the first initialize step
    chain, error = [], caught.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__
    assert any("setting val_fraction = 0.0 must be" in m and "--val_fraction 0.15" in m for m in chain), chain
    assert not (tmp_path / "runs/quick/phase1_complete.json").exists()
    assert not list((tmp_path / "runs/quick").rglob("checkpoint_epoch=*.pt"))
    assert not (tmp_path / "runs/quick/run_settings.json").exists()  # checked before anything is written (30.5)


def test_a_run_refused_before_its_first_epoch_does_not_block_the_corrected_one(tmp_path):
    from bundle.training.workflow import check_run_settings

    run = tmp_path / "runs/quick"
    first = {"dataset_dir": "data", "held_out_site": 2, "val_fraction": 0.15, "seed": 0}
    check_run_settings(run, first)  # written, then the run stopped (a broken datalist, say)
    corrected = {**first, "dataset_dir": "data_fixed"}
    assert check_run_settings(run, corrected) == corrected
    assert json.loads((run / "run_settings.json").read_text())["dataset_dir"] == "data_fixed"
    (run / "checkpoints" / "phase1").mkdir(parents=True)
    (run / "checkpoints" / "phase1" / "checkpoint_epoch=1.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="holds a run made with other settings"):  # once trained, it is guarded
        check_run_settings(run, {**corrected, "seed": 1})


def test_an_empty_data_list_does_not_validate(tmp_path, capsys):
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"data": []}))
    assert main(["validate", str(datalist)]) == 1
    assert "the list is empty: no images" in capsys.readouterr().err
