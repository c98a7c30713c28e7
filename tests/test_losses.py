"""Losses and metrics against hand-computed values (SPEC 4, 5)."""

from __future__ import annotations

import math

import pytest
import torch
from bundle.model.losses import MSSSIMLoss, ROICompositeLoss, ROIEdgeLoss, ROIL1Loss
from bundle.model.metrics import ms_ssim, ms_ssim_scales, psnr, roi_edge_error, roi_mae, sobel_magnitude, ssim
from monai.metrics import MultiScaleSSIMMetric, SSIMMetric


def _target(image, mask):
    return torch.cat([image, mask], dim=1)


def test_ssim_and_ms_ssim_agree_with_monai():
    torch.manual_seed(0)
    a = torch.rand(3, 1, 128, 128)
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    assert torch.allclose(ssim(a, b), SSIMMetric(2, 1.0)(a, b).flatten(), atol=1e-5)
    weights = torch.tensor([0.0448, 0.2856, 0.3001, 0.2363])
    expected = MultiScaleSSIMMetric(2, 1.0, weights=tuple((weights / weights.sum()).tolist()))(a, b).flatten()
    assert torch.allclose(ms_ssim(a, b), expected, atol=1e-5)


def test_ms_ssim_scales_follow_the_canvas():
    assert ms_ssim_scales(256) == 5 and ms_ssim_scales(128) == 4 and ms_ssim_scales(64) == 3


def test_ms_ssim_loss_is_zero_for_a_perfect_reconstruction():
    image = torch.rand(2, 1, 128, 128)
    assert MSSSIMLoss()(image, _target(image, torch.ones_like(image))).item() == pytest.approx(0, abs=1e-5)


def test_psnr_by_hand():
    x = torch.zeros(1, 1, 10, 10)
    y = torch.full_like(x, 0.1)  # MSE 0.01 -> 20 dB
    assert psnr(x, y).item() == pytest.approx(20.0)


def test_roi_l1_only_counts_the_roi():
    image = torch.zeros(1, 1, 8, 8)
    pred = torch.zeros_like(image)
    pred[..., :4, :] = 0.5  # error 0.5 in the top half
    pred[..., 4:, :] = 1.0  # error 1.0 in the bottom half (outside the ROI)
    mask = torch.zeros_like(image)
    mask[..., :4, 2:6] = 1
    assert roi_mae(pred, image, mask).item() == pytest.approx(0.5)
    assert ROIL1Loss()(pred, _target(image, mask)).item() == pytest.approx(0.5)


def test_sobel_of_a_unit_step_is_four_at_the_edge_and_zero_in_flat_areas():
    image = torch.zeros(1, 1, 6, 6)
    image[..., 3:] = 1.0
    g = sobel_magnitude(image)[0, 0]
    assert g[2, 2].item() == pytest.approx(4.0, abs=1e-5) and g[2, 3].item() == pytest.approx(4.0, abs=1e-5)
    assert g[2, 0].item() == pytest.approx(0.0, abs=1e-5) and g[2, 5].item() == pytest.approx(0.0, abs=1e-5)


def test_roi_edge_error_by_hand():
    # Reference: a step with Sobel magnitude 4 on two columns of the ROI, 0 elsewhere; prediction flat.
    image = torch.zeros(1, 1, 6, 6)
    image[..., 3:] = 1.0
    pred = torch.zeros_like(image)
    mask = torch.zeros_like(image)
    mask[..., 1:5, 1:5] = 1  # 16 pixels, 8 of them on the edge columns 2 and 3
    # |G(pred)/m - G(y)/m| = 1 on the 8 edge pixels (m = 4), 0 elsewhere -> mean 0.5.
    assert roi_edge_error(pred, image, mask).item() == pytest.approx(0.5, abs=1e-4)
    assert ROIEdgeLoss()(pred, _target(image, mask)).item() == pytest.approx(0.5, abs=1e-4)
    assert roi_edge_error(image, image, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_composite_loss_weights_the_terms_and_travels_in_the_state_dict():
    torch.manual_seed(1)
    image, pred = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 64, 64)
    mask = torch.zeros_like(image)
    mask[..., 20:40, 10:50] = 1
    target = _target(image, mask)
    loss = ROICompositeLoss("calibrated")
    terms = {k: v.mean().item() for k, v in loss.term_values(pred, target).items()}
    assert loss(pred, target).item() == pytest.approx(sum(terms.values()), rel=1e-5)
    loss.set_weights({"global": 2.0, "l1": 0.5, "edge": 3.0})
    assert loss.is_calibrated
    assert loss(pred, target).item() == pytest.approx(
        2 * terms["global"] + 0.5 * terms["l1"] + 3 * terms["edge"], rel=1e-5
    )
    restored = ROICompositeLoss("calibrated")
    restored.load_state_dict(loss.state_dict())
    assert restored.is_calibrated and restored.weight_dict() == pytest.approx({"global": 2.0, "l1": 0.5, "edge": 3.0})


def test_uncertainty_weighting_learns_log_variances():
    loss = ROICompositeLoss("uncertainty")
    assert len(list(loss.parameters())) == 1
    image, pred = torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64)
    target = _target(image, torch.ones_like(image))
    with torch.no_grad():
        loss.log_variances.fill_(math.log(2.0))
    terms = {k: v.mean().item() for k, v in loss.term_values(pred, target).items()}
    expected = sum(0.5 * v + math.log(2.0) for v in terms.values())
    assert loss(pred, target).item() == pytest.approx(expected, rel=1e-5)


def test_unknown_weighting_is_refused():
    with pytest.raises(ValueError, match="unknown weighting"):
        ROICompositeLoss("magic")
