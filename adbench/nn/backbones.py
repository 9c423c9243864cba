"""Frozen ImageNet backbones as multi-layer feature extractors (paper §3.2; architecture §8).

PatchCore, PaDiM and the perceptual score all read VGG16 feature maps of the last three
convolutional blocks. This module builds those backbones once, from weights resolved by
:mod:`adbench.nn.weights`, and maps adbench's grayscale slices to the input they expect.

Block naming (VGG16): block *j* is the output of the ReLU after the last convolution of block
*j*, i.e. ``torchvision.models.vgg16().features`` slices [0,4) [4,9) [9,16) [16,23) [23,30);
strides 1, 2, 4, 8, 16 and channels 64, 128, 256, 512, 512. At 160x128, blocks 3-5 are
40x32, 20x16 and 10x8. ResNets expose ``layer1`` … ``layer4`` (strides 4, 8, 16, 32).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from adbench.nn.weights import BACKBONES, resolve_backbone

__all__ = ["FeatureExtractor", "GrayToRGB", "VGG16Trunk", "ResNetTrunk", "LAYERS", "CHANNELS",
           "STRIDES", "VGG16_BLOCK_ENDS", "check_slices"]

#: End index (exclusive) in ``vgg16().features`` of blocks 1..5 (after their last ReLU).
VGG16_BLOCK_ENDS = (4, 9, 16, 23, 30)

LAYERS: dict[str, tuple[str, ...]] = {
    "vgg16": ("block1", "block2", "block3", "block4", "block5"),
    "resnet18": ("layer1", "layer2", "layer3", "layer4"),
    "wide_resnet50_2": ("layer1", "layer2", "layer3", "layer4"),
}
CHANNELS: dict[str, tuple[int, ...]] = {
    "vgg16": (64, 128, 256, 512, 512),
    "resnet18": (64, 128, 256, 512),
    "wide_resnet50_2": (256, 512, 1024, 2048),
}
STRIDES: dict[str, tuple[int, ...]] = {
    "vgg16": (1, 2, 4, 8, 16),
    "resnet18": (4, 8, 16, 32),
    "wide_resnet50_2": (4, 8, 16, 32),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_slices(x: torch.Tensor, name: str = "x") -> None:
    """Raise ValueError unless ``x`` is (B, 1, H, W) floating point."""
    if x.ndim != 4 or x.shape[1] != 1 or not x.is_floating_point():
        raise ValueError(f"{name}: expected grayscale slices (B, 1, H, W) float in [-1, 1], got "
                         f"shape {tuple(x.shape)} dtype {x.dtype}")


class GrayToRGB(nn.Module):
    """(B, 1, H, W) grayscale → (B, 3, H, W) normalised RGB, as one fused ``a * x + b``.

    With ``a_c = 1 / s_c`` and ``b_c = -m_c / s_c`` for a normalisation ``(x - m) / s``
    applied to ``x`` in [-1, 1]. :meth:`imagenet` folds [-1,1] → [0,1] into torchvision's
    ImageNet mean/std; :meth:`lpips` is LPIPS v0.1's ``ScalingLayer`` (shift/scale on [-1,1]),
    which is the same map: shift = 2·mean − 1, scale = 2·std.
    """

    def __init__(self, shift: tuple[float, ...], scale: tuple[float, ...]):
        super().__init__()
        m = torch.tensor(shift, dtype=torch.float32).view(1, 3, 1, 1)
        s = torch.tensor(scale, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("a", 1.0 / s, persistent=False)
        self.register_buffer("b", -m / s, persistent=False)

    @classmethod
    def imagenet(cls) -> "GrayToRGB":
        return cls(tuple(2 * m - 1 for m in IMAGENET_MEAN), tuple(2 * s for s in IMAGENET_STD))

    @classmethod
    def lpips(cls) -> "GrayToRGB":
        # lpips.pretrained ScalingLayer constants, used verbatim: its heads were fit with them.
        return cls((-0.030, -0.088, -0.188), (0.458, 0.448, 0.450))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.b, x, self.a)  # broadcasts the single channel to three


class VGG16Trunk(nn.Module):
    """``vgg16().features`` cut after the deepest requested block; returns the block outputs.

    forward: (B, 3, H, W) normalised RGB → list of (B, C_j, H / 2^(j-1), W / 2^(j-1)) in the
    order of ``blocks``.
    """

    def __init__(self, state_dict: dict[str, torch.Tensor], blocks: tuple[int, ...]):
        super().__init__()
        blocks = tuple(int(b) for b in blocks)
        if not blocks or len(set(blocks)) != len(blocks) or not set(blocks) <= {1, 2, 3, 4, 5}:
            raise ValueError(f"VGG16 blocks: got {blocks}; expected distinct values in 1..5")
        self.blocks = blocks
        deepest = max(blocks)
        with torch.device("meta"):  # structure only; weights are assigned below
            full = torchvision.models.vgg16().features
        starts = (0,) + VGG16_BLOCK_ENDS[:-1]
        # Sequential slicing keeps the original indices, so keys match the state dict.
        self.slices = nn.ModuleList(full[s:e] for s, e in zip(starts[:deepest],
                                                                VGG16_BLOCK_ENDS[:deepest]))
        for sl in self.slices:
            sl.load_state_dict({k: state_dict[k] for k in sl.state_dict()}, assign=True)
        self._keep = tuple(j in blocks for j in range(1, deepest + 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        for j, (sl, keep) in enumerate(zip(self.slices, self._keep), start=1):
            x = sl(x)
            if keep:
                out[j] = x
        return [out[b] for b in self.blocks]


class ResNetTrunk(nn.Module):
    """torchvision ResNet stem + ``layer1`` … ``layerK`` (eval-mode BatchNorm).

    forward: (B, 3, H, W) → list of the requested layers' outputs, in the order of ``layers``.
    """

    def __init__(self, backbone: str, state_dict: dict[str, torch.Tensor],
                 layers: tuple[str, ...]):
        super().__init__()
        self.layers = tuple(layers)
        self.depth = max(int(n[-1]) for n in self.layers)
        with torch.device("meta"):  # structure only; weights are assigned below
            model = getattr(torchvision.models, backbone)()
        # Same attribute names as torchvision, so the state dict's keys apply unchanged.
        self.conv1, self.bn1, self.relu, self.maxpool = (model.conv1, model.bn1, model.relu,
                                                         model.maxpool)
        for i in range(1, self.depth + 1):
            setattr(self, f"layer{i}", getattr(model, f"layer{i}"))
        self.load_state_dict({k: state_dict[k] for k in self.state_dict()}, assign=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out: dict[str, torch.Tensor] = {}
        for i in range(1, self.depth + 1):
            x = getattr(self, f"layer{i}")(x)
            out[f"layer{i}"] = x
        return [out[n] for n in self.layers]


class FeatureExtractor(nn.Module):
    """Frozen backbone returning named feature maps of grayscale slices.

    backbone  "vgg16" (default), "resnet18" or "wide_resnet50_2".
    layers    VGG16: "block1" … "block5" (default blocks 3-5, as paper §3.2);
              ResNets: "layer1" … "layer4" (PatchCore/PaDiM use ("layer2", "layer3")).
    weights   "imagenet", a state-dict path, or "random" (see :mod:`adbench.nn.weights`).
    seed      seed of the random weights (only used with weights="random").

    ``forward(x)``: x (B, 1, H, W) in [-1, 1] → {layer: (B, C_l, H / s_l, W / s_l)}; the slice is
    mapped [-1,1] → [0,1], repeated to 3 channels and ImageNet-normalised. ``aligned(x)``:
    (B, sum C_l, h, w), all layers bilinearly resized to the first layer's grid.
    ``weights_info`` is the provenance dict of the weights. Parameters are frozen and the
    module stays in eval mode (``train()`` is a no-op) so BatchNorm statistics never move.
    """

    def __init__(self, backbone: str = "vgg16",
                 layers: tuple[str, ...] = ("block3", "block4", "block5"),
                 weights: str = "imagenet", seed: int = 0):
        super().__init__()
        if backbone not in LAYERS:
            raise ValueError(f"backbone: got {backbone!r}; expected one of {', '.join(BACKBONES)}")
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        valid = LAYERS[backbone]
        bad = [n for n in layers if n not in valid]
        if not layers or bad or len(set(layers)) != len(layers):
            raise ValueError(f"layers for backbone {backbone!r}: got {layers}; expected distinct "
                             f"names from {valid}")
        state, self.weights_info = resolve_backbone(backbone, weights, seed=seed)
        self.backbone, self.layers = backbone, layers
        idx = [valid.index(n) for n in layers]
        self.channels = {n: CHANNELS[backbone][i] for n, i in zip(layers, idx)}
        self.strides = {n: STRIDES[backbone][i] for n, i in zip(layers, idx)}
        self.to_rgb = GrayToRGB.imagenet()
        if backbone == "vgg16":
            self.trunk: nn.Module = VGG16Trunk(state, tuple(i + 1 for i in idx))
        else:
            self.trunk = ResNetTrunk(backbone, state, layers)
        self.requires_grad_(False)
        self.eval()

    @property
    def out_channels(self) -> int:
        """Channels of :meth:`aligned`: the sum over the selected layers."""
        return sum(self.channels.values())

    def train(self, mode: bool = True) -> "FeatureExtractor":
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_slices(x)
        return dict(zip(self.layers, self.trunk(self.to_rgb(x))))

    def aligned(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) → (B, C_total, h, w) on the grid of ``layers[0]`` (bilinear resize)."""
        feats = list(self(x).values())
        size = feats[0].shape[-2:]
        feats = [f if f.shape[-2:] == size else
                 F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats]
        return torch.cat(feats, dim=1)
