"""A persistent sqlite cache of validated LLM answers.

A hit means no API call, across processes and notebook restarts. A cache file
that is corrupt or from another schema version is renamed
``<name>.corrupt-<timestamp>`` and rebuilt, with a ``warnings.warn``.

>>> cache = PromptCache("/tmp/animegen-cache")               # doctest: +SKIP
>>> key = cache_key(backend="anthropic", model="m", emotion="happy", style="casual",
...                 character=None, template_version="1", temperature=0.7, variant=0)
>>> cache.put(key, {"positive_tags": ["1girl"]})              # doctest: +SKIP
>>> cache.get(key)                                            # doctest: +SKIP
{'positive_tags': ['1girl']}
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from animegen_utils.prompts import CharacterSheet

SCHEMA_VERSION = 1
DB_NAME = "prompts.sqlite3"


def default_cache_dir() -> Path:
    """``$ANIMEGEN_CACHE_DIR``, else ``~/.cache/animegen/llm``."""
    env = os.environ.get("ANIMEGEN_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "animegen" / "llm"


def cache_key(*, backend: str, model: str | None, emotion: str, style: str,
              character: CharacterSheet | None, template_version: str, temperature: float,
              variant: int) -> str:
    """sha256 of everything that changes the answer (JSON with sorted keys, so it is stable)."""
    payload = {
        "backend": backend, "model": model, "emotion": emotion, "style": style,
        "character": character.to_dict() if character is not None else None,
        "template": template_version, "temperature": float(temperature), "variant": int(variant),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()


def description_cache_key(*, backend: str, model: str | None, text: str, template_version: str) -> str:
    """The key of a parsed description: the text (whitespace collapsed), not the character or variant.

    The sheet is merged and the variant applied after parsing, so one API call serves them all.
    """
    payload = {"kind": "description", "backend": backend, "model": model, "text": " ".join(text.split()),
               "template": template_version}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class PromptCache:
    """Key → JSON value store in ``<cache_dir>/prompts.sqlite3``.

    Each ``put`` is one sqlite transaction, so a crash mid-write leaves the old
    state; concurrent notebooks share the file safely (sqlite locking).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None) -> None:
        self.dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.path = self.dir / DB_NAME
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one connection, shareable across notebook threads
        self._conn = self._open()

    # -- opening, checking and recovering -------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)

    def _open(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            self._check_or_create(conn)
            return conn
        except sqlite3.DatabaseError as err:  # "file is not a database", malformed pages, ...
            reason = f"unreadable ({err})"
        except _SchemaMismatch as err:
            reason = str(err)
        if conn is not None:
            conn.close()
        self._move_aside(reason)
        conn = self._connect()
        self._check_or_create(conn)
        return conn

    def _check_or_create(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version == SCHEMA_VERSION and "prompts" in tables:
            conn.execute("SELECT key, value, created FROM prompts LIMIT 1").fetchall()
            return
        if version != 0 or tables:
            raise _SchemaMismatch(f"schema version {version} (expected {SCHEMA_VERSION})")
        with _transaction(conn):
            conn.execute("CREATE TABLE prompts (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _move_aside(self, reason: str) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():  # never overwrite an earlier corrupt file
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        for suffix in ("", "-journal", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
        warnings.warn(f"LLM prompt cache {self.path} is {reason}; moved it to {aside.name} and "
                      "started an empty cache.", RuntimeWarning, stacklevel=4)

    def _recovering(self, op, *args):
        # A file that breaks after opening (overwritten, truncated) is recovered once.
        with self._lock:
            try:
                return op(*args)
            except sqlite3.DatabaseError as err:
                self._conn.close()
                self._move_aside(f"unreadable ({err})")
                self._conn = self._connect()
                self._check_or_create(self._conn)
                return op(*args)

    # -- public API -------------------------------------------------------------------------
    def get(self, key: str) -> Any | None:
        """The cached value, or None."""
        def op(k: str) -> Any | None:
            row = self._conn.execute("SELECT value FROM prompts WHERE key = ?", (k,)).fetchone()
            return json.loads(row[0]) if row else None
        return self._recovering(op, key)

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` (JSON-serializable) under ``key``, atomically."""
        def op(k: str, v: str) -> None:
            with _transaction(self._conn):
                self._conn.execute("INSERT OR REPLACE INTO prompts (key, value, created) VALUES (?, ?, ?)",
                                   (k, v, time.time()))
        self._recovering(op, key, json.dumps(value))

    def __len__(self) -> int:
        return self._recovering(lambda: self._conn.execute("SELECT COUNT(*) FROM prompts").fetchone()[0])

    def clear(self) -> None:
        def op() -> None:
            with _transaction(self._conn):
                self._conn.execute("DELETE FROM prompts")
        self._recovering(op)

    def close(self) -> None:
        self._conn.close()


class _SchemaMismatch(Exception):
    pass


class _transaction:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, *_: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
