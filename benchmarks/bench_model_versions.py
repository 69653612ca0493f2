"""Two built-in model versions side by side: seconds per image at DPM++-20 and PNDM-50.

    python benchmarks/bench_model_versions.py --old OLD_FOLDER --new NEW_FOLDER \
        --output benchmarks/results/model_versions.json

Every configuration runs in one process on the same prompts and seeds, interleaved
call by call, so the ratios are what to read (absolute seconds depend on the machine
and on what else it is doing). The bars of the version-2 issue: the new model's
DPM++-20 image costs at most 2x the old one's, and DPM++-20 stays >= 2.3x faster than
PNDM-50 on the new model.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from animegen_utils import generate, load_pipeline
from animegen_utils.evaluate import prompt_for, random_requests
from animegen_utils.published import write_results


def _seconds(pipe, prompt, seed: int, steps: int, batch_size: int) -> float:
    start = time.perf_counter()
    generate(pipe, prompt, seed=seed, steps=steps, batch_size=batch_size, progress=False)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="folder (or name) of the old model")
    parser.add_argument("--new", required=True, help="folder (or name) of the new model")
    parser.add_argument("--calls", type=int, default=12, help="one-image calls per configuration")
    parser.add_argument("--batch", type=int, default=8, help="images per batched call")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    configs = {"old dpm++-20": (args.old, "dpm++", 20), "new dpm++-20": (args.new, "dpm++", 20),
               "new pndm-50": (args.new, "pndm", 50)}
    pipes = {k: load_pipeline(model, scheduler=sched) for k, (model, sched, _) in configs.items()}
    prompts = [prompt_for(r) for r in random_requests(args.calls, seed=11)]
    for k, (_, _, steps) in configs.items():  # warm-up: first calls pay one-off allocation costs
        _seconds(pipes[k], prompts[0], 0, 2, 1)
    single: dict[str, list[float]] = {k: [] for k in configs}
    for i, prompt in enumerate(prompts):
        for k, (_, _, steps) in configs.items():
            single[k].append(_seconds(pipes[k], prompt, 40_000 + i, steps, 1))
    batched = {k: _seconds(pipes[k], prompts[:args.batch], 50_000, steps, args.batch) / args.batch
               for k, (_, _, steps) in configs.items()}
    median = {k: statistics.median(v) for k, v in single.items()}
    sizes = {k: pipes[k].unet.config.sample_size * pipes[k].vae_scale_factor for k in configs}
    report = {
        "seconds_per_image_batch1_median": median,
        "seconds_per_image_batched": batched,
        "image_size": sizes,
        "new_over_old_dpm20_batch1": median["new dpm++-20"] / median["old dpm++-20"],
        "new_over_old_dpm20_batched": batched["new dpm++-20"] / batched["old dpm++-20"],
        "new_dpm20_speedup_vs_pndm50_batch1": median["new pndm-50"] / median["new dpm++-20"],
        "new_dpm20_speedup_vs_pndm50_batched": batched["new pndm-50"] / batched["new dpm++-20"],
        "calls": args.calls, "batch": args.batch,
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "command": "python benchmarks/bench_model_versions.py " + " ".join(argv or []),
    }
    print(json.dumps(report, indent=2))
    if args.output:
        write_results(args.output, report)
    return report


if __name__ == "__main__":
    main(__import__("sys").argv[1:])
