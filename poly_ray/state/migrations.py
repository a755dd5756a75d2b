"""Ordered schema migrations. Append only: a file written by an older server is
brought forward one step at a time on open, never rewritten from scratch."""

from __future__ import annotations

import sqlite3

from poly_ray.errors import ConfigError

# (version, statements). Version N's statements move a file from N-1 to N.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (1, [
        # seq orders listings (created_at has only second resolution)
        """CREATE TABLE objects (
            seq        INTEGER PRIMARY KEY AUTOINCREMENT,
            id         TEXT NOT NULL UNIQUE,
            owner      TEXT NOT NULL,
            kind       TEXT NOT NULL,
            parent     TEXT,
            created_at INTEGER NOT NULL,
            body       TEXT NOT NULL
        )""",
    ]),
    (2, [
        # status as a column so the restart sweep and run polling need no JSON scan
        "ALTER TABLE objects ADD COLUMN status TEXT",
        "UPDATE objects SET status = json_extract(body, '$.status')",
        "CREATE INDEX objects_listing ON objects (owner, kind, parent, seq)",
        "CREATE INDEX objects_status ON objects (status)",
    ]),
    (3, [
        # ref: the object this one reads from without a copy (a response's input: the previous
        # response), so a delete can keep what is still referred to; rows before v3 refer to none
        "ALTER TABLE objects ADD COLUMN ref TEXT",
        "CREATE INDEX objects_ref ON objects (owner, ref)",
    ]),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]


def current_version(db: sqlite3.Connection) -> int:
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return row[0] or 0


def migrate(db: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Apply every migration above the file's version up to ``target``; returns
    the version reached. Each step is its own transaction (the connection is in
    autocommit mode, isolation_level=None, so DDL is inside it too)."""
    version = current_version(db)
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"state_dir: the state file has schema version {version}, newer than this server's {SCHEMA_VERSION}"
            " (written by a newer poly-ray; upgrade, or point state_dir elsewhere)"
        )
    for step, statements in MIGRATIONS:
        if version < step <= target:
            db.execute("BEGIN IMMEDIATE")
            try:
                for sql in statements:
                    db.execute(sql)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (step,))
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            version = step
    return version
