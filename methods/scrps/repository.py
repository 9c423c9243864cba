"""The healthy latent code repository M ∈ R^{K x L x 512} (paper §2.1, Fig. 1(b)).

A random fraction of the healthy training slices (5% in the paper, §3.1) is inverted with the
same procedure as the test slices, and the codes are stored with the (subject, z) provenance
of their slices. Building it is the slowest part of ``fit`` (2,000 optimisation steps per
slice), so it is written chunk by chunk under the run's model folder and a killed build
resumes at the first missing chunk:

    <folder>/selection.json          the selected slice positions, provenance, chunk size and
                                     a digest of the selected images (written first, once)
    <folder>/chunk-00000.safetensors codes (n, L, D) float32 + index (n,) int64: the positions
    <folder>/chunk-00001.safetensors (in the training SliceSet) of the slices they invert
    ...

Every file is written atomically (temp name + rename), so a chunk is either complete or
absent; chunk c always holds selection entries [c*chunk_size, (c+1)*chunk_size).

Every file also has a ``<file>.sha256`` sidecar, and each chunk records the digest of the
selection it belongs to in its safetensors metadata. A damaged chunk (truncated, not matching
its sidecar, or holding other positions) is moved aside with a warning and inverted again; a
damaged ``selection.json`` is moved aside and written again, and a chunk is then kept only if
it records that same selection (older chunks without the record are inverted again). The
build never stops on a damaged file, and never reuses one.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from adbench.io import (CorruptCacheError, atomic_path, json_tensor, load_verified, quarantine,
                        read_json_verified, tensor_json, write_json)

__all__ = ["Repository", "select_slices", "build_repository", "RepositoryError"]

SELECTION_FILE = "selection.json"
_SELECTION_KEY = "selection_sha256"   # chunk metadata: the selection the chunk belongs to


class RepositoryError(RuntimeError):
    """A repository folder does not match the build that is asked for."""


@dataclass
class Repository:
    """Latent codes with provenance.

    codes     (K, L, D) float32 W+ codes.
    index     (K,) int64 position of each code's slice in the training SliceSet.
    subjects  length-K subject ids;  z (K,) int64 axial slice index of each code's slice.
    """

    codes: torch.Tensor
    index: np.ndarray
    subjects: list[str]
    z: np.ndarray

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def to_tensors(self, prefix: str = "repository.") -> dict[str, torch.Tensor]:
        """Tensors only (state dicts are loaded with weights_only): subjects as UTF-8 JSON bytes."""
        return {
            prefix + "codes": self.codes.detach().cpu().float(),
            prefix + "index": torch.as_tensor(self.index, dtype=torch.long),
            prefix + "z": torch.as_tensor(self.z, dtype=torch.long),
            prefix + "subjects_json": json_tensor(self.subjects),
        }

    @classmethod
    def from_tensors(cls, state: dict[str, torch.Tensor], prefix: str = "repository.") -> "Repository":
        missing = [k for k in ("codes", "index", "z", "subjects_json") if prefix + k not in state]
        if missing:
            raise KeyError(f"repository state: missing keys {[prefix + k for k in missing]}")
        return cls(codes=state[prefix + "codes"].float(), index=state[prefix + "index"].numpy().copy(),
                   subjects=tensor_json(state[prefix + "subjects_json"]),
                   z=state[prefix + "z"].numpy().copy())



def select_slices(n: int, fraction: float, generator: torch.Generator) -> np.ndarray:
    """Sorted positions of round(fraction * n) (at least 1) slices drawn without replacement.

    ``fraction`` in (0, 1]; 1.0 selects every slice (in order, no draw needed).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"repository_fraction={fraction} must be in (0, 1] (the paper uses 0.05)")
    if n < 1:
        raise ValueError("repository: no training slices to select from")
    k = max(1, int(round(fraction * n)))
    if k >= n:
        return np.arange(n, dtype=np.int64)
    perm = torch.randperm(n, generator=generator)[:k]
    return np.sort(perm.numpy()).astype(np.int64)


def _digest(images: torch.Tensor) -> str:
    return hashlib.sha256(images.detach().cpu().float().contiguous().numpy().tobytes()).hexdigest()


def _chunk_path(folder: Path, c: int) -> Path:
    return folder / f"chunk-{c:05d}.safetensors"


def build_repository(images: torch.Tensor, subjects: list[str], z: np.ndarray,
                     invert_fn: Callable[[torch.Tensor], torch.Tensor], folder: Path | None, *,
                     fraction: float = 0.05, generator: torch.Generator | None = None,
                     chunk_size: int = 64, on_chunk: Callable[[int, int], None] | None = None,
                     meta: dict | None = None, log: logging.Logger | None = None) -> Repository:
    """Invert a random ``fraction`` of the training slices and store the codes, resumably.

    Args:
        images: (N, 1, H, W) healthy training slices in [-1, 1].
        subjects, z: provenance of every slice (length N).
        invert_fn: images (n, 1, H, W) -> codes (n, L, D); must be the test-time procedure.
        folder: where chunks go; None builds in memory only (nothing written, no resume).
        generator: seeded generator for the selection (``Context.generator``).
        chunk_size: slices per chunk file.
        on_chunk: called as on_chunk(c, n_chunks) after chunk c is stored (progress; tests
            use it to interrupt a build).
        meta: JSON-able description of what ``invert_fn`` does (generator digest, inversion
            settings); stored in selection.json and required to match on resume, so chunks
            made by another generator are never mixed in.
    Returns the :class:`Repository` in selection order.
    """
    log = log or logging.getLogger("adbench")
    n = images.shape[0]
    if len(subjects) != n or len(z) != n:
        raise ValueError(f"build_repository: {n} images but {len(subjects)} subjects / {len(z)} z")
    if chunk_size < 1:
        raise ValueError(f"build_repository: chunk_size={chunk_size} must be >= 1")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    sel = select_slices(n, fraction, gen)
    selection = {
        "n_train": int(n), "fraction": float(fraction), "chunk_size": int(chunk_size),
        "index": sel.tolist(), "subjects": [subjects[i] for i in sel],
        "z": [int(z[i]) for i in sel], "images_sha256": _digest(images[torch.as_tensor(sel)]),
        "meta": json.loads(json.dumps(meta or {})),
    }
    sel_digest = hashlib.sha256(json.dumps(selection, sort_keys=True).encode()).hexdigest()
    trust_unmarked = False
    if folder is not None:
        folder = Path(folder)
        trust_unmarked = _check_or_write_selection(folder, selection, log)

    n_chunks = (len(sel) + chunk_size - 1) // chunk_size
    parts: list[torch.Tensor] = []
    for c in range(n_chunks):
        pos = sel[c * chunk_size:(c + 1) * chunk_size]
        path = _chunk_path(folder, c) if folder is not None else None
        codes = None
        if path is not None and path.exists():
            try:
                codes = load_verified(path, lambda p, pos=pos: _read_chunk(p, pos, sel_digest,
                                                                           trust_unmarked))
            except CorruptCacheError as exc:
                quarantine(path, exc.reason, f"inverting chunk {c} again", log)
        if codes is None:
            codes = invert_fn(images[torch.as_tensor(pos)]).detach().cpu().float().contiguous()
            if codes.ndim != 3 or codes.shape[0] != len(pos):
                raise RuntimeError(f"build_repository: invert_fn returned {tuple(codes.shape)} for "
                                   f"{len(pos)} images, expected ({len(pos)}, L, D)")
            if path is not None:
                with atomic_path(path, checksum=True) as tmp:
                    save_file({"codes": codes, "index": torch.as_tensor(pos, dtype=torch.long)},
                              str(tmp), metadata={_SELECTION_KEY: sel_digest})
        parts.append(codes)
        log.info("repository chunk %d/%d stored (%d codes)", c + 1, n_chunks, len(pos))
        if on_chunk is not None:
            on_chunk(c, n_chunks)
    return Repository(codes=torch.cat(parts), index=sel, subjects=selection["subjects"],
                      z=np.asarray(selection["z"], dtype=np.int64))


def _check_or_write_selection(folder: Path, selection: dict, log: logging.Logger) -> bool:
    """Write ``selection.json``, or check the stored one asks for the same build.

    Returns whether chunks that record no selection digest (written before chunks carried
    one) can be trusted: only when a readable selection.json that matches was already there.
    """
    path = folder / SELECTION_FILE
    if path.exists():
        try:
            old = read_json_verified(path)
            if not isinstance(old, dict):
                raise CorruptCacheError(path, f"holds a JSON {type(old).__name__}, not the selection object")
        except CorruptCacheError as exc:
            quarantine(path, exc.reason, "writing it again (chunks are kept only if they record "
                       "this selection)", log)
        else:
            diff = [k for k in selection if old.get(k) != selection[k]]
            if diff:
                raise RepositoryError(f"{path}: the stored repository build differs from the "
                                      f"requested one in {diff} (different training data, "
                                      f"fraction, seed or chunk size). Delete {folder} to "
                                      f"rebuild, or use the run's own model folder.")
            return True
    write_json(path, selection, checksum=True)
    return False


def _read_chunk(path: Path, pos: np.ndarray, sel_digest: str, trust_unmarked: bool) -> torch.Tensor:
    """Codes (n, L, D) of one chunk file; CorruptCacheError when it belongs to another
    selection than ``sel_digest`` or holds other slices (load_verified reports the rest)."""
    with safe_open(str(path), "pt") as f:
        recorded = (f.metadata() or {}).get(_SELECTION_KEY)
        if recorded is None and not trust_unmarked:
            raise CorruptCacheError(path, f"records no selection digest and {SELECTION_FILE} was "
                                          f"rebuilt, so it cannot be matched to this selection")
        if recorded is not None and recorded != sel_digest:
            raise CorruptCacheError(path, f"belongs to another selection ({recorded[:12]}…, this "
                                          f"one is {sel_digest[:12]}…)")
        data = {k: f.get_tensor(k) for k in f.keys()}
    idx = data.get("index")
    if idx is None or "codes" not in data or idx.tolist() != pos.tolist() \
            or data["codes"].shape[0] != len(pos) or data["codes"].ndim != 3:
        raise CorruptCacheError(path, f"holds slice positions {None if idx is None else idx.tolist()[:5]}… "
                                      f"but the selection expects {pos.tolist()[:5]}…")
    return data["codes"].float()
