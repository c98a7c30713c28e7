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


def test_val_fraction_0_stops_before_phase_1_and_leaves_no_marker(tmp_path):
    settings = {"bundle_root": str(tmp_path), "dataset_dir": str(tmp_path / "data"), **TINY_TRAINING}
    workflow = ConfigWorkflow(
        config_file=str(ROOT / "configs/train.json"), workflow_type="train", run_id="training", **settings
    )
    workflow.parser["val_fraction"] = 0.0
    workflow.initialize()
    with pytest.raises(RuntimeError) as caught:
        workflow.run()
    chain, error = [], caught.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__
    assert any("set --val_fraction above 0" in message for message in chain), chain
    assert not (tmp_path / "runs/quick/phase1_complete.json").exists()
    assert not list((tmp_path / "runs/quick").rglob("checkpoint_epoch=*.pt"))
    workflow.finalize()


def test_an_empty_data_list_does_not_validate(tmp_path, capsys):
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"data": []}))
    assert main(["validate", str(datalist)]) == 1
    assert "the list is empty: no images" in capsys.readouterr().err
