"""Model-cache keys: a weights file enters a model's key by its content, not its path."""
from __future__ import annotations

from adbench.model_cache import _model_key
from adbench.runner import resolve


def _key(weights) -> str:
    return _model_key(resolve("padim", "synth", preset="smoke", sets=[f"weights={weights}"]), "fp")


def test_weights_file_enters_the_key_by_content(tmp_path):
    a, b = tmp_path / "a" / "vgg16.pth", tmp_path / "b" / "copy.pth"
    for p in (a, b):
        p.parent.mkdir()
        p.write_bytes(b"one set of weights")
    assert _key(a) == _key(b)                  # the same weights at another path: one model
    assert _key(a) != _key("random")           # a named source is another model
    a.write_bytes(b"other weights, same path")
    assert _key(a) != _key(b)                  # replaced in place: refit, never the old model
