"""Pure logic of the KV snapshot index: LRU eviction, budget, atomic files, mismatch."""

import time

import pytest

from poly_ray.engine.kv_snapshots import Entry, SnapshotIndex, SnapshotTooLarge


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


def test_an_entry_naming_a_file_not_its_own_is_dropped_and_the_file_kept(tmp_path):
    """N11: forget() unlinked whatever index.json named."""
    import json

    folder = tmp_path / "kv"
    index = SnapshotIndex(folder, "fp")
    _put(index, "k", 5)
    outside = tmp_path / "state.sqlite3"
    outside.write_bytes(b"precious")
    raw = json.loads((folder / "index.json").read_text())
    raw["k"]["file"] = "../state.sqlite3"
    (folder / "index.json").write_text(json.dumps(raw))
    again = SnapshotIndex(folder, "other-fp")  # another fingerprint: lookup forgets what it finds
    assert again.lookup("k") is None and "k" not in again.entries
    assert outside.read_bytes() == b"precious"


def test_the_fingerprint_holds_the_lora_adapters_and_their_scales(tmp_path):
    from poly_ray.engine.kv_snapshots import fingerprint

    model, adapter = tmp_path / "m.gguf", tmp_path / "style.gguf"
    model.write_bytes(b"m")
    adapter.write_bytes(b"a")
    bare = fingerprint(str(model), 512)
    styled = fingerprint(str(model), 512, [(str(adapter), 1.0)])
    assert len({bare, styled, fingerprint(str(model), 512, [(str(adapter), 0.5)])}) == 3
    assert styled == fingerprint(str(model), 512, [(str(adapter), 1.0)])


def test_eviction_of_many_small_snapshots_is_quick(tmp_path):
    """N11: total() on every step made evicting n entries O(n²)."""
    index = SnapshotIndex(tmp_path, "fp", budget=20_000)
    index._write = lambda: None  # the index file is not what is measured here
    for i in range(20_000):
        index.entries[f"k{i}"] = Entry(f"{i:032x}.kv", 1, i, "fp", 1)
    start = time.perf_counter()
    index.file_for("big").write_bytes(b"x")
    evicted = index.admit("big", 15_000, n_tokens=15_000)
    assert len(evicted) == 15_000 and index.total() <= 20_000
    assert time.perf_counter() - start < 2
