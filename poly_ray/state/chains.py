"""A response chain (``previous_response_id``) rebuilt from the store in one step.

Each response's stored input holds only its own items and a reference to the response it
continued (``previous``, also the row's ``ref``) with how many of that response's output items
it saw (``outputs``: one still running had fewer than it has now). A chain of n turns thus
stores O(n) items, where a copy of the whole history per turn stored O(n^2) (security
review N6). Inputs written before that carry the copy (``history``): the walk stops there.
A response deleted while continued is hidden, not gone (Store.delete), so the walk reads
hidden rows too; the response continued from must be visible.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from poly_ray.errors import BadRequest, NotFound
from poly_ray.state.kinds import HIDDEN, INPUT, RESPONSE


@dataclass(frozen=True)
class Chain:
    """What a response continuing ``previous`` is made from (plain data: it crosses a handle)."""

    previous: dict  # the response continued from
    items: list[dict]  # every earlier item of the chain, oldest first, ``previous``'s output last
    root: str  # the chain's first response (or conversation): the routing key of its turns


def walk(db: sqlite3.Connection, owner: str, rid: str, limit: int) -> Chain:
    """The chain ending at ``rid``, refused with a 400 naming previous_response_id once it holds
    more than ``limit`` items (or turns): the walk and the prompt stay bounded."""
    previous = response = _body(db, owner, rid, (RESPONSE,), f"No response found with id '{rid}'.")
    segments: list[list[dict]] = []
    count, turns, take, oid, root = 0, 0, None, rid, None
    while True:
        stored = _input(db, owner, oid)
        if root is None:
            root = stored.get("chain") or rid
        output = response.get("output") or []
        segment = [*stored.get("history", ()), *stored["items"], *(output if take is None else output[:take])]
        count, turns = count + len(segment), turns + 1
        if count > limit or turns > limit:
            raise BadRequest(f"previous_response_id: the chain of '{rid}' holds more than {limit} items, the most "
                             "one request may carry; start a new chain", param="previous_response_id")
        segments.append(segment)
        if "history" in stored or not stored.get("previous"):
            break
        oid, take = stored["previous"], stored.get("outputs")
        response = _body(db, owner, oid, (RESPONSE, RESPONSE + HIDDEN),
                         f"previous_response_id: the chain of '{rid}' misses its response '{oid}'")
    return Chain(previous, [item for segment in reversed(segments) for item in segment], root)


def _body(db: sqlite3.Connection, owner: str, oid: str, kinds: tuple[str, ...], missing: str) -> dict:
    row = db.execute(f"SELECT body FROM objects WHERE id = ? AND owner = ? AND kind IN ({','.join('?' * len(kinds))})",
                     (oid, owner, *kinds)).fetchone()
    if row is None:
        raise NotFound(missing)
    return json.loads(row[0])


def _input(db: sqlite3.Connection, owner: str, rid: str) -> dict:
    row = db.execute("SELECT body FROM objects WHERE owner = ? AND parent = ? AND kind IN (?, ?)",
                     (owner, rid, INPUT, INPUT + HIDDEN)).fetchone()
    if row is None:
        raise NotFound(f"No stored input found for response '{rid}'.")
    return json.loads(row[0])
