"""Slow and idle clients can't starve the others: a connection guard for uvicorn's HTTP/1.1 protocol.

>>> import uvicorn
>>> from animegen_utils.serve.connections import uvicorn_config
>>> uvicorn.Server(uvicorn_config(app, settings)).run()      # what ``animegen serve`` does

uvicorn closes a connection that stays idle after a response (``timeout_keep_alive``), but it has
no deadline for a request's headers or body and no cap on open connections: a client that opens
sockets and never finishes a request holds them forever, and enough of them exhaust the
process's file descriptors, after which nobody is served. ``GuardedH11Protocol`` adds:

- a **header deadline**: a connection that has not sent a complete request head within
  ``header_timeout_s`` of opening (or of its first byte after a kept-alive response) is closed;
- a **body deadline**: the whole body within ``body_timeout_s`` of the head, else closed (the app
  sees the client leave, as it would on a disconnect);
- a **connection cap**: past ``max_connections`` open sockets, the oldest connection without a
  request in progress is closed to make room, or, when every one is busy, the new one is;
- **quiet logs**: these closures are counted and logged at most once a minute, one line each.

The default cap is half the process's file limit (``RLIMIT_NOFILE``), at most 512, and the listen
backlog (asyncio's accept batch) a sixteenth of it, so the cap is reached long before ``accept()``
runs out of descriptors. A reverse proxy in front (nginx,
Caddy) is still what bounds a determined flood from many addresses; see the README.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger("animegen_utils.serve.connections")

MAX_DEFAULT_CONNECTIONS = 512
SUMMARY_EVERY_S = 60.0


def _file_limit() -> int | None:
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # no resource module (Windows)
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def default_max_connections() -> int:
    """Half the soft ``RLIMIT_NOFILE`` (the rest is for files, the database, the model), 16..512."""
    limit = _file_limit()
    return MAX_DEFAULT_CONNECTIONS if limit is None else max(16, min(MAX_DEFAULT_CONNECTIONS, limit // 2))


def default_backlog() -> int:
    """A sixteenth of the file limit, 8..2048 (uvicorn's default is 2048).

    asyncio accepts up to ``backlog`` connections in one go, before any of them reaches the
    protocol that would close the surplus; so the cap plus a few such batches must fit the
    file limit, or ``accept()`` fails with EMFILE and nobody gets in.
    """
    limit = _file_limit()
    return 2048 if limit is None else max(8, min(2048, limit // 16))


@dataclass
class ConnectionLimits:
    """What ``GuardedH11Protocol`` enforces; ``closed`` counts its closures by reason."""

    max_connections: int
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        self.closed: dict[str, int] = {"header_timeout": 0, "body_timeout": 0, "evicted": 0, "refused": 0}
        self._logged = dict(self.closed)
        self._last_log = 0.0

    def count(self, reason: str) -> None:
        self.closed[reason] += 1
        now = time.monotonic()
        if now - self._last_log >= SUMMARY_EVERY_S:
            # One line a minute at most, however many sockets an attacker opens.
            new = {k: v - self._logged[k] for k, v in self.closed.items() if v > self._logged[k]}
            logger.warning("connection guard closed %s (limits: %d connections, headers %g s, body %g s)",
                           ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in new.items()),
                           self.max_connections, self.header_timeout_s, self.body_timeout_s)
            self._logged, self._last_log = dict(self.closed), now


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines and a connection cap.

    Use ``guarded_protocol(limits)`` for a subclass bound to ``limits`` (uvicorn builds one
    protocol object per connection from the class given as ``Config(http=...)``).
    """

    limits: ConnectionLimits

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        self._opened = time.monotonic()
        self._deadline: Any = None
        self._deadline_kind = ""
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self.limits.count("refused")
            self.transport.close()
            return
        self._arm("header_timeout", self.limits.header_timeout_s)

    def _idle(self) -> bool:
        """No request in progress: waiting for (the rest of) a request head."""
        return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

    def _make_room(self) -> bool:
        """Close the oldest idle connection other than this one; False when every one is busy."""
        idle = [c for c in self.connections
                if c is not self and isinstance(c, GuardedH11Protocol) and c._idle() and not c.transport.is_closing()]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c._opened)
        self.limits.count("evicted")
        victim._close()
        return True

    def _arm(self, kind: str, seconds: float) -> None:
        self._disarm()
        self._deadline_kind = kind
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.limits.count(self._deadline_kind)
            self._close()

    def _close(self) -> None:
        self._disarm()
        self._unset_keepalive_if_required()
        # abort(), not close(): nothing queued for an idle socket, and its descriptor is freed now.
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        idle_before = self.conn.their_state is h11.IDLE
        super().data_received(data)
        if self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is h11.IDLE:
            if self._deadline is None:  # the first bytes of a new request on a kept-alive connection
                self._arm("header_timeout", self.limits.header_timeout_s)
        elif state is h11.SEND_BODY:
            if idle_before or self._deadline_kind != "body_timeout":
                self._arm("body_timeout", self.limits.body_timeout_s)
        else:  # the whole request is in: the app's own timeout governs from here
            self._disarm()

    def on_response_complete(self) -> None:
        self._disarm()  # uvicorn's keep-alive timer takes over
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A ``GuardedH11Protocol`` subclass enforcing ``limits``, for ``uvicorn.Config(http=...)``."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def uvicorn_config(app: Any, settings: Any, host: str | None = None, port: int | None = None,
                   **kwargs: Any):
    """A ``uvicorn.Config`` for ``app`` with ``settings``' connection limits (``ServeSettings``).

    ``kwargs`` go to ``uvicorn.Config`` (``log_level=...``). The limits object is ``config.limits``.
    """
    import uvicorn

    limits = ConnectionLimits(settings.max_connections or default_max_connections(),
                              settings.header_timeout_s, settings.body_timeout_s)
    config = uvicorn.Config(app, host=host or settings.host, port=port or settings.port,
                            http=guarded_protocol(limits), timeout_keep_alive=settings.keep_alive_s,
                            backlog=default_backlog(),
                            # one request head at most 16 KiB (h11's default, said explicitly)
                            h11_max_incomplete_event_size=16 * 1024, **kwargs)
    config.limits = limits
    return config
