"""A1111 prompt weights and hires fix on the built-in model, read by the attribute probe.

    OMP_NUM_THREADS=1 python benchmarks/bench_weighting.py --n 200 --output benchmarks/results/weighting.json

1. Weights move the picture: how often the probe reads "angry" for
   ``(angry:1.4), happy`` against ``angry, (happy:1.4)`` (and the unweighted
   ``angry, happy``), same seeds, with a two-proportion z-test.
2. Hires fix keeps the picture: probe accuracy on emotion and style for random
   requests drawn at the native size and with ``hires_scale=2`` (latent and
   Lanczos upscalers); the probe reads the 2x picture at its own input size.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

from animegen_utils import generate, load_pipeline
from animegen_utils.evaluate import prompt_for, random_requests
from animegen_utils.evaluate.probe import load_probe

BASE = "1girl, solo, {}, casual, hoodie"
PROMPTS = {"angry_weighted": BASE.format("(angry:1.4), happy"),
           "happy_weighted": BASE.format("angry, (happy:1.4)"),
           "unweighted": BASE.format("angry, happy")}
SEED = 5_000_000  # away from the evaluation seeds


def emotion_counts(pipe, probe, prompt: str, n: int, steps: int) -> dict[str, int]:
    gens = generate(pipe, prompt, seed=[SEED + i for i in range(n)], steps=steps, batch_size=25, progress=False)
    read = probe.predict([g.image for g in gens])["emotion"]
    return {e: read.count(e) for e in sorted(set(read))}


def two_proportion_z(a: int, b: int, n: int) -> float:
    """z of the difference between a/n and b/n (pooled), 0 when both are 0 or n."""
    p = (a + b) / (2 * n)
    return 0.0 if p in (0.0, 1.0) else (a - b) / n / math.sqrt(2 * p * (1 - p) / n)


def hires_accuracy(pipe, probe, n: int, steps: int, **hires) -> dict[str, float]:
    requests = random_requests(n, seed=7)
    started = time.perf_counter()
    gens = generate(pipe, [prompt_for(r) for r in requests], seed=SEED + 10_000, steps=steps, batch_size=25,
                    progress=False, **hires)
    seconds = time.perf_counter() - started
    read = probe.predict([g.image for g in gens])
    acc = {k: sum(p == r[k] for p, r in zip(read[k], requests)) / n for k in ("emotion", "style")}
    return {"emotion_accuracy": acc["emotion"], "style_accuracy": acc["style"], "size": list(gens[0].image.size),
            "seconds_per_image": seconds / n}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="seeds per prompt / requests per hires setting")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    pipe, probe = load_pipeline(), load_probe()
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor

    counts = {k: emotion_counts(pipe, probe, p, args.n, args.steps) for k, p in PROMPTS.items()}
    angry = {k: c.get("angry", 0) for k, c in counts.items()}
    weights = {
        "prompts": PROMPTS, "n": args.n, "steps": args.steps, "scheduler": "dpm++", "guidance": 7.5,
        "emotion_counts": counts, "angry_rate": {k: v / args.n for k, v in angry.items()},
        "z_angry_weighted_vs_happy_weighted": two_proportion_z(angry["angry_weighted"], angry["happy_weighted"],
                                                               args.n),
    }
    hires = {"native": hires_accuracy(pipe, probe, args.n, args.steps)}
    for upscaler in ("latent", "lanczos"):
        hires[upscaler] = hires_accuracy(pipe, probe, args.n, args.steps, hires_scale=2.0, hires_strength=0.5,
                                         hires_upscaler=upscaler)
    report = {"model": "tiny", "native_size": native, "weights": weights,
              "hires": {"n": args.n, "steps": args.steps, "hires_strength": 0.5, "hires_scale": 2.0, **hires},
              "machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()}}
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
