"""The manifest: one row per image, each with an id hashed from its parameters, cut into fixed batches.

A spec's ``axes`` give the product of their values; its explicit ``rows`` (a list of parameter
dicts) are crossed with that product, innermost, or stand alone when there are no axes.

>>> rows = expand({"axes": {"emotion": ["happy", "sad"], "style": ["casual"], "seed": [0, 1]},
...                "fixed": {"steps": 2}, "batch_size": 2})
>>> [(r.params["emotion"], r.params["seed"]) for r in rows]
[('happy', 0), ('happy', 1), ('sad', 0), ('sad', 1)]
>>> len({r.batch for r in rows})  # 4 rows of one setting, batches of 2
2

Batches are part of the plan, not of a run: the rows that share everything but their prompt
and seed are cut into batches of ``batch_size`` in manifest order, and every engine draws
exactly those batches. Float rounding on the CPU depends on the batch shape, so this is what
makes the same spec give the same PNG bytes on one process, on accelerate ranks and on Ray
actors, and again after a rerun that redraws a half-finished batch.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

from ..pipelines import TINY
from .spec import PER_IMAGE, SweepSpec, SweepSpecError, default_steps_guidance, load_spec

ID_CHARS = 16  # 64 bits of SHA-256: no collision in any sweep a machine can draw


@dataclass(frozen=True)
class Row:
    """One image of the sweep: ``id`` names it (and its PNG), ``position`` is its manifest order."""

    id: str
    position: int
    params: dict[str, Any]
    batch: str = ""
    batch_index: int = 0

    @property
    def file(self) -> str:
        """The PNG's path inside the results folder."""
        return f"images/{self.id}.png"


@dataclass(frozen=True)
class Batch:
    """Rows drawn in one ``generate`` call: same pipeline and settings, prompts and seeds vary."""

    id: str
    rows: tuple[Row, ...]


def row_id(params: dict[str, Any]) -> str:
    """The id of an image: a hash of its parameters (canonical JSON, sorted keys)."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:ID_CHARS]


def _resolved(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters with the defaults ``load_pipeline``/``generate`` would pick written in."""
    p = {"model": TINY, "scheduler": "dpm++", "task": "txt2img", "seed": 0, **params}
    steps, guidance = default_steps_guidance(p["scheduler"])
    p.setdefault("steps", steps)
    p.setdefault("guidance", float(guidance))
    if "lora" in p:
        p.setdefault("lora_scale", 1.0)
    return p


def expand(spec: SweepSpec | dict | str) -> list[Row]:
    """The manifest of a spec: every combination of the axes (first axis slowest), each crossed with
    every explicit row (innermost, in the spec's order), with batch ids set.

    >>> [r.params["seed"] for r in expand({"rows": [{"prompt": "1girl", "seed": 7}, {"prompt": "1girl", "seed": 3}],
    ...                                    "axes": {"steps": [2, 4]}})]
    [7, 3, 7, 3]
    """
    spec = load_spec(spec)
    names = list(spec.axes)
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for combo in itertools.product(*(spec.axes[n] for n in names)):
        for extra in spec.rows or [{}]:
            params = _resolved({**spec.fixed, **dict(zip(names, combo)), **extra})
            rid = row_id(params)
            if rid in seen:  # e.g. a row giving steps: 20 and one leaving it to the default 20
                raise SweepSpecError(f"manifest rows {seen[rid]} and {len(rows)} are the same image ({params}); "
                                     "every row must be a different image")
            seen[rid] = len(rows)
            rows.append(Row(id=rid, position=len(rows), params=params))
    return plan_batches(rows, spec.batch_size)


def group_key(params: dict[str, Any]) -> str:
    """What rows of one batch share: every parameter except the prompt's words and the seed."""
    return json.dumps({k: v for k, v in params.items() if k not in PER_IMAGE}, sort_keys=True)


def plan_batches(rows: list[Row], batch_size: int) -> list[Row]:
    """Set every row's batch (groups in order of first appearance, cut into ``batch_size`` chunks)."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(group_key(r.params), []).append(r)
    planned: dict[int, Row] = {}
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            bid = hashlib.sha256(("batch:" + ",".join(r.id for r in chunk)).encode()).hexdigest()[:ID_CHARS]
            for i, r in enumerate(chunk):
                planned[r.position] = Row(r.id, r.position, r.params, bid, i)
    return [planned[r.position] for r in rows]


def batches(rows: list[Row]) -> list[Batch]:
    """The manifest's batches in the order of their first row."""
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r.batch, []).append(r)
    return [Batch(bid, tuple(sorted(members, key=lambda r: r.batch_index))) for bid, members in out.items()]
