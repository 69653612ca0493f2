"""Re-make every published number on the shipped weights, and say which ones still hold.

    make reproduce                       # every stage; writes benchmarks/results/fresh/
    make reproduce REPRODUCE=quick       # CI's variant: fewer samples, wider tolerances
    python benchmarks/reproduce.py --only eval_g7.5 inference --fresh /tmp/fresh
    python benchmarks/reproduce.py --list                         # stages, files, expected minutes
    python benchmarks/reproduce.py --lanes 1                      # one stage at a time, torch's threads

Each stage is one command a reader could type (the evaluation or benchmark that made the
committed file), run with its output pointed at the fresh folder. Stages that time the whole
machine (``exclusive``) run alone; the others run two at a time, one thread each, which halves
the wall time on two cores without moving their numbers (probe accuracies, and speed ratios
measured side by side in one process). Then every number that the
README, the model cards and the notebooks' prose publish is compared with its fresh value
(``animegen_utils.published.drift``): the table says, number by number, committed, fresh and
whether the difference is within that kind of number's tolerance. The exit status is 1 when a
number drifted and 2 when a stage failed (the other stages still run; their logs are in
``FRESH/logs/``).

``make reproduce-train`` retrains the shipped artefacts first (``TRAIN_STAGES``); it is not
run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from animegen_utils.published import (RESULTS_DIR, document_text, documents, drift, drift_table,  # noqa: E402
                                      find_numbers, write_results)

OUT = "{out}"  # replaced by the fresh folder


@dataclass(frozen=True)
class Stage:
    """One command that writes ``files`` into the fresh folder; ``quick`` is CI's cheaper variant
    (None: the quick run skips the stage, and its numbers read "not re-made")."""

    name: str
    files: tuple[str, ...]
    full: tuple[str, ...]
    quick: tuple[str, ...] | None
    minutes: float  # measured, full variant, 2-core CPU (one thread, or alone when exclusive)
    #: Needs the whole machine (it times two threads, or several processes, against one): runs alone.
    #: The other stages run one thread each, two at a time (``--lanes``): their numbers are probe
    #: accuracies, or speed ratios measured side by side inside one process, which a steady
    #: neighbour on the other core leaves alone.
    exclusive: bool = False


def _evaluate(model: str, guidance: float, n: int, name: str) -> tuple[str, ...]:
    return ("-m", "animegen_utils.evaluate", "--model", model, "--n", str(n), "--guidance", f"{guidance:g}",
            "--output", f"{OUT}/{name}")


STAGES: tuple[Stage, ...] = (
    Stage("eval_g7.5", ("eval_g7.5.json",), _evaluate("tiny", 7.5, 200, "eval_g7.5.json"),
          _evaluate("tiny", 7.5, 60, "eval_g7.5.json"), 1),
    Stage("eval_g5.0", ("eval_g5.0.json",), _evaluate("tiny", 5.0, 200, "eval_g5.0.json"), None, 1),
    Stage("eval_g3.0", ("eval_g3.0.json",), _evaluate("tiny", 3.0, 200, "eval_g3.0.json"), None, 2),
    Stage("binding", ("binding.json",),
          ("-m", "animegen_utils.evaluate.binding", "--model", "tiny", "--n", "300",
           "--output", f"{OUT}/binding.json"), None, 2),
    Stage("inference", ("inference.json",), ("benchmarks/bench_inference.py", "--output", f"{OUT}/inference.json"),
          ("benchmarks/bench_inference.py", "--n", "10", "--single", "3", "--rounds", "1",
           "--output", f"{OUT}/inference.json"), 2),
    Stage("controlnet", ("controlnet.json",), ("benchmarks/bench_controlnet.py", "--output", f"{OUT}/controlnet.json"),
          None, 3),
    Stage("controlnet_guidance_end", ("controlnet_guidance_end_0.8.json",),
          ("benchmarks/bench_controlnet.py", "--sets", "held_out,samples", "--guidance-end", "0.8",
           "--output", f"{OUT}/controlnet_guidance_end_0.8.json"), None, 2),
    Stage("fast_adherence", ("fast_adherence.json",),
          ("benchmarks/bench_fast.py", "adherence", "--points", "v2", "--results", OUT), None, 2),
    Stage("fast_sidebyside", ("fast_sidebyside.json",),
          ("benchmarks/bench_fast_sidebyside.py", "--output", f"{OUT}/fast_sidebyside.json"),
          # no quick variant: the kit's per-call overhead against fused diffusers at LCM-4 (a few ms) needs
          # an idle machine, and CI's quick run shares it with the other test lane (1.09x moved to 1.57x)
          None, 2, exclusive=True),
    Stage("fast_cache", ("fast_cache.json",),
          ("benchmarks/bench_fast_cache.py", "--threads", "1", "--output", f"{OUT}/fast_cache.json"), None, 5),
    Stage("weighting", ("weighting.json",), ("benchmarks/bench_weighting.py", "--output", f"{OUT}/weighting.json"),
          None, 26),
    Stage("lora", ("lora.json",), ("benchmarks/bench_lora.py", "--output", f"{OUT}/lora.json"), None, 2),
    Stage("sweep", ("sweep.json",), ("benchmarks/bench_sweep.py", "--rows", "32", "--steps", "12", "--repeats", "2",
                                       "--output", f"{OUT}/sweep.json"), None, 2, exclusive=True),
    Stage("ip_adapter", ("ip_adapter.json",),
          ("-m", "animegen_utils.evaluate.reference", "--n", "200", "--output", f"{OUT}/ip_adapter.json"), None, 4),
    Stage("reproduce", ("reproduce.json",), ("benchmarks/bench_reproduce.py", "--output", f"{OUT}/reproduce.json"),
          None, 13),
)

#: Results of weights the kit no longer ships (version 1, earlier version-2 runs), quoted in the
#: model card as history: nothing can re-make them (the weights are in the git history), and the
#: drift table lists them as not re-made.
HISTORICAL: tuple[str, ...] = (
    "tiny_v2_attempt1.json", "tiny_v2_attempt2.json", "eval_v1_g7.5.json", "eval_v1_g5.0.json", "eval_v1_g3.0.json",
    "binding_v1.json", "controlnet_v1.json", "controlnet_v1_guidance_end_0.7.json", "fast_adherence_v1.json",
    "inference_v1.json", "model_versions.json")

#: ``make reproduce-train``: every shipped artefact from scratch, in this order (each resumes
#: from its work folder when stopped), then ``make reproduce``. Minutes on the 2-core CPU.
TRAIN_STAGES: tuple[tuple[str, tuple[str, ...], float], ...] = (
    ("base model", ("-m", "animegen_utils.toyworld.train"), 110),
    ("attribute probe", ("-m", "animegen_utils.evaluate.probe", "--steps", "2000",
                         "--out", "animegen_utils/models/probe"), 10),
    ("posed attribute probe", ("-m", "animegen_utils.evaluate.probe", "--steps", "3000", "--pose-prob", "0.7",
                               "--out", "animegen_utils/models/probe_posed"), 12),
    ("ControlNet", ("-m", "animegen_utils.control", "train"), 57),
    ("LCM-LoRA", ("-m", "animegen_utils.fast", "distill"), 90),
    ("IP-Adapter", ("-m", "animegen_utils.reference", "train"), 25),
    ("notebook-03 LoRA", ("-m", "papermill", "--cwd", "notebooks", "notebooks/03_lora_training.ipynb",
                          "outputs/03_lora_training.ipynb"), 4),
)


#: What one whole run took and how its numbers held (written into the fresh folder after the drift
#: table; the committed copy is the run the README quotes, so no stage re-makes it).
RUN_RECORD = "reproduce_run.json"


def run_record(report: dict) -> dict:
    """The summary of a run's ``drift.json``: minutes, per-stage minutes, verdict counts."""
    rows = report["rows"]
    return {"quick": report["quick"], "lanes": report["lanes"], "minutes": report["wall_seconds"] / 60,
            "stage_minutes": {k: v / 60 for k, v in report["stage_seconds"].items()},
            "failed_stages": report["failed_stages"], "numbers": len(rows),
            "judged": sum(r["ok"] is not None for r in rows), "within": sum(r["ok"] is True for r in rows),
            "drifted": [f"{r['file']} {r['pointer']}" for r in rows if r["ok"] is False],
            "reported_only": sum(r["ok"] is None and r["fresh"] is not None for r in rows),
            "not_remade": sum(r["fresh"] is None for r in rows)}


def published_files() -> set[str]:
    """Every results file a published number points at."""
    return {n.file for path in documents() for n in find_numbers(document_text(path))}


def run_stage(stage: Stage, fresh: Path, quick: bool, one_thread: bool = False,
              terminal: bool = True) -> tuple[bool, float]:
    """Run one stage, its output in ``fresh/logs`` (its progress bars on the terminal when ``terminal``)."""
    argv = stage.quick if quick else stage.full
    return _run(stage.name, [sys.executable, *(a.replace(OUT, str(fresh)) for a in argv)], fresh / "logs",
                {"OMP_NUM_THREADS": "1"} if one_thread else {}, terminal)


def _run(name: str, command: list[str], logs: Path, env: dict[str, str] | None = None,
         terminal: bool = True) -> tuple[bool, float]:
    log = logs / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with log.open("w", encoding="utf-8") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        done = subprocess.run(command, cwd=ROOT, stdout=out,
                              stderr=sys.stderr if terminal and sys.stderr.isatty() else out,
                              env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
                                   **(env or {})})
    return done.returncode == 0, time.time() - started


def alone_and_shared(stages: list[Stage], lanes: int) -> tuple[list[Stage], list[Stage]]:
    """The stages that run alone first (exclusive ones, when lanes share the machine) and the rest."""
    alone = [s for s in stages if s.exclusive and lanes > 1]
    return alone, [s for s in stages if s not in alone]


def run_stages(stages: list[Stage], fresh: Path, quick: bool, lanes: int = 2) -> tuple[list[str], dict[str, float]]:
    """Every stage once: the exclusive ones alone, then the rest ``lanes`` at a time, one thread each,
    longest first. Returns the failed stages and each stage's seconds."""
    failed, seconds = [], {}
    bar = tqdm(total=len(stages), desc="reproduce", unit="stage")

    def finished(stage: Stage, ok: bool, took: float) -> None:
        seconds[stage.name] = took
        bar.update(1)
        tqdm.write(f"{'==' if ok else '!!'} {stage.name} {'done' if ok else 'FAILED'} in {took / 60:.1f} min"
                   + ("" if ok else f"; see {fresh / 'logs' / (stage.name + '.log')}"))
        if not ok:
            failed.append(stage.name)

    alone, shared = alone_and_shared(stages, lanes)
    for stage in alone:
        tqdm.write(f"== {stage.name} (alone)")
        finished(stage, *run_stage(stage, fresh, quick))
    if lanes == 1:
        for stage in shared:
            tqdm.write(f"== {stage.name}")
            finished(stage, *run_stage(stage, fresh, quick))
    else:
        tqdm.write(f"== {', '.join(s.name for s in shared)}: {lanes} at a time, one thread each")
        free = queue.SimpleQueue()
        for position in range(1, lanes + 1):
            free.put(position)

        def in_lane(stage: Stage) -> tuple[bool, float]:
            # The stage's own bars go to its log (two at once would garble one terminal line), so its
            # lane shows a bar of elapsed against expected seconds (``minutes``, measured).
            position, done = free.get(), threading.Event()
            expected = max(1, round(stage.minutes * 60 / (4 if quick else 1)))
            lane_bar = tqdm(total=expected, desc=f"  {stage.name}", unit="s", position=position, leave=False,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} s expected")
            started = time.time()

            def tick() -> None:
                while not done.wait(1.0):
                    lane_bar.n = min(expected, round(time.time() - started))
                    lane_bar.refresh()

            ticker = threading.Thread(target=tick, daemon=True)
            ticker.start()
            try:
                return run_stage(stage, fresh, quick, True, False)
            finally:
                done.set()
                ticker.join()
                lane_bar.close()
                free.put(position)

        with ThreadPoolExecutor(lanes) as pool:
            jobs = {pool.submit(in_lane, s): s for s in sorted(shared, key=lambda s: -s.minutes)}
            for job in as_completed(jobs):
                finished(jobs[job], *job.result())
    bar.close()
    return failed, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", type=Path, default=RESULTS_DIR / "fresh", help="where fresh results go")
    parser.add_argument("--quick", action="store_true", help="CI's variant: fewer samples, wider tolerances")
    parser.add_argument("--only", nargs="+", metavar="STAGE", help=f"stages: {', '.join(s.name for s in STAGES)}")
    parser.add_argument("--list", action="store_true", help="list the stages and exit")
    parser.add_argument("--lanes", type=int, default=2,
                        help="stages run at once, one thread each (1: one after another with torch's threads)")
    parser.add_argument("--train", action="store_true",
                        help="first retrain every shipped artefact from scratch (TRAIN_STAGES; hours)")
    args = parser.parse_args(argv)
    names = [s.name for s in STAGES]
    if args.lanes < 1:
        parser.error(f"--lanes must be at least 1, not {args.lanes}")
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(names)}")
    stages = [s for s in STAGES if (not args.only or s.name in args.only) and (s.quick or not args.quick)]
    if args.list:
        for s in STAGES:
            print(f"{s.name:<16} {', '.join(s.files):<28} ~{s.minutes:g} min  {'(quick too)' if s.quick else ''}")
        return 0
    if args.train:
        total = sum(minutes for _, _, minutes in TRAIN_STAGES)
        print(f"Retraining {len(TRAIN_STAGES)} artefacts first: about {total / 60:.1f} hours on a 2-core CPU "
              "(each resumes from its work folder if stopped)", flush=True)
        for name, train_argv, minutes in tqdm(TRAIN_STAGES, desc="train", unit="artefact"):
            tqdm.write(f"== train {name} (~{minutes:g} min)")
            ok, _ = _run(f"train {name}".replace(" ", "_"), [sys.executable, *train_argv], args.fresh / "logs")
            if not ok:  # later artefacts are trained on earlier ones: stop here
                print(f"training {name} failed; see {args.fresh / 'logs'}")
                return 2
    args.fresh.mkdir(parents=True, exist_ok=True)
    alone, shared = alone_and_shared(stages, args.lanes)
    minutes = sum(s.minutes for s in alone) + sum(s.minutes for s in shared) / args.lanes
    print(f"{len(stages)} stages, about {minutes / (4 if args.quick else 1):.0f} minutes "
          f"on a 2-core CPU; fresh results in {args.fresh}", flush=True)
    started = time.time()
    failed, seconds = run_stages(stages, args.fresh, args.quick, args.lanes)
    wall = time.time() - started
    rows = drift(args.fresh, quick=args.quick)
    print(drift_table(rows))
    report = {"quick": args.quick, "lanes": args.lanes, "wall_seconds": wall, "stage_seconds": seconds,
              "failed_stages": failed, "rows": rows}
    (args.fresh / "drift.json").write_text(json.dumps(report, indent=2) + "\n")
    write_results(args.fresh / RUN_RECORD, run_record(report))
    print(f"{len(stages)} stages in {wall / 60:.1f} minutes ({sum(seconds.values()) / 60:.1f} stage-minutes); "
          f"drift table in {args.fresh / 'drift.json'}")
    if failed:
        print(f"failed stages: {', '.join(failed)}")
        return 2
    return 1 if any(r["ok"] is False for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
