"""The embedded ``synth`` dataset: determinism, exact masks, lesion geometry, cache reuse.

Everything runs on the 2 mm grid (the smoke size) with a handful of volumes.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from adbench import DataError, Volume
from adbench.config import ConfigError
from adbench.datasets.synth import generate as gen_mod
from adbench.datasets.synth.dataset import SynthDataset
from adbench.datasets.synth.generate import (SynthParams, generate_volume, healthy_counterpart,
                                             read_volume, volume_path)
from adbench.datasets.synth.lesions import lesion_kind
from adbench.datasets.synth.template import load_template
from adbench.plugins import build_registry

SMALL = dict(n_train=1, n_test=2, spacing=2, seed=0, lesion_mix=0.5)   # test 0: stroke, 1: tumour


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> SynthDataset:
    d = SynthDataset(**SMALL, cache_dir=str(tmp_path_factory.mktemp("synth-a")), progress=False)
    assert sorted(d.prepare()) == sorted(d.subjects("train") + d.subjects("test"))
    return d


@pytest.fixture(scope="module")
def params() -> SynthParams:
    return SynthParams.from_config(**SMALL)


def test_same_seed_is_byte_identical_and_other_seed_differs(ds, tmp_path, capsys):
    other = SynthDataset(**{**SMALL, "n_test": 1}, cache_dir=str(tmp_path), progress=True)
    made = other.prepare()
    assert made == ["synth-train-0000", "synth-test-0000"]
    assert "synth: generating 2 volumes" in capsys.readouterr().err
    for sid in made:
        a = volume_path(ds.root, sid).read_bytes()
        b = volume_path(other.root, sid).read_bytes()
        assert a == b, f"{sid}: same seed, different bytes"
    v0 = ds.load("synth-train-0000").image
    v1 = generate_volume(SynthParams.from_config(**{**SMALL, "seed": 1}), "train", 0).image
    assert v0.shape == v1.shape and not np.array_equal(v0, v1)
    # train and test volumes with the same index come from different seed streams
    assert not np.array_equal(v0, ds.load("synth-test-0000").image)


@pytest.mark.parametrize("index,kind", [(0, "stroke"), (1, "tumour")])
def test_mask_is_exactly_where_intensity_changed(ds, params, index, kind):
    vol = ds.load(f"synth-test-{index:04d}")
    assert vol.meta["lesion_type"] == kind
    twin = healthy_counterpart(params, index)           # same anatomy (incl. mass effect), no paint
    changed = vol.image != twin.image
    assert np.array_equal(twin.lesion, vol.lesion_mask)
    assert vol.lesion_mask.sum() > 0
    assert np.array_equal(changed, vol.lesion_mask), (
        f"{kind}: {int((changed & ~vol.lesion_mask).sum())} changed voxels outside the mask, "
        f"{int((vol.lesion_mask & ~changed).sum())} mask voxels unchanged")
    inside_new, inside_old = vol.image[vol.lesion_mask], twin.image[vol.lesion_mask]
    if kind == "stroke":
        assert np.all(inside_new < inside_old), "a stroke is hypo-intense everywhere on T1"
    else:
        # enhancing rim brighter than the tissue it replaces, necrosis/oedema darker
        assert (inside_new > inside_old).any() and (inside_new < inside_old).any()
        plain = healthy_counterpart(params, index, mass_effect=False)
        pushed = (plain.image != twin.image)
        assert pushed.any(), "a tumour displaces the surrounding tissue"
        plan = vol.meta["lesion_plan"]
        reach = plan["diameter_mm"] * plan["solid_frac"] / 2 + plan["falloff_mm"]
        idx = np.argwhere(pushed)
        dist = np.sqrt((((idx - np.asarray(plan["centre"])) * params.spacing) ** 2).sum(1))
        assert dist.max() <= reach + 2 * params.spacing, "mass effect reaches beyond its support"


def test_lesion_geometry_and_metadata(ds):
    tpl = load_template(2)
    for sid in ds.subjects("test"):
        vol = ds.load(sid)
        les = vol.lesion_mask
        assert not (les & ~vol.brain_mask).any(), f"{sid}: lesion outside the brain"
        n = int(les.sum())
        volume = n * 2.0 ** 3
        eq_diam = (6 * volume / math.pi) ** (1 / 3)
        assert 5.0 <= eq_diam <= 45.0
        assert vol.meta["lesion_voxels"] == n
        assert vol.meta["lesion_diameter_mm"] == pytest.approx(eq_diam)
        nominal = vol.meta["lesion_nominal_diameter_mm"]
        assert 5.0 <= nominal <= 45.0
        centre = np.asarray(vol.meta["lesion_centre_vox"])
        dist = np.sqrt((((np.argwhere(les) - centre) * 2.0) ** 2).sum(1))
        assert dist.max() <= nominal / 2 + 1e-4, f"{sid}: lesion voxel beyond the nominal radius"
        world = tpl.affine[:3, :3] @ centre + tpl.affine[:3, 3]
        np.testing.assert_allclose(vol.meta["lesion_centre_mm"], world)
        assert vol.image.dtype == np.float32 and not vol.image[~vol.brain_mask].any()


def test_train_split_is_healthy_and_volume_contract(ds):
    vol = ds.load("synth-train-0000")
    assert isinstance(vol, Volume) and vol.lesion_mask is None and vol.healthy
    assert read_volume(ds.source_files("synth-train-0000")[0])["lesion"] is None
    assert vol.image.shape == (99, 117, 95) == vol.brain_mask.shape
    # the 2 mm grid: voxel 0 is the centre of the fine block 0..1, i.e. fine voxel 0.5
    fine = load_template(1).affine
    np.testing.assert_allclose(vol.affine[:3, :3], 2 * fine[:3, :3])
    np.testing.assert_allclose(vol.affine[:3, 3], fine[:3, :3] @ [0.5, 0.5, 0.5] + fine[:3, 3])
    assert vol.brain_mask.sum() * 8 > 1.2e6, "a whole brain is well over a litre"
    assert vol.meta["seed"] == 0 and vol.meta["split"] == "train"


def test_second_instance_reuses_the_cache(ds, monkeypatch):
    files = [volume_path(ds.root, s) for s in ds.subjects("train") + ds.subjects("test")]
    before = {f: f.stat().st_mtime_ns for f in files}

    def boom(*a, **k):
        raise AssertionError("regenerated a cached volume")

    monkeypatch.setattr(gen_mod, "generate_volume", boom)
    again = SynthDataset(**SMALL, cache_dir=ds.cache_dir)
    assert again.root == ds.root
    assert again.prepare() == []
    for s in again.subjects("test"):
        assert again.load(s).lesion_mask.any()
    assert {f: f.stat().st_mtime_ns for f in files} == before
    assert (ds.root / "manifest.json").exists()
    # the fingerprint is content-based: same for both instances, different for another seed
    assert again.fingerprint("train") == ds.fingerprint("train")
    assert SynthDataset(**{**SMALL, "seed": 5}, cache_dir=ds.cache_dir).fingerprint("train") != ds.fingerprint("train")


def test_generate_each_makes_only_the_volume_read_with_the_same_bytes(ds, tmp_path):
    lazy = SynthDataset(**SMALL, cache_dir=str(tmp_path), progress=False, generate="each")
    assert lazy.params() == ds.params()            # same slice-cache key and fingerprint
    assert lazy.fingerprint("test") == ds.fingerprint("test")
    [path] = lazy.source_files("synth-test-0001")
    assert sorted(p.name for p in tmp_path.rglob("*.npz")) == ["synth-test-0001.npz"]
    assert path.read_bytes() == volume_path(ds.root, "synth-test-0001").read_bytes()
    assert lazy.load("synth-test-0001").lesion_mask.any()
    assert len(list(tmp_path.rglob("*.npz"))) == 1
    manifest = (lazy.root / "manifest.json").read_text()
    assert "synth-test-0001" in manifest and "synth-test-0000" not in manifest


def test_default_cache_location_and_unreadable_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ADBENCH_CACHE", str(tmp_path))
    d = SynthDataset(**SMALL)
    assert d.root.parent == tmp_path / "synth"
    path = volume_path(d.root, "synth-train-0000")
    path.write_bytes(b"not a zip")
    with pytest.raises(DataError, match=str(path)):
        d.load("synth-train-0000")
    with pytest.raises(DataError, match="not in split"):
        d.load("synth-train-0007")


def test_lesion_mix_is_exact_for_every_prefix():
    for mix in (0.0, 0.25, 0.5, 0.7, 1.0):
        kinds = [lesion_kind(i, mix) for i in range(40)]
        for n in range(1, 41):
            assert kinds[:n].count("tumour") == math.floor(n * mix + 1e-9)


@pytest.mark.parametrize("bad,word", [({"spacing": 0}, "spacing"), ({"lesion_mix": 1.5}, "lesion_mix"),
                                      ({"n_train": -1}, "n_train"),
                                      ({"lesion_min_mm": 30.0}, "lesion_min_mm"),
                                      ({"generate": "some"}, "generate")])
def test_bad_config_names_the_parameter(bad, word):
    with pytest.raises(ConfigError, match=word):
        SynthDataset(**{**SMALL, **bad})


def test_plugin_is_registered_and_constructing_does_no_work(tmp_path, monkeypatch):
    monkeypatch.setenv("ADBENCH_CACHE", str(tmp_path))
    reg = build_registry()
    assert "synth" in reg.datasets and reg.datasets["synth"].plugin == "synth"
    spec = reg.dataset("synth")
    assert set(spec.splits) == {"train", "test"}
    assert {"smoke", "default", "cpu-quick", "paper"} <= set(spec.presets)
    assert spec.presets["smoke"]["spacing"] == 2
    for preset in spec.presets.values():
        assert set(preset) <= set(spec.default_config)
    d = spec.factory(**{**spec.default_config, **spec.presets["smoke"]})
    assert len(d.subjects("train")) == 4 and len(d.subjects("test")) == 3
    assert not list(tmp_path.rglob("*.npz")), "constructing the dataset must not generate"


def test_parallel_generation_is_byte_identical_to_serial(tmp_path):
    params = SynthParams.from_config(**SMALL)
    subjects = ["synth-train-0000", "synth-test-0000", "synth-test-0001", "synth-train-0001"]
    serial = gen_mod.ensure_volumes(params, tmp_path / "serial", subjects, workers=1)
    parallel = gen_mod.ensure_volumes(params, tmp_path / "parallel", subjects, workers=2)
    assert serial == parallel == subjects
    for sid in subjects:
        assert (volume_path(tmp_path / "serial", sid).read_bytes()
                == volume_path(tmp_path / "parallel", sid).read_bytes()), sid
    manifest = (tmp_path / "parallel" / "manifest.json").read_text()
    assert all(sid in manifest for sid in subjects)
    assert gen_mod.ensure_volumes(params, tmp_path / "parallel", subjects, workers=2) == []
