"""Gradient calibration of the phase-2 loss weights (SPEC 4)."""

from __future__ import annotations

import pytest
import torch
from bundle.model.calibration import calibrate_loss_weights
from bundle.model.losses import ROICompositeLoss
from bundle.model.network import ROIAwareCAE
from bundle.training.calibration import GradientCalibrationHandler
from ignite.engine import Engine


def test_weights_equalise_known_gradient_ratios():
    # L_k = c_k * (theta . v): |dL_k/dtheta| = |c_k| |v|, so w_k = mean(c) / c_k.
    theta = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    v = torch.tensor([3.0, 4.0, 0.0])
    scales = {"a": 2.0, "b": 0.5, "c": 1.0}

    def term_losses(_batch):
        return {name: c * (theta * v).sum() for name, c in scales.items()}

    weights, norms = calibrate_loss_weights(term_losses, [theta], batches=range(5))
    assert norms == pytest.approx({"a": 10.0, "b": 2.5, "c": 5.0})
    mean_c = sum(scales.values()) / 3
    assert weights == pytest.approx({name: mean_c / c for name, c in scales.items()})
    # After weighting, every term has the same gradient norm.
    assert {name: weights[name] * norms[name] for name in norms} == pytest.approx(dict.fromkeys(norms, 17.5 / 3))


def test_no_batches_or_no_parameters_is_an_error():
    theta = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="at least one batch"):
        calibrate_loss_weights(lambda b: {"a": theta.sum()}, [theta], batches=[])
    with pytest.raises(ValueError, match="trainable parameters"):
        calibrate_loss_weights(lambda b: {"a": theta.sum()}, [theta.detach()], batches=[0])


def _loader(n_batches=3):
    torch.manual_seed(0)
    batches = []
    for _ in range(n_batches):
        image = torch.rand(2, 1, 64, 64)
        mask = torch.zeros_like(image)
        mask[..., 20:30, 10:40] = 1
        batches.append({"image": image, "roi_mask": mask})
    return batches


def test_handler_calibrates_once_and_leaves_weights_and_bn_alone_otherwise(tmp_path):
    net = ROIAwareCAE(64, widths=(8, 16, 16, 32, 32))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loss = ROICompositeLoss("calibrated")
    engine = Engine(lambda e, b: None)
    engine.network = net
    engine.state.device = "cpu"
    handler = GradientCalibrationHandler(loss, _loader(), num_batches=2, output_file=tmp_path / "w.json")
    handler(engine)
    assert loss.is_calibrated and (tmp_path / "w.json").exists()
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # no update, BN restored
    weights = loss.weight_dict()
    assert min(weights.values()) > 0 and weights != {"global": 1.0, "l1": 1.0, "edge": 1.0}
    loss.weights.fill_(7.0)  # a resumed run keeps its (restored) weights
    handler(engine)
    assert loss.weight_dict() == {"global": 7.0, "l1": 7.0, "edge": 7.0}


def test_equal_weighting_is_never_calibrated():
    loss = ROICompositeLoss("equal")
    engine = Engine(lambda e, b: None)
    engine.network = ROIAwareCAE(64, widths=(8, 16, 16, 32, 32))
    engine.state.device = "cpu"
    GradientCalibrationHandler(loss, _loader(), num_batches=1)(engine)
    assert not loss.is_calibrated and loss.weight_dict() == {"global": 1.0, "l1": 1.0, "edge": 1.0}
