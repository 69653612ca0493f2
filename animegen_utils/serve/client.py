"""Calling the service from Python: one request, a concurrent burst, a latency table.

>>> from animegen_utils.serve.client import burst, fetch_image, latency_table
>>> calls = burst("http://127.0.0.1:8000", [{"emotion": "happy", "style": "casual", "seed": s} for s in range(6)])
>>> print(latency_table(calls))
>>> image, params = fetch_image("http://127.0.0.1:8000", calls[0].body["image_url"])
"""

from __future__ import annotations

import io
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from PIL import Image

from animegen_utils.generation import PARAMS_KEY


@dataclass
class Call:
    """One ``POST /api/generate``: what was asked, what came back, and how long it took."""

    request: dict[str, Any]
    status: int
    latency_s: float
    body: dict[str, Any]
    retry_after: int | None = None


def call(client: httpx.Client, request: dict[str, Any]) -> Call:
    start = time.perf_counter()
    r = client.post("/api/generate", json=request)
    latency = time.perf_counter() - start
    retry = r.headers.get("Retry-After")
    return Call(request, r.status_code, latency, r.json(), int(retry) if retry else None)


def burst(url: str, requests: list[dict[str, Any]], api_key: str | None = None, timeout_s: float = 600) -> list[Call]:
    """Send all ``requests`` at once, one client thread each; results in request order."""
    headers = {"X-API-Key": api_key} if api_key else {}

    def one(request: dict[str, Any]) -> Call:
        with httpx.Client(base_url=url, headers=headers, timeout=timeout_s) as client:
            return call(client, request)

    with ThreadPoolExecutor(max(1, len(requests))) as pool:
        return list(pool.map(one, requests))


def fetch_image(url: str, image_url: str, timeout_s: float = 60) -> tuple[Image.Image, dict[str, Any]]:
    """The image at ``image_url`` (relative to ``url``, or absolute: a presigned S3 URL) and its PNG parameters."""
    r = httpx.get(httpx.URL(url).join(image_url), timeout=timeout_s)
    r.raise_for_status()
    image = Image.open(io.BytesIO(r.content))
    image.load()
    return image, json.loads(image.info[PARAMS_KEY])


def latency_table(calls: list[Call]) -> str:
    """A markdown table: one row per call, then the median and the slowest."""
    rows = ["| # | emotion | seed | status | latency (s) |", "|---|---|---|---|---|"]
    for i, c in enumerate(calls):
        rows.append(f"| {i} | {c.request.get('emotion')} | {c.body.get('seed', c.request.get('seed', ''))} "
                    f"| {c.status} | {c.latency_s:.2f} |")
    latencies = [c.latency_s for c in calls]
    if latencies:
        rows.append(f"| | | | median | {statistics.median(latencies):.2f} |")
        rows.append(f"| | | | max | {max(latencies):.2f} |")
    return "\n".join(rows)
