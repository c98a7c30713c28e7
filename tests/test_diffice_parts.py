"""Diff-ICE metrics, data, networks and the whole CPU pipeline on a micro preset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle.data.synthetic.anatomy import LABELS
from bundle.diffice import metrics as M
from bundle.diffice.data import STRUCTURE_CLASSES, StructureClassesd, diffice_items
from bundle.diffice.networks import GuidedClassifier, ResNet50Features, SonoNet16, segmentation_net
from bundle.diffice.report import balanced_accuracy, mean_dice
from bundle.diffice.training import class_weights, split_items
from monai.bundle import ConfigWorkflow

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "diffice" / "diffice.json")


def test_metrics_on_hand_made_inputs():
    p = torch.tensor([0.2, 0.7, 0.9])
    assert M.flip_ratio(p) == pytest.approx(2 / 3)
    assert M.bkl(p) == pytest.approx((0.8 + 0.3 + 0.1) / 3)
    a, b = torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 0.25)
    assert M.mean_absolute_difference(a, b) == pytest.approx(0.25)
    assert M.mean_quality_difference(torch.tensor([0.9, 0.6]), torch.tensor([0.1, 0.4])) == pytest.approx(0.5)
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0)).double()
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert M.frechet_distance(x + torch.tensor([3.0, 4.0, 0.0]).double(), x) == pytest.approx(25.0, rel=1e-4)
    assert M.paired_cosine(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])) == pytest.approx(0.0)
    assert M.paired_cosine(torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 4.0]])) == pytest.approx(1.0)
    probs = torch.zeros(1, 2, 8, 8)
    probs[0, 1, :4, :4] = 1
    features = M.segmentation_features(probs, grid=2)
    assert features.shape == (1, 8) and features[0, 4].item() == 1.0 and features[0, 5].item() == 0.0
    assert balanced_accuracy(torch.tensor([1, 1, 1, 0]), torch.tensor([1, 1, 1, 1])) == 0.75
    assert balanced_accuracy(torch.tensor([1, 0, 0, 0]), torch.tensor([1, 0, 0, 1])) == pytest.approx(0.75)
    truth = torch.tensor([[[0, 1], [2, 2]]])
    assert mean_dice(truth, truth, 3) == 1.0


def test_structure_classes_group_the_tissue_labels():
    label = torch.tensor([[[LABELS["nt"], LABELS["nasal_tip"], LABELS["brain"], LABELS["placenta"]]]])
    mapped = StructureClassesd(keys="label")({"label": label})["label"]
    names = list(STRUCTURE_CLASSES)
    assert [names[v] for v in mapped.flatten().tolist()] == ["NT", "nasal", "head", "background"]


def test_items_need_a_label_and_the_plane_flag():
    entries = [{"image": "a.png", "label": "a_label.png", "site": 0, "meta": {"standard_plane": False}}]
    assert diffice_items(entries)[0]["plane"] == 0
    with pytest.raises(ValueError, match="entry 0 .*label"):
        diffice_items([{"image": "a.png", "meta": {"standard_plane": True}}])
    with pytest.raises(ValueError, match="standard_plane"):
        diffice_items([{"image": "a.png", "label": "l.png"}])


def test_split_is_stratified_and_weights_balance_the_classes():
    items = [{"site": s, "plane": int(i % 3 != 0), "case_id": f"{s}_{i}"} for s in range(3) for i in range(30)]
    split = split_items(items, 0.2, 0)
    test_ids, train_ids = ({i["case_id"] for i in split[k]} for k in ("test", "train"))
    assert len(test_ids) == 18 and not test_ids & train_ids
    weights = class_weights(split["train"])
    counts = np.bincount([i["plane"] for i in split["train"]])
    balanced = weights * torch.tensor(counts, dtype=torch.float32)
    assert torch.allclose(balanced, torch.full((2,), len(split["train"]) / 2))
    with pytest.raises(ValueError, match="standard and non-standard"):
        split_items([i for i in items if i["plane"] == 1], 0.2, 0)


def test_sononet16_shape_and_guided_classifier_keeps_the_segmenter_frozen():
    net = SonoNet16(1 + 5)
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 and [c.out_channels for c in convs] == [16] * 2 + [32] * 2 + [64] * 3 + [128] * 6
    guide = GuidedClassifier(segmentation_net(5), net)
    guide.train()
    assert not guide.segmenter.training and guide.classifier.training
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    guide(x)[:, 1].sum().backward()
    assert x.grad is not None and all(p.grad is None for p in guide.segmenter.parameters())


def test_user_resnet50_weights_load_by_path(tmp_path):
    from monai.networks.nets import resnet50

    path = tmp_path / "radimagenet_resnet50.pt"
    torch.save(resnet50(spatial_dims=2, n_input_channels=3, num_classes=10).state_dict(), path)
    psi = ResNet50Features(path)
    assert psi(torch.rand(2, 1, 32, 32)).shape == (2, 2048)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt: not ResNet-50 weights"):
        ResNet50Features(tmp_path / "bad.pt")


MICRO = {
    "synthetic#per_site": 16,
    "synthetic#size": [64, 64],
    "synthetic#workers": 1,
    "test_fraction": 0.25,
    "batch_size": 16,
    "cache_workers": 0,
    "segmentation#epochs": 1,
    "guide#epochs": 1,
    "oracle#epochs": 1,
    "features#epochs": 1,
    "ddpm#epochs": 1,
    "counterfactual#num_inference_steps": 10,
    "counterfactual#tau": 3,
    "counterfactual#max_inputs": 6,
}


def test_the_whole_pipeline_runs_on_a_micro_preset(tmp_path):
    settings = {"bundle_root": str(tmp_path), **MICRO}
    workflow = ConfigWorkflow(config_file=CONFIG, workflow_type="train", run_id="diffice", **settings)
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    run = tmp_path / "runs" / "diffice_cpu"
    for name in ("segmentation", "guide_classifier", "oracle", "features", "ddpm"):
        assert torch.load(run / "models" / f"{name}.pt", weights_only=True)
    results = json.loads((run / "report" / "results.json").read_text())
    assert set(results["methods"]) == {"Diff-ICE", "Diff-ICE_1", "Diff-ICE (grad x_t)"}
    assert len(results["methods"]["Diff-ICE"]["iterations"]) == 2
    assert len(results["methods"]["Diff-ICE_1"]["iterations"]) == 1
    row = results["methods"]["Diff-ICE"]["iterations"][-1]
    assert 0.0 <= row["flip_ratio"] <= 1.0 and np.isfinite(row["fid_like"]) and row["seconds_per_batch"] > 0
    assert (run / "report" / "counterfactuals.png").stat().st_size > 0
    assert "| Diff-ICE | 1 |" in (run / "report" / "results.md").read_text()
    # every step is complete: a second run skips training and only rebuilds the report
    markers = sorted(p.name for p in (run / "steps").iterdir())
    assert markers == ["ddpm.json", "features.json", "guide.json", "oracle.json", "segmentation.json"]


def test_paper_preset_overlays_the_cpu_preset():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    root = Path(CONFIG).parent
    parser.read_config([str(root / "diffice.json"), str(root / "paper.json")])
    assert parser["image_size"] == [224, 288] and parser["preset"] == "paper"
    assert {k: parser["counterfactual"][k] for k in ("num_inference_steps", "tau", "iterations")} == {
        "num_inference_steps": 400,
        "tau": 120,
        "iterations": 5,
    }
    unet = parser.get_parsed_content("steps#ddpm#network")
    assert sum(p.numel() for p in unet.parameters()) > 1e6
