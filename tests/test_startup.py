"""The training augmentation factory and the run start (``start_run``) of ``configs/train.json``."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from bundle.data.augmentation import training_augmentation
from bundle.training.signals import restore_signals
from bundle.training.startup import start_run
from bundle.utils.locks import LOCK_NAME, release_run_locks


def _item(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "image": torch.rand(1, 32, 32, generator=generator),
        "roi_mask": torch.zeros(1, 32, 32),
        "roi_view": torch.rand(1, 16, 16, generator=generator),
        "roi_view_mask": torch.ones(1, 16, 16),
        "roi": [4.0, 5.0, 20.0, 12.0],
    }


def _augmented(seed: int = 0, **settings) -> list[dict]:
    augmentation = training_augmentation(prob=1.0, **settings)
    augmentation.set_random_state(seed=seed)
    return [augmentation(_item(i)) for i in range(4)]


def test_training_augmentation_moves_the_box_only_with_jitter():
    assert all(list(out["roi"]) == [4.0, 5.0, 20.0, 12.0] for out in _augmented())
    assert any(list(map(float, out["roi"])) != [4.0, 5.0, 20.0, 12.0] for out in _augmented(roi_jitter_px=3))


def test_training_augmentation_zoom_mode_nearest_shifts_by_whole_pixels():
    for zoom_mode, new_values in (("nearest", False), ("bilinear", True)):
        grey_levels = [
            set(torch.as_tensor(out["roi_view"]).flatten().tolist()) - set(_item(i)["roi_view"].flatten().tolist())
            for i, out in enumerate(_augmented(gain_range=(1.0, 1.0), gamma_range=(1.0, 1.0), zoom_mode=zoom_mode))
        ]
        assert any(levels - {0.0} for levels in grey_levels) == new_values  # interpolation makes new grey levels


def test_start_run_checks_before_it_writes_and_records_the_run(tmp_path):
    values = {"seed": 0, "held_out_site": 2, "phase1_epochs": "abc"}
    with pytest.raises(ValueError, match="phase1_epochs"):
        start_run(tmp_path / "out", tmp_path / "models", "data", values, {}, seed=0)
    assert not (tmp_path / "out").exists() and not (tmp_path / "models").exists()

    values["phase1_epochs"] = 2
    architecture = {"model": "dual_view", "canvas_size": 64, "roi_canvas_size": 32, "roi_margin": 0.5, "latent_dim": 4}
    architecture.update(network_widths=[8], roi_network_widths=[8])
    settings = {
        **architecture,
        "val_fraction": 0.2,
        "loss_weighting": "equal",
        "phase2_freeze": "none",
        "augment": True,
    }
    handlers = list(logging.getLogger().handlers)
    try:
        recorded = start_run(tmp_path / "out", tmp_path / "models", "data", {**values, **settings}, {}, seed=0)
    finally:
        release_run_locks()
        restore_signals()
        for handler in set(logging.getLogger().handlers) - set(handlers):
            logging.getLogger().removeHandler(handler)
            handler.close()
    assert recorded == json.loads((tmp_path / "out/run_settings.json").read_text())
    assert recorded["dataset_dir"] == "data" and recorded["seed"] == 0
    assert (tmp_path / "out/train.log").exists() and (tmp_path / "models").is_dir()
    assert not (tmp_path / "out" / LOCK_NAME).exists()  # released above
