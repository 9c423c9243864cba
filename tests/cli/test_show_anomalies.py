"""``adbench show DATASET --anomalies``: a PNG grid of synthetic anomalies and their masks,
through the real CLI entry point, and its errors."""
from __future__ import annotations

import numpy as np
import pytest

from adbench.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_show_anomalies_writes_a_grid_with_mask_outlines(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADBENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "grid.png"
    rc = main(["show", "synth", "--anomalies", "--out", str(out), "--preset", "smoke", "--n", "3",
               "--set", "n_train=1", "--set", "n_test=1", "--seed", "2",
               "--synthesis-set", "sources=[procedural,intensity]", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert str(out) in capsys.readouterr().out
    assert out.read_bytes()[:8] == PNG
    import matplotlib.image as mpimg

    img = mpimg.imread(out)
    h, w = img.shape[:2]
    assert h > w > 0.5 * h, "three rows of three 160x128 panels"
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    assert ((r > 0.6) & (g < 0.3) & (b < 0.3)).sum() > 20, "mask outlines are drawn in red"
    grey = (np.abs(r - g) < 0.02) & (np.abs(g - b) < 0.02) & (r > 0.3)
    assert grey.sum() > 0.05 * h * w, "the slices are drawn in grey levels"


def test_show_anomalies_rejects_bad_synthesis_keys(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADBENCH_CACHE", str(tmp_path / "cache"))
    rc = main(["show", "synth", "--anomalies", "--out", str(tmp_path / "g.png"), "--preset",
               "smoke", "--synthesis-set", "textures=[dtd]", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "textures" in err and "valid keys" in err
    assert not (tmp_path / "g.png").exists()
    rc = main(["show", "synth", "--out", str(tmp_path / "g.png"), "--synthesis-set",
               "sources=[healthy]", "--quiet"])
    assert rc == 2 and "--anomalies" in capsys.readouterr().err
