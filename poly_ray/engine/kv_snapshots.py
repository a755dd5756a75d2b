"""Durable per-sequence KV snapshots: `/stream` cache ids and task preludes.

A snapshot is one llama.cpp sequence's state (``llama_state_seq_save_file``), with
the tokens it holds, in ``<dir>/<hash>.kv``. ``index.json`` next to them records,
per key, the file, its size, when it was last used and what made it (the model
file and the context size): a snapshot from another model or another context
size is ignored, never loaded. Writes go to a temp file renamed into place, so a
crash leaves the old snapshot or the new one, never half of one. The files stay
under a byte budget; the least recently used go first.

The index logic is pure; only ``save``/``load`` touch llama.cpp, and the engine
calls them on its worker thread while the sequence is not decoding.

In a graph, a replica's folder is a cache of its own, and the durable copy is in the
``Vault`` on the head (a deployment, serve/builder.py): every snapshot saved is sent
there, and a replica that lacks one asks it there, so a cache id or a prelude saved
on one node is restored on any other.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from poly_ray.errors import PolyError

log = logging.getLogger(__name__)

DEFAULT_BUDGET = 2 << 30  # 2 GiB
_FILE = re.compile(r"[0-9a-f]{32}\.kv")  # what file_for names


class SnapshotTooLarge(PolyError):
    """One snapshot alone is over the byte budget."""

    status = 507
    code = "kv_snapshot_too_large"

    def __init__(self, size: int, budget: int):
        super().__init__(
            f"the KV snapshot of this prompt is {size} bytes, over the budget of {budget} bytes "
            "(kv_snapshot_bytes): send it without a cache id, or raise the budget"
        )


@dataclass
class Entry:
    file: str
    bytes: int
    last_used: float
    fingerprint: str
    n_tokens: int
    tokens: list[int] = field(default_factory=list)  # what it holds: matched before any file is read


_SAMPLE = 1 << 20


def _file(path: str) -> str:
    """A file known by its size and a digest of its first and last MiB, not its path or
    time, which differ between nodes that hold the same model."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(_SAMPLE))
        f.seek(max(0, size - _SAMPLE))
        digest.update(f.read(_SAMPLE))
    return digest.hexdigest()[:32]


def fingerprint(model_path: str, context_size: int, lora_adapters: Sequence[tuple[str, float]] = (),
                kv_types: str = "k=f16,v=f16") -> str:
    """What a snapshot is valid for: this model file, context size, LoRA adapters with
    their scales (cells computed under other adapters would answer wrong) and the KV
    cache's types (``KvCacheTypes.tag``: cells of another type are other bytes)."""
    adapters = "".join(f"|lora={_file(path)}@{scale}" for path, scale in lora_adapters)
    return f"{_file(model_path)}|ctx={context_size}{adapters}|kv={kv_types}"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class SnapshotIndex:
    """Keys -> snapshot files in one folder, under a byte budget, LRU eviction."""

    def __init__(self, folder: Path, fingerprint: str, budget: int = DEFAULT_BUDGET):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.fp = fingerprint
        self.budget = budget
        self.entries: dict[str, Entry] = {}
        # Bytes per token of the largest snapshot tried, kept or refused: what the
        # up-front check judges a new prompt by.
        self.per_token = 0.0
        self._read()

    # -- index ------------------------------------------------------------
    def _read(self) -> None:
        path = self.folder / "index.json"
        try:
            raw = json.loads(path.read_text())
            self.entries = {k: Entry(**v) for k, v in raw.items()}
        except FileNotFoundError:
            pass
        except (ValueError, TypeError) as e:
            log.warning("KV snapshot index %s unreadable (%s): starting empty", path, e)
            self.entries = {}
        # Forget entries whose file has gone (deleted by hand, or a crash before rename), and
        # any whose file is not one of ours: forget() unlinks it ("../state.sqlite3").
        for key in [k for k, e in self.entries.items()
                    if not isinstance(e.file, str) or not _FILE.fullmatch(e.file) or not (self.folder / e.file).exists()]:
            del self.entries[key]

    def _write(self) -> None:
        data = json.dumps({k: asdict(e) for k, e in self.entries.items()}, indent=1).encode()
        _atomic_write(self.folder / "index.json", data)

    def file_for(self, key: str) -> Path:
        return self.folder / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".kv")

    def check_fits(self, n_tokens: int) -> None:
        """Refuse up front a prompt whose snapshot would be over the budget, judged by
        the bytes per token of the snapshots saved so far (none yet: no judgement)."""
        sized = [e.bytes / e.n_tokens for e in self.entries.values() if e.n_tokens > 0]
        per_token = max([self.per_token, *sized])
        if per_token:
            if n_tokens * per_token > self.budget:
                raise SnapshotTooLarge(int(n_tokens * per_token), self.budget)

    def total(self) -> int:
        return sum(e.bytes for e in list(self.entries.values()))  # list: stats() reads from another thread

    def lookup(self, key: str) -> Entry | None:
        """The entry for ``key`` if it was made by this model and context size."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry.fingerprint != self.fp:
            log.warning("KV snapshot %r was made by another model or context size: ignored", key)
            self.forget(key)
            return None
        return entry

    def touch(self, key: str) -> None:
        if key in self.entries:
            self.entries[key].last_used = time.time()
            self._write()

    def forget(self, key: str) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            (self.folder / entry.file).unlink(missing_ok=True)
            self._write()

    def admit(self, key: str, size: int, n_tokens: int, tokens: list[int] | None = None) -> list[str]:
        """Record a snapshot of ``size`` bytes just written for ``key``; evict least
        recently used others until the total fits. Returns the evicted keys."""
        if n_tokens:
            self.per_token = max(self.per_token, size / n_tokens)
        if size > self.budget:
            self.file_for(key).unlink(missing_ok=True)
            self.entries.pop(key, None)
            self._write()
            raise SnapshotTooLarge(size, self.budget)
        self.entries[key] = Entry(self.file_for(key).name, size, time.time(), self.fp, n_tokens, list(tokens or []))
        evicted, total = [], self.total()  # a running total: total() per step made eviction O(n²)
        for other in sorted(self.entries, key=lambda k: self.entries[k].last_used):
            if total <= self.budget:
                break
            if other != key:
                gone = self.entries.pop(other)
                (self.folder / gone.file).unlink(missing_ok=True)
                total -= gone.bytes
                evicted.append(other)
        self._write()
        return evicted

    def store(self, key: str, tokens: list[int], data: bytes) -> None:
        """Keep a snapshot's bytes (from the vault, or sent to it) as ``key``."""
        _atomic_write(self.file_for(key), data)
        self.admit(key, len(data), len(tokens), tokens)

    def read(self, key: str) -> tuple[list[int], bytes] | None:
        """``key``'s tokens and file bytes, if it is here and valid for this model."""
        entry = self.lookup(key)
        if entry is None:
            return None
        try:
            data = (self.folder / entry.file).read_bytes()
        except OSError:
            self.forget(key)
            return None
        self.touch(key)
        return entry.tokens, data

    # -- llama.cpp --------------------------------------------------------
    def save(self, ctx, seq: int, tokens: list[int], key: str) -> int:
        """Write sequence ``seq`` of ``ctx`` (holding ``tokens``) as ``key``; bytes written."""
        import llama_cpp

        path = self.file_for(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        arr = (llama_cpp.llama_token * len(tokens))(*tokens)
        size = llama_cpp.llama_state_seq_save_file(ctx, str(tmp).encode(), seq, arr, len(tokens))
        if size == 0:
            tmp.unlink(missing_ok=True)
            raise OSError(f"llama_state_seq_save_file failed for {path}")
        os.replace(tmp, path)
        self.admit(key, os.path.getsize(path), len(tokens), tokens)
        return size

    def load(self, ctx, seq: int, key: str, capacity: int) -> list[int] | None:
        """Restore ``key`` into sequence ``seq``; the tokens it holds, or None when there
        is no usable snapshot (absent, other model, corrupt: logged and forgotten)."""
        import llama_cpp

        entry = self.lookup(key)
        if entry is None:
            return None
        arr = (llama_cpp.llama_token * capacity)()
        n_out = ctypes.c_size_t(0)
        path = self.folder / entry.file
        read = llama_cpp.llama_state_seq_load_file(ctx, str(path).encode(), seq, arr, capacity, ctypes.byref(n_out))
        if read == 0 or n_out.value != entry.n_tokens:
            log.warning("KV snapshot %r (%s) could not be loaded: ignored, the prompt is evaluated", key, path)
            self.forget(key)
            return None
        self.touch(key)
        return list(arr[: n_out.value])


class SharedSnapshots(Protocol):
    """Where an engine sends the snapshots it saves and asks for those it lacks (the vault)."""

    async def fetch(self, fp: str, key: str) -> tuple[list[int], bytes] | None: ...

    def publish(self, fp: str, key: str, tokens: list[int], data: bytes) -> None:
        """Returns at once (it is called on the engine's worker thread)."""


class Vault:
    """The durable copy of every replica's snapshots, one index per model under
    ``folder`` (the head's ``state_dir/kv``), each under its model's byte budget. A
    request names the fingerprint of the replica's model: a snapshot made by another
    file or context size is never handed out."""

    def __init__(self, folder: str | Path, budgets: dict[str, int]):
        self.folder, self.budgets = Path(folder), budgets
        self._indexes: dict[str, SnapshotIndex] = {}

    def _index(self, model: str, fp: str) -> SnapshotIndex:
        index = self._indexes.get(model)
        if index is None or index.fp != fp:  # the model's file changed: its old snapshots are ignored
            index = self._indexes[model] = SnapshotIndex(self.folder / model, fp, self.budgets.get(model, DEFAULT_BUDGET))
        return index

    async def put(self, model: str, fp: str, key: str, tokens: list[int], data: bytes) -> None:
        try:
            self._index(model, fp).store(key, tokens, data)
        except SnapshotTooLarge as e:
            log.info("vault: %s", e)

    async def get(self, model: str, fp: str, key: str) -> tuple[list[int], bytes] | None:
        return self._index(model, fp).read(key)
