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
from bundle.diffice.report import balanced_accuracy, classifier_summary, mean_dice
from bundle.diffice.training import class_weights, split_items

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "diffice" / "diffice.json")


def test_validity_metrics_follow_the_papers_definitions_on_hand_made_probabilities():
    p_input = torch.tensor([0.1, 0.3, 0.2, 0.4])  # the guide calls every input non-standard
    p_cf = torch.tensor([0.9, 0.6, 0.2, 0.45])
    assert M.flip_ratio(p_cf) == pytest.approx(2 / 4)
    assert M.bkl(p_cf) == pytest.approx((0.1 + 0.4 + 0.8 + 0.55) / 4)
    # MAD is the change of the guide's probability, not of the pixels
    assert M.mean_absolute_difference(p_cf, p_input) == pytest.approx((0.8 + 0.3 + 0.0 + 0.05) / 4)
    a, b = torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 0.25)
    assert M.pixel_change(a, b) == pytest.approx(0.25)


def test_mqd_counts_only_inputs_the_oracle_calls_non_standard_but_divides_by_all():
    o_input = torch.tensor([0.2, 0.7, 0.4, 0.9])
    o_cf = torch.tensor([0.8, 0.1, 0.5, 0.95])
    # indicator 1[o(x) < 0.5] keeps inputs 0 and 2: (0.6 + 0.1) / 4
    assert M.mean_quality_difference(o_cf, o_input) == pytest.approx(0.7 / 4)
    assert np.isnan(M.mean_quality_difference(torch.tensor([]), torch.tensor([])))


def test_frechet_and_cosine_on_known_features():
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0)).double()
    assert M.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    assert M.frechet_distance(x + torch.tensor([3.0, 4.0, 0.0]).double(), x) == pytest.approx(25.0, rel=1e-4)
    assert np.isnan(M.frechet_distance(x[:1], x))  # one valid counterfactual: no distribution to compare
    assert M.paired_cosine(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])) == pytest.approx(0.0)
    assert M.paired_cosine(torch.tensor([[1.0, 2.0]]), torch.tensor([[2.0, 4.0]])) == pytest.approx(1.0)
    assert balanced_accuracy(torch.tensor([1, 1, 1, 0]), torch.tensor([1, 1, 1, 1])) == 0.75
    assert balanced_accuracy(torch.tensor([1, 0, 0, 0]), torch.tensor([1, 0, 0, 1])) == pytest.approx(0.75)
    truth = torch.tensor([[[0, 1], [2, 2]]])
    assert mean_dice(truth, truth, 3) == 1.0


def test_classifier_summary_gives_recall_per_non_standard_type():
    p_sp = torch.tensor([0.9, 0.8, 0.1, 0.7, 0.2, 0.3])
    plane = torch.tensor([1, 1, 0, 0, 0, 0])
    reason = np.array(["standard", "standard", "oblique", "oblique", "tilted", "blurred"])
    summary = classifier_summary(p_sp, plane, reason)
    assert summary["recall_standard"] == 1.0 and summary["recall_oblique"] == 0.5
    assert summary["recall_tilted"] == 1.0 and summary["recall_blurred"] == 1.0
    assert summary["balanced_accuracy"] == pytest.approx((1.0 + 3 / 4) / 2)


def test_ema_averages_the_weights_with_a_warm_up():
    from bundle.diffice.training import EMAHandler

    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    handler = EMAHandler(net, "unused.pt", decay=0.9, warmup=10.0)
    handler.ema.update_parameters(net)  # the first update copies
    with torch.no_grad():
        net.weight.fill_(1.0)
    handler.ema.update_parameters(net)  # n = 1: decay min(0.9, 2 / 11)
    expected = 1.0 - 2.0 / 11.0
    assert float(handler.ema.module.weight) == pytest.approx(expected)
    for _ in range(200):
        handler.ema.update_parameters(net)
    assert float(handler.ema.module.weight) == pytest.approx(1.0, abs=1e-6)
    state = handler.state_dict()
    other = EMAHandler(torch.nn.Linear(1, 1, bias=False), "unused.pt")
    other.load_state_dict(state)
    assert float(other.ema.module.weight) == pytest.approx(float(handler.ema.module.weight))


def test_ddpm_trains_only_the_steps_the_sampler_queries():
    from bundle.diffice.training import UnitRangeDiffusionBatch, queried_timesteps

    ddpm, sampler = {"num_train_timesteps": 1000, "timestep_factor": 1.2}, {"num_inference_steps": 50, "tau": 15}
    top = queried_timesteps(ddpm, sampler)
    assert top == round(1.2 * round(15 * 999 / 49))  # 1.2 x the original step of tau
    full = {"num_train_timesteps": 1000, "timestep_factor": None}
    assert queried_timesteps(full, {"num_inference_steps": 400, "tau": 120}) is None
    batch = UnitRangeDiffusionBatch(1000, top)
    steps = batch.get_timesteps(torch.zeros(4000, 1, 2, 2))
    assert int(steps.max()) <= top and int(steps.max()) > 0.9 * top and int(steps.min()) == 0
    assert int(UnitRangeDiffusionBatch(1000).get_timesteps(torch.zeros(4000, 1, 1, 1)).max()) > 900


def test_spatial_perceptual_distance_keeps_the_layout():
    from bundle.diffice.networks import FeatureNet, SpatialPerceptualDistance

    torch.manual_seed(0)
    distance = SpatialPerceptualDistance(FeatureNet(3, 5, 8))
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(distance(x, distance.reference(x)), torch.zeros(2), atol=1e-6)
    moved = torch.roll(x, shifts=8, dims=3)  # same content, other place: a pooled feature would barely see it
    assert (distance(moved, distance.reference(x)) > 0.05).all()


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


def test_split_holds_out_test_images_and_gives_guide_and_oracle_disjoint_halves():
    items = [{"site": s, "plane": int(i % 3 != 0), "case_id": f"{s}_{i}"} for s in range(3) for i in range(60)]
    split = split_items(items, 0.2, 0, 0.15)
    ids = {name: {i["case_id"] for i in part} for name, part in split.items()}
    assert len(ids["test"]) == 36 and not ids["test"] & ids["train"]
    halves = ("guide_train", "guide_val", "oracle_train", "oracle_val")
    assert set().union(*(ids[h] for h in halves)) == ids["train"]
    for a in halves:  # pairwise disjoint: the oracle never sees the guide's images
        for b in halves:
            assert a == b or not ids[a] & ids[b]
    assert abs(len(ids["guide_train"]) - len(ids["oracle_train"])) <= 6
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


def test_the_gpu_check_script_runs_diffice_and_the_cae_end_to_end_on_tiny_settings(tmp_path):
    """``.ci/gpu_check.sh`` with ``GPU_CHECK_TINY=1``: every Diff-ICE step and method, then a CAE paper-preset run."""
    import os
    import subprocess

    root = Path(CONFIG).parents[2]
    env = {**os.environ, "GPU_CHECK_TINY": "1"}
    result = subprocess.run(
        ["bash", ".ci/gpu_check.sh", str(tmp_path / "results")], cwd=root, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    run = tmp_path / "results" / "work" / "runs" / "diffice_gpu_quick"
    for name in ("segmentation", "guide_classifier", "oracle", "features", "evaluator", "ddpm"):
        assert torch.load(run / "models" / f"{name}.pt", weights_only=True)
    results = json.loads((run / "report" / "results.json").read_text())
    assert set(results["methods"]) == {"Diff-ICE", "unguided (lambda_c = 0)", "Diff-ICE_1 (grad x_t)", "DiME"}
    assert len(results["methods"]["Diff-ICE"]["iterations"]) == 2
    assert len(results["methods"]["DiME"]["iterations"]) == 1
    row = results["methods"]["Diff-ICE"]["iterations"][-1]
    for column in ("flip_ratio", "mad", "bkl", "fid", "fsd", "sonosim", "mqd", "pixel_change", "flip_ratio_oblique"):
        assert column in row
    assert 0.0 <= row["flip_ratio"] <= 1.0 and row["seconds_per_batch"] > 0
    assert results["methods"]["unguided (lambda_c = 0)"]["iterations"][-1]["reruns"] == 0  # nothing to search
    assert "recall_oblique" in results["guide"] and "recall_oblique" in results["oracle"]
    md = (run / "report" / "results.md").read_text()
    assert "| Diff-ICE | 1 |" in md and "Diff-ICE_1 (= Diff-ICE iteration 1)" in md and "FID" in md
    markers = sorted(p.name for p in (run / "steps").iterdir())
    assert markers == [f"{n}.json" for n in ("ddpm", "evaluator", "features", "guide", "oracle", "segmentation")]
    summary = json.loads((tmp_path / "results" / "gpu_check.json").read_text())
    assert summary["device"].startswith("CPU only") and set(summary["cae_held_out"]) == {"phase1", "phase2"}
    assert list(summary["seconds"]) == ["diffice gpu_quick (all steps)", "cae paper preset (few epochs)"]
    assert "| Diff-ICE | 2 |" in (tmp_path / "results" / "gpu_check.md").read_text()


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
    assert parser["ddpm"]["timestep_factor"] is None  # the paper preset trains every DDPM step
    assert parser["ddpm"]["ema_decay"] == 0.9999 and parser["guide"]["epochs"] == 100  # patched, the rest kept
    assert parser["validation_fraction"] == 0.15
    unet = parser.get_parsed_content("networks#ddpm")
    assert sum(p.numel() for p in unet.parameters()) > 1e6


def test_gpu_quick_preset_patches_the_cpu_preset():
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    root = Path(CONFIG).parent
    parser.read_config([str(root / "diffice.json"), str(root / "gpu_quick.json")])
    assert parser["image_size"] == [96, 128] and parser["preset"] == "gpu_quick"
    assert parser["counterfactual"]["tau"] == 30 and parser["counterfactual"]["lambdas"] == [40, 60, 80]
