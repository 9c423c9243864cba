"""Repository selection, chunked storage, interruption and resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fake_inverter import FakeInverter

from adbench.methods.scrps.repository import (Repository, RepositoryError, build_repository,
                                              select_slices)




def _data(n=50):
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    images = images + torch.linspace(0, 1, 16).view(1, 1, 4, 4)
    subjects = [f"sub-{i // 10}" for i in range(n)]
    z = np.arange(n) % 10
    return images, subjects, z


class _Stop(Exception):
    pass


def test_select_slices_fraction_and_seed():
    a = select_slices(200, 0.05, torch.Generator().manual_seed(3))
    b = select_slices(200, 0.05, torch.Generator().manual_seed(3))
    c = select_slices(200, 0.05, torch.Generator().manual_seed(4))
    assert len(a) == 10 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 200
    assert np.array_equal(select_slices(7, 1.0, torch.Generator()), np.arange(7))
    assert len(select_slices(7, 0.01, torch.Generator())) == 1
    with pytest.raises(ValueError, match="repository_fraction=0"):
        select_slices(7, 0.0, torch.Generator())


def test_interrupted_build_resumes_without_duplicates_or_gaps(tmp_path):
    images, subjects, z = _data()
    kwargs = dict(fraction=0.8, chunk_size=6)
    full = build_repository(images, subjects, z, FakeInverter(), tmp_path / "a",
                            generator=torch.Generator().manual_seed(0), **kwargs)

    def stop_after(k):
        def cb(c, n):
            if c + 1 == k:
                raise _Stop
        return cb

    first = FakeInverter()
    with pytest.raises(_Stop):
        build_repository(images, subjects, z, first, tmp_path / "b", on_chunk=stop_after(3),
                         generator=torch.Generator().manual_seed(0), **kwargs)
    assert len(list((tmp_path / "b").glob("chunk-*.safetensors"))) == 3
    second = FakeInverter()
    resumed = build_repository(images, subjects, z, second, tmp_path / "b",
                               generator=torch.Generator().manual_seed(0), **kwargs)
    # Every selected slice inverted exactly once across the two attempts.
    assert len(first.seen) == 18
    assert sorted(first.seen + second.seen) == sorted(images[full.index, 0, 0, 0].tolist())
    assert torch.equal(resumed.codes, full.codes)
    assert np.array_equal(resumed.index, full.index) and len(set(full.index.tolist())) == 40
    assert resumed.subjects == [subjects[i] for i in full.index]
    assert np.array_equal(resumed.z, z[full.index])
    # The codes are those of the right slices, in selection order.
    assert torch.equal(full.codes, FakeInverter()(images[torch.as_tensor(full.index)]))
    # A completed build is read back without inverting anything.
    third = FakeInverter()
    again = build_repository(images, subjects, z, third, tmp_path / "b",
                             generator=torch.Generator().manual_seed(0), **kwargs)
    assert third.seen == [] and torch.equal(again.codes, full.codes)


def test_mismatched_folder_is_refused(tmp_path):
    images, subjects, z = _data()
    build_repository(images, subjects, z, FakeInverter(), tmp_path, fraction=0.5,
                     generator=torch.Generator().manual_seed(0))
    with pytest.raises(RepositoryError, match="fraction"):
        build_repository(images, subjects, z, FakeInverter(), tmp_path, fraction=0.4,
                         generator=torch.Generator().manual_seed(0))
    with pytest.raises(RepositoryError, match="meta"):
        build_repository(images, subjects, z, FakeInverter(), tmp_path, fraction=0.5,
                         generator=torch.Generator().manual_seed(0), meta={"generator": "other"})
    sel = json.loads((tmp_path / "selection.json").read_text())
    assert sel["fraction"] == 0.5 and len(sel["index"]) == 25


def test_in_memory_build_and_tensor_round_trip(tmp_path):
    images, subjects, z = _data(12)
    repo = build_repository(images, subjects, z, FakeInverter(), None, fraction=1.0, chunk_size=5)
    assert not any(tmp_path.iterdir())
    back = Repository.from_tensors(repo.to_tensors())
    assert torch.equal(back.codes, repo.codes) and back.subjects == subjects
    assert np.array_equal(back.z, z) and np.array_equal(back.index, np.arange(12))
