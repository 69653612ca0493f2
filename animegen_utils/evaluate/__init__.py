"""Measuring a model: does it draw what the prompt asks for, and does it vary with the seed?

    python -m animegen_utils.evaluate --model tiny --n 200 --output eval.json

>>> from animegen_utils.evaluate import evaluate_model
>>> report = evaluate_model(load_pipeline(), n=50)
>>> report["emotion_accuracy"], report["diversity"]
"""

from __future__ import annotations

import random
import time
from typing import Any

from ..generation import generate
from ..pipelines import pipeline_info
from ..prompts import CharacterSheet, build_prompt
from .metrics import AdherenceScorer, ClipScorer, ProbeScorer, pairwise_pixel_distance, tag_jaccard
from .probe import ATTRIBUTES, AttributeProbe, load_probe, probe_accuracy, train_probe

# Report keys for the probe's attributes, as the issue names them.
REPORT_KEYS = {"emotion": "emotion_accuracy", "style": "style_accuracy", "hair_color": "hair_accuracy",
               "eye_color": "eye_accuracy", "hairstyle": "hairstyle_accuracy", "accessory": "accessory_accuracy"}
# Seeds from here on are never used by training (which samples noise from its own generator).
EVAL_SEED_BASE = 1_000_000


def random_requests(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` random attribute combinations (uniform per attribute)."""
    rng = random.Random(f"eval-requests:{seed}")
    return [{k: rng.choice(v) for k, v in ATTRIBUTES.items()} for _ in range(n)]


def prompt_for(request: dict[str, str]):
    """The manual prompt that asks for exactly these attributes."""
    accessory = request.get("accessory", "none")
    sheet = CharacterSheet(request["hair_color"], request["eye_color"], request["hairstyle"],
                           accessories=(accessory,) if accessory != "none" else ())
    return build_prompt(request["emotion"], request["style"], character=sheet)


def evaluate_model(pipe, n: int = 200, seed: int = 0, steps: int = 20, guidance: float = 7.5,
                   diversity_prompts: int = 5, diversity_seeds: int = 4, scorer: AdherenceScorer | None = None,
                   batch_size: int = 16, progress: bool = False, height: int | None = None,
                   width: int | None = None) -> dict[str, Any]:
    """Probe accuracy per attribute on ``n`` random requests, and same-prompt diversity.

    ``height``/``width`` default to the model's native size (512 for SD1.5). ``scorer``
    defaults to the built-in model's attribute probe (``ProbeScorer``), which reads the
    toy world's drawings only: for other models pass ``ClipScorer()``.

    Diversity uses prompts that leave identity open (emotion and style only), each
    drawn with several seeds: the mean pairwise pixel distance among them.
    """
    scorer = scorer or ProbeScorer()
    requests = random_requests(n, seed)
    started = time.perf_counter()
    gens = generate(pipe, [prompt_for(r) for r in requests], seed=EVAL_SEED_BASE + seed * n,
                    steps=steps, guidance=guidance, batch_size=batch_size, progress=progress,
                    height=height, width=width)
    seconds = time.perf_counter() - started
    acc = scorer.accuracy([g.image for g in gens], requests)

    rng = random.Random(f"eval-diversity:{seed}")
    distances = []
    for k in range(diversity_prompts):
        prompt = build_prompt(rng.choice(ATTRIBUTES["emotion"]), rng.choice(ATTRIBUTES["style"]))
        same = generate(pipe, prompt, seed=[EVAL_SEED_BASE // 2 + 100 * k + j for j in range(diversity_seeds)],
                        steps=steps, guidance=guidance, batch_size=batch_size, progress=progress,
                        height=height, width=width)
        distances.append(pairwise_pixel_distance([g.image for g in same]))

    info = pipeline_info(pipe)
    report: dict[str, Any] = {REPORT_KEYS.get(k, f"{k}_accuracy"): v for k, v in acc.items()}
    report.update(diversity=sum(distances) / len(distances), n=n, seed=seed, steps=steps, guidance=guidance,
                  scheduler=info.scheduler, model=info.model, scorer=scorer.name,
                  width=gens[0].params["width"], height=gens[0].params["height"],
                  seconds_per_image=seconds / n)
    return report


__all__ = ["evaluate_model", "random_requests", "prompt_for", "ProbeScorer", "ClipScorer", "AdherenceScorer",
           "AttributeProbe", "load_probe", "train_probe", "probe_accuracy", "pairwise_pixel_distance",
           "tag_jaccard", "ATTRIBUTES", "REPORT_KEYS"]
