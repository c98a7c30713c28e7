"""Bad input through every entry point: one clear error naming file, entry and fix, or correct handling.

One datalist holds every bad image of ``bad_files.CASES`` plus broken boxes, a duplicate entry and a
missing file. ``validate``, training and evaluation each refuse it before any work, listing every
problem once; the odd-but-valid images (16-bit, RGBA, palette, constant, tiny, huge, non-UTF-8 file
name) with fractional boxes train to the end. Synth, export and a broken resume checkpoint give
one-line errors.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_files import CASES, GREY, _png, write_cases
from bundle.cli import main
from bundle.data.readers import read_image
from conftest import TINY_ARCH, TINY_TRAINING, error_messages
from monai.bundle import ConfigWorkflow
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TRAIN = str(ROOT / "configs" / "train.json")
OK_NAMES = [name for name, _, expected in CASES if expected == "ok"]


def _box(path: Path, index: int) -> list[float]:
    """A fractional box inside the image, a little different per entry."""
    height, width = read_image(path).array.shape
    return [0.2 * width + 0.25 * index % 1, 0.4 * height + 0.5, 0.65 * width + 0.125, 0.6 * height + 0.75]


def _entry(folder: Path, name: str, index: int, site: int, roi=None) -> dict:
    box = roi if roi is not None else _box(folder / name, index)
    return {"image": name, "roi": box, "site": site, "case_id": f"case{index:02d}"}


def _write_datalist(folder: Path, entries: list[dict]) -> Path:
    path = folder / "datalist.json"
    path.write_text(json.dumps({"sites": {"0": "A", "1": "B"}, "data": entries}))  # non-UTF-8 names as \udcXX
    return path


@pytest.fixture(scope="module")
def bad_datalist(tmp_path_factory) -> tuple[Path, dict[int, str]]:
    """Every bad case in one datalist: ``(path, {entry index: text its problem must contain})``."""
    folder = write_cases(tmp_path_factory.mktemp("bad_datalist"))
    for name in ("box_outside.png", "box_inverted.png", "box_empty.png"):
        _png(GREY)(folder / name)
    entries, expected = [], {}
    for index, (name, _, outcome) in enumerate(CASES):
        roi = _box(folder / name, index) if outcome == "ok" else [1, 1, 5, 5]
        entries.append(_entry(folder, name, index, site=index % 2, roi=roi))
        if outcome != "ok":
            expected[index] = outcome
    for name, roi, problem in (
        ("box_outside.png", [100, 50, 140, 70], "lies outside the 128x96 image"),
        ("box_inverted.png", [60, 50, 20, 70], "empty or inverted"),
        ("box_empty.png", [40, 50, 40, 70], "empty or inverted"),
        ("grey16.png", None, f"same file as entry {[case[0] for case in CASES].index('grey16.png')}"),
        ("missing.png", [1, 1, 5, 5], "file not found"),
    ):
        expected[len(entries)] = problem
        entries.append({"image": name, "roi": roi or [1, 1, 5, 5], "site": 0, "case_id": f"case{len(entries):02d}"})
    return _write_datalist(folder, entries), expected


def _problem_lines(text: str) -> dict[int, str]:
    lines = {}
    for line in text.splitlines():
        if line.strip().startswith("- entry "):
            index = int(line.split("- entry ")[1].split()[0])
            lines[index] = lines.get(index, "") + line
    return lines


def _assert_lists_every_problem(text: str, expected: dict[int, str], datalist: Path) -> None:
    lines = _problem_lines(text)
    assert set(lines) == set(expected), f"flagged {sorted(lines)}, expected {sorted(expected)}"
    for index, problem in expected.items():
        assert problem in lines[index] and "fix:" in lines[index], lines[index]
    assert str(datalist) in text


def _error_text(error: BaseException) -> str:
    return "\n".join(error_messages(error))


def test_validate_lists_every_problem_once(bad_datalist, capsys):
    datalist, expected = bad_datalist
    assert main(["validate", str(datalist)]) == 1  # as docs/reliability.md states
    captured = capsys.readouterr()
    _assert_lists_every_problem(captured.out + captured.err, expected, datalist)


@pytest.mark.parametrize("run_id", ["training", "evaluating"])
def test_training_and_evaluation_refuse_it_before_any_work(bad_datalist, tmp_path, run_id):
    datalist, expected = bad_datalist
    configs = [TRAIN] if run_id == "training" else [TRAIN, str(ROOT / "configs/evaluate.json")]
    settings = {"bundle_root": str(tmp_path), "dataset_dir": str(datalist), **TINY_TRAINING}
    workflow = ConfigWorkflow(config_file=configs, workflow_type="train", run_id=run_id, **settings)
    workflow.initialize()
    with pytest.raises(Exception) as caught:
        workflow.run()
    _assert_lists_every_problem(_error_text(caught.value), expected, datalist)
    assert not list((tmp_path / "models").rglob("*.pt")) and not (tmp_path / "runs/quick/checkpoints").exists()


def test_a_datalist_that_is_not_json_stops_training_with_line_and_column(tmp_path):
    datalist = tmp_path / "datalist.json"
    datalist.write_text('{"data": [{"image": "a.png",}]}')
    settings = {"bundle_root": str(tmp_path), "dataset_dir": str(datalist), **TINY_TRAINING}
    workflow = ConfigWorkflow(config_file=TRAIN, workflow_type="train", run_id="training", **settings)
    workflow.initialize()
    with pytest.raises(Exception) as caught:
        workflow.run()
    assert "not valid JSON" in _error_text(caught.value) and "line 1 column" in _error_text(caught.value)


def test_odd_but_valid_images_with_fractional_boxes_train_to_the_end(tmp_path):
    folder = write_cases(tmp_path / "data")
    for copy in range(3):  # enough source images for a training and a validation split
        Image.fromarray(np.roll(GREY, 9 * copy, axis=1)).save(folder / f"extra{copy}.png")
    names = [*OK_NAMES, "extra0.png", "extra1.png", "extra2.png"]
    entries = [
        _entry(folder, name, i, site=int(name in ("ten_times_canvas.png", "extra2.png")))
        for i, name in enumerate(names)
    ]
    datalist = _write_datalist(folder, entries)
    settings = {
        "bundle_root": str(tmp_path),
        "dataset_dir": str(datalist),
        **TINY_TRAINING,
        "held_out_site": 1,
        "val_fraction": 0.3,
    }
    workflow = ConfigWorkflow(config_file=TRAIN, workflow_type="train", run_id="training", **settings)
    workflow.initialize()
    workflow.run()
    report = json.loads((tmp_path / "runs/quick/report/metrics.json").read_text())
    values = [v for split in report["phases"]["phase2"].values() for v in split.values()]
    assert values and all(np.isfinite(values))


def test_synth_with_impossible_settings_says_what_to_change(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for args, text in (
        (["--output", str(blocker / "out"), "--per-site", "1"], "give a folder"),
        (["--output", str(tmp_path / "s"), "--per-site", "0"], "must be at least 1"),
        (["--output", str(tmp_path / "s"), "--per-site", "1", "--formats", "gif"], "choose from"),
    ):
        assert main(["synth", *args, "--quiet"]) == 2
        assert text in capsys.readouterr().err


def test_export_of_a_broken_or_foreign_checkpoint_fails_with_one_line(tiny_trained, tmp_path, capsys):
    root, _ = tiny_trained
    settings = [f"{key}={json.dumps(value)}" for key, value in TINY_ARCH.items()]
    truncated = tmp_path / "truncated" / "encoder.pt"
    truncated.parent.mkdir()
    data = (root / "models/encoder.pt").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert main(["export", "--output-dir", str(truncated.parent), "--formats", "ts", "--set", *settings]) == 2
    error = capsys.readouterr().err
    assert str(truncated) in error and "truncated or not a PyTorch checkpoint" in error
    assert not (truncated.parent / "encoder.ts").exists()

    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(root / "models/encoder.pt", other / "encoder.pt")
    wrong = [f"network_widths={json.dumps([16, 32, 64, 128, 128])}", "canvas_size=64"]
    assert main(["export", "--output-dir", str(other), "--formats", "ts", "--set", *wrong]) == 2
    assert "does not fit the configured network" in capsys.readouterr().err


def test_a_corrupt_resume_checkpoint_is_named_with_the_fix(tmp_path):
    checkpoint = tmp_path / "runs/quick/checkpoints/phase1/checkpoint_epoch=1.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"model": {}}, checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    command = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", TRAIN]
    for key, value in {"bundle_root": str(tmp_path), "dataset_dir": str(tmp_path / "data"), **TINY_TRAINING}.items():
        command += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert f"{checkpoint}: cannot read this resume checkpoint" in result.stderr + result.stdout
    assert "Delete it to train this phase again" in result.stderr + result.stdout
