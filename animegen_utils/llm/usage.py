"""Token usage and estimated cost of LLM calls.

>>> tracker = UsageTracker()
>>> _ = tracker.record("anthropic", "claude-haiku-4-5", input_tokens=1200, output_tokens=300)
>>> tracker.summary()[0]["cost_usd"]
0.0027
>>> print(to_markdown(tracker.summary()))  # doctest: +SKIP
| backend | model | calls | input_tokens | output_tokens | cost_usd |
...
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

# USD per million tokens (input, output), from the vendors' public price pages at
# the time of writing. Estimates only: check the vendor's page before budgeting.
# Dated snapshots ("claude-haiku-4-5-20251001") match their alias by prefix.
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-fable-5-1": (10.0, 50.0),
    "claude-opus-5-5": (4.0, 20.0),
    "claude-opus-5": (5.0, 25.0),
    "claude-sonnet-5-5": (2.0, 10.0),
    "claude-sonnet-5": (2.0, 10.0),
    "claude-haiku-5-5": (0.10, 0.50),  # prompts up to 100k tokens (ours are ~1k)
    "claude-opus-4-6": (5.0, 25.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1-nano": (0.1, 0.4),
}


def estimate_cost(model: str | None, input_tokens: int, output_tokens: int) -> float | None:
    """Estimated USD cost of one call, or None when the model's price is unknown.

    >>> estimate_cost("gpt-4o-mini", 1_000_000, 0)
    0.15
    >>> estimate_cost("llama3.1:8b", 100, 100) is None
    True
    """
    if not model:
        return None
    # Longest matching key first, so "gpt-4o-mini" does not match "gpt-4o".
    for key in sorted(PRICES_PER_MTOK, key=len, reverse=True):
        if model == key or model.startswith(key + "-"):
            price_in, price_out = PRICES_PER_MTOK[key]
            return round((input_tokens * price_in + output_tokens * price_out) / 1e6, 8)
    return None


@dataclass(frozen=True)
class UsageRecord:
    """One API request (a repair retry is a request of its own)."""

    backend: str
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float | None


class UsageTracker:
    """Collects one ``UsageRecord`` per API request and sums them per backend/model."""

    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    def record(self, backend: str, model: str | None, input_tokens: int, output_tokens: int) -> UsageRecord:
        rec = UsageRecord(
            backend=backend,
            model=model,
            input_tokens=int(input_tokens),
            output_tokens=int(output_tokens),
            cost_usd=estimate_cost(model, input_tokens, output_tokens),
        )
        self.records.append(rec)
        return rec

    def per_call(self) -> list[dict]:
        return [asdict(r) for r in self.records]

    def summary(self) -> list[dict]:
        """One row per (backend, model): calls, input/output tokens, cost (None if unknown)."""
        rows: dict[tuple[str, str | None], dict] = {}
        for r in self.records:
            row = rows.setdefault(
                (r.backend, r.model),
                {"backend": r.backend, "model": r.model, "calls": 0,
                 "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0},
            )
            row["calls"] += 1
            row["input_tokens"] += r.input_tokens
            row["output_tokens"] += r.output_tokens
            # One unpriced call makes the whole row's cost unknown rather than too low.
            row["cost_usd"] = None if row["cost_usd"] is None or r.cost_usd is None else round(
                row["cost_usd"] + r.cost_usd, 8
            )
        return list(rows.values())


def to_markdown(rows: Iterable[Mapping], columns: Iterable[str] | None = None) -> str:
    """Render a list of dicts (e.g. ``usage_summary()``) as a Markdown table.

    >>> print(to_markdown([{"model": "m", "cost_usd": None}]))
    | model | cost_usd |
    | --- | --- |
    | m | n/a |
    """
    rows = list(rows)
    if not rows:
        return "(no usage recorded)"
    cols = list(columns) if columns is not None else list(rows[0])

    def cell(value: object) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:.6f}".rstrip("0").rstrip(".") or "0"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in cols) + " |" for row in rows]
    return "\n".join(lines)
