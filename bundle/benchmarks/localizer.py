"""Benchmark suite ``localizer``: why the NT localiser is a centre heatmap and not MONAI's RetinaNet.

Side by side, in one process, on the same 128 px canvases with one NT box each: a training step
(forward, loss, backward, Adam) of the bundle's coarse localiser (:class:`~bundle.model.localizer.CentreHeatmapNet`
with CenterNet's focal loss, plain PyTorch) and of the ResNet-18 that MONAI's detection app
(``RetinaNetDetector``) would put under its feature pyramid and heads, the smallest backbone its
tutorials use: a lower bound of a RetinaNet step. The detection app itself imports torchvision,
which the bundle does not depend on (with the pinned CPU torch, the PyPI torchvision wheel fails to
load its operators); the first row says whether it is usable on the machine. Each step time is
projected onto the main job's budget: the seconds that 20 epochs of 256 training images take.
"""

from __future__ import annotations

import time

import torch
from bundle.benchmarks.common import result_row

EPOCH_IMAGES, EPOCHS = 256, 20  # the main job's coarse localiser: training images of two sites, its epochs


def _boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` NT-sized boxes (about 16 x 7 canvas pixels) at random places on a 128 px canvas."""
    centre = 24 + 80 * torch.rand(n, 2, generator=generator)
    half = torch.tensor([8.0, 3.5]) * (0.8 + 0.4 * torch.rand(n, 2, generator=generator))
    return torch.cat([centre - half, centre + half], dim=1)


def _heatmap_step(images: torch.Tensor, boxes: torch.Tensor):
    from bundle.model.localizer import CentreHeatmapNet
    from bundle.training.localizer import coarse_loss, heatmap_targets

    network = CentreHeatmapNet()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    targets = heatmap_targets([b.tolist() for b in boxes], images.shape[-1])

    def step() -> None:
        loss = coarse_loss(network(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, sum(p.numel() for p in network.parameters())


def _retinanet_backbone_step(images: torch.Tensor, boxes: torch.Tensor):
    """A training step of the ResNet-18 that MONAI's RetinaNet builds on (MONAI's own ResNet, no torchvision).

    A lower bound of a RetinaNet step: its feature pyramid, classification and box heads and the anchor
    matching come on top (and ``monai.apps.detection`` imports them from torchvision).
    """
    from monai.networks.nets import resnet

    network = resnet.ResNet(
        block=resnet.ResNetBlock,
        layers=[2, 2, 2, 2],
        block_inplanes=resnet.get_inplanes(),
        n_input_channels=1,
        conv1_t_stride=2,
        conv1_t_size=7,
        spatial_dims=2,
        feed_forward=False,
    )
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)

    def step() -> None:
        loss = network(images).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, sum(p.numel() for p in network.parameters())


def detection_app_available() -> bool:
    """Whether ``monai.apps.detection`` can build a RetinaNet here (it needs a working torchvision)."""
    import importlib

    try:
        importlib.import_module("torchvision.ops")
    except Exception:  # absent, or a CUDA build whose operators fail to load beside the CPU torch
        return False
    return True


def benchmark_localizer(quick: bool = False) -> list[dict]:
    """Training-step time per image of the heatmap localiser and of MONAI's RetinaNet, and the projected budget.

    Args:
        quick: fewer, smaller batches (seconds) instead of the full measurement.

    Returns:
        result rows.
    """
    generator = torch.Generator().manual_seed(0)
    batch, repeats = (4, 1) if quick else (32, 5)
    images = torch.rand(batch, 1, 128, 128, generator=generator)
    boxes = _boxes(batch, generator)
    builds = (
        ("centre heatmap (bundle, plain PyTorch)", _heatmap_step),
        ("ResNet-18 backbone of MONAI's RetinaNet (lower bound)", _retinanet_backbone_step),
    )
    rows = [
        result_row("monai.apps.detection usable here (needs torchvision)", float(detection_app_available()), "yes=1")
    ]
    for label, build in builds:
        step, parameters = build(images, boxes)
        step()  # warm-up: allocations, lazy initialisation
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        per_image_ms = 1000.0 * (time.perf_counter() - start) / (repeats * batch)
        budget = per_image_ms * EPOCH_IMAGES * EPOCHS / 1000.0
        rows.append(
            result_row(
                f"localiser training step, {label}, {parameters / 1e6:.2f} M parameters", per_image_ms, "ms/image"
            )
        )
        rows.append(result_row(f"projected {EPOCHS} epochs x {EPOCH_IMAGES} images, {label}", budget, "s"))
    return rows
