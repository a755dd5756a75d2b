"""Pure logic of the KV snapshot index: LRU eviction, budget, atomic files, mismatch."""

import time

import pytest

from poly_ray.engine.kv_snapshots import SnapshotIndex, SnapshotTooLarge


def _put(index: SnapshotIndex, key: str, size: int) -> list[str]:
    index.file_for(key).write_bytes(b"x" * size)
    return index.admit(key, size, n_tokens=size)


def test_lru_eviction_keeps_total_under_budget(tmp_path):
    index = SnapshotIndex(tmp_path, "fp", budget=100)
    _put(index, "a", 40)
    time.sleep(0.01)
    _put(index, "b", 40)
    time.sleep(0.01)
    index.touch("a")  # a is now more recent than b
    time.sleep(0.01)
    assert _put(index, "c", 40) == ["b"]
    assert set(index.entries) == {"a", "c"}
    assert not index.file_for("b").exists()
    assert index.total() <= 100


def test_one_snapshot_over_budget_is_refused(tmp_path):
    index = SnapshotIndex(tmp_path, "fp", budget=10)
    with pytest.raises(SnapshotTooLarge) as e:
        _put(index, "big", 11)
    assert "kv_snapshot_bytes" in str(e.value)
    assert not index.file_for("big").exists()
    assert index.entries == {}


def test_index_survives_restart_and_ignores_other_fingerprint(tmp_path):
    index = SnapshotIndex(tmp_path, "model-A|ctx=256", budget=100)
    _put(index, "42", 10)
    again = SnapshotIndex(tmp_path, "model-A|ctx=256", budget=100)
    assert again.lookup("42").n_tokens == 10
    other = SnapshotIndex(tmp_path, "model-A|ctx=512", budget=100)
    assert other.lookup("42") is None
    assert not other.file_for("42").exists()


def test_corrupt_index_starts_empty(tmp_path):
    (tmp_path / "index.json").write_text("{not json")
    assert SnapshotIndex(tmp_path, "fp").entries == {}


def test_entry_with_missing_file_is_dropped(tmp_path):
    index = SnapshotIndex(tmp_path, "fp")
    _put(index, "k", 5)
    index.file_for("k").unlink()
    assert SnapshotIndex(tmp_path, "fp").lookup("k") is None


def test_no_temp_files_left(tmp_path):
    index = SnapshotIndex(tmp_path, "fp")
    _put(index, "k", 5)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
