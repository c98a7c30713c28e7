"""The ROI-aware CAE (SPEC 3)."""

from __future__ import annotations

import pytest
import torch
from bundle.model.network import ROIAwareCAE


@pytest.mark.parametrize(
    ("canvas", "widths"), [(128, (16, 32, 64, 128, 128)), (256, (32, 64, 128, 256, 256)), (64, (8, 16, 16, 32, 32))]
)
def test_forward_returns_one_reconstruction_in_unit_range(canvas, widths):
    net = ROIAwareCAE(canvas, widths=widths).eval()
    x = torch.rand(2, 1, canvas, canvas)
    out = net(x)
    assert isinstance(out, torch.Tensor) and out.shape == x.shape
    assert 0 <= out.min() and out.max() <= 1


def test_encode_gives_a_128_d_latent_and_decode_inverts_the_path():
    net = ROIAwareCAE(128, widths=(16, 32, 64, 128, 128)).eval()
    x = torch.rand(3, 1, 128, 128)
    z = net.encode(x)
    assert z.shape == (3, 128)
    assert torch.allclose(net.decode(z), net(x))


def test_encoder_ends_in_global_average_pooling_and_a_linear_head():
    net = ROIAwareCAE(128, widths=(16, 32, 64, 128, 128))
    assert isinstance(net.encoder.pool, torch.nn.AdaptiveAvgPool2d)
    assert isinstance(net.encoder.head, torch.nn.Linear) and net.encoder.head.out_features == 128


def test_canvas_must_be_divisible_by_the_downsampling():
    with pytest.raises(ValueError, match="divisible"):
        ROIAwareCAE(100, widths=(16, 32, 64, 128, 128))


def test_monai_verify_net_in_out_accepts_the_network():
    from monai.bundle import ConfigParser

    net = ConfigParser(
        {"net": {"_target_": "bundle.model.network.ROIAwareCAE", "canvas_size": 64, "widths": [8, 16, 16, 32, 32]}}
    ).get_parsed_content("net")
    assert net(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_default_architecture_is_the_main_jobs():
    """Inference reads the architecture without train.json; its defaults must stay train.json's."""
    import json

    from bundle.model.architecture import DEFAULT_ARCHITECTURE
    from bundle.utils.paths import TRAIN_CONFIG

    config = json.loads(TRAIN_CONFIG.read_text())
    assert {key: config[key] for key in DEFAULT_ARCHITECTURE} == DEFAULT_ARCHITECTURE
