"""Frozen ImageNet backbones as multi-layer feature extractors (paper §3.2; architecture §8).

PatchCore, PaDiM and the perceptual score all read VGG16 feature maps of the last three
convolutional blocks. This module builds those backbones once, from weights resolved by
:mod:`adbench.nn.weights`, and maps adbench's grayscale slices to the input they expect.
Layers are tapped with torchvision's ``create_feature_extractor`` (:func:`tap`): a torch.fx
graph of the unmodified torchvision model, cut after the deepest requested layer.

Block naming (VGG16): block *j* is the output of the ReLU after the last convolution of block
*j* — graph nodes "3", "8", "15", "22", "29" of ``torchvision.models.vgg16().features``, the
ends of the slices [0,4) [4,9) [9,16) [16,23) [23,30); strides 1, 2, 4, 8, 16 and channels
64, 128, 256, 512, 512. At 160x128, blocks 3-5 are 40x32, 20x16 and 10x8. ResNets expose
``layer1`` … ``layer4`` (strides 4, 8, 16, 32). ``"timm/<model>"`` backbones
(:mod:`adbench.nn.timm_backbones`) expose the module names of timm's ``feature_info``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from adbench.nn.extractor import TIMM_PREFIX, backbone_error
from adbench.nn.weights import resolve_backbone

__all__ = ["FeatureExtractor", "GrayToRGB", "Trunk", "VGG16Trunk", "ResNetTrunk", "tap",
           "assign_state", "LAYERS", "CHANNELS", "STRIDES", "VGG16_BLOCK_ENDS",
           "VGG16_BLOCK_NODES", "check_slices"]

#: End index (exclusive) in ``vgg16().features`` of blocks 1..5 (after their last ReLU).
VGG16_BLOCK_ENDS = (4, 9, 16, 23, 30)
#: Graph node of each block's output in ``vgg16().features``: the ReLU at index end - 1.
VGG16_BLOCK_NODES = tuple(str(e - 1) for e in VGG16_BLOCK_ENDS)

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
    def normalize(cls, mean: tuple[float, ...], std: tuple[float, ...]) -> "GrayToRGB":
        """[-1, 1] → [0, 1], then ``(x - mean) / std`` per RGB channel (e.g. a timm model's
        ``pretrained_cfg`` mean and std)."""
        return cls(tuple(2 * m - 1 for m in mean), tuple(2 * s for s in std))

    @classmethod
    def imagenet(cls) -> "GrayToRGB":
        return cls.normalize(IMAGENET_MEAN, IMAGENET_STD)

    @classmethod
    def lpips(cls) -> "GrayToRGB":
        # lpips.pretrained ScalingLayer constants, used verbatim: its heads were fit with them.
        return cls((-0.030, -0.088, -0.188), (0.458, 0.448, 0.450))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.b, x, self.a)  # broadcasts the single channel to three


def tap(model: nn.Module, nodes: dict[str, str]) -> nn.Module:
    """``create_feature_extractor(model, nodes)``: a torch.fx graph of ``model`` returning
    ``{name: tensor}`` for ``nodes`` (graph node → output name), cut after the deepest one.

    A node may be a module's name ("layer3"), which taps the last node inside that module.
    The graph calls ``model``'s own submodules under their original names, so state-dict keys
    are unchanged and the outputs are those of ``model``'s forward, bit for bit.
    """
    from torchvision.models.feature_extraction import create_feature_extractor

    return create_feature_extractor(model, return_nodes=dict(nodes))


def assign_state(body: nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> None:
    """Assign ``state_dict``'s tensors to every parameter and buffer of ``body`` (often built on
    the meta device); raise KeyError naming the missing keys."""
    missing = [k for k in body.state_dict() if k not in state_dict]
    if missing:
        raise KeyError(f"{what}: the state dict lacks {len(missing)} keys the tapped graph needs "
                       f"(first: {missing[0]!r})")
    body.load_state_dict({k: state_dict[k] for k in body.state_dict()}, assign=True)


class Trunk(nn.Module):
    """A tapped backbone graph ``body`` (see :func:`tap`); forward returns a list, not a dict.

    forward: (B, 3, H, W) normalised RGB → [(B, C_l, H / s_l, W / s_l) for l in ``names``].
    """

    def __init__(self, body: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.body, self.names = body, tuple(names)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.body(x)
        return [out[n] for n in self.names]


class VGG16Trunk(Trunk):
    """``vgg16().features`` tapped at the requested blocks; returns the block outputs.

    Block *j* is graph node ``VGG16_BLOCK_NODES[j - 1]`` of ``vgg16().features``: the ReLU
    before the *j*-th max-pool. forward: (B, 3, H, W) normalised RGB → list of
    (B, C_j, H / 2^(j-1), W / 2^(j-1)) in the order of ``blocks``. State-dict keys are those of
    ``vgg16().features`` ("0.weight" … up to the deepest block).
    """

    def __init__(self, state_dict: dict[str, torch.Tensor], blocks: tuple[int, ...]):
        blocks = tuple(int(b) for b in blocks)
        if not blocks or len(set(blocks)) != len(blocks) or not set(blocks) <= {1, 2, 3, 4, 5}:
            raise ValueError(f"VGG16 blocks: got {blocks}; expected distinct values in 1..5")
        with torch.device("meta"):  # structure only; weights are assigned below
            features = torchvision.models.vgg16().features
        body = tap(features, {VGG16_BLOCK_NODES[b - 1]: f"block{b}" for b in sorted(blocks)})
        assign_state(body, state_dict, "VGG16 features")
        super().__init__(body, tuple(f"block{b}" for b in blocks))
        self.blocks = blocks


class ResNetTrunk(Trunk):
    """A torchvision ResNet tapped at ``layer1`` … ``layer4`` (eval-mode BatchNorm).

    forward: (B, 3, H, W) → list of the requested layers' outputs, in the order of ``layers``.
    State-dict keys are torchvision's ("conv1.weight", "layer1.0.bn1.weight", …).
    """

    def __init__(self, backbone: str, state_dict: dict[str, torch.Tensor],
                 layers: tuple[str, ...]):
        with torch.device("meta"):  # structure only; weights are assigned below
            model = getattr(torchvision.models, backbone)()
        body = tap(model, {n: n for n in layers})
        assign_state(body, state_dict, f"torchvision {backbone}")
        super().__init__(body, tuple(layers))
        self.layers = tuple(layers)


class FeatureExtractor(nn.Module):
    """Frozen backbone returning named feature maps of grayscale slices.

    backbone  "vgg16" (default), "resnet18", "wide_resnet50_2", or "timm/<model>" for any
              timm model with ``feature_info`` (e.g. "timm/wide_resnet50_2"; needs timm).
    layers    VGG16: "block1" … "block5" (default blocks 3-5, as paper §3.2);
              ResNets: "layer1" … "layer4" (PatchCore/PaDiM use ("layer2", "layer3"));
              timm: the module names of the model's ``feature_info`` ("act1", "layer1", …).
    weights   "imagenet", a state-dict path, or "random" (see :mod:`adbench.nn.weights`;
              timm: :mod:`adbench.nn.timm_backbones`).
    seed      seed of the random weights (only used with weights="random").

    ``forward(x)``: x (B, 1, H, W) in [-1, 1] → {layer: (B, C_l, H / s_l, W / s_l)}; the slice is
    mapped [-1,1] → [0,1], repeated to 3 channels and normalised with ImageNet's mean/std
    (timm: the model's ``pretrained_cfg`` mean/std). ``aligned(x)``: (B, sum C_l, h, w), all
    layers bilinearly resized to the first layer's grid.
    ``weights_info`` is the provenance dict of the weights. Parameters are frozen and the
    module stays in eval mode (``train()`` is a no-op) so BatchNorm statistics never move.
    """

    def __init__(self, backbone: str = "vgg16",
                 layers: tuple[str, ...] = ("block3", "block4", "block5"),
                 weights: str = "imagenet", seed: int = 0):
        super().__init__()
        problem = backbone_error(backbone)
        if problem:
            raise ValueError(problem)
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        if backbone.startswith(TIMM_PREFIX):
            from adbench.nn import timm_backbones  # timm is imported only when asked for

            structure = timm_backbones.structure(backbone)
            valid = tuple(structure.feature_layers())
        else:
            valid = LAYERS[backbone]
        bad = [n for n in layers if n not in valid]
        if not layers or bad or len(set(layers)) != len(layers):
            raise ValueError(f"layers for backbone {backbone!r}: got {layers}; expected distinct "
                             f"names from {valid}")
        self.backbone, self.layers = backbone, layers
        if backbone.startswith(TIMM_PREFIX):
            info = structure.feature_layers()
            model, self.weights_info = timm_backbones.resolve(structure, weights, seed=seed)
            self.channels = {n: info[n][0] for n in layers}
            self.strides = {n: info[n][1] for n in layers}
            mean, std = structure.mean_std()
            self.to_rgb = GrayToRGB.normalize(mean, std)
            self.trunk: nn.Module = timm_backbones.TimmTrunk(model, layers)
        else:
            state, self.weights_info = resolve_backbone(backbone, weights, seed=seed)
            idx = [valid.index(n) for n in layers]
            self.channels = {n: CHANNELS[backbone][i] for n, i in zip(layers, idx)}
            self.strides = {n: STRIDES[backbone][i] for n, i in zip(layers, idx)}
            self.to_rgb = GrayToRGB.imagenet()
            if backbone == "vgg16":
                self.trunk = VGG16Trunk(state, tuple(i + 1 for i in idx))
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
