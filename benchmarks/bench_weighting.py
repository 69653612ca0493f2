"""A1111 prompt weights and hires fix on the built-in model, read by the attribute probe.

    OMP_NUM_THREADS=1 python benchmarks/bench_weighting.py --n 200 --output benchmarks/results/weighting.json

1. Weights move the picture: how often the probe reads "angry" for
   ``(angry:1.4), happy`` against ``angry, (happy:1.4)`` (and the unweighted
   ``angry, happy``), same seeds, with a two-proportion z-test.
2. Where the built-in model reads the emotion: the same embeddings with the
   prompt's word positions zeroed, or with the end-of-text padding zeroed.
3. Hires fix keeps the picture: probe accuracy on emotion and style for random
   requests drawn at the native size and with ``hires_scale=2`` (latent and
   Lanczos upscalers, several strengths); the probe reads the 2x picture at its
   own input size.

``--parts`` picks sections; results of the other sections already in ``--output`` are kept.
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
from animegen_utils.published import write_results

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


@torch.no_grad()
def position_ablation(pipe, probe, n: int, steps: int) -> dict[str, dict[str, int]]:
    """Probe reads with the prompt words' or the padding's CLIP outputs set to zero (same seeds)."""
    from animegen_utils.weighting import encode_weighted, tokenize_chunks

    eos = pipe.tokenizer.eos_token_id
    negative = encode_weighted(pipe, [""]).repeat(n, 1, 1)
    out = {}
    for emotion in ("angry", "sad"):
        text = BASE.format(emotion)
        z = encode_weighted(pipe, [text])
        ids = tokenize_chunks(pipe.tokenizer, text).token_ids[0]
        end = ids.index(eos)  # the first EOS: words are 1..end-1, padding after it
        variants = {"full": z, "words_zeroed": z.clone(), "padding_zeroed": z.clone()}
        variants["words_zeroed"][:, 1:end] = 0
        variants["padding_zeroed"][:, end + 1:] = 0
        for name, embeds in variants.items():
            gens = [torch.Generator().manual_seed(SEED + i) for i in range(n)]
            images = pipe(prompt_embeds=embeds.repeat(n, 1, 1), negative_prompt_embeds=negative,
                          num_inference_steps=steps, generator=gens).images
            read = probe.predict(images)["emotion"]
            out[f"{emotion}/{name}"] = {e: read.count(e) for e in sorted(set(read))}
    return out


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
    parser.add_argument("--n", type=int, default=200, help="seeds per prompt")
    parser.add_argument("--n-hires", type=int, default=200, help="requests per hires setting")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--hires-steps", type=int, default=20, help="first-pass steps in the hires section")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.5])
    parser.add_argument("--parts", nargs="+", default=["weights", "positions", "hires"],
                        choices=["weights", "positions", "hires"])
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    pipe, probe = load_pipeline(), load_probe()
    pipe.set_progress_bar_config(disable=True)
    native = pipe.unet.config.sample_size * pipe.vae_scale_factor
    report = json.loads(args.output.read_text()) if args.output and args.output.exists() else {}
    report.update(model="tiny", native_size=native,
                  machine={"python": platform.python_version(), "torch": torch.__version__,
                           "threads": torch.get_num_threads()})

    if "weights" in args.parts:
        counts = {k: emotion_counts(pipe, probe, p, args.n, args.steps) for k, p in PROMPTS.items()}
        angry = {k: c.get("angry", 0) for k, c in counts.items()}
        report["weights"] = {
            "prompts": PROMPTS, "n": args.n, "steps": args.steps, "scheduler": "dpm++", "guidance": 7.5,
            "emotion_counts": counts, "angry_rate": {k: v / args.n for k, v in angry.items()},
            "z_angry_weighted_vs_happy_weighted": two_proportion_z(angry["angry_weighted"], angry["happy_weighted"],
                                                                   args.n),
        }
    if "positions" in args.parts:
        report["positions"] = {"n": args.n, "steps": args.steps,
                               "emotion_counts": position_ablation(pipe, probe, args.n, args.steps)}
    if "hires" in args.parts:
        hires = {"native": hires_accuracy(pipe, probe, args.n_hires, args.hires_steps)}
        for strength in args.strengths:
            for upscaler in ("latent", "lanczos"):
                hires[f"{upscaler}@{strength}"] = hires_accuracy(pipe, probe, args.n_hires, args.hires_steps,
                                                                 hires_scale=2.0, hires_strength=strength,
                                                                 hires_upscaler=upscaler)
        report["hires"] = {"n": args.n_hires, "steps": args.hires_steps, "hires_scale": 2.0, **hires}
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        write_results(args.output, report)
    return report


if __name__ == "__main__":
    main()
