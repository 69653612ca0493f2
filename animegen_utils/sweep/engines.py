"""Running a sweep: one process, accelerate ranks, or Ray actors; all draw the manifest's own batches.

>>> run("sweep.yaml", "outputs/sweep")                           # one process
>>> run("sweep.yaml", "outputs/sweep", engine="ray")             # a local Ray cluster, one actor per CPU/GPU
>>> run("sweep.yaml", "outputs/sweep", engine="ray", address="10.0.0.5:6379")   # any Ray cluster

Under ``accelerate launch`` (``--multi_gpu --num_processes N``, on CPUs too) ``engine="auto"``
shards the batches with ``PartialState().split_between_processes``. Whatever the engine, the
process that owns the folder (the only process, rank 0, or the Ray driver) holds its lock,
lists the batches not yet done and, at the end, writes ``results.parquet``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .manifest import Batch, Row, batches, expand
from .spec import SweepSpec, load_spec
from .store import (SweepFolderError, SweepLockedError, bind_settings, compact, done_parts, folder_lock,
                    remove_temporaries, schema, write_part, write_png)
from .worker import Drawer, Drawn, png_bytes_sha256

ENGINES: tuple[str, ...] = ("auto", "local", "accelerate", "ray")


@dataclass
class Plan:
    """What a run has to do: the batches with rows left, and which rows of each it writes."""

    total: int
    done_before: int
    pending: list[Batch]
    to_write: dict[str, list[str]] = field(default_factory=dict)  # batch id -> row ids

    @property
    def rows_left(self) -> int:
        return sum(len(v) for v in self.to_write.values())


@dataclass
class RunSummary:
    """What a run did: ``drawn`` rows now, ``done_before`` skipped, ``total`` in the manifest."""

    out_dir: Path
    engine: str
    workers: int
    total: int
    done_before: int
    drawn: int
    seconds: float


def launched_by_accelerate() -> bool:
    """True in a process started by ``accelerate launch`` / torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def plan(out_dir: str | Path, spec: SweepSpec, rows: list[Row]) -> Plan:
    """Batches with rows left: a row is done when a part holds it and its PNG exists."""
    import pyarrow.parquet as pq

    out = Path(out_dir)
    owner: dict[str, str] = {}
    for part in done_parts(out):
        ids = pq.ParquetFile(out / "table" / f"part-{part}.parquet").read(columns=["id"]).column("id")
        for rid in ids.to_pylist():
            owner[rid] = part
    images = set(os.listdir(out / "images")) if (out / "images").is_dir() else set()
    done = {rid for rid in owner if f"{rid}.png" in images}
    pending, to_write = [], {}
    for b in batches(rows):
        if all(r.id in done for r in b.rows):
            continue
        # Rows another batch's part already holds stay there; this batch's part gets all the others.
        to_write[b.id] = [r.id for r in b.rows if owner.get(r.id) in (None, b.id)]
        pending.append(b)
    return Plan(total=len(rows), done_before=sum(1 for r in rows if r.id in done), pending=pending,
                to_write=to_write)


def write_batch(out_dir: str | Path, batch: Batch, drawn: list[Drawn], row_ids: list[str], spec: SweepSpec) -> int:
    """PNGs first (each renamed into place), then the batch's part: a kill between them only redraws."""
    records = []
    wanted = set(row_ids)
    for d in drawn:
        if d.row.id not in wanted:
            continue
        path = write_png(out_dir, d.row, d.image, d.params)
        records.append({"id": d.row.id, "position": d.row.position, "batch": batch.id, "file": d.row.file,
                        "prompt_text": d.params["prompt"], **d.row.params, **d.scores,
                        "png_sha256": png_bytes_sha256(path), "seconds": d.seconds, "worker": d.worker})
    write_part(out_dir, batch.id, records, schema(spec))
    return len(records)


class Progress:
    """A bar per worker and one overall line: done / total, images per second, time left."""

    def __init__(self, p: Plan, labels: list[str], enabled: bool, own: list[int] | None = None,
                 first_line: int = 0, overall: bool = True, overall_line: int | None = None) -> None:
        own = own or [p.rows_left] * len(labels)
        self.bars = [tqdm(total=n, desc=label, unit="img", position=first_line + i, disable=not enabled,
                          leave=False) for i, (label, n) in enumerate(zip(labels, own))]
        line = first_line + len(labels) if overall_line is None else overall_line
        self.overall = tqdm(total=p.total, initial=p.done_before, desc="sweep", unit="img", position=line,
                            disable=not (enabled and overall), dynamic_ncols=True)

    def advance(self, worker: int, n: int, overall: bool = True) -> None:
        self.bars[worker].update(n)
        if overall:
            self.overall.update(n)

    def set_overall(self, done: int) -> None:
        self.overall.update(done - self.overall.n)

    def close(self) -> None:
        for b in (*self.bars, self.overall):
            b.close()


def _prepared(out: Path, spec: SweepSpec, rows: list[Row]) -> Plan:
    bind_settings(out, spec)
    remove_temporaries(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    return plan(out, spec, rows)


def run(spec: SweepSpec | dict | str | Path, out_dir: str | Path, engine: str = "auto", address: str | None = None,
        workers: int | None = None, progress: bool = True, pipe: Any = None) -> RunSummary:
    """Draw and score every row of ``spec`` not yet done in ``out_dir``; write ``results.parquet``.

    ``engine``: ``"auto"`` (accelerate under ``accelerate launch``, else one process), ``"local"``,
    ``"accelerate"`` or ``"ray"`` (``address`` of a cluster, else a local one with ``workers`` actors).
    The spec is checked and expanded before anything is drawn; a folder another run holds raises
    ``SweepLockedError``. ``pipe`` (one process only): draw every row with this loaded pipeline,
    whose name and scheduler the spec's ``model``/``scheduler`` should give (``evaluate_model``).
    """
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine {engine!r}. Valid choices: {', '.join(ENGINES)}.")
    if address is not None and engine != "ray":
        raise ValueError(f"address is for engine='ray'; got engine={engine!r}")
    spec = load_spec(spec)
    rows = expand(spec)
    out = Path(out_dir)
    if engine == "auto":
        engine = "accelerate" if launched_by_accelerate() else "local"
    if pipe is not None and engine != "local":
        raise ValueError(f"pipe= draws on this process only (engine='local'); got engine={engine!r}")
    started = time.perf_counter()
    if engine == "local":
        summary = _run_local(spec, rows, out, progress, pipe)
    elif engine == "accelerate":
        summary = _run_accelerate(spec, rows, out, progress)
    else:
        summary = _run_ray(spec, rows, out, address, workers, progress)
    summary.seconds = time.perf_counter() - started
    return summary


def _run_local(spec: SweepSpec, rows: list[Row], out: Path, progress: bool, pipe: Any = None) -> RunSummary:
    import torch

    threads = torch.get_num_threads()
    with folder_lock(out):
        p = _prepared(out, spec, rows)
        bar = Progress(p, ["local"], progress)
        try:
            drawer = Drawer(spec, pipe=pipe)
            for b in p.pending:
                n = write_batch(out, b, drawer.draw(b), p.to_write[b.id], spec)
                bar.advance(0, n)
        finally:
            bar.close()
            torch.set_num_threads(threads)  # the caller's (a notebook's) setting
        compact(out)
    return RunSummary(out, "local", 1, p.total, p.done_before, p.rows_left, 0.0)


def _run_accelerate(spec: SweepSpec, rows: list[Row], out: Path, progress: bool) -> RunSummary:
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    # Without cpu=True accelerate does not set up gloo on a machine without GPUs.
    state = PartialState(cpu=not torch.cuda.is_available())
    with ExitStack() as stack:
        message: list[Any] = [None]
        if state.is_main_process:
            try:
                stack.enter_context(folder_lock(out))
                message = [("ok", _prepared(out, spec, rows))]
            except (SweepLockedError, SweepFolderError) as err:
                message = [("error", type(err).__name__, str(err))]
        broadcast_object_list(message)
        if message[0][0] == "error":
            _, kind, text = message[0]
            state.destroy_process_group()
            raise {"SweepLockedError": SweepLockedError, "SweepFolderError": SweepFolderError}[kind](text)
        p: Plan = message[0][1]
        with state.split_between_processes(p.pending) as mine:
            mine = list(mine)
        rank, world = state.process_index, state.num_processes
        own = sum(len(p.to_write[b.id]) for b in mine)
        # One line per rank (the rank's own rows), rank 0 adds the overall line below them.
        bar = Progress(p, [f"rank {rank}"], progress, own=[own], first_line=state.local_process_index,
                       overall=state.is_main_process, overall_line=state.num_processes)
        poll = _OverallPoller(out, p, bar) if state.is_main_process and world > 1 else None
        try:
            drawer = Drawer(spec, device=state.device, worker=f"rank{rank}")
            for b in mine:
                n = write_batch(out, b, drawer.draw(b), p.to_write[b.id], spec)
                bar.advance(0, n, overall=poll is None)
            if state.is_main_process:
                # Wait for the other ranks by their parts, not a barrier: a barrier times out (30 min)
                # when shards take unequal time, and a rank that dies takes this one down anyway.
                _wait_for_parts(out, p)
                compact(out)
        finally:
            if poll is not None:
                poll.stop()
            bar.close()
    state.destroy_process_group()
    return RunSummary(out, "accelerate", world, p.total, p.done_before, p.rows_left, 0.0)


def _wait_for_parts(out: Path, p: Plan, interval: float = 0.5) -> None:
    wanted = {b.id for b in p.pending}
    while not wanted <= done_parts(out):
        time.sleep(interval)


class _OverallPoller:
    """Rank 0's overall line: counts the parts every rank has written, once a second."""

    def __init__(self, out: Path, p: Plan, bar: Progress) -> None:
        self.out, self.p, self.bar = out, p, bar
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            done = done_parts(self.out)
            self.bar.set_overall(self.p.done_before + sum(len(v) for k, v in self.p.to_write.items() if k in done))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class RayWorker:
    """A Ray actor's state: one ``Drawer`` (its pipelines and scorers), kept for the whole sweep."""

    def __init__(self, spec: dict[str, Any], name: str) -> None:
        self.drawer = Drawer(load_spec(spec), worker=name)

    def draw(self, batch: Batch) -> list[Drawn]:
        return self.drawer.draw(batch)


def _run_ray(spec: SweepSpec, rows: list[Row], out: Path, address: str | None, workers: int | None,
             progress: bool) -> RunSummary:
    if "ray" not in sys.modules and (address is None or address.rsplit(":", 1)[0] in ("127.0.0.1", "localhost")):
        # A one-machine cluster: Ray otherwise swaps 127.0.0.1 for the machine's network address and
        # listens on every interface. (Read once, when ray is imported.)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        if address is not None:
            ray.init(address=address, log_to_driver=False)
        else:  # a new cluster for this run only ("local": not one that happens to run here), sized for the workers
            ray.init(address="local", num_cpus=(workers or os.cpu_count() or 1) * spec.threads,
                     include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    try:
        with folder_lock(out):
            p = _prepared(out, spec, rows)
            resources = ray.cluster_resources()
            gpus = int(resources.get("GPU", 0))
            n = workers or gpus or max(1, int(resources.get("CPU", 1)) // spec.threads)
            n = max(1, min(n, len(p.pending))) if p.pending else 0
            actor = ray.remote(num_cpus=spec.threads, num_gpus=1 if gpus else 0)(RayWorker)
            actors = [actor.remote(spec.to_dict(), f"ray{i}") for i in range(n)]
            bar = Progress(p, [f"actor {i}" for i in range(n)], progress, own=[0] * n)
            try:
                queue = list(p.pending)
                inflight: dict[Any, tuple[int, Batch]] = {}
                for i in range(n):
                    b = queue.pop(0)
                    inflight[actors[i].draw.remote(b)] = (i, b)
                while inflight:
                    [ref], _ = ray.wait(list(inflight), num_returns=1)
                    i, b = inflight.pop(ref)
                    if queue:  # keep the actor busy while the driver writes
                        nxt = queue.pop(0)
                        inflight[actors[i].draw.remote(nxt)] = (i, nxt)
                    written = write_batch(out, b, ray.get(ref), p.to_write[b.id], spec)
                    bar.bars[i].total += written
                    bar.advance(i, written)
            finally:
                bar.close()
                for a in actors:
                    ray.kill(a)
            compact(out)
    finally:
        if started_here:
            ray.shutdown()
    return RunSummary(out, "ray", n, p.total, p.done_before, p.rows_left, 0.0)
