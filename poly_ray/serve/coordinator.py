"""Coordinator: the one deployment that every replica of the HTTP tier and of the
models agrees through. One replica, on the head node.

- **Limits across ingress replicas.** With more than one ingress replica, the
  ``LeaseBook`` of ``max_concurrent`` and ``max_streams_per_credential`` is here:
  each generation's place is one call (``take``), its end one more that nobody
  waits for (``release``). Decisions are made one at a time here, so a limit is
  exact. Each replica renews what it holds every ``RENEW_S``: a lost release is
  made good then, a replica that stops renewing for ``EXPIRE_S`` (it died) has its
  places freed, and a coordinator that restarted learns what is held within
  ``RENEW_S`` (until then up to one limit more may start: the only overshoot).
- **Figures of every replica.** Each model replica reports its engine's stats, each
  ingress and orchestrator replica its per-task counts, every ``REPORT_S``;
  ``/v1/stats`` reads them here: per model the sums, the replicas and each one's
  own figures. A replica silent for ``EXPIRE_S`` is gone; a task runner's counts
  stay in the totals after it goes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable

from poly_ray.api.limits import Lease, LeaseBook
from poly_ray.errors import Busy, PolyError

from .handles import call

log = logging.getLogger(__name__)

COORDINATOR = "the coordinator"
RENEW_S = 5.0
REPORT_S = 1.0
EXPIRE_S = 20.0
# Figures that are not added up: where a replica is, and a ratio recomputed from the sums.
_NOT_SUMMED = {"replica", "node", "kv_cache_usage"}


class Coordinator:
    def __init__(self, limit: int, per_credential: int):
        self.book = LeaseBook(limit, per_credential, expire_s=EXPIRE_S)
        # kind ("model" | "tasks") -> name -> reporter -> (when, figures)
        self._reports: dict[str, dict[str, dict[str, tuple[float, dict]]]] = {"model": {}, "tasks": {}}
        self._retired_tasks: dict[str, dict] = {}

    # -- limits --------------------------------------------------------------
    async def take(self, holder: str, lease_id: str, lease: Lease, released: tuple[str, ...] = ()) -> PolyError | None:
        """The refusal (429, 503) if over a limit, else None: returned, not raised, since a
        refusal is an answer here and Serve would log a raised one as a failed request.
        ``released``: the holder's releases still on their way, which may arrive after
        this call; applied first, so that a client that ends a stream and starts the next
        is not refused for the one it ended."""
        for done in released:
            self.book.release(holder, done)
        try:
            self.book.take(holder, lease_id, lease)
        except PolyError as refused:
            return refused
        return None

    async def release(self, holder: str, lease_id: str) -> None:
        self.book.release(holder, lease_id)

    async def renew(self, holder: str, leases: dict[str, Lease]) -> None:
        self.book.renew(holder, leases)

    # -- figures -------------------------------------------------------------
    async def report(self, kind: str, name: str, reporter: str, figures: dict) -> None:
        self._reports[kind].setdefault(name, {})[reporter] = (time.monotonic(), figures)

    async def models(self) -> dict[str, dict]:
        """Per model that has a live replica: the sums, ``replicas`` and ``per_replica``."""
        self._expire()
        return {name: summed([f for _, f in by.values()]) for name, by in self._reports["model"].items() if by}

    async def tasks(self, exclude: str | None = None) -> dict[str, dict]:
        """Per-task counts of every runner, gone ones included, except ``exclude`` (the
        caller's own, which it adds live)."""
        self._expire()
        out = [self._retired_tasks]
        out += [f for reporter, (_, f) in self._reports["tasks"].get("runner", {}).items() if reporter != exclude]
        return merge_tallies(*out)

    def _expire(self) -> None:
        deadline = time.monotonic() - EXPIRE_S
        for kind, names in self._reports.items():
            for by in names.values():
                for reporter in [r for r, (seen, _) in by.items() if seen < deadline]:
                    _, figures = by.pop(reporter)
                    if kind == "tasks":
                        self._retired_tasks = merge_tallies(self._retired_tasks, figures)


def summed(replicas: list[dict]) -> dict:
    """One model's replicas' engine stats as one: the counts added up, the ratio
    recomputed, each replica's own under ``per_replica``."""
    return {**_added(replicas), "replicas": len(replicas),
            "per_replica": sorted(replicas, key=lambda f: f.get("replica", ""))}


def _added(replicas: list[dict]) -> dict:
    """Numbers added up (nested tables too); any other value kept where all agree."""
    out: dict = {}
    for key in dict.fromkeys(k for figures in replicas for k in figures):
        values = [f[key] for f in replicas if key in f]
        if key in _NOT_SUMMED:
            continue
        if all(isinstance(v, dict) for v in values):
            out[key] = _added(values)
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            out[key] = sum(values)
        elif all(v == values[0] for v in values):
            out[key] = values[0]
    if out.get("kv_cache_capacity"):
        out["kv_cache_usage"] = round(out.get("kv_cache_tokens", 0) / out["kv_cache_capacity"], 4)
    return out


def merge_tallies(*tallies: dict[str, dict]) -> dict[str, dict]:
    """Runners' per-task counts (``Tally.snapshot``) as one."""
    out: dict[str, dict] = {}
    for tally in tallies:
        for task, counts in tally.items():
            mine = out.setdefault(task, {})
            for key, value in counts.items():
                mine[key] = mine.get(key, 0) + value
    return out


class SharedLedger:
    """An ingress replica's side of the coordinator's book (``api.limits.Ledger``)."""

    def __init__(self, handle):
        self._handle = handle
        self.holder = uuid.uuid4().hex
        self._held: dict[str, Lease] = {}
        self._releasing: set[str] = set()  # sent, not yet acknowledged
        self._renewing: asyncio.Task | None = None
        self._calls: set[asyncio.Task] = set()

    async def take(self, lease_id: str, lease: Lease) -> None:
        if self._renewing is None:
            self._renewing = asyncio.get_running_loop().create_task(self._renew())
        # Held from before the call: a renewal sent meanwhile must not free it (the book
        # takes a lease it already has as a no-op).
        self._held[lease_id] = lease
        try:
            refused = await call(self._handle.take.remote(self.holder, lease_id, lease, tuple(self._releasing)),
                                 COORDINATOR)
            if refused is not None:
                raise refused
        except BaseException as e:
            del self._held[lease_id]
            if isinstance(e, PolyError | asyncio.CancelledError):  # over a limit (429, 503), or the coordinator lost
                raise
            log.warning("limits: the coordinator did not answer (%s)", e)
            raise Busy("the server cannot count its streams right now (the coordinator is away); retry shortly",
                       retry_after=1) from None

    def release(self, lease_id: str) -> None:
        if self._held.pop(lease_id, None) is None:
            return
        # Nobody waits for a release; a lost one is made good at the next renewal.
        self._releasing.add(lease_id)
        task = asyncio.get_running_loop().create_task(self._send(self._handle.release.remote(self.holder, lease_id)))
        self._calls.add(task)

        def sent(_) -> None:
            self._calls.discard(task)
            self._releasing.discard(lease_id)

        task.add_done_callback(sent)

    async def _send(self, response) -> None:
        try:
            await response
        except Exception as e:
            log.info("limits: a call to the coordinator failed (%s); the next renewal makes it good", e)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_S)
            await self._send(self._handle.renew.remote(self.holder, dict(self._held)))


class Reporter:
    """Sends ``figures()`` to the coordinator every ``REPORT_S`` on a thread of its own
    (a model replica's engine and an ingress's event loop are both busy elsewhere)."""

    def __init__(self, handle, kind: str, name: str, figures: Callable[[], dict]):
        self.reporter = uuid.uuid4().hex
        self._handle, self._kind, self._name, self._figures = handle, kind, name, figures
        threading.Thread(target=self._run, name=f"report-{kind}-{name}", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                figures = self._figures()
                self._handle.report.remote(self._kind, self._name, self.reporter, figures).result(timeout_s=10)
            except RuntimeError:
                pass  # a dict changed size while copied: the next round has it
            except Exception as e:
                log.info("report to the coordinator failed (%s); trying again", e)
            time.sleep(REPORT_S)
