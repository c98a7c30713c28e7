"""Corrupt model files get one line naming the file and the fix, in score, inference and export (issue 19.5)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle.cli import main
from bundle.latent.scoring import load_scorer
from bundle.utils.checkpoints import CheckpointError
from conftest import TINY_ARCH, inference_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def good(tiny_trained, tmp_path_factory):
    """A real exported encoder, the run's scorer and a one-image datalist."""
    from bundle.deploy.export import export_torchscript

    root, _ = tiny_trained
    folder = tmp_path_factory.mktemp("good_models")
    encoder = export_torchscript(folder / "encoder.ts", root / "models/encoder.pt", **TINY_ARCH)
    entry = json.loads((root / "data/datalist.json").read_text())["data"][0]
    datalist = folder / "one.json"
    datalist.write_text(json.dumps({"data": [{**entry, "image": str(root / "data" / entry["image"])}]}))
    return {"root": root, "encoder": encoder, "scorer": root / "models/scorer.npz", "datalist": datalist}


def _bad_encoder(kind: str, good: dict, folder: Path) -> Path:
    if kind == "truncated .ts":
        data = good["encoder"].read_bytes()
        (path := folder / "cut.ts").write_bytes(data[: len(data) // 2])
    elif kind == "renamed .pt":
        torch.save({"w": torch.zeros(2)}, path := folder / "renamed.ts")
    else:
        (path := folder / "random.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def _bad_scorer(kind: str, good: dict, folder: Path) -> Path:
    arrays = dict(np.load(good["scorer"], allow_pickle=False))
    path = folder / f"{kind.replace(' ', '_')}.npz"
    if kind == "truncated":
        data = good["scorer"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "missing a key":
        arrays.pop("bank")
        np.savez(path, **arrays)
    else:
        np.savez(path, **{**arrays, "bank": np.array([{"code": "runs on load"}], dtype=object)})
    return path


@pytest.mark.parametrize("kind", ["truncated .ts", "renamed .pt", "random .onnx"])
def test_score_names_a_corrupt_encoder_in_one_line(good, tmp_path, capsys, kind):
    bad = _bad_encoder(kind, good, tmp_path)
    args = ["score", str(good["datalist"]), "--encoder", str(bad), "--scorer", str(good["scorer"]), "--quiet"]
    assert main([*args, "--output", str(tmp_path / "scores.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "export it again with python -m bundle export" in err
    assert not (tmp_path / "scores.csv").exists()


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("truncated", "not a readable scorer"),
        ("missing a key", "not a complete scorer (no 'bank' array)"),
        ("pickled", "pickled objects are refused"),
    ],
)
def test_a_corrupt_scorer_is_named_with_the_fix(good, tmp_path, capsys, kind, expected):
    bad = _bad_scorer(kind, good, tmp_path)
    with pytest.raises(CheckpointError, match="save_latents") as caught:
        load_scorer(bad)
    assert str(bad) in str(caught.value) and expected in str(caught.value)
    args = ["score", str(good["datalist"]), "--encoder", str(good["encoder"]), "--scorer", str(bad), "--quiet"]
    assert main([*args, "--output", str(tmp_path / "scores.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and expected in err


def test_inference_with_a_corrupt_scorer_names_it(good, tmp_path):
    bad = _bad_scorer("truncated", good, tmp_path)
    command = inference_command(good["root"] / "models", good["datalist"], tmp_path / "out")
    command += ["--scorer_path", str(bad)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert f"{bad}: not a readable scorer" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "out/results.csv").exists()
