"""DeepCache on the built-in model: speed side by side and probe adherence, with and without it.

    python benchmarks/bench_fast_cache.py --n 200 --repeats 12

Speed: batch 1, every arm drawn round-robin in one process (median per arm), so the ratios
hold under any machine load even if the seconds do not; ``speedup`` is against the same sampler
without the cache. Adherence: the probe on the evaluation's ``n`` random requests and seeds
(as ``animegen_utils.fast.frontier.measure_adherence``, with ``deepcache=`` passed to
``generate``), and the mean per-pixel difference (0-255) from the same images drawn without it.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from animegen_utils import generate, load_pipeline
from animegen_utils.evaluate import EVAL_SEED_BASE, ProbeScorer, prompt_for, random_requests
from animegen_utils.fast.frontier import BARS, mean_adherence, meets_bars
from animegen_utils.pipelines import BUILTIN_MODELS
from animegen_utils.published import write_results

#: name -> (scheduler, steps, guidance, deepcache): the uncached point of a sampler comes first.
ARMS: dict[str, tuple[str, int, float, dict | None]] = {
    "dpm20": ("dpm++", 20, 7.5, None),
    "dpm20_dc2": ("dpm++", 20, 7.5, {"interval": 2, "branch": 0}),
    "dpm20_dc3": ("dpm++", 20, 7.5, {"interval": 3, "branch": 0}),
    "dpm20_dc5": ("dpm++", 20, 7.5, {"interval": 5, "branch": 0}),
    "dpm20_dc3_b2": ("dpm++", 20, 7.5, {"interval": 3, "branch": 2}),
    "lcm4": ("lcm", 4, 1.0, None),
    "lcm4_dc2": ("lcm", 4, 1.0, {"interval": 2, "branch": 0}),
}


def baseline_of(name: str) -> str:
    """The uncached arm of the same sampler."""
    return name.split("_dc")[0]


def measure_speed(pipes: dict, repeats: int, prompt) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in ARMS}
    for r in range(1 + repeats):  # round 0 warms up
        for name, (_, steps, guidance, cache) in ARMS.items():
            started = time.perf_counter()
            generate(pipes[name], prompt, seed=EVAL_SEED_BASE + r, steps=steps, guidance=guidance, batch_size=1,
                     progress=False, deepcache=cache)
            if r:
                times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def measure_adherence(pipes: dict, n: int, batch_size: int) -> dict[str, dict]:
    scorer, requests = ProbeScorer(), random_requests(n, 0)
    prompts = [prompt_for(r) for r in requests]
    out: dict[str, dict] = {}
    images: dict[str, list[np.ndarray]] = {}
    for name, (_, steps, guidance, cache) in ARMS.items():
        started = time.perf_counter()
        gens = generate(pipes[name], prompts, seed=EVAL_SEED_BASE, steps=steps, guidance=guidance,
                        batch_size=batch_size, progress=False, deepcache=cache)
        acc = scorer.accuracy([g.image for g in gens], requests)
        images[name] = [np.asarray(g.image, dtype=np.int16) for g in gens]
        base = images[baseline_of(name)]
        diff = float(np.mean([np.abs(a - b).mean() for a, b in zip(images[name], base)]))
        out[name] = {**{k: round(v, 4) for k, v in acc.items()}, "mean_bars": round(mean_adherence(acc), 4),
                     "meets_bars": meets_bars(acc), "mean_pixel_diff": round(diff, 2),
                     "seconds": round(time.perf_counter() - started, 1)}
        print(f"{name:<14} " + " ".join(f"{k} {acc[k]:.3f}" for k in BARS) + f"  |diff| {diff:.2f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=sorted(BUILTIN_MODELS))
    ap.add_argument("--n", type=int, default=200, help="requests per point for adherence")
    ap.add_argument("--repeats", type=int, default=12, help="timed rounds (after one warm-up round)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--output", type=Path, default=Path("benchmarks/results/fast_cache.json"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    pipes = {name: load_pipeline(args.model, scheduler=sched) for name, (sched, *_) in ARMS.items()}
    [request] = random_requests(1, seed=7)
    speed = measure_speed(pipes, args.repeats, prompt_for(request))
    for name, s in speed.items():
        print(f"{name:<14} {s:.4f} s  ({speed[baseline_of(name)] / s:.2f}x uncached)", flush=True)
    adherence = measure_adherence(pipes, args.n, args.batch_size)
    points = {}
    for name, (sched, steps, guidance, cache) in ARMS.items():
        points[name] = {"scheduler": sched, "steps": steps, "guidance": guidance, "deepcache": cache,
                        "s_per_image": round(speed[name], 5),
                        "speedup": round(speed[baseline_of(name)] / speed[name], 3), **adherence[name]}
    result = {"model": args.model, "n": args.n, "repeats": args.repeats, "batch_speed": 1,
              "batch_adherence": args.batch_size, "points": points, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
    write_results(args.output, result)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
