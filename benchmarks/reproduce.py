"""Re-make every published number on the shipped weights, and say which ones still hold.

    make reproduce                       # every stage; writes benchmarks/results/fresh/
    make reproduce REPRODUCE=quick       # CI's variant: fewer samples, wider tolerances
    python benchmarks/reproduce.py --only eval_g7.5 inference --fresh /tmp/fresh
    python benchmarks/reproduce.py --list                         # stages, files, expected minutes

Each stage is one command a reader could type (the evaluation or benchmark that made the
committed file), run with its output pointed at the fresh folder. Then every number that the
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
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from animegen_utils.published import RESULTS_DIR, documents, drift, drift_table, find_numbers, document_text  # noqa: E402

OUT = "{out}"  # replaced by the fresh folder


@dataclass(frozen=True)
class Stage:
    """One command that writes ``files`` into the fresh folder; ``quick`` is CI's cheaper variant
    (None: the quick run skips the stage, and its numbers read "not re-made")."""

    name: str
    files: tuple[str, ...]
    full: tuple[str, ...]
    quick: tuple[str, ...] | None
    minutes: float  # expected, full variant, 2-core CPU


def _evaluate(model: str, guidance: float, n: int, name: str) -> tuple[str, ...]:
    return ("-m", "animegen_utils.evaluate", "--model", model, "--n", str(n), "--guidance", f"{guidance:g}",
            "--output", f"{OUT}/{name}")


STAGES: tuple[Stage, ...] = (
    Stage("eval_g7.5", ("eval_g7.5.json",), _evaluate("tiny", 7.5, 200, "eval_g7.5.json"),
          _evaluate("tiny", 7.5, 60, "eval_g7.5.json"), 2),
    Stage("eval_g5.0", ("eval_g5.0.json",), _evaluate("tiny", 5.0, 200, "eval_g5.0.json"), None, 2),
    Stage("eval_g3.0", ("eval_g3.0.json",), _evaluate("tiny", 3.0, 200, "eval_g3.0.json"), None, 2),
    Stage("binding", ("binding.json",),
          ("-m", "animegen_utils.evaluate.binding", "--model", "tiny", "--n", "300",
           "--output", f"{OUT}/binding.json"), None, 2),
    Stage("inference", ("inference.json",), ("benchmarks/bench_inference.py", "--output", f"{OUT}/inference.json"),
          ("benchmarks/bench_inference.py", "--n", "10", "--single", "3", "--rounds", "1",
           "--output", f"{OUT}/inference.json"), 4),
    Stage("controlnet", ("controlnet.json",), ("benchmarks/bench_controlnet.py", "--output", f"{OUT}/controlnet.json"),
          None, 10),
    Stage("controlnet_guidance_end", ("controlnet_guidance_end_0.8.json",),
          ("benchmarks/bench_controlnet.py", "--sets", "held_out,samples", "--guidance-end", "0.8",
           "--output", f"{OUT}/controlnet_guidance_end_0.8.json"), None, 8),
    Stage("fast_adherence", ("fast_adherence.json",),
          ("benchmarks/bench_fast.py", "adherence", "--points", "v2", "--results", OUT), None, 6),
    Stage("fast_sidebyside", ("fast_sidebyside.json",),
          ("benchmarks/bench_fast_sidebyside.py", "--output", f"{OUT}/fast_sidebyside.json"),
          ("benchmarks/bench_fast_sidebyside.py", "--repeats", "3", "--output", f"{OUT}/fast_sidebyside.json"), 3),
    Stage("fast_cache", ("fast_cache.json",),
          ("benchmarks/bench_fast_cache.py", "--threads", "1", "--output", f"{OUT}/fast_cache.json"), None, 12),
    Stage("weighting", ("weighting.json",), ("benchmarks/bench_weighting.py", "--output", f"{OUT}/weighting.json"),
          None, 6),
    Stage("lora", ("lora.json",), ("benchmarks/bench_lora.py", "--output", f"{OUT}/lora.json"), None, 3),
    Stage("sweep", ("sweep.json",), ("benchmarks/bench_sweep.py", "--rows", "32", "--steps", "12", "--repeats", "2",
                                       "--output", f"{OUT}/sweep.json"), None, 6),
    Stage("ip_adapter", ("ip_adapter.json",),
          ("-m", "animegen_utils.evaluate.reference", "--n", "200", "--output", f"{OUT}/ip_adapter.json"), None, 4),
    Stage("reproduce", ("reproduce.json",), ("benchmarks/bench_reproduce.py", "--output", f"{OUT}/reproduce.json"),
          None, 2),
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


def published_files() -> set[str]:
    """Every results file a published number points at."""
    return {n.file for path in documents() for n in find_numbers(document_text(path))}


def run_stage(stage: Stage, fresh: Path, quick: bool) -> tuple[bool, float]:
    """Run one stage (its progress bars on the terminal, its output in ``fresh/logs``)."""
    argv = stage.quick if quick else stage.full
    return _run(stage.name, [sys.executable, *(a.replace(OUT, str(fresh)) for a in argv)], fresh / "logs")


def _run(name: str, command: list[str], logs: Path) -> tuple[bool, float]:
    log = logs / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with log.open("w", encoding="utf-8") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=sys.stderr if sys.stderr.isatty() else out,
                              env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")})
    return done.returncode == 0, time.time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", type=Path, default=RESULTS_DIR / "fresh", help="where fresh results go")
    parser.add_argument("--quick", action="store_true", help="CI's variant: fewer samples, wider tolerances")
    parser.add_argument("--only", nargs="+", metavar="STAGE", help=f"stages: {', '.join(s.name for s in STAGES)}")
    parser.add_argument("--list", action="store_true", help="list the stages and exit")
    parser.add_argument("--train", action="store_true",
                        help="first retrain every shipped artefact from scratch (TRAIN_STAGES; hours)")
    args = parser.parse_args(argv)
    names = [s.name for s in STAGES]
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
    print(f"{len(stages)} stages, about {sum(s.minutes for s in stages) / (4 if args.quick else 1):.0f} minutes "
          f"on a 2-core CPU; fresh results in {args.fresh}", flush=True)
    failed, seconds = [], {}
    for stage in tqdm(stages, desc="reproduce", unit="stage"):
        tqdm.write(f"== {stage.name}")
        ok, seconds[stage.name] = run_stage(stage, args.fresh, args.quick)
        if not ok:
            failed.append(stage.name)
            tqdm.write(f"!! {stage.name} failed; see {args.fresh / 'logs' / (stage.name + '.log')}")
    rows = drift(args.fresh, quick=args.quick)
    print(drift_table(rows))
    (args.fresh / "drift.json").write_text(json.dumps({"quick": args.quick, "stage_seconds": seconds,
                                                       "failed_stages": failed, "rows": rows}, indent=2) + "\n")
    print(f"stages took {sum(seconds.values()) / 60:.1f} minutes; drift table in {args.fresh / 'drift.json'}")
    if failed:
        print(f"failed stages: {', '.join(failed)}")
        return 2
    return 1 if any(r["ok"] is False for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
