"""The state store: JSON objects in one SQLite table, each with an owner, a kind
("response", "conversation", "item", "assistant", "thread", "message", "run",
"step"...), an optional parent (the conversation or thread an item belongs to)
and a status.

Every read and write names the owner: an object of another owner is reported
exactly like a missing one, so ids never leak across credentials.
"""

from __future__ import annotations

import builtins
import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from poly_ray.errors import BadRequest, ConfigError, NotFound, QuotaExceeded
from poly_ray.state import chains
from poly_ray.state.chains import Chain
from poly_ray.state.kinds import HIDDEN
from poly_ray.state.migrations import SCHEMA_VERSION, migrate

FILE_NAME = "state.sqlite3"
UNFINISHED = ("in_progress", "queued", "cancelling")
RESTART_REASON = "the server restarted"
MAX_LIMIT = 100


@dataclass(frozen=True)
class Quota:
    """What one owner may keep stored: objects, and bytes of their JSON bodies."""

    objects: int = 100_000
    bytes: int = 1 << 30


@dataclass
class Page:
    """One page of a listing, in the OpenAI list shape."""

    data: list[dict] = field(default_factory=list)
    has_more: bool = False

    def to_body(self) -> dict:
        return {
            "object": "list",
            "data": self.data,
            "first_id": self.data[0]["id"] if self.data else None,
            "last_id": self.data[-1]["id"] if self.data else None,
            "has_more": self.has_more,
        }


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _fail_body(kind: str, body: dict) -> dict:
    """What an object left unfinished by a stopped server looks like after restart."""
    error = {"code": "server_error", "message": RESTART_REASON}
    body = dict(body, status="failed")
    if kind == "response":
        body["error"] = error
    elif kind == "message":  # a run's answer cut short: Assistants messages end "incomplete"
        body.update(status="incomplete", incomplete_at=int(time.time()), incomplete_details={"reason": "run_failed"})
    else:  # runs and run steps (Assistants v2)
        body["last_error"] = error
        body["failed_at"] = int(time.time())
    return body


class Store:
    """Owner-scoped CRUD over one SQLite file. Thread-safe: one connection, one lock
    (the store lives in one process; SQLite is fast enough that this is not the limit)."""

    def __init__(self, path: Path | str, quota: Quota = Quota()):
        self.path = Path(path)
        self.quota = quota
        self._lock = threading.Lock()
        # owner → [objects, bytes], read from the file on an owner's first write and kept up
        # to date by every write; a delete drops the entry (its subtree's size is not summed).
        self._usage: dict[str, list[int]] = {}
        # autocommit mode: every statement commits unless inside an explicit BEGIN
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as err:  # unwritable folder, not a database...
            raise ConfigError(f"state_dir: cannot open the state file {self.path}: {err}") from None
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self.version = migrate(self._db)
        self.swept = self._sweep()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _sweep(self) -> int:
        """End everything a previous server left queued or in progress: nothing
        stays stuck after a restart. Returns how many objects were ended."""
        rows = self._db.execute(
            f"SELECT id, kind, body FROM objects WHERE status IN ({','.join('?' * len(UNFINISHED))})", UNFINISHED
        ).fetchall()
        for oid, kind, body in rows:
            ended = _fail_body(kind, json.loads(body))
            self._db.execute("UPDATE objects SET status = ?, body = ? WHERE id = ?",
                             (ended["status"], json.dumps(ended), oid))
        return len(rows)

    # -- writes

    def _used(self, owner: str) -> list[int]:
        if owner not in self._usage:
            self._usage[owner] = list(self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM objects WHERE owner = ?", (owner,)).fetchone())
        return self._usage[owner]

    def _charge(self, owner: str, objects: int, size: int) -> None:
        """Count ``objects`` more objects and ``size`` more bytes against the owner's quota, or
        raise QuotaExceeded (shrinking is always allowed)."""
        used = self._used(owner)
        if objects > 0 and used[0] + objects > self.quota.objects:
            raise QuotaExceeded(f"this credential stores {used[0]} objects, the most it may keep "
                                "(max_stored_objects): delete some (responses, conversations, threads...) first")
        if size > 0 and used[1] + size > self.quota.bytes:
            raise QuotaExceeded(f"this credential stores {used[1]} bytes; {size} more would pass its quota of "
                                f"{self.quota.bytes} (max_stored_bytes): delete some objects first")
        used[0] += objects
        used[1] += size

    def create(self, owner: str, kind: str, body: dict, *, parent: str | None = None,
               exclusive: tuple[str, ...] = (), ref: str | None = None) -> dict:
        """Store ``body`` (which must carry ``id``; ``created_at`` is filled in). ``exclusive``:
        statuses in which the parent's newest ``kind`` refuses a new one (a thread's one active
        run), checked in the same step as the insert, whichever ingress replica asks. ``ref``:
        an object this one reads from instead of a copy (kept, hidden, while it is referred to)."""
        body = dict(body)
        body.setdefault("created_at", int(time.time()))
        text = json.dumps(body)
        with self._lock:
            # A parent deleted meanwhile (a thread deleted while its run writes) would leave a
            # row that no one can list or delete.
            if parent is not None and self._db.execute(
                    "SELECT 1 FROM objects WHERE id = ? AND owner = ? AND kind NOT LIKE ?",
                    (parent, owner, "%" + HIDDEN)).fetchone() is None:
                raise NotFound(f"No object found with id '{parent}' to hold this {kind}.")
            # a referred-to object deleted meanwhile (the previous response, between reading the
            # chain and storing the input) would leave a chain that cannot be read back
            if ref is not None and self._db.execute(
                    "SELECT 1 FROM objects WHERE id = ? AND owner = ?", (ref, owner)).fetchone() is None:
                raise NotFound(f"No object found with id '{ref}' to refer to.")
            if exclusive and (newest := self._db.execute(
                    "SELECT id, status FROM objects WHERE owner = ? AND kind = ? AND parent = ? ORDER BY seq DESC "
                    "LIMIT 1", (owner, kind, parent)).fetchone()) and newest[1] in exclusive:
                raise BadRequest(f"{parent} already has an active {kind} ({newest[0]}, {newest[1]})")
            size = len(text.encode())
            self._charge(owner, 1, size)
            try:
                self._db.execute(
                    "INSERT INTO objects (id, owner, kind, parent, created_at, status, body, ref)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (body["id"], owner, kind, parent, body["created_at"], body.get("status"), text, ref),
                )
            except sqlite3.IntegrityError:
                self._usage.pop(owner, None)
                raise BadRequest(f"an object with id '{body['id']}' already exists") from None
        return body

    def update(self, owner: str, kind: str, oid: str, changes: dict, *, only_if: tuple | list | None = None) -> dict:
        """Merge ``changes`` into the stored object (shallow) and return it. With
        ``only_if`` (statuses), an object in another status is returned unchanged:
        a run cancelled meanwhile is never overwritten by its late result."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                body = self._get(owner, kind, oid)
                if only_if is not None and body.get("status") not in only_if:
                    self._db.execute("ROLLBACK")
                    return body
                before = len(json.dumps(body).encode())
                body.update(changes)
                text = json.dumps(body)
                self._charge(owner, 0, len(text.encode()) - before)
                self._db.execute("UPDATE objects SET body = ?, status = ? WHERE id = ?", (text, body.get("status"), oid))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return body

    def delete(self, owner: str, kind: str, oid: str) -> None:
        """Delete the object and everything under it (a conversation's items, a
        thread's messages and runs, a run's steps, a response's input). While an object
        outside it still refers into it (a response continued by another), it is hidden
        instead: no read finds it, its bytes stay counted, and it goes with the last reference."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._get(owner, kind, oid)
                self._drop(owner, oid)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._usage.pop(owner, None)  # read again at the next write
            self._db.execute("COMMIT")

    def _drop(self, owner: str, oid: str) -> None:
        """Delete ``oid``'s subtree, or hide it while referred to from outside; then each hidden
        object it referred to that nothing refers to any more (a chain deleted out of order)."""
        work = [oid]
        while work:
            top = work.pop()
            self._subtree(owner, top)
            doomed = "SELECT id FROM temp.doomed"
            if self._db.execute(f"SELECT 1 FROM objects WHERE owner = ? AND ref IN ({doomed}) AND id NOT IN "
                                f"({doomed}) LIMIT 1", (owner,)).fetchone():
                self._db.execute(f"UPDATE objects SET kind = kind || ? WHERE id IN ({doomed}) AND kind NOT LIKE ?",
                                 (HIDDEN, "%" + HIDDEN))
                continue
            # what the doomed referred to may have been kept only for them
            freed = [r[0] for r in self._db.execute(
                f"SELECT DISTINCT ref FROM objects WHERE id IN ({doomed}) AND ref IS NOT NULL")]
            self._db.execute(f"DELETE FROM objects WHERE id IN ({doomed})")
            work += [r for r in freed if self._db.execute(
                "SELECT 1 FROM objects WHERE id = ? AND owner = ? AND kind LIKE ?", (r, owner, "%" + HIDDEN)).fetchone()]

    def _subtree(self, owner: str, oid: str) -> None:
        """``oid`` and everything under it, into temp.doomed. Level by level in a temporary table,
        however many children: a list bound as IN (?, ...) stopped at SQLite's variable limit
        (32,766 on stock builds), so the parent could not be deleted. Each level is one pass."""
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (id TEXT PRIMARY KEY, level INTEGER)")
        self._db.execute("DELETE FROM temp.doomed")
        self._db.execute("INSERT INTO temp.doomed VALUES (?, 0)", (oid,))
        level = 0
        while self._db.execute(
                "INSERT OR IGNORE INTO temp.doomed SELECT id, ? FROM objects WHERE owner = ? AND parent IN "
                "(SELECT id FROM temp.doomed WHERE level = ?)", (level + 1, owner, level)).rowcount:
            level += 1

    # -- reads

    def get(self, owner: str, kind: str, oid: str) -> dict:
        with self._lock:
            return self._get(owner, kind, oid)

    def _get(self, owner: str, kind: str, oid: str) -> dict:
        row = self._db.execute(
            "SELECT body FROM objects WHERE id = ? AND owner = ? AND kind = ?", (oid, owner, kind)
        ).fetchone()
        if row is None:  # a missing id and another owner's id read the same
            raise NotFound(f"No {kind} found with id '{oid}'.")
        return json.loads(row[0])

    def chain(self, owner: str, rid: str, limit: int) -> Chain:
        """What a response continuing ``rid`` is made from, read in one step (see state/chains.py)."""
        with self._lock:
            return chains.walk(self._db, owner, rid, limit)

    def parent_of(self, owner: str, kind: str, oid: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT parent FROM objects WHERE id = ? AND owner = ? AND kind = ?", (oid, owner, kind)
            ).fetchone()
        if row is None:
            raise NotFound(f"No {kind} found with id '{oid}'.")
        return row[0]

    def list(self, owner: str, kind: str, *, parent: str | None = None, limit: int = 20,
             after: str | None = None, before: str | None = None, order: str = "desc") -> Page:
        """A page of the owner's objects of ``kind`` (under ``parent`` if given),
        ordered by creation; ``after``/``before`` are ids from a previous page."""
        if order not in ("asc", "desc"):
            raise BadRequest("order: must be 'asc' or 'desc'")
        if not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"limit: must be between 1 and {MAX_LIMIT}")
        where, args = ["owner = ?", "kind = ?"], [owner, kind]
        if parent is not None:
            where.append("parent = ?")
            args.append(parent)
        with self._lock:
            for cursor, forward in ((after, True), (before, False)):
                if cursor is None:
                    continue
                row = self._db.execute(
                    "SELECT seq FROM objects WHERE id = ? AND owner = ? AND kind = ?", (cursor, owner, kind)
                ).fetchone()
                if row is None:
                    raise BadRequest(f"{'after' if forward else 'before'}: no {kind} with id '{cursor}'")
                # "after" follows the listing's direction, so it flips with order
                later = forward == (order == "asc")
                where.append("seq > ?" if later else "seq < ?")
                args.append(row[0])
            rows = self._db.execute(
                f"SELECT body FROM objects WHERE {' AND '.join(where)} ORDER BY seq {order.upper()} LIMIT ?",
                (*args, limit + 1),
            ).fetchall()
        data = [json.loads(r[0]) for r in rows[:limit]]
        return Page(data=data, has_more=len(rows) > limit)

    def all(self, owner: str, kind: str, *, parent: str) -> builtins.list[dict]:  # list: the method above
        """Every object of ``kind`` under ``parent``, oldest first (a thread's
        messages, a conversation's items, to build a prompt)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM objects WHERE owner = ? AND kind = ? AND parent = ? ORDER BY seq ASC",
                (owner, kind, parent),
            ).fetchall()
        return [json.loads(r[0]) for r in rows]


def open_store(state_dir: Path, quota: Quota = Quota()) -> Store:
    """The store file under a ``state_path(cfg, "state")`` folder."""
    return Store(Path(state_dir) / FILE_NAME, quota)


__all__ = ["FILE_NAME", "MAX_LIMIT", "Page", "Quota", "RESTART_REASON", "SCHEMA_VERSION", "Store", "new_id", "open_store"]
