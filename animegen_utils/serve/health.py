"""What ``GET /healthz`` reports: the model and queue, and whether storage and the database work.

>>> health = Health(storage, records, min_free_bytes=64 * 2**20)
>>> health.report()     # {"status": "ok" | "degraded", "reasons": [...], ...}
>>> health.failed("database", err)      # the app notes a failure it saw while serving

``status`` is ``"degraded"`` with a reason each when the image folder is not writable (read-only,
a file in its place) or has less than ``min_free_bytes`` free, when the database does not answer
a one-row read, or when either failed a request in the last ``RECENT_S`` seconds. The probes
are cheap (one temp file created and removed, ``statvfs``, one indexed row) and cached for
``CACHE_S``, so a monitor polling ``/healthz`` costs little; ``create_app`` also bounds the wait.
S3 is not probed (a network round trip); its recent failures are reported.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("animegen_utils.serve")

RECENT_S = 60.0
CACHE_S = 2.0


def _reason(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).splitlines()
    return f"{type(err).__name__}: {text[0][:160] if text else ''}"


class Health:
    """Storage and database health, probed at most every ``CACHE_S`` seconds."""

    def __init__(self, storage: Any, records: Any, min_free_bytes: int = 64 * 2**20) -> None:
        self.storage, self.records, self.min_free_bytes = storage, records, min_free_bytes
        self._failures: dict[str, tuple[float, str]] = {}
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def failed(self, part: str, err: BaseException) -> None:
        """Note that ``part`` ("storage" or "database") failed a request just now."""
        self._failures[part] = (time.monotonic(), _reason(err))
        self._cached = None

    def _storage_problems(self) -> list[str]:
        root = getattr(self.storage, "root", None)
        if root is None:  # S3: not probed
            return []
        root = Path(root)
        if root.exists() and not root.is_dir():
            return [f"storage: {root} is not a folder"]
        problems = []
        existing = root if root.exists() else next((p for p in root.parents if p.exists()), Path("/"))
        try:
            free = shutil.disk_usage(existing).free
            if free < self.min_free_bytes:
                problems.append(f"storage: {free // 2**20} MiB free at {existing} (below {self.min_free_bytes // 2**20} MiB)")
        except OSError as err:
            problems.append(f"storage: {_reason(err)}")
        if root.is_dir():
            try:  # a read-only mount (EROFS) is refused even for root, unlike a permission bit
                fd, probe = tempfile.mkstemp(prefix=".tmp-health-", dir=root)
                os.close(fd)
                os.unlink(probe)
            except OSError as err:
                problems.append(f"storage: not writable ({_reason(err)})")
        return problems

    def _database_problems(self) -> list[str]:
        if self.records is None:
            return []
        try:
            self.records.ping()
        except Exception as err:  # any failure is the report's content, not the caller's error
            return [f"database: {_reason(err)}"]
        return []

    def report(self) -> dict[str, Any]:
        """``{"status", "reasons", "storage_ok", "database_ok"}``, probed or from the cache."""
        now = time.monotonic()
        cached = self._cached
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        with self._lock:  # one probe at a time; the others wait for its answer
            cached = self._cached
            if cached is not None and time.monotonic() - cached[0] < CACHE_S:
                return cached[1]
            storage, database = self._storage_problems(), self._database_problems()
            for part, problems in (("storage", storage), ("database", database)):
                seen = self._failures.get(part)
                if seen is not None and now - seen[0] < RECENT_S:
                    problems.append(f"{part}: failed a request {now - seen[0]:.0f} s ago ({seen[1]})")
            reasons = storage + database
            result = {"status": "degraded" if reasons else "ok", "reasons": reasons,
                      "storage_ok": not storage, "database_ok": not database}
            if reasons and (self._cached is None or self._cached[1]["reasons"] != reasons):
                logger.warning("health degraded: %s", "; ".join(reasons))
            self._cached = (time.monotonic(), result)
            return result
