"""ASGI guards in front of the app: the ``Host`` allow-list, the body limit, security headers on pages.

>>> app.add_middleware(BodyLimitMiddleware, max_bytes=16 * 1024)
>>> app.add_middleware(HostAllowListMiddleware, hosts=("localhost", "127.0.0.1", "[::1]"))
>>> html_page(text)          # an HTMLResponse with CSP hashes for its own inline <script>/<style>

Why a ``Host`` allow-list: the default service listens on loopback without a key, and a web
page on a DNS-rebinding domain (``evil.example`` first resolving to the attacker, then to
127.0.0.1) would otherwise reach it from the victim's browser with ``Host: evil.example``.
Starlette's ``TrustedHostMiddleware`` does the same check; this one answers a JSON 400 that
names ``--allowed-hosts``, and never echoes more than a short prefix of the header.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any, Callable

from fastapi.responses import HTMLResponse, JSONResponse

from .core import short

ALLOWED_HOSTS_HINT = "--allowed-hosts (or ANIMEGEN_ALLOWED_HOSTS)"

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def host_name(header: str) -> str:
    """The name part of a ``Host`` header, lowercase: ``"Example.com:8000"`` -> ``"example.com"``."""
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8000
        end = header.find("]")
        return header[: end + 1] if end > 0 else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostAllowListMiddleware:
    """Answers 400 unless the request's ``Host`` is one of ``hosts`` (``"*"`` allows any;
    ``"*.example.com"`` allows its subdomains). Pure ASGI, before everything else."""

    def __init__(self, app: Any, hosts: tuple[str, ...]) -> None:
        self.app, self.hosts = app, tuple(h.lower() for h in hosts)
        self.any = "*" in self.hosts
        self.suffixes = tuple(h[1:] for h in self.hosts if h.startswith("*."))

    def allowed(self, header: str | None) -> bool:
        if self.any:
            return True
        if not header:
            return False
        name = host_name(header)
        return name in self.hosts or any(name.endswith(s) for s in self.suffixes)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        header = None
        for key, value in scope["headers"]:
            if key == b"host":
                header = value.decode("latin-1")
                break
        if self.allowed(header):
            return await self.app(scope, receive, send)
        shown = "no Host header" if header is None else f"Host {short(header)}"
        response = JSONResponse(
            {"detail": f"{shown} is not served here (a DNS-rebinding guard). Allowed: {', '.join(self.hosts)}. "
                       f"Serving behind a proxy or under another name? Add it with {ALLOWED_HOSTS_HINT}."},
            status_code=400)
        await response(scope, receive, send)


class BodyLimitMiddleware:
    """Answers 413 to request bodies over ``max_bytes``, declared or streamed (pure ASGI)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = JSONResponse({"detail": f"Request body larger than {self.max_bytes} bytes."}, 413)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await too_large(scope, receive, send)
        received, started, answered = 0, False, False

        async def limited_receive() -> dict:
            nonlocal received, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and not started:
                    # Answer now and tell the app the client left: the app's own reply is dropped.
                    answered = True
                    await too_large(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if answered:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


class SecurityHeadersMiddleware:
    """``X-Content-Type-Options``, ``X-Frame-Options`` and ``Referrer-Policy`` on every response."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in self.headers if k not in present]
            await send(message)

        await self.app(scope, receive, with_headers)


_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.S)


def content_security_policy(html: str) -> str:
    """A CSP allowing this page's own files and exactly its inline ``<script>``/``<style>`` blocks."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for kind, body in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        hashes[kind].append(f"'sha256-{digest}'")
    return "; ".join([
        "default-src 'self'",
        " ".join(["script-src 'self'", *hashes["script"]]),
        " ".join(["style-src 'self'", *hashes["style"]]),
        "img-src 'self' data: blob: https: http:",  # presigned S3 image URLs live elsewhere
        "connect-src 'self'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'",
        "form-action 'self'",
    ])


def html_page(html: str, status_code: int = 200) -> HTMLResponse:
    """``html`` as a response with its Content-Security-Policy (plus ``SECURITY_HEADERS`` from the middleware)."""
    return HTMLResponse(html, status_code=status_code,
                        headers={"Content-Security-Policy": content_security_policy(html)})
