"""benchmarks/perf/quality_curves.py: quality records of several training logs side by side,
with the training minutes up to each score (a known answer from hand-written logs)."""
from __future__ import annotations

import json

from synthcache import benchmark_script


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _log(sec):
    # log every 10 iterations at `sec` s/iteration; quality at 20 and 40, each taking 30 s
    return [{"iteration": 10, "kimg": 0.08, "sec_per_iter": sec, "loss_G": 1.0},
            {"iteration": 20, "kimg": 0.16, "sec_per_iter": sec, "kid_vgg": 5.0, "fid_vgg": 50.0,
             "swd": 9.0, "quality_s": 30.0},
            {"iteration": 30, "kimg": 0.24, "sec_per_iter": sec},
            {"iteration": 40, "kimg": 0.32, "sec_per_iter": sec, "kid_vgg": 2.0, "fid_vgg": 20.0,
             "swd": 4.0, "quality_s": 30.0}]


def test_curves_minutes_and_figure(tmp_path, capsys):
    mod = benchmark_script("quality_curves")
    a = _write(tmp_path / "a.jsonl", _log(3.0))
    (tmp_path / "b").mkdir()
    _write(tmp_path / "b" / "train_log.jsonl", _log(6.0)[:2])      # a folder works too
    fig = tmp_path / "q.png"
    assert mod.main([f"quick={a}", f"long={tmp_path / 'b'}", "--out", str(fig), "--x", "minutes"]) == 0
    out = json.loads(capsys.readouterr().out)
    quick, long = out["curves"]["quick"], out["curves"]["long"]
    assert [r["iteration"] for r in quick] == [20, 40]
    # 20 iterations at 3 s = 1 min; then 20 more (1 min) after a 30 s score = 2.5 min
    assert [r["minutes"] for r in quick] == [1.0, 2.5]
    assert [r["kid_vgg"] for r in quick] == [5.0, 2.0] and quick[1]["swd"] == 4.0
    assert long == [{"iteration": 20, "kimg": 0.16, "minutes": 2.0, "kid_vgg": 5.0,
                     "fid_vgg": 50.0, "swd": 9.0}]
    assert fig.stat().st_size > 1000 and out["x"] == "minutes"


def test_bad_inputs_name_the_file(tmp_path, capsys):
    mod = benchmark_script("quality_curves")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"iteration": 1}\nnot json\n')
    assert mod.main([f"x={bad}"]) == 2
    assert "bad.jsonl, line 2" in capsys.readouterr().err
    plain = _write(tmp_path / "plain.jsonl", _log(1.0)[:1])         # no quality records
    assert mod.main([f"x={plain}", "--out", str(tmp_path / "none.png")]) == 2
    assert "quality_interval" in capsys.readouterr().err
    assert not (tmp_path / "none.png").exists()
    assert mod.main([str(plain)]) == 2                                  # no LABEL=
    assert "LABEL=PATH" in capsys.readouterr().err
    assert mod.main([f"x={tmp_path / 'missing'}"]) == 2
    assert "missing" in capsys.readouterr().err
