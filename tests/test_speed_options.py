"""Speed options of the training config: caching, on-disk cache, channels_last, mixed precision.

These tests check behaviour (what is cached, what is read back, what the numbers are), never time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle.data.datasets import cached_dataset, to_memory_format
from bundle.model.batches import ROIBatch
from bundle.model.losses import MSSSIMLoss, ROICompositeLoss
from monai.transforms import Compose, MapTransform, RandGaussianNoised
from test_training_workflow import run_workflow


class CountingScale(MapTransform):
    """A deterministic transform that counts its calls."""

    def __init__(self, keys: str, factor: float = 2.0) -> None:
        super().__init__(keys)
        self.factor = factor
        self.calls = 0

    def __call__(self, data: dict) -> dict:
        self.calls += 1
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = d[key] * self.factor
        return d


def _entries(n: int = 5) -> list[dict]:
    return [{"image": np.full((1, 4, 4), float(i), dtype=np.float32), "case_id": f"c{i}"} for i in range(n)]


def test_nested_compose_is_cached_up_to_the_first_random_transform():
    counting = CountingScale("image")
    chain = Compose([Compose([counting]), Compose([RandGaussianNoised("image", prob=1.0, std=0.01)])])
    dataset = cached_dataset(_entries(), chain, num_workers=0)
    assert counting.calls == 5  # built once per item
    first = [dataset[i]["image"] for i in range(5)]
    assert counting.calls == 5  # not again: the deterministic part comes from the cache
    assert all(abs(float(x.mean()) - 2.0 * i) < 0.05 for i, x in enumerate(first))  # scaled, then noised


def test_on_disk_cache_is_read_by_a_fresh_dataset_and_keyed_by_the_transform(tmp_path):
    entries = _entries()
    counting = CountingScale("image")
    first = cached_dataset(entries, Compose([counting]), cache_dir=tmp_path)
    values = [float(first[i]["image"].mean()) for i in range(5)]
    assert counting.calls == 5 and len(list(tmp_path.glob("*.pt"))) == 5
    again = CountingScale("image")
    second = cached_dataset(entries, Compose([again]), cache_dir=tmp_path)
    assert [float(second[i]["image"].mean()) for i in range(5)] == values
    assert again.calls == 0  # every item came from disk
    other = CountingScale("image", factor=3.0)  # other preprocessing settings: never a stale file
    third = cached_dataset(entries, Compose([other]), cache_dir=tmp_path)
    assert [float(third[i]["image"].mean()) for i in range(5)] == [3.0 * i for i in range(5)]
    assert other.calls == 5 and len(list(tmp_path.glob("*.pt"))) == 10


def test_losses_run_in_float32_under_autocast():
    torch.manual_seed(0)
    pred = torch.rand(2, 1, 64, 64)
    target = torch.cat([torch.rand(2, 1, 64, 64), torch.zeros(2, 1, 64, 64)], 1)
    target[:, 1, 20:40, 20:40] = 1
    for loss in (MSSSIMLoss(), ROICompositeLoss(weighting="equal")):
        reference = loss(pred.bfloat16().float(), target)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = loss(pred.bfloat16(), target)
        assert mixed.dtype == torch.float32
        assert torch.allclose(mixed, reference, atol=1e-6)


def test_channels_last_batch_and_network_give_the_same_output():
    from bundle.model.network import ROIAwareCAE

    network = ROIAwareCAE(canvas_size=64, widths=[8, 16, 16, 32, 32]).eval()
    batch = {"image": torch.rand(2, 1, 64, 64), "roi_mask": torch.zeros(2, 1, 64, 64)}
    plain_in, plain_target = ROIBatch()(batch)
    fast_in, fast_target = ROIBatch(channels_last=True)(batch)
    assert fast_in.is_contiguous(memory_format=torch.channels_last) and torch.equal(fast_target, plain_target)
    with torch.no_grad():
        expected = network(plain_in)
        got = to_memory_format(network, "cpu", channels_last=True)(fast_in)
    conv = next(m for m in network.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(got, expected, atol=1e-5)


def _metrics(root: Path) -> dict:
    return json.loads((root / "runs/quick/report/metrics.json").read_text())["phases"]


def test_on_disk_cache_and_channels_last_train_to_the_same_metrics(tmp_path):
    run_workflow(tmp_path / "default")
    run_workflow(tmp_path / "disk", cache_dir=str(tmp_path / "cache"))
    assert len(list((tmp_path / "cache").glob("*.pt"))) > 0
    default = _metrics(tmp_path / "default")
    assert _metrics(tmp_path / "disk") == default  # the cache only changes where arrays come from
    run_workflow(tmp_path / "nhwc", channels_last=True)
    nhwc = _metrics(tmp_path / "nhwc")  # other convolution kernels: rounding differs, results agree
    for phase, splits in default.items():
        for split, metrics in splits.items():
            for name, value in metrics.items():
                if isinstance(value, float) and np.isfinite(value):
                    assert nhwc[phase][split][name] == pytest.approx(value, rel=2e-2, abs=1e-3), (phase, split, name)


def test_loader_workers_option_trains(tmp_path):
    run_workflow(tmp_path, train_workers=1)
    assert Path(tmp_path / "models/model.pt").exists()
