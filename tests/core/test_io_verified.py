"""adbench.io: checksummed cache files, verified reads, quarantine, file modes from the umask,
and file_sha256 on files that became unreadable or are directories."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import stat

import numpy as np
import pytest
import torch

from adbench.errors import DataError
from adbench.io import (CorruptCacheError, NotAFileError, UnreadableFileError, atomic_write,
                        checksum_path, file_sha256, load_tensors, quarantine, read_json_verified,
                        save_nifti, save_tensors, write_json)


def _tensors():
    return {"w": torch.arange(12, dtype=torch.float32).view(3, 4), "n": torch.tensor([7])}


def test_save_tensors_writes_a_sidecar_that_load_checks(tmp_path):
    p = tmp_path / "state.pt"
    save_tensors(p, _tensors())
    side = checksum_path(p)
    assert side.name == "state.pt.sha256"
    import hashlib
    assert side.read_text().split() == [hashlib.sha256(p.read_bytes()).hexdigest(), "state.pt"]
    assert torch.equal(load_tensors(p)["w"], _tensors()["w"])


def test_a_truncated_file_is_a_corrupt_cache_error_naming_it(tmp_path):
    p = tmp_path / "state.pt"
    save_tensors(p, _tensors())
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(CorruptCacheError, match="state.pt.*does not match") as e:
        load_tensors(p)
    assert e.value.path == p and str(p) in str(e.value)
    assert isinstance(e.value, DataError)  # the command line prints it without a traceback


def test_a_damaged_file_that_still_loads_is_never_reused(tmp_path):
    # torch stores tensor bytes uncompressed: one flipped byte inside the data still loads
    p = tmp_path / "state.pt"
    save_tensors(p, {"w": torch.zeros(4096)})
    raw = bytearray(p.read_bytes())
    at = raw.index(bytes(4096 * 4)) + 100
    raw[at] ^= 0xFF
    p.write_bytes(bytes(raw))
    assert torch.load(p, weights_only=True)["w"].abs().sum() > 0   # loads, with a wrong value
    with pytest.raises(CorruptCacheError, match="does not match"):
        load_tensors(p)


def test_files_without_a_sidecar_are_verified_by_loading(tmp_path):
    p = tmp_path / "old.pt"
    torch.save(_tensors(), p)            # written by an adbench before sidecars
    assert torch.equal(load_tensors(p)["n"], torch.tensor([7]))
    p.write_bytes(p.read_bytes()[:60])
    with pytest.raises(CorruptCacheError, match="old.pt: unreadable"):
        load_tensors(p)
    with pytest.raises(FileNotFoundError):   # missing is not corrupt
        load_tensors(tmp_path / "absent.pt")


def test_json_with_checksum(tmp_path):
    p = tmp_path / "m.json"
    write_json(p, {"a": [1, 2]}, checksum=True)
    assert read_json_verified(p) == {"a": [1, 2]}
    p.write_text(p.read_text().replace("1", "3"))   # still valid JSON, other content
    with pytest.raises(CorruptCacheError, match="m.json"):
        read_json_verified(p)
    checksum_path(p).unlink()
    assert read_json_verified(p) == {"a": [3, 2]}
    p.write_text('{"a": [1')
    with pytest.raises(CorruptCacheError, match="unreadable .JSONDecodeError"):
        read_json_verified(p)
    checksum_path(p).write_text("not a checksum\n")
    with pytest.raises(CorruptCacheError, match="holds no sha256"):
        read_json_verified(p)


def test_quarantine_moves_the_file_and_its_sidecar_aside_with_one_warning(tmp_path, caplog):
    p = tmp_path / "state.pt"
    save_tensors(p, _tensors())
    with caplog.at_level(logging.WARNING, logger="adbench"):
        new = quarantine(p, "truncated", "fitting again")
    assert not p.exists() and not checksum_path(p).exists()
    assert new.name.startswith("state.pt.corrupt-") and new.exists()
    assert (tmp_path / new.name.replace("state.pt", "state.pt.sha256", 1)).exists()
    (rec,) = [r for r in caplog.records if r.name == "adbench"]
    msg = rec.getMessage()
    assert rec.levelno == logging.WARNING and "\n" not in msg
    assert str(p) in msg and "truncated" in msg and "fitting again" in msg and new.name in msg
    save_tensors(p, _tensors())              # a second damage in the same second: no clash
    assert quarantine(p, "again", "x") not in (None, new)
    assert quarantine(p, "gone", "x") is None


@contextlib.contextmanager
def _umask(mask):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_get_the_mode_of_the_umask(tmp_path, mask, mode):
    with _umask(mask):
        atomic_write(tmp_path / "a.txt", "x")
        write_json(tmp_path / "b.json", {"x": 1}, checksum=True)
        save_tensors(tmp_path / "c.pt", _tensors())
        save_nifti(tmp_path / "d.nii.gz", np.zeros((2, 2, 2), np.float32), np.eye(4))
    files = sorted(p for p in tmp_path.iterdir())
    assert [p.name for p in files] == ["a.txt", "b.json", "b.json.sha256", "c.pt", "c.pt.sha256",
                                       "d.nii.gz"]
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == mode, p


def test_file_sha256_of_a_directory_names_it(tmp_path):
    d = tmp_path / "sub-1_preproc-quasiraw_T1w.npy"
    d.mkdir()
    with pytest.raises(NotAFileError, match="T1w.npy: is a directory, expected a file") as e:
        file_sha256(d)
    assert isinstance(e.value, DataError) and isinstance(e.value, IsADirectoryError)


def _as_nobody(fn) -> tuple[int, str]:
    """Run ``fn()`` in a forked child that dropped root for the 'nobody' user; its exit
    status and what it wrote. Modules are already imported, so nothing under /root is read."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            out = fn()
        except BaseException as exc:  # noqa: BLE001 - report everything to the parent
            out, code = f"{type(exc).__name__}|{exc}", 1
        os.write(w, str(out).encode())
        os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), text


@pytest.fixture
def shared_dir():
    """A folder other users can enter (pytest's own tmp folders are private to root)."""
    import shutil
    import tempfile
    from pathlib import Path

    d = Path(tempfile.mkdtemp(prefix="adbench-shared-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


@pytest.mark.skipif(not hasattr(os, "fork") or os.geteuid() != 0,
                    reason="needs root, to drop to the 'nobody' user in a child")
def test_an_unreadable_file_is_not_reported_from_the_memo(shared_dir):
    import pwd
    try:
        pwd.getpwuid(65534)
    except KeyError:
        pytest.skip("no user with uid 65534 ('nobody') to read as")
    f = shared_dir / "image.nii.gz"
    f.write_bytes(b"voxels")
    f.chmod(0o644)
    code, out = _as_nobody(lambda: file_sha256(f))
    if code != 0:
        pytest.skip(f"the 'nobody' user cannot read {f} even before the test: {out}")
    assert len(out) == 64 and file_sha256(f) == out   # hashed, and memoised in this process
    f.chmod(0o000)   # as root this process still reads it; as 'nobody' it cannot
    code, out = _as_nobody(lambda: file_sha256(f))    # the child inherits the warm memo
    name, msg = out.split("|", 1)
    assert code == 1 and name == "UnreadableFileError", out
    assert str(f) in msg and "not readable" in msg
    assert issubclass(UnreadableFileError, PermissionError) and issubclass(UnreadableFileError, DataError)


def test_file_sha256_rehashes_a_replaced_file_with_the_same_size_and_mtime(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"aaaa")
    st = f.stat()
    h1 = file_sha256(f)
    tmp = tmp_path / "b.bin"
    tmp.write_bytes(b"bbbb")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, f)                          # same size, same mtime, new inode
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert file_sha256(f) != h1
    assert json.dumps(file_sha256(f))           # a plain str
