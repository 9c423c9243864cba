"""MediCLIP's frozen CLIP, its vision adapters and its map (Zhang et al., MICCAI 2024, §2;
code github.com/cnulab/MediCLIP ``models/Adapter.py``, ``models/MapMaker.py``).

* :func:`build_clip` makes an open_clip model from a name (``ViT-B-16``, or ``tiny``: a small
  ViT for CPU tests, chosen explicitly) and loads weights (:mod:`.weights`); it is frozen.
* :func:`clip_input` turns slices (B, 1, H, W) in [-1, 1] into CLIP input (B, 3, S, S): [0, 1],
  grey replicated to RGB, bilinear resize to CLIP's square input, CLIP's mean/std.
* :func:`patch_tokens` are the residual-stream outputs of the chosen transformer blocks
  (1-based, as the code's ``layers_out``), patch tokens only, as (B, C, h, w).
* :class:`VisionAdapters`: one 1x1 convolution per block, width -> embed_dim, then L2
  normalisation over channels (the code's ``Adapter``).
* :func:`anomaly_probability`: per block, cosine similarity of every patch to the normal and
  abnormal text features (B, 2, h, w); mean over blocks; bilinear upsampling
  (``align_corners=True``) to the slice size; softmax over the two states (no temperature, as
  ``MapMaker``). Channel 1 is P(abnormal), the anomaly map.
"""
from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adbench.errors import WeightsError
from adbench.io import file_sha256

from .weights import missing_message, resolve_clip_file

__all__ = [
    "TINY_CONFIG",
    "VisionAdapters",
    "anomaly_probability",
    "build_clip",
    "clip_fingerprint",
    "clip_input",
    "patch_tokens",
]

#: a small CLIP for CPU tests and smoke runs (``clip_model="tiny"``): 96 x 96 input, 16-pixel
#: patches (a 6 x 6 grid), a 3-block ViT of width 64 and a 2-block text transformer of width 32
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 96, "layers": 3, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def _construct(model: str, quick_gelu: bool, image_size: int | None) -> nn.Module:
    import open_clip
    if model == "tiny":
        vision = {**TINY_CONFIG["vision_cfg"], **({"image_size": image_size} if image_size else {})}
        return open_clip.CLIP(**{**TINY_CONFIG, "vision_cfg": vision}, quick_gelu=quick_gelu)
    if open_clip.get_model_config(model) is None:
        raise WeightsError(f"clip_model {model!r} is not an open_clip model; expected 'tiny' or "
                           f"one of open_clip.list_models(), e.g. 'ViT-B-16', 'ViT-L-14'")
    return open_clip.create_model(model, pretrained=None, force_quick_gelu=quick_gelu,
                                  force_image_size=image_size)


def build_clip(model: str, weights: str, *, tag: str = "openai", seed: int = 0,
               image_size: int | None = None) -> tuple[nn.Module, dict]:
    """(frozen CLIP in eval mode on the CPU, weights provenance).

    weights  "pretrained" | path | "random" (see :mod:`.weights`). OpenAI's CLIP uses
             QuickGELU, so tag "openai" builds with it (as open_clip's pretrained config).
    image_size  the square input size (None: the model's own, 224 for ViT-B-16); a checkpoint
             of another size gets its positional embedding interpolated by open_clip.
    Provenance: {"backbone": "clip:<model>", "source", "path", "sha256"} (+ "seed" when random).
    """
    quick_gelu = tag == "openai" and model != "tiny"
    name = f"clip:{model}"
    with torch.random.fork_rng(devices=[]):    # open_clip's init draws from the global RNG
        torch.manual_seed(int(seed))
        clip = _construct(model, quick_gelu, image_size)
    if weights == "random":
        info = {"backbone": name, "source": "random", "path": None, "sha256": None,
                "seed": int(seed)}
    else:
        if weights == "pretrained":
            found = resolve_clip_file(model, tag)
            if found is None:
                raise WeightsError(missing_message(model, tag))
            path, source = found
        else:
            path, source = Path(weights).expanduser(), "path"
            if not path.is_file():
                raise WeightsError(f"clip_weights {weights!r} is not a file; expected 'pretrained', "
                                   f"'random' or the path of a CLIP checkpoint. {missing_message(model, tag)}")
        _load(clip, path, model)
        info = {"backbone": name, "source": source, "path": str(path.resolve()),
                "sha256": file_sha256(path)}
    return clip.eval().requires_grad_(False), info


#: what reading a file of the wrong kind raises (torch.load, safetensors, TorchScript)
_LOAD_ERRORS = (RuntimeError, ValueError, KeyError, OSError, pickle.UnpicklingError)


def _load(clip: nn.Module, path: Path, model: str) -> None:
    """open_clip's own loader: state dicts (.safetensors, .bin, .pt; a "state_dict" wrapper
    and a "module." prefix are undone) and OpenAI's TorchScript archive (torch.load hands it
    to torch.jit.load); the positional embedding is resized to ``clip_image_size``."""
    import open_clip
    try:
        open_clip.load_checkpoint(clip, str(path), strict=True, weights_only=True)
    except _LOAD_ERRORS as e:
        msg = " ".join(str(e).split())[:300]
        raise WeightsError(f"could not load CLIP checkpoint {str(path)!r} into open_clip model "
                           f"{model!r} ({type(e).__name__}: {msg}); expected an open_clip {model} "
                           f"state dict (.safetensors/.bin/.pt) or OpenAI's {model}.pt, for the "
                           f"config key `clip_model` (set it to the checkpoint's model)") from e


@torch.no_grad()
def clip_fingerprint(clip: nn.Module) -> torch.Tensor:
    """float64 scalar: sum over parameters of each one's float32 sum of squares (deterministic
    on the CPU; a float64 copy of ViT-B-16's 150M parameters would take seconds)."""
    total = torch.zeros((), dtype=torch.float64)
    for t in clip.parameters():
        total += t.detach().to("cpu", torch.float32).pow(2).sum().double()
    return total


def clip_input(x: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]
               ) -> torch.Tensor:
    """(B, 1, H, W) in [-1, 1] -> (B, 3, size, size) normalised with CLIP's mean/std."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"clip_input: expected slices (B, 1, H, W), got {tuple(x.shape)}")
    x01 = ((x.float() + 1) / 2).clamp(0, 1)
    x01 = F.interpolate(x01, size=(size, size), mode="bilinear", align_corners=False)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x01.expand(-1, 3, -1, -1) - m) / s


def patch_tokens(clip: nn.Module, images: torch.Tensor, layers: Sequence[int]
                 ) -> list[torch.Tensor]:
    """Outputs of transformer blocks ``layers`` (1-based) for CLIP input (B, 3, S, S), patch
    tokens only (the class token dropped), each (B, width, S / patch, S / patch)."""
    n_blocks = len(clip.visual.transformer.resblocks)
    bad = [i for i in layers if not 1 <= int(i) <= n_blocks]
    if bad:
        raise ValueError(f"MediCLIP layers {list(layers)}: {bad} outside 1..{n_blocks}, the blocks "
                         f"of this CLIP's image encoder")
    out = clip.visual.forward_intermediates(images, indices=[int(i) - 1 for i in layers],
                                            intermediates_only=True, output_fmt="NCHW")
    return out["image_intermediates"]


class VisionAdapters(nn.Module):
    """One 1x1 convolution per block (width -> embed_dim), L2-normalised over channels:
    [(B, width, h, w)] -> [(B, h, w, embed_dim)] of unit vectors."""

    def __init__(self, widths: Sequence[int], embed_dim: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(int(c), int(embed_dim), 1) for c in widths)

    def forward(self, tokens: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(tokens) != len(self.convs):
            raise ValueError(f"VisionAdapters: {len(tokens)} token maps for {len(self.convs)} adapters")
        return [F.normalize(conv(t.float()).permute(0, 2, 3, 1), dim=-1)
                for conv, t in zip(self.convs, tokens)]


def anomaly_probability(features: Sequence[torch.Tensor], text: torch.Tensor,
                        size: tuple[int, int]) -> torch.Tensor:
    """features [(B, h, w, C)] unit vectors, text (C, 2) unit columns (normal, abnormal) ->
    (B, 2, H, W) softmax probabilities at ``size`` = (H, W)."""
    sims = [(f @ text.to(f.dtype)).permute(0, 3, 1, 2) for f in features]   # (B, 2, h, w)
    logits = torch.stack(sims).mean(0)
    logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=True)
    return logits.softmax(dim=1)
