"""Dual-view ROI-aware CAE (issue 15): view mosaic, shapes, losses on the right view, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bundle.model.batches import ROIBatch
from bundle.model.losses import MSSSIMLoss, ROICompositeLoss, ROIL1Loss
from bundle.model.metrics import split_views
from bundle.model.network import DualViewCAE, DualViewEncoder, ROIAwareCAE, build_autoencoder, build_encoder
from bundle.model.views import ViewLayout

WIDTHS, ROI_WIDTHS = (8, 16, 16, 32, 32), (8, 16, 16, 32)


def small_net() -> DualViewCAE:
    return DualViewCAE(canvas_size=64, roi_canvas_size=32, widths=WIDTHS, roi_widths=ROI_WIDTHS).eval()


def test_layout_packs_and_splits_both_views():
    layout = ViewLayout(64, 32)
    canvas, view = torch.rand(2, 1, 64, 64), torch.rand(2, 1, 32, 32)
    packed = layout.pack(canvas, view)
    assert packed.shape == (2, 1, 64, 96) and layout.spatial_shape == (64, 96)
    views = layout.split(packed)
    assert torch.equal(views["global"], canvas) and torch.equal(views["roi"], view)
    assert float(packed[..., 32:, 64:].abs().max()) == 0.0  # below the zoom view: zeros
    assert set(split_views(packed)) == {"global", "roi"} and set(split_views(canvas)) == {"global"}


def test_layout_refuses_a_zoom_view_larger_than_the_canvas():
    with pytest.raises(ValueError, match="roi_canvas_size"):
        ViewLayout(64, 128)


def test_dual_view_network_reads_and_writes_one_mosaic_with_one_latent():
    net = small_net()
    x = torch.rand(3, 1, 64, 96)
    with torch.no_grad():
        out = net(x)
    assert out.shape == x.shape
    assert net.encode(x).shape == (3, 128)
    assert float(out[..., 32:, 64:].abs().max()) == 0.0
    with torch.no_grad():
        assert torch.allclose(net.decode(net.encode(x)), out)
    assert net.layout.roi_canvas_size == 32


def test_the_latent_depends_on_both_views():
    net = small_net()
    x = torch.rand(1, 1, 64, 96)
    changed_view, changed_canvas = x.clone(), x.clone()
    changed_view[..., :32, 64:] = torch.rand(1, 1, 32, 32)
    changed_canvas[..., :, :64] = torch.rand(1, 1, 64, 64)
    z = net.encode(x)
    assert not torch.allclose(z, net.encode(changed_view))
    assert not torch.allclose(z, net.encode(changed_canvas))


def test_builders_select_the_model_and_refuse_unknown_names():
    assert isinstance(build_autoencoder("paper", canvas_size=64, widths=WIDTHS), ROIAwareCAE)
    assert isinstance(build_autoencoder("dual_view", 64, 32, WIDTHS, ROI_WIDTHS), DualViewCAE)
    assert isinstance(build_encoder("dual_view", widths=WIDTHS, roi_widths=ROI_WIDTHS), DualViewEncoder)
    with pytest.raises(ValueError, match="model must be one of"):
        build_autoencoder("unet")


def test_prepare_batch_packs_image_and_masks_for_the_dual_view_model():
    batch = {
        "image": torch.rand(2, 1, 64, 64),
        "roi_mask": torch.zeros(2, 1, 64, 64),
        "roi_view": torch.rand(2, 1, 32, 32),
        "roi_view_mask": torch.ones(2, 1, 32, 32),
    }
    inputs, target = ROIBatch(dual_view=True)(batch)
    assert inputs.shape == (2, 1, 64, 96) and target.shape == (2, 2, 64, 96)
    assert torch.equal(split_views(target)["roi"][:, 1:], batch["roi_view_mask"])
    single, single_target = ROIBatch()(batch)
    assert single.shape == (2, 1, 64, 64) and single_target.shape == (2, 2, 64, 64)


def test_roi_terms_act_on_the_zoom_view_and_the_global_term_on_both():
    layout = ViewLayout(64, 32)
    image = layout.pack(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 32, 32))
    masks = layout.pack(torch.ones(1, 1, 64, 64), torch.ones(1, 1, 32, 32))
    target = torch.cat([image, masks], 1)
    pred_canvas_wrong = image.clone()
    pred_canvas_wrong[..., :, :64] = 0.0
    assert float(ROIL1Loss()(pred_canvas_wrong, target)) == pytest.approx(0.0)  # the zoom view is exact
    assert float(MSSSIMLoss()(pred_canvas_wrong, target)) > 0.1  # the canvas term sees the error
    loss = ROICompositeLoss("equal")
    assert set(loss.term_values(pred_canvas_wrong, target)) == {"global", "l1", "edge"}


def test_dual_view_torchscript_and_onnx_encoders_match_eager(tmp_path):
    from bundle.deploy.export import encoder_inputs, export_onnx, max_latent_difference

    encoder = build_encoder("dual_view", widths=WIDTHS, roi_widths=ROI_WIDTHS).eval()
    scripted = torch.jit.script(encoder)
    inputs = encoder_inputs(64, 32, n=3, seed=1)
    with torch.no_grad():
        assert np.abs(scripted(*inputs.values()).numpy() - encoder(*inputs.values()).numpy()).max() <= 1e-5
    path = export_onnx(encoder, tmp_path / "encoder.onnx", 64, {"name": "test"}, roi_canvas_size=32)
    assert max_latent_difference(encoder, path, 64, roi_canvas_size=32) <= 1e-5
