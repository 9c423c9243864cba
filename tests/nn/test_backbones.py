"""FeatureExtractor against torchvision's own modules (adbench.nn.backbones)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from lpips.lpips import ScalingLayer

from adbench.nn.backbones import VGG16_BLOCK_ENDS, FeatureExtractor, GrayToRGB
from adbench.nn.weights import WeightsError, resolve_backbone, resolve_vgg16

# one torch thread: several test modules' convolutions oversubscribe 2 shared cores
pytestmark = pytest.mark.usefixtures("one_thread")

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def slices(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 1, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal up to float32 re-association (tolerance relative to the tensor's peak)."""
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())


def imagenet_rgb(x: torch.Tensor) -> torch.Tensor:
    """The textbook mapping: [-1,1] → [0,1], three channels, torchvision Normalize."""
    return (((x + 1) / 2).repeat(1, 3, 1, 1) - MEAN) / STD


@pytest.fixture(scope="module")
def vgg():
    return FeatureExtractor(weights="random", seed=5)


def test_vgg16_shapes_and_alignment_at_160x128(vgg):
    x = slices(2, 160, 128)
    with torch.no_grad():
        out = vgg(x)
        al = vgg.aligned(x)
    assert list(out) == ["block3", "block4", "block5"]
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "block3": (2, 256, 40, 32), "block4": (2, 512, 20, 16), "block5": (2, 512, 10, 8)}
    assert vgg.channels == {"block3": 256, "block4": 512, "block5": 512}
    assert vgg.strides == {"block3": 4, "block4": 8, "block5": 16}
    assert al.shape == (2, vgg.out_channels, 40, 32) == (2, 1280, 40, 32)
    torch.testing.assert_close(al[:, :256], out["block3"])  # first layer unchanged
    # bilinear (align_corners=False) 2x upsampling: interior output pixel (2i+1, 2k+1) is
    # 0.75·in(i, k) + 0.25·in(i+1, k), then the same along W.
    b4 = out["block4"]
    i, k = 5, 7
    rows = 0.75 * b4[..., i, :] + 0.25 * b4[..., i + 1, :]
    expect = 0.75 * rows[..., k] + 0.25 * rows[..., k + 1]
    torch.testing.assert_close(al[:, 256:768, 2 * i + 1, 2 * k + 1], expect)
    assert vgg.weights_info["source"] == "random"


def test_vgg16_matches_torchvision_features_with_imagenet_normalisation():
    sd, _ = resolve_vgg16("random", seed=5)
    with torch.device("meta"):
        tv = torchvision.models.vgg16().features
    tv.load_state_dict(sd, assign=True)
    fe = FeatureExtractor(layers=("block1", "block2", "block3", "block4", "block5"),
                          weights="random", seed=5)
    x = slices(2, 32, 32, seed=1)
    with torch.no_grad():
        ours = fe(x)
        h = imagenet_rgb(x)
        for j, (s, e) in enumerate(zip((0,) + VGG16_BLOCK_ENDS[:-1], VGG16_BLOCK_ENDS), 1):
            h = tv[s:e](h)
            close(ours[f"block{j}"], h)


def _hand_sliced(backbone: str, sd: dict, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The reference the tapped graphs must reproduce bit for bit: torchvision's modules
    called by hand (``vgg16().features[s:e]`` slices; ResNet stem, then ``layer1`` …)."""
    with torch.device("meta"):
        tv = getattr(torchvision.models, backbone)()
    h = GrayToRGB.imagenet()(x)
    out = {}
    if backbone == "vgg16":
        tv.features.load_state_dict(sd, assign=True)
        for j, (s, e) in enumerate(zip((0,) + VGG16_BLOCK_ENDS[:-1], VGG16_BLOCK_ENDS), 1):
            h = tv.features[s:e](h)
            out[f"block{j}"] = h
        return out
    tv.load_state_dict({**sd, "fc.weight": tv.fc.weight, "fc.bias": tv.fc.bias},
                       strict=True, assign=True)
    tv.eval()
    h = tv.maxpool(tv.relu(tv.bn1(tv.conv1(h))))
    for i in range(1, 5):
        h = getattr(tv, f"layer{i}")(h)
        out[f"layer{i}"] = h
    return out


@pytest.mark.parametrize("backbone", ["vgg16", "resnet18", "wide_resnet50_2"])
def test_tapped_features_are_bit_identical_to_hand_sliced_torchvision(backbone):
    """create_feature_extractor taps the very tensors the hand-sliced trunks returned:
    max |difference| is exactly 0.0 for every layer (so every method's maps are unchanged)."""
    from adbench.nn.backbones import LAYERS

    sd, _ = resolve_backbone(backbone, "random", seed=2)
    fe = FeatureExtractor(backbone, LAYERS[backbone], weights="random", seed=2)
    x = slices(2, 64, 48, seed=4)
    with torch.no_grad():
        ours, ref = fe(x), _hand_sliced(backbone, sd, x)
    diffs = {n: (ours[n] - ref[n]).abs().max().item() for n in LAYERS[backbone]}
    print(f"{backbone} max abs diff per layer: {diffs}")
    assert diffs == {n: 0.0 for n in LAYERS[backbone]}
    # and a subset of layers taps the same tensors as the full set
    part = FeatureExtractor(backbone, LAYERS[backbone][2:0:-1], weights="random", seed=2)
    with torch.no_grad():
        sub = part(x)
    assert list(sub) == list(LAYERS[backbone][2:0:-1])
    assert all(torch.equal(sub[n], ref[n]) for n in sub)


def test_input_mappings_equal_imagenet_and_lpips_scaling():
    x = slices(3, 8, 8, seed=2)
    torch.testing.assert_close(GrayToRGB.imagenet()(x), imagenet_rgb(x))
    torch.testing.assert_close(GrayToRGB.lpips()(x), ScalingLayer()(x.repeat(1, 3, 1, 1)))
    torch.testing.assert_close(GrayToRGB.lpips()(x), GrayToRGB.imagenet()(x), rtol=0, atol=2e-6)


def test_frozen_eval_yet_differentiable_in_the_input(vgg):
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training and not any(m.training for m in vgg.modules())
    x = slices(1, 32, 32).requires_grad_(True)
    vgg(x)["block3"].square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_resnet18_layer2_layer3_match_torchvision():
    sd, info = resolve_backbone("resnet18", "random", seed=1)
    fe = FeatureExtractor("resnet18", ("layer2", "layer3"), weights="random", seed=1)
    assert fe.weights_info == info and fe.out_channels == 384
    with torch.device("meta"):
        tv = torchvision.models.resnet18()
    tv.load_state_dict({**sd, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)},
                       assign=True)
    tv.eval()
    x = slices(2, 160, 128, seed=3)
    fe.train()  # must not switch BatchNorm to batch statistics
    with torch.no_grad():
        out = fe(x)
        h = tv.maxpool(tv.relu(tv.bn1(tv.conv1(imagenet_rgb(x)))))
        h2 = tv.layer2(tv.layer1(h))
        h3 = tv.layer3(h2)
        al = fe.aligned(x)
    assert out["layer2"].shape == (2, 128, 20, 16) and out["layer3"].shape == (2, 256, 10, 8)
    close(out["layer2"], h2)
    close(out["layer3"], h3)
    close(al, torch.cat([h2, F.interpolate(h3, size=(20, 16), mode="bilinear")], 1))
    assert not hasattr(fe.trunk.body, "layer4")  # never computes past the deepest layer


def test_wide_resnet50_2_offline_message_and_shapes():
    with pytest.raises(WeightsError, match="wide_resnet50_2-95faca4d.pth"):
        FeatureExtractor("wide_resnet50_2", ("layer2", "layer3"))
    fe = FeatureExtractor("wide_resnet50_2", ("layer2", "layer3"), weights="random")
    with torch.no_grad():
        al = fe.aligned(slices(1, 32, 32))
    assert al.shape == (1, 512 + 1024, 4, 4)


def test_bad_names_and_inputs_are_explained(vgg):
    with pytest.raises(ValueError, match="layer1.*layer4"):
        FeatureExtractor("resnet18", weights="random")  # VGG block names on a ResNet
    with pytest.raises(ValueError, match="block1.*block5"):
        FeatureExtractor(layers=("block6",), weights="random")
    with pytest.raises(ValueError, match="vgg16, resnet18, wide_resnet50_2.*or timm/<model>"):
        FeatureExtractor("vit", weights="random")
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\).*\(2, 3, 8, 8\)"):
        vgg(torch.zeros(2, 3, 8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for bf16 autocast")
@pytest.mark.gpu
def test_autocast_bf16_close_to_float32_on_gpu(vgg):
    fe = FeatureExtractor(weights="random", seed=5).cuda()
    x = slices(2, 160, 128).cuda()
    with torch.no_grad():
        ref = fe.aligned(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = fe.aligned(x)
    assert low.dtype == torch.bfloat16
    rel = (low.float() - ref).norm() / ref.norm()
    assert rel < 0.05
