"""What the sweep machinery costs, what a second process gains on a 2-core CPU, and Parquet against SQLite.

    python benchmarks/bench_sweep.py [--rows 48] [--steps 20] [--output benchmarks/results/sweep.json]

1. Overhead: the same rows (emotion x style x seed, the built-in model at 64 px, batches of 8,
   2 threads) drawn by a plain loop of ``generate`` calls that saves each PNG with ``save_image``,
   and by ``sweep.run`` (manifest, lock, atomic PNGs, Parquet parts, ``results.parquet``). The two
   are interleaved, ``--repeats`` times each, so both see the same machine load; medians.
   The machinery's own time is also counted directly: ``sweep.run`` minus the time spent inside
   ``generate``.
2. Processes: the sweep's images per second on one process (1 thread and 2 threads) and on
   2 accelerate processes of 1 thread each (``accelerate launch --multi_gpu --num_processes 2``),
   measured by the run itself (pipeline load included, Python start-up not).
3. Results table: writing one batch of 8 rows (a Parquet part renamed into place, against an
   ``INSERT`` + ``COMMIT`` into one SQLite file in WAL mode with ``synchronous=FULL``, both fsynced)
   and reading a 2,000-row table back.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from animegen_utils.published import write_results

ROOT = Path(__file__).resolve().parents[1]


def spec(rows: int, steps: int, threads: int) -> dict:
    from animegen_utils.prompts import EMOTIONS, STYLES

    seeds = max(1, rows // (len(EMOTIONS) * len(STYLES)))
    n_emotions = max(1, min(len(EMOTIONS), rows // (len(STYLES) * seeds)))
    return {"axes": {"emotion": list(EMOTIONS[:n_emotions]), "style": list(STYLES), "seed": list(range(seeds))},
            "fixed": {"steps": steps, "guidance": 7.5}, "batch_size": 8, "threads": threads}


def plain_loop(s: dict, out: Path) -> float:
    """What a user writes without the sweep: generate per batch, save_image per image."""
    import torch

    from animegen_utils import build_prompt, generate, load_pipeline, save_image

    torch.set_num_threads(s["threads"])
    pipe = load_pipeline()
    combos = [(e, st, seed) for e in s["axes"]["emotion"] for st in s["axes"]["style"] for seed in s["axes"]["seed"]]
    started = time.perf_counter()
    for i in range(0, len(combos), s["batch_size"]):
        chunk = combos[i:i + s["batch_size"]]
        gens = generate(pipe, [build_prompt(e, st) for e, st, _ in chunk], seed=[c[2] for c in chunk],
                        steps=s["fixed"]["steps"], guidance=s["fixed"]["guidance"], batch_size=len(chunk),
                        progress=False)
        for (e, st, seed), g in zip(chunk, gens):
            save_image(g.image, out / f"{e}_{st}_{seed}.png", g.params)
    return time.perf_counter() - started


def sweep_run(s: dict, out: Path) -> tuple[float, float]:
    """``sweep.run`` wall time, and the part of it spent inside ``generate``."""
    import animegen_utils.sweep.worker as worker
    from animegen_utils.sweep import run

    inside = [0.0]
    real = worker.generate

    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            inside[0] += time.perf_counter() - t

    worker.generate = timed
    try:
        started = time.perf_counter()
        run(s, out, engine="local", progress=False)
        return time.perf_counter() - started, inside[0]
    finally:
        worker.generate = real


def overhead(rows: int, steps: int, repeats: int) -> dict:
    from animegen_utils import load_pipeline

    s = spec(rows, steps, threads=2)
    load_pipeline()  # weights loaded once, outside every timing
    plain, swept, machinery = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        plain_loop(s, Path(tmp) / "warm")  # kernels warm before the first timing
        for r in range(repeats):
            plain.append(plain_loop(s, Path(tmp) / f"plain{r}"))
            wall, inside = sweep_run(s, Path(tmp) / f"sweep{r}")
            swept.append(wall)
            machinery.append(wall - inside)
    n = len(s["axes"]["emotion"]) * len(s["axes"]["style"]) * len(s["axes"]["seed"])
    return {"rows": n, "steps": steps, "threads": 2, "batch_size": 8, "repeats": repeats,
            "plain_loop_s": plain, "sweep_s": swept, "sweep_outside_generate_s": machinery,
            "plain_images_per_s": n / statistics.median(plain), "sweep_images_per_s": n / statistics.median(swept),
            "overhead_end_to_end_pct": 100 * (statistics.median(swept) / statistics.median(plain) - 1),
            "machinery_pct_of_sweep": 100 * statistics.median(machinery) / statistics.median(swept)}


def processes(rows: int, steps: int) -> dict:
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, threads, launcher in (("1 process x 1 thread", 1, []), ("1 process x 2 threads", 2, []),
                                         ("2 accelerate processes x 1 thread", 1,
                                          [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu",
                                           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                                           "--dynamo_backend", "no", "--main_process_port", "29517"])):
            path = Path(tmp) / f"{threads}-{len(launcher)}.json"
            path.write_text(json.dumps(spec(rows, steps, threads)))
            cmd = (launcher or [sys.executable]) + ["-m", "animegen_utils.sweep", "run", str(path),
                                                    "--out", str(Path(tmp) / path.stem), "--no-progress"]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
            m = re.search(r"(\d+) drawn.*?([\d.]+) s\)", done.stdout)
            drawn, seconds = int(m.group(1)), float(m.group(2))
            result[label] = {"rows": drawn, "seconds": seconds, "images_per_s": drawn / seconds}
            print(label, result[label], flush=True)
    return result


def table_formats(batches: int = 250, per_batch: int = 8) -> dict:
    import pyarrow as pa

    from animegen_utils.sweep.store import _read_parts, write_part

    fields = [("id", pa.string()), ("position", pa.int64()), ("batch", pa.string()), ("file", pa.string()),
              ("prompt_text", pa.string()), ("emotion", pa.string()), ("style", pa.string()), ("seed", pa.int64()),
              ("steps", pa.int64()), ("guidance", pa.float64()), ("probe_emotion", pa.string()),
              ("probe_emotion_ok", pa.bool_()), ("png_sha256", pa.string()), ("seconds", pa.float64())]
    schema = pa.schema(fields)

    def records(b: int) -> list[dict]:
        return [{"id": f"{b:08x}{i:08x}", "position": b * per_batch + i, "batch": f"{b:016x}",
                 "file": f"images/{b:08x}{i:08x}.png", "prompt_text": "1girl, solo, happy, smile, casual, hoodie",
                 "emotion": "happy", "style": "casual", "seed": i, "steps": 20, "guidance": 7.5,
                 "probe_emotion": "happy", "probe_emotion_ok": True, "png_sha256": "0" * 64, "seconds": 0.5}
                for i in range(per_batch)]

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t = time.perf_counter()
        for b in range(batches):
            write_part(out, f"{b:016x}", records(b), schema)
        parquet_write = (time.perf_counter() - t) / batches
        t = time.perf_counter()
        n_parquet = _read_parts(out / "table").num_rows
        parquet_read = time.perf_counter() - t

        db = sqlite3.connect(out / "results.sqlite")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"CREATE TABLE results ({', '.join(n for n, _ in fields)}, PRIMARY KEY (id))")
        marks = ", ".join("?" for _ in fields)
        t = time.perf_counter()
        for b in range(batches):
            db.executemany(f"INSERT OR REPLACE INTO results VALUES ({marks})",
                           [tuple(r[n] for n, _ in fields) for r in records(b)])
            db.commit()
        sqlite_write = (time.perf_counter() - t) / batches
        t = time.perf_counter()
        n_sqlite = len(db.execute("SELECT * FROM results").fetchall())
        sqlite_read = time.perf_counter() - t
        db.close()
    return {"rows": batches * per_batch, "rows_per_batch": per_batch,
            "parquet_part_write_ms_per_batch": 1000 * parquet_write, "sqlite_commit_ms_per_batch": 1000 * sqlite_write,
            "parquet_read_all_parts_ms": 1000 * parquet_read, "sqlite_read_all_ms": 1000 * sqlite_read,
            "rows_read": [n_parquet, n_sqlite]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "sweep.json")
    args = parser.parse_args()
    result = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
              "load_average_at_start": os.getloadavg()[0]}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for name, measure in (("table", table_formats),
                          ("overhead", lambda: overhead(args.rows, args.steps, args.repeats)),
                          ("processes", lambda: processes(args.rows, args.steps))):
        result[name] = measure()
        result["load_average_at_end"] = os.getloadavg()[0]
        print(name, result[name], flush=True)
        # Written after each part: a run cut short keeps what it measured.
        write_results(args.output, result)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
