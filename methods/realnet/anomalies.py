"""Where RealNet's synthetic anomalies come from (config key ``anomaly_source``).

RealNet's own source is SDAS (§3.2): a diffusion model trained on the normal images samples
"realistic" anomalous images, which the code blends into a normal image through a Perlin
mask restricted to the foreground, with opacity factor ~ U(0.5, 1) (code
``datasets/realnet_dataset.py``: ``sdas_transparency_range``), on half of the samples
(``anomaly_types: {normal: 0.5, sdas: 0.5}``). Its pretrained diffusion model does not exist
offline, so two sources are offered:

``shared`` (default)  :func:`adbench.nn.synthesis.synthesize` with the config key ``synthesis``
                      (Perlin masks inside the brain; healthy-slice, procedural and intensity
                      textures; DRÆM's opacity). Its ``p_anomaly`` (0.5) is the code's share of
                      anomalous samples.
``folder``            pre-generated SDAS slices in ``anomaly_folder`` (PNG/JPG/BMP/TIFF, any
                      size, read as grey and resized bilinearly to the slice size; values 0..255
                      map to [-1, 1] as the slices). Each anomalous sample takes one file (drawn
                      per sample) and blends it as the code does: the mask is
                      :func:`adbench.nn.synthesis.perlin_mask` (settings from ``synthesis``)
                      restricted to the brain, the opacity factor ~ U(0.5, 1), and the returned
                      mask is where the slice changed (redrawn up to ``max_tries`` times when
                      fewer than ``min_pixels`` changed). Generate the files with RealNet's own
                      SDAS (its ``sample.py``) on the training slices, saved as images.

Both are deterministic per sample seed: sample i depends only on seeds[i], its slice, its brain
mask and the pool or folder.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from adbench.errors import ConfigError
from adbench.nn.synthesis import (
    IMAGE_SUFFIXES,
    SynthesisConfig,
    image_files,
    perlin_mask,
    synthesize,
)

__all__ = ["IMAGE_SUFFIXES", "SDAS_FACTOR", "AnomalySource", "folder_files", "folder_images"]

#: the code's ``sdas_transparency_range``: weight of the SDAS image inside the mask
SDAS_FACTOR = (0.5, 1.0)
def folder_files(folder: str | None) -> tuple[str, ...]:
    """The image files of ``folder`` (recursively, sorted by path); ConfigError naming the
    key ``anomaly_folder`` when it is unset, missing or holds no images."""
    return image_files(folder, key="realnet: anomaly_folder",
                       hint="set `anomaly_folder` to a folder of pre-generated SDAS slices "
                            "(PNG/JPG), or use `anomaly_source: shared`")


def folder_images(folder: str | None, shape: tuple[int, int]) -> np.ndarray:
    """Every image of ``folder`` (:func:`folder_files`) as (M, H, W) float32 in [-1, 1]."""
    from PIL import Image

    files = folder_files(folder)

    h, w = shape
    out = []
    for path in files:
        try:
            with Image.open(path) as im:
                grey = im.convert("L").resize((w, h), Image.BILINEAR)
        except OSError as exc:
            raise ConfigError(f"realnet: cannot read SDAS image {path} ({exc})") from None
        out.append(np.asarray(grey, dtype=np.float32) / 127.5 - 1.0)
    return np.stack(out)


def _blend_one(image: np.ndarray, brain: np.ndarray, seed: int, cfg: SynthesisConfig,
               sdas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(int(seed) % 2 ** 64)
    none = (image.copy(), np.zeros(image.shape, np.float32))
    if rng.random() >= cfg.p_anomaly or not brain.any():
        return none
    for _ in range(cfg.max_tries):
        m = perlin_mask(image.shape, cfg, rng) & brain
        source = sdas[int(rng.integers(len(sdas)))]
        factor = np.float32(rng.uniform(*SDAS_FACTOR))
        blended = (factor * source + (1 - factor) * image).clip(-1, 1).astype(np.float32)
        aug = np.where(m, blended, image).astype(np.float32)
        changed = aug != image
        if int(changed.sum()) >= cfg.min_pixels:
            return aug, changed.astype(np.float32)
    return none


@dataclasses.dataclass
class AnomalySource:
    """Synthetic anomalies for RealNet's training and its AFS.

    kind      "shared" | "folder" (module docstring)
    config    the validated :class:`SynthesisConfig` of the ``synthesis`` key
    pool      (M, 1, H, W) healthy slices for the shared "healthy" texture, or None
    folder    ``anomaly_folder`` (kind "folder")
    """

    kind: str
    config: SynthesisConfig
    pool: torch.Tensor | None = None
    folder: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("shared", "folder"):
            raise ConfigError(f"realnet: anomaly_source {self.kind!r}; expected 'shared' or 'folder'")
        self._sdas: np.ndarray | None = None

    def check(self, shape: tuple[int, int]) -> None:
        """Fail before any training when the folder is missing or empty."""
        if self.kind == "folder" and self._sdas is None:
            self._sdas = folder_images(self.folder, shape)

    def __call__(self, images: torch.Tensor, brain: torch.Tensor, seeds: torch.Tensor,
                 *, always: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """images (N, 1, H, W) in [-1, 1], brain (N, 1, H, W) bool, seeds (N,) int64 ->
        (aug (N, 1, H, W), masks (N, 1, H, W) float32 in {0, 1}) on the images' device.
        ``always``: every sample is drawn anomalous (p_anomaly = 1, as the code's AFS)."""
        cfg = dataclasses.replace(self.config, p_anomaly=1.0) if always else self.config
        if self.kind == "shared":
            return synthesize(images, brain, seeds, config=cfg, pool=self.pool)
        self.check(tuple(images.shape[-2:]))
        imgs = images[:, 0].detach().float().cpu().numpy()
        brains = brain[:, 0].detach().bool().cpu().numpy()
        out = [_blend_one(imgs[i], brains[i], int(s), cfg, self._sdas)
               for i, s in enumerate(seeds.tolist())]
        aug = torch.from_numpy(np.stack([a for a, _ in out])[:, None])
        masks = torch.from_numpy(np.stack([m for _, m in out])[:, None])
        return aug.to(images.device), masks.to(images.device)
