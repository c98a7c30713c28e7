"""Untrusted files: a checkpoint that carries code is refused by every loader of the bundle.

The crafted file is a real pickle whose unpickling would create a marker file; each loader must
raise before anything runs (``torch.load(..., weights_only=True)`` everywhere).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from bundle.diffice.networks import ResNet50Features
from bundle.diffice.training import load_weights
from bundle.model.network import ROIAwareCAE
from bundle.training.handlers import ResumeCheckpointHandler
from bundle.training.workflow import run_phase
from bundle.utils.checkpoints import CheckpointError, checked_checkpoint, load_model_weights
from ignite.engine import Engine


class _Payload:
    """Unpickling this object creates ``marker`` (stands in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _crafted(path: Path, marker: Path) -> Path:
    torch.save({"model": _Payload(marker)}, path)
    return path


def _tiny_network() -> torch.nn.Module:
    return ROIAwareCAE(canvas_size=64, widths=[8, 16, 16, 32, 32])


def _loaders(tmp_path: Path, checkpoint: Path):
    """(name, call) for every place the bundle reads a checkpoint."""
    resume_dir = tmp_path / "resume"
    resume_dir.mkdir()
    checkpoint_in_dir = resume_dir / "checkpoint_epoch=3.pt"
    checkpoint_in_dir.write_bytes(checkpoint.read_bytes())
    network = _tiny_network()
    engine = Engine(lambda e, b: None)

    class _Trainer:
        state = engine.state

        def run(self):  # never reached
            raise AssertionError("the phase must not start")

    return [
        ("report.load_model_weights", lambda: load_model_weights(network, checkpoint)),
        ("diffice.training.load_weights", lambda: load_weights(network, checkpoint, "test model")),
        ("workflow.run_phase", lambda: run_phase("p", _Trainer(), tmp_path / "m.json", network, checkpoint)),
        ("ResumeCheckpointHandler.load", lambda: ResumeCheckpointHandler(resume_dir, {"model": network}).load(engine)),
        ("diffice ResNet50Features", lambda: ResNet50Features(checkpoint)),
        ("CheckpointLoader of the inference/evaluate configs", lambda: checked_checkpoint(checkpoint)),
    ]


def test_a_checkpoint_carrying_code_is_refused_everywhere(tmp_path):
    marker = tmp_path / "code_ran"
    checkpoint = _crafted(tmp_path / "evil.pt", marker)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(checkpoint, weights_only=True)
    torch.load(checkpoint, weights_only=False)  # sanity: the file really runs code when fully unpickled
    assert marker.exists()
    marker.unlink()
    for name, load in _loaders(tmp_path, checkpoint):
        with pytest.raises(pickle.UnpicklingError):
            load()
        assert not marker.exists(), f"{name} executed code from the checkpoint"


def test_a_truncated_checkpoint_is_named_with_the_fix_everywhere(tmp_path):
    checkpoint = tmp_path / "model.pt"
    torch.save({"model": _tiny_network().state_dict()}, checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:5000])
    for name, load in _loaders(tmp_path, checkpoint):
        with pytest.raises(CheckpointError) as caught:
            load()
        message = str(caught.value)
        assert ".pt: cannot read this" in message and "truncated or not a PyTorch checkpoint" in message, name


def test_the_docs_say_that_configs_are_code():
    root = Path(__file__).resolve().parents[2]
    for page in ("README.md", "docs/README.md", "docs/training.md", "docs/inference.md", "docs/reliability.md"):
        text = (root / page).read_text().lower()
        assert "are code" in text and "trust" in text, page
