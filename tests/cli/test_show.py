"""``adbench show``: the PNG preview of a dataset, called through the real CLI entry point."""
from __future__ import annotations

import numpy as np
import pytest

from adbench.cli import main
from adbench.plugins import get_registry

PNG = b"\x89PNG\r\n\x1a\n"


def test_show_writes_a_png_with_lesion_contours(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "preview.png"
    rc = main(["show", "synth", "--out", str(out), "--preset", "smoke", "--n", "1",
               "--set", "n_train=0", "--set", "dataset.n_test=1", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert str(out) in capsys.readouterr().out
    assert out.read_bytes()[:8] == PNG
    import matplotlib.image as mpimg

    img = mpimg.imread(out)
    h, w = img.shape[:2]
    assert w > 2 * h > 300, "one row of three panels (axial, coronal, preprocessed)"
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    red = (r > 0.6) & (g < 0.3) & (b < 0.3)
    grey = (np.abs(r - g) < 0.02) & (np.abs(g - b) < 0.02) & (r > 0.3)
    assert red.sum() > 20, "lesion contours are drawn in red"
    assert grey.sum() > 0.05 * h * w, "the brain is drawn in grey levels"
    assert not list(tmp_path.glob(".preview.png.*")), "no temporary file left behind"


def test_show_generates_only_the_drawn_volume_and_a_run_reuses_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADBENCH_CACHE", str(tmp_path / "cache"))
    shown, out = tmp_path / "shown", tmp_path / "preview.png"
    small = ["--set", "n_train=1", "--set", "n_test=2"]    # smoke preset, fewer volumes
    rc = main(["show", "synth", "--out", str(out), "--preset", "smoke", "--n", "1", *small,
               "--set", f"cache_dir={shown}", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert out.read_bytes()[:8] == PNG
    [drawn] = list(shown.rglob("*.npz"))
    assert drawn.name == "synth-test-0000.npz"
    assert not list((tmp_path / "cache").rglob("*.npz")), "cache_dir is the only cache used"
    # the same configuration generated in full, as a run does it
    spec = get_registry().dataset("synth")
    cfg = {**spec.default_config, **spec.presets["smoke"], "n_train": 1, "n_test": 2,
           "progress": False}
    full = spec.factory(**{**cfg, "cache_dir": str(tmp_path / "full")})
    assert len(full.prepare()) == 5   # 1 train, 2 test, 2 healthy validation (smoke n_val)
    assert drawn.read_bytes() == (full.root / drawn.name).read_bytes()
    # a later run on the preview's cache keeps the drawn file and ends with the same manifest
    mtime = drawn.stat().st_mtime_ns
    later = spec.factory(**{**cfg, "cache_dir": str(shown)})
    assert sorted(later.prepare()) == ["synth-test-0001", "synth-train-0000", "synth-val-0000",
                                       "synth-val-0001"]
    assert drawn.stat().st_mtime_ns == mtime
    assert ((later.root / "manifest.json").read_bytes()
            == (full.root / "manifest.json").read_bytes())
    # drawing again reads the cache as it is
    assert main(["show", "synth", "--out", str(out), "--preset", "smoke", "--n", "2", *small,
                 "--set", f"cache_dir={shown}", "--quiet"]) == 0
    assert drawn.stat().st_mtime_ns == mtime and len(list(shown.rglob("*.npz"))) == 5


@pytest.mark.parametrize("argv,needle", [
    (["--set", "n_tset=1"], "n_test"),            # unknown key: names the closest valid one
    (["--split", "test", "--n", "0"], "--n"),
    (["--preset", "gpu-qiuck"], "gpu-quick"),     # unknown preset: lists the dataset's presets
])
def test_show_errors_name_the_problem(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.setenv("ADBENCH_CACHE", str(tmp_path / "cache"))
    rc = main(["show", "synth", "--out", str(tmp_path / "p.png"), "--preset", "smoke", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err
    assert not (tmp_path / "p.png").exists()


def test_show_rejects_a_non_png_name_before_generating(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADBENCH_CACHE", str(tmp_path / "cache"))
    rc = main(["show", "synth", "--out", str(tmp_path / "p.jpg"), "--preset", "smoke"])
    assert rc == 2 and ".png" in capsys.readouterr().err
    assert not list((tmp_path / "cache").rglob("*.npz"))
