"""Inference speed and quality of the built-in model: DPM++ 2M at 20 steps vs PNDM at 50 steps.

    python benchmarks/bench_inference.py [--model tiny] [--n 40] [--output benchmarks/results/inference.json]

Both samplers run in the same process on the same prompts and seeds, interleaved
round by round, so the ratio between them is what to read (absolute seconds
depend on the machine and on what else it is doing).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from animegen_utils import generate, load_pipeline
from animegen_utils.evaluate import ProbeScorer, prompt_for, random_requests
from animegen_utils.published import write_results

CONFIGS = [("dpm++", 20), ("pndm", 50)]


def time_generate(pipe, prompts, seed: int, steps: int, batch_size: int) -> tuple[float, list]:
    start = time.perf_counter()
    gens = generate(pipe, prompts, seed=seed, steps=steps, batch_size=batch_size, progress=False)
    return time.perf_counter() - start, gens


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--n", type=int, default=40, help="images per sampler for the accuracy columns")
    parser.add_argument("--single", type=int, default=8, help="one-image calls timed per sampler")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/inference.json"))
    args = parser.parse_args(argv)

    scorer = ProbeScorer()
    requests = random_requests(args.n, seed=7)
    prompts = [prompt_for(r) for r in requests]
    pipes = {name: load_pipeline(args.model, scheduler=name) for name, _ in CONFIGS}
    for name, steps in CONFIGS:  # warm-up: first calls pay one-off allocation costs
        generate(pipes[name], prompts[:1], seed=0, steps=2, progress=False)

    single = {name: 0.0 for name, _ in CONFIGS}
    batched = {name: 0.0 for name, _ in CONFIGS}
    images = {name: [] for name, _ in CONFIGS}
    for r in range(args.rounds):
        for name, steps in CONFIGS:
            for i in range(args.single):
                seconds, _ = time_generate(pipes[name], prompts[i], 10_000 + i, steps, batch_size=1)
                single[name] += seconds
            seconds, gens = time_generate(pipes[name], prompts, 20_000, steps, batch_size=8)
            batched[name] += seconds
            if r == 0:
                images[name] = [g.image for g in gens]

    rows = []
    for name, steps in CONFIGS:
        acc = scorer.accuracy(images[name], requests)
        rows.append({
            "scheduler": name, "steps": steps,
            "seconds_per_image_batch1": single[name] / (args.rounds * args.single),
            "images_per_second_batch8": args.rounds * args.n / batched[name],
            **{f"{k}_accuracy": v for k, v in acc.items()},
        })
    base = rows[1]
    for row in rows:
        row["speedup_vs_pndm50"] = base["seconds_per_image_batch1"] / row["seconds_per_image_batch1"]

    result = {"model": args.model, "n": args.n, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.machine(), "processor": platform.processor() or "unknown", "rows": rows}
    keys = ["scheduler", "steps", "seconds_per_image_batch1", "images_per_second_batch8", "speedup_vs_pndm50",
            "emotion_accuracy", "style_accuracy", "hair_color_accuracy", "eye_color_accuracy"]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in keys) + " |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.output, result)
    return result


if __name__ == "__main__":
    main()
