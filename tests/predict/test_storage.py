from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from lightning_cam.predict import storage


def _writer(out: Path, rank: int = 0, size: int = 2) -> storage.ShardWriter:
    return storage.ShardWriter(storage.prepare_folder(out, rank), rank, "fp", shard_size=size)


def _add(w: storage.ShardWriter, i: int) -> None:
    w.add({"index": i, "id": str(i)}, {"cam/gradcam/l": np.full((2, 2), i, np.float16)})


def test_shards_are_written_when_full_with_their_index(tmp_path: Path) -> None:
    w = _writer(tmp_path, size=2)
    for i in range(5):
        _add(w, i)
    assert [n for n, _ in storage.complete_shards(tmp_path)] == [
        "r00000-a001-s000000", "r00000-a001-s000001"
    ]
    assert len(w) == 1  # the fifth image waits for the flush
    w.flush()
    table = storage.read_index(tmp_path / "shards" / "r00000-a001-s000002.parquet", "fp")
    assert table.column("index").to_pylist() == [4]
    assert table.column("row").to_pylist() == [0]
    with np.load(tmp_path / "shards" / "r00000-a001-s000001.npz") as z:
        assert z["index"].tolist() == [2, 3]
        assert z["cam/gradcam/l"][1].tolist() == [[3, 3], [3, 3]]
    assert storage.load_maps(tmp_path, "shards/r00000-a001-s000001.npz", 1,
                             "cam/gradcam/l").dtype == np.float32
    # no temporary file is left
    assert not [p for p in (tmp_path / "shards").iterdir() if p.name.startswith(".")]


def test_orphan_maps_are_ignored_and_removed_and_attempts_count_up(tmp_path: Path) -> None:
    w = _writer(tmp_path)
    _add(w, 0)
    _add(w, 1)
    # a killed run: maps written, index missing; a temporary file left behind
    (tmp_path / "shards" / "r00000-a001-s000001.npz").write_bytes(b"half")
    (tmp_path / "shards" / ".r00000-a001-s000002.npz.tmp123").write_bytes(b"x")
    assert [n for n, _ in storage.complete_shards(tmp_path)] == ["r00000-a001-s000000"]
    assert storage.next_attempt(tmp_path, 0) == 2 and storage.next_attempt(tmp_path, 1) == 1
    assert storage.remove_stale(tmp_path, rank=1) == 0  # another rank's files stay
    assert storage.remove_stale(tmp_path, rank=0) == 2
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        "r00000-a001-s000000.npz", "r00000-a001-s000000.parquet"
    ]


def test_run_file_refuses_another_configuration(tmp_path: Path) -> None:
    out = storage.prepare_folder(tmp_path / "out", 0)
    run = {"fingerprint": "a", "config": {"methods": ["gradcam"]}}
    assert storage.check_run_file(out, run) is True
    storage.write_run_file(out, run)
    assert storage.check_run_file(out, run) is False
    other = {"fingerprint": "b", "config": {"methods": ["gradcam++"]}}
    with pytest.raises(storage.OutputFolderError, match=r"another configuration.*methods"):
        storage.check_run_file(out, other)
    assert json.loads((out / "run.json").read_text())["fingerprint"] == "a"


def test_shards_without_run_file_are_refused(tmp_path: Path) -> None:
    w = _writer(tmp_path / "out", size=1)
    _add(w, 0)
    with pytest.raises(storage.OutputFolderError, match="unknown run"):
        storage.check_run_file(tmp_path / "out", {"fingerprint": "fp", "config": {}})
    with pytest.raises(storage.OutputFolderError, match="another configuration"):
        storage.read_index(next(storage.complete_shards(tmp_path / "out"))[1], "other")


def test_unwritable_output(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(storage.OutputFolderError, match="is a file"):
        storage.prepare_folder(tmp_path / "file", 0)
    with pytest.raises(storage.OutputFolderError, match="Cannot create"):
        storage.prepare_folder(tmp_path / "file" / "sub", 0)


def test_no_space_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    w = _writer(tmp_path)
    monkeypatch.setattr(storage.os, "fsync", full)
    _add(w, 0)
    with pytest.raises(storage.OutputFolderError, match="No space left.*resumes"):
        _add(w, 1)
    assert not [p for p in (tmp_path / "shards").iterdir() if p.name.startswith(".")]
    with pytest.raises(storage.OutputFolderError, match="Not enough space"):
        storage.check_free_space(tmp_path, 1 << 62)


def test_manifest_joins_shards_and_refuses_duplicates(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    a = _writer(tmp_path, rank=0, size=10)
    b = storage.ShardWriter(tmp_path, 1, "fp", shard_size=10)
    for i in (0, 2):
        _add(a, i)
    _add(b, 1)
    a.flush()
    b.flush()
    assert storage.write_manifest(tmp_path, "fp") == 3
    got = pq.read_table(tmp_path / "manifest.parquet").to_pandas()
    assert sorted(got["index"]) == [0, 1, 2] and set(got["rank"]) == {0, 1}
    _add(b, 2)
    b.flush()
    with pytest.raises(storage.OutputFolderError, match="two shards"):
        storage.write_manifest(tmp_path, "fp")
