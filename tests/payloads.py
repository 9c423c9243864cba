"""Bitwise comparison of checkpoint payloads, shared by the training and method tests."""
from __future__ import annotations

import torch


def assert_same_payload(a, b, where="state"):
    """Bitwise equality of nested checkpoint payloads (tensors, state dicts, plain values);
    the assertion names the first key path that differs."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            assert_same_payload(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same_payload(x, y, f"{where}[{k}]")
    else:
        assert a == b, (where, a, b)
