"""Diff-ICE networks: segmentation guide, SonoNet-16, the guided classifier, oracle, feature nets, DDPM UNet.

The guiding classifier is ``f(x) = l(s(x), x)`` (SPEC 7): a MONAI ``UNet`` ``s`` segments the
structures, and SonoNet-16 ``l`` classifies ``concat(x, softmax(s(x)))`` as non-standard (0) or
standard (1) plane. The oracle that scores counterfactuals (MQD, and the features of FSD and
SonoSim) is a different architecture (MONAI ResNet-10) trained on its own seed and on the other half
of the training images, so the guide cannot simply fool its own judge. Both classifiers see each
image standardised (:class:`Standardize`), so a site's gain does not decide the plane. The
proximity term is a spatial perceptual distance (:class:`SpatialPerceptualDistance`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from bundle.utils.checkpoints import read_checkpoint
from monai.networks.nets import UNet, resnet10, resnet50
from torch import nn

__all__ = [
    "SonoNet16",
    "GuidedClassifier",
    "segmentation_net",
    "oracle_net",
    "FeatureNet",
    "ResNet50Features",
    "Standardize",
    "SpatialPerceptualDistance",
    "oracle_features",
    "diffusion_unet",
    "freeze",
]


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SonoNet16(nn.Module):
    """SonoNet-16 (Baumgartner et al., 2017) with its adaption head.

    13 conv3x3+BN+ReLU in stages of 16,16 | 32,32 | 64x3 | 128x3 | 128x3 with four max-pools, then
    conv1x1 -> BN -> ReLU -> conv1x1 -> BN -> global average pooling gives the logits.

    Args:
        in_channels: image channels plus segmentation channels.
        num_classes: output classes.
        width: channels of the first stage (16 in SonoNet-16); the others scale with it.
    """

    STAGES = ((1, 2), (2, 2), (4, 3), (8, 3), (8, 3))  # (width multiple, convolutions)

    def __init__(self, in_channels: int, num_classes: int = 2, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for stage, (multiple, count) in enumerate(self.STAGES):
            if stage:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            for _ in range(count):
                layers += _conv_bn_relu(cin, width * multiple)
                cin = width * multiple
        self.features = nn.Sequential(*layers)
        hidden = max(cin // 2, num_classes)
        self.adaption = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, num_classes, 1, bias=False),
            nn.BatchNorm2d(num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes)."""
        return self.adaption(self.features(x)).mean(dim=(2, 3))


def standardize(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each image (B, C, H, W) shifted to mean 0 and scaled to standard deviation 1 (``std + eps``)."""
    return (x - x.mean(dim=(1, 2, 3), keepdim=True)) / (x.std(dim=(1, 2, 3), keepdim=True) + eps)


class Standardize(nn.Module):
    """Per-image standardisation in front of a network: ``net((x - mean(x)) / std(x))``.

    Part of the network (not of the data pipeline) so that guidance gradients pass through it.

    Args:
        network: the wrapped network.
        eps: added to the standard deviation.
    """

    def __init__(self, network: nn.Module, eps: float = 1e-5) -> None:
        super().__init__()
        self.network = network
        self.eps = eps

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / (std + eps)`` per image."""
        return standardize(x, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped network on the standardised images."""
        return self.network(self.standardize(x))


def segmentation_net(num_classes: int, channels: Sequence[int] = (16, 32, 64, 128)) -> Standardize:
    """The structure segmentation net ``s``: a 2-D MONAI ``UNet`` (1 channel in, logits out), standardised input."""
    channels = tuple(int(c) for c in channels)
    return Standardize(
        UNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=num_classes,
            channels=channels,
            strides=(2,) * (len(channels) - 1),
            num_res_units=1,
            norm="batch",
        )
    )


def freeze(network: nn.Module) -> nn.Module:
    """Evaluation mode, no parameter gradients (gradients still flow to the input)."""
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    return network


class GuidedClassifier(nn.Module):
    """``f(x) = l(concat(x, softmax(s(x))))`` for images in [0, 1].

    Args:
        segmenter: the structure segmentation net ``s`` (frozen here).
        classifier: SonoNet-16 ``l`` with ``1 + num_classes`` input channels.
        freeze_segmenter: freeze ``s`` (it is trained first, then kept fixed).
    """

    def __init__(self, segmenter: nn.Module, classifier: nn.Module, freeze_segmenter: bool = True) -> None:
        super().__init__()
        self.segmenter = freeze(segmenter) if freeze_segmenter else segmenter
        self.classifier = classifier

    def train(self, mode: bool = True) -> GuidedClassifier:
        """Train ``l`` only; a frozen ``s`` stays in evaluation mode."""
        super().train(mode)
        if not any(p.requires_grad for p in self.segmenter.parameters()):
            self.segmenter.eval()
        return self

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        """Structure probabilities ``softmax(s(x))`` (B, K, H, W)."""
        return torch.softmax(self.segmenter(x), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, 2): non-standard, standard."""
        return self.classifier(torch.cat([standardize(x), self.segment(x)], dim=1))


def oracle_net(num_classes: int = 2) -> nn.Module:
    """The independent oracle: a 2-D MONAI ResNet-10 on the standardised image alone."""
    return Standardize(resnet10(spatial_dims=2, n_input_channels=1, num_classes=num_classes))


def oracle_features(oracle: Standardize, x: torch.Tensor) -> torch.Tensor:
    """The oracle's pooled features (B, 512) before its last layer: the FSD and SonoSim features."""
    net = oracle.network
    h = net.act(net.bn1(net.conv1(oracle.standardize(x))))
    h = h if net.no_max_pool else net.maxpool(h)
    h = net.layer4(net.layer3(net.layer2(net.layer1(h))))
    return net.avgpool(h).flatten(1)


class FeatureNet(nn.Module):
    """The locally trained perceptual extractor ``psi`` (and the FID-like feature network).

    Four conv stages (conv-BN-ReLU x2, max-pool) and global average pooling give ``features``;
    training heads predict the site and the structure-area fractions, so the features describe
    appearance and anatomy, not the plane label that counterfactuals change.

    Args:
        num_sites: site classes of the training head.
        num_structures: structure fractions regressed by the training head.
        width: channels of the first stage.
    """

    def __init__(self, num_sites: int, num_structures: int, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for stage in range(4):
            cout = width * 2**stage
            layers += [*_conv_bn_relu(cin, cout), *_conv_bn_relu(cout, cout), nn.MaxPool2d(2, ceil_mode=True)]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.num_features = cin
        self.site_head = nn.Linear(cin, num_sites)
        self.structure_head = nn.Linear(cin, num_structures)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of each stage (before its pooling) for images in [0, 1]: the proximity features."""
        maps = []
        for layer in self.body:
            if isinstance(layer, nn.MaxPool2d):
                maps.append(x)
            x = layer(x)
        return maps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, num_features) of images in [0, 1]."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training output: site logits then structure fractions, concatenated (B, S + K)."""
        f = self.features(x)
        return torch.cat([self.site_head(f), self.structure_head(f)], dim=1)


class ResNet50Features(nn.Module):
    """A user-supplied ResNet-50 (e.g. RadImageNet weights) as ``psi``: pooled 2,048-D features.

    Args:
        weights_path: a ``state_dict`` saved with ``torch.save`` (read with ``weights_only=True``),
            torchvision/MONAI key names (``conv1``, ``bn1``, ``layer1`` ... ; ``fc`` is ignored).
    """

    def __init__(self, weights_path: str | os.PathLike) -> None:
        super().__init__()
        self.net = resnet50(spatial_dims=2, n_input_channels=3, feed_forward=False)
        state = read_checkpoint(weights_path, "ResNet-50 weights file")
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        state = {k.removeprefix("module."): v for k, v in state.items() if not k.startswith(("fc.", "module.fc."))}
        try:
            missing, unexpected = self.net.load_state_dict(state, strict=False)
            problem = f"missing {missing[:3]}, unexpected {unexpected[:3]}" if missing or unexpected else ""
        except RuntimeError as error:  # shape mismatches
            problem = str(error).splitlines()[-1].strip()
        if problem:
            raise ValueError(
                f"{weights_path}: not ResNet-50 weights with torchvision/MONAI key names ({problem}); "
                "save model.state_dict() of a 2-D ResNet-50 with 3 input channels"
            )
        freeze(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, 2048) of grey images in [0, 1] (repeated to 3 channels)."""
        return self.net(x.expand(-1, 3, -1, -1))

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of ``layer1`` .. ``layer4`` for grey images in [0, 1]: the proximity features."""
        net = self.net
        h = net.act(net.bn1(net.conv1(x.expand(-1, 3, -1, -1))))
        h = h if net.no_max_pool else net.maxpool(h)
        maps = []
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            h = layer(h)
            maps.append(h)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`features`."""
        return self.features(x)


class SpatialPerceptualDistance(nn.Module):
    """LPIPS-style distance on a frozen network: the proximity term ``L_p`` of Diff-ICE.

    ``d(x, y) = sum_l mean_hw || n(f_l(x)) - n(f_l(y)) ||^2`` where ``f_l`` are the network's feature
    maps and ``n`` normalises each position's channel vector to unit length (MONAI
    ``PerceptualLoss``'s ``normalize_tensor`` / ``spatial_average`` formula, without learned layer
    weights). Keeping the spatial layout (no global pooling) is what protects the parts of the image
    the explanation should not touch; the normalisation makes each layer's term lie in [0, 4]
    whatever the network's feature scale, so one ``lambda_p`` fits any extractor.

    Args:
        network: a frozen module with ``feature_maps(x) -> list of (B, C_l, H_l, W_l)`` for [0, 1] images.
        eps: inside the square root of the normalisation (finite gradients at identical features).
    """

    def __init__(self, network: nn.Module, eps: float = 1e-10) -> None:
        super().__init__()
        self.network = freeze(network)
        self.eps = eps

    def _normalized(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [f / torch.sqrt(f.pow(2).sum(dim=1, keepdim=True) + self.eps) for f in self.network.feature_maps(x)]

    def reference(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The normalised feature maps of the originals, computed once per pass."""
        return [f.detach() for f in self._normalized(x)]

    def forward(self, x: torch.Tensor, reference: list[torch.Tensor]) -> torch.Tensor:
        """Distance of each image in ``x`` to its reference (B,)."""
        pairs = zip(self._normalized(x), reference, strict=True)
        terms = [(f - r).pow(2).sum(dim=1).mean(dim=(1, 2)) for f, r in pairs]
        return torch.stack(terms).sum(0)


def diffusion_unet(
    channels: Sequence[int] = (32, 64, 64),
    attention_levels: Sequence[bool] = (False, False, True),
    num_res_blocks: int = 1,
    num_head_channels: int = 32,
    norm_num_groups: int = 16,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The unconditional eps-prediction UNet: MONAI ``DiffusionModelUNet`` for 1-channel images, on ``device``."""
    from monai.networks.nets import DiffusionModelUNet

    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=tuple(channels),
        attention_levels=tuple(attention_levels),
        num_res_blocks=num_res_blocks,
        num_head_channels=num_head_channels,
        norm_num_groups=norm_num_groups,
    ).to(device)
