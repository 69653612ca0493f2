"""A sweep's results folder: PNGs, the results table (Parquet), the lock and the settings it is bound to.

    DIR/sweep.json               the spec and the settings the folder is bound to
    DIR/images/<row id>.png      one PNG per row, with its parameters (``generation.save_image``)
    DIR/table/part-<batch>.parquet   the rows of one drawn batch, written after its PNGs
    DIR/results.parquet          every part in manifest order, rebuilt at the end of each run
    DIR/.sweep.lock              held (flock) by the run that owns the folder

Why Parquet part files, not one SQLite file (``benchmarks/bench_sweep.py`` measures both,
``benchmarks/results/sweep.json``): SQLite is the faster of the two, per batch written and per
table read, but both are small next to drawing the batch's images, and a part is written by
one process to a temporary name and renamed into place, so it needs no lock shared between
writers. That holds for accelerate ranks on several machines writing to one network folder,
where SQLite's locking is unreliable (its documentation warns against WAL and shared files on
network file systems). A part's name is its batch's id, so a batch drawn twice (a rerun after
a kill, or two ranks racing) replaces itself instead of adding a row: "exactly once" is
structural, not a query.

>>> table = load_results("outputs/sweep")      # a pyarrow Table; .to_pandas() with pandas
>>> table.column("probe_emotion_ok")
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ..generation import save_image
from .manifest import Row
from .spec import PARAMS, SweepSpec

LOCK_NAME = ".sweep.lock"
TABLE_DIR = "table"
RESULTS = "results.parquet"
PROBE_ATTRIBUTES = ("emotion", "style", "hair_color", "eye_color", "hairstyle", "accessory")


class SweepLockedError(RuntimeError):
    """Another run holds the results folder."""


class SweepFolderError(ValueError):
    """The folder was started with other settings, or its table is not what the manifest says."""


@contextmanager
def folder_lock(out_dir: str | Path) -> Iterator[Path]:
    """Hold ``DIR/.sweep.lock`` for a run: a second run on the same folder is refused, not interleaved.

    ``flock`` is released by the kernel when the holder dies, SIGKILL included, so a killed run
    never leaves a stale lock behind. (On NFSv4 Linux maps flock to POSIX locks, which the
    server arbitrates between machines.)
    """
    import fcntl

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            raise SweepLockedError(f"Another sweep is running on {out} ({holder}). Wait for it to finish, or "
                                   "give this run another --out folder.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing drops the flock


def bind_settings(out_dir: str | Path, spec: SweepSpec) -> None:
    """Record the spec in ``sweep.json``; refuse a folder started with other batch/thread/scorer settings.

    Axes may grow between runs (new rows are drawn, done ones kept); what changes the bytes of
    done images or the columns of done rows may not.
    """
    path = Path(out_dir) / "sweep.json"
    if path.is_file():
        before = json.loads(path.read_text())["settings"]
        now = spec.settings()
        changed = {k: (before.get(k), v) for k, v in now.items() if before.get(k) != v}
        if changed:
            text = "; ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in changed.items())
            raise SweepFolderError(f"{out_dir} was started with other settings ({text}). Use the folder's "
                                   "settings, or another --out folder.")
    _atomic_write(path, json.dumps({"settings": spec.settings(), "spec": spec.to_dict()}, indent=1).encode())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_png(out_dir: str | Path, row: Row, image, params: dict[str, Any]) -> Path:
    """The row's PNG with its parameters, through a temporary file: a kill leaves no half-written PNG."""
    final = Path(out_dir) / row.file
    tmp = final.with_name(f".{row.id}.{os.getpid()}.tmp.png")  # save_image wants a .png name
    save_image(image, tmp, params)
    os.replace(tmp, final)
    return final


def schema(spec: SweepSpec) -> pa.Schema:
    """The results table's columns: ids and order, every parameter the spec names, the scores, timing."""
    fields = [pa.field("id", pa.string()), pa.field("position", pa.int64()), pa.field("batch", pa.string()),
              pa.field("file", pa.string()), pa.field("prompt_text", pa.string())]
    given = {"model", "scheduler", "task", "seed", "steps", "guidance", *spec.axes, *spec.fixed,
             *(name for row in spec.rows for name in row)}
    if "lora" in given:
        given.add("lora_scale")
    fields += [pa.field(n, getattr(pa, p.arrow)()) for n, p in PARAMS.items() if n in given]
    if "probe" in spec.scorers:
        for a in PROBE_ATTRIBUTES:
            fields += [pa.field(f"probe_{a}", pa.string()), pa.field(f"probe_{a}_ok", pa.bool_())]
    if "clip" in spec.scorers:
        fields.append(pa.field("clip_score", pa.float64()))
    fields += [pa.field("png_sha256", pa.string()), pa.field("seconds", pa.float64()),
               pa.field("worker", pa.string())]
    return pa.schema(fields)


def write_part(out_dir: str | Path, batch_id: str, records: list[dict[str, Any]], table_schema: pa.Schema) -> Path:
    """The rows of one batch as ``table/part-<batch>.parquet``, renamed into place once complete."""
    folder = Path(out_dir) / TABLE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"part-{batch_id}.parquet"
    tmp = folder / f".part-{batch_id}.{os.getpid()}.tmp"
    table = pa.Table.from_pylist(records, schema=table_schema)
    pq.write_table(table, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return final


def done_parts(out_dir: str | Path) -> set[str]:
    """Batch ids whose part is in the table."""
    folder = Path(out_dir) / TABLE_DIR
    if not folder.is_dir():
        return set()
    return {n[len("part-"):-len(".parquet")] for n in os.listdir(folder)
            if n.startswith("part-") and n.endswith(".parquet")}


def done_rows(out_dir: str | Path) -> set[str]:
    """Ids of the rows in the table (a row is done once its batch's part is written)."""
    folder = Path(out_dir) / TABLE_DIR
    if not done_parts(out_dir):
        return set()
    return set(_read_parts(folder, columns=["id"]).column("id").to_pylist())


def drawn_batches(out_dir: str | Path) -> dict[str, str]:
    """Row id -> the batch it was drawn in, for every row in the table (``{}`` for a new folder)."""
    if not done_parts(out_dir):
        return {}
    table = _read_parts(Path(out_dir) / TABLE_DIR, columns=["id", "batch"])
    return dict(zip(table.column("id").to_pylist(), table.column("batch").to_pylist()))


def _read_parts(folder: Path, columns: list[str] | None = None) -> pa.Table:
    files = sorted(folder.glob("part-*.parquet"))
    # ParquetFile, not pq.read_table: read_table sets up a dataset per file (measured ~70x slower for parts).
    tables = [pq.ParquetFile(f).read(columns=columns) for f in files]
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})


def load_results(out_dir: str | Path) -> pa.Table:
    """Every row drawn so far, in manifest order, checked: one row per id, a PNG for each.

    Reads the parts, so it works while a sweep is still running. Raises ``SweepFolderError``
    if an id appears twice or a PNG is missing.
    """
    out = Path(out_dir)
    folder = out / TABLE_DIR
    if not done_parts(out):
        raise SweepFolderError(f"No results in {out} yet (no {TABLE_DIR}/part-*.parquet)")
    table = _read_parts(folder)
    table = table.sort_by("position")
    ids = table.column("id").to_pylist()
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise SweepFolderError(f"{out}: rows {dup[:5]} appear more than once in the table")
    missing = [f for f in table.column("file").to_pylist() if not (out / f).is_file()]
    if missing:
        raise SweepFolderError(f"{out}: {len(missing)} PNG(s) of the table are missing, e.g. {missing[0]}")
    return table


def accuracy_by(table: pa.Table, keys: Sequence[str],
                attributes: Sequence[str] = PROBE_ATTRIBUTES) -> list[dict[str, Any]]:
    """The share of rows the probe read as asked, per attribute, for each combination of ``keys``,
    in manifest order (a row without a reading of an attribute does not count for it).

    >>> accuracy_by(load_results("outputs/sweep"), ["scheduler", "steps"])[0]
    {'scheduler': 'dpm++', 'steps': 20, 'n': 200, 'emotion': 0.995, 'style': 1.0, ...}
    """
    missing = [k for k in [*keys, *(f"probe_{a}_ok" for a in attributes)] if k not in table.column_names]
    if missing:
        raise SweepFolderError(f"The results table has no column {missing[0]!r} (columns: "
                               f"{', '.join(table.column_names)}); a probe reading needs scorers: [probe].")
    groups: dict[tuple, dict[str, list[bool]]] = {}
    for rec in table.select([*keys, *(f"probe_{a}_ok" for a in attributes)]).to_pylist():
        group = groups.setdefault(tuple(rec[k] for k in keys), {a: [] for a in attributes})
        for a in attributes:
            if rec[f"probe_{a}_ok"] is not None:
                group[a].append(rec[f"probe_{a}_ok"])
    return [{**dict(zip(keys, key)), "n": max(len(v) for v in hits.values()),
             **{a: sum(v) / len(v) if v else None for a, v in hits.items()}} for key, hits in groups.items()]


def compact(out_dir: str | Path) -> Path:
    """Write ``results.parquet``: the whole table in one file for notebooks (the parts stay the record)."""
    out = Path(out_dir)
    table = load_results(out)
    tmp = out / f".{RESULTS}.{os.getpid()}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, out / RESULTS)
    return out / RESULTS


def remove_temporaries(out_dir: str | Path) -> int:
    """Delete what killed runs left half-written (temporary PNGs and parts); the owner of the lock calls it."""
    out = Path(out_dir)
    n = 0
    for folder in (out / "images", out / TABLE_DIR, out):
        if folder.is_dir():
            for p in folder.iterdir():
                if p.name.startswith(".") and ".tmp" in p.name:
                    p.unlink(missing_ok=True)
                    n += 1
    return n
