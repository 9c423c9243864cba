"""A damaged repository file never stops a build and is never reused: a bad chunk is moved
aside and inverted again, a bad selection.json is written again and the chunks that record
the same selection are kept."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from fake_inverter import FakeInverter
from safetensors.torch import load_file, save_file

from adbench.io import checksum_path
from adbench.methods.scrps.repository import build_repository




def _data(n=30):
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    images = images + torch.linspace(0, 1, 16).view(1, 1, 4, 4)
    return images, [f"sub-{i // 10}" for i in range(n)], np.arange(n) % 10


def _build(folder, inverter=None):
    images, subjects, z = _data()
    return build_repository(images, subjects, z, inverter or FakeInverter(), folder, fraction=0.6,
                            chunk_size=5, generator=torch.Generator().manual_seed(0))


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("how", ["truncated", "one byte flipped", "other positions"])
def test_a_damaged_chunk_is_inverted_again(tmp_path, caplog, how):
    ref = _build(tmp_path)
    chunk = tmp_path / "chunk-00001.safetensors"
    raw = bytearray(chunk.read_bytes())
    if how == "truncated":
        chunk.write_bytes(bytes(raw[: len(raw) // 2]))
    elif how == "one byte flipped":
        raw[-3] ^= 0x10          # inside the codes: the file still loads
        chunk.write_bytes(bytes(raw))
    else:                         # a well-formed chunk of other slices, with a matching sidecar
        save_file({"codes": torch.zeros(5, 3, 8), "index": torch.arange(5)}, str(chunk))
        checksum_path(chunk).unlink()
    inv = FakeInverter()
    with caplog.at_level(logging.WARNING, logger="adbench"):
        again = _build(tmp_path, inv)
    assert torch.equal(again.codes, ref.codes)
    images = _data()[0]
    assert inv.seen == images[torch.as_tensor(ref.index[5:10]), 0, 0, 0].tolist()  # chunk 1 only
    (w,) = _warnings(caplog)
    assert str(chunk) in w and "inverting chunk 1 again" in w
    assert len(list(tmp_path.glob("chunk-00001.safetensors.corrupt-*"))) == 1
    assert checksum_path(chunk).is_file()


@pytest.mark.parametrize("how", ["truncated", "valid JSON, other content", "not an object"])
def test_a_damaged_selection_is_rewritten_and_marked_chunks_are_kept(tmp_path, caplog, how):
    ref = _build(tmp_path)
    sel = tmp_path / "selection.json"
    text = sel.read_text()
    sel.write_text({"truncated": text[: len(text) // 2],
                    "valid JSON, other content": text.replace('"fraction": 0.6', '"fraction": 0.5'),
                    "not an object": "[1, 2]"}[how])
    inv = FakeInverter()
    with caplog.at_level(logging.WARNING, logger="adbench"):
        again = _build(tmp_path, inv)
    assert inv.seen == [] and torch.equal(again.codes, ref.codes)   # nothing inverted again
    (w,) = _warnings(caplog)
    assert str(sel) in w and "writing it again" in w
    assert json.loads(sel.read_text())["index"] == ref.index.tolist()


def test_unmarked_chunks_are_kept_with_a_good_selection_and_redone_without_one(tmp_path, caplog):
    ref = _build(tmp_path)
    for chunk in sorted(tmp_path.glob("chunk-*.safetensors")):   # as chunks were written before
        save_file(load_file(str(chunk)), str(chunk))                # (no metadata, no sidecar)
        checksum_path(chunk).unlink()
    inv = FakeInverter()
    assert torch.equal(_build(tmp_path, inv).codes, ref.codes) and inv.seen == []
    (tmp_path / "selection.json").write_text("{")
    with caplog.at_level(logging.WARNING, logger="adbench"):
        again = _build(tmp_path, inv)
    # the selection was rebuilt: chunks that do not record it cannot be matched to it
    assert torch.equal(again.codes, ref.codes) and len(inv.seen) == len(ref)
    assert sum(w.startswith(str(tmp_path / "selection.json")) for w in _warnings(caplog)) == 1
    assert sum("records no selection digest" in w for w in _warnings(caplog)) == 4
