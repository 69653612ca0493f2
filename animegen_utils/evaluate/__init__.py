"""Measuring a model: does it draw what the prompt asks for, and does it vary with the seed?

    python -m animegen_utils.evaluate --model tiny --n 200 --output eval.json
    python -m animegen_utils.evaluate --model tiny --n 200 --out-dir outputs/eval   # keep the images, resumable

>>> from animegen_utils.evaluate import evaluate_model
>>> report = evaluate_model(load_pipeline(), n=50)
>>> report["emotion_accuracy"], report["diversity"]

The ``n`` random requests are drawn as a sweep (``animegen_utils.sweep``, one process, the
spec's explicit ``rows``: one per request with its own seed) into ``out_dir`` or a temporary
folder, then scored from its results table and PNGs (``score_requests``; the steps-vs-adherence
map, ``fast.frontier.measure_adherence``, measures through the same function). The sweep's
batches are ``generate``'s own (``batch_size`` rows in request order), so the images, and the
numbers, are those of one ``generate`` call over the requests.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
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


def request_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``random_requests(n, seed)`` with their seeds, as sweep rows: request ``i`` draws with seed
    ``EVAL_SEED_BASE + seed * n + i``."""
    base = EVAL_SEED_BASE + seed * n
    return [{**r, "seed": base + i} for i, r in enumerate(random_requests(n, seed))]


def prompt_for(request: dict[str, str]):
    """The manual prompt that asks for exactly these attributes."""
    accessory = request.get("accessory", "none")
    sheet = CharacterSheet(request["hair_color"], request["eye_color"], request["hairstyle"],
                           accessories=(accessory,) if accessory != "none" else ())
    return build_prompt(request["emotion"], request["style"], character=sheet)


@dataclass
class RequestScores:
    """What ``score_requests`` measured: accuracy per attribute, the picture size, the drawing time."""

    accuracy: dict[str, float]
    width: int
    height: int
    seconds_per_image: float  # when the images were drawn (a resumed folder keeps its first timing)
    drawn: int  # images this call drew (0: out_dir held them all)
    total: int


def request_spec(pipe, n: int = 200, seed: int = 0, steps: int = 20, guidance: float = 7.5,
                 batch_size: int = 16, height: int | None = None, width: int | None = None) -> dict[str, Any]:
    """The sweep spec of the evaluation's grid: ``random_requests(n, seed)`` as explicit rows, request
    ``i`` with seed ``EVAL_SEED_BASE + seed * n + i``, at the process's thread count.

    >>> spec = request_spec(load_pipeline(), n=2, steps=2)
    >>> [r["seed"] for r in spec["rows"]], spec["fixed"]["steps"]
    ([1000000, 1000001], 2)
    """
    import torch

    from ..pipelines import SCHEDULERS

    info = pipeline_info(pipe)
    fixed: dict[str, Any] = {"model": info.model, "steps": steps, "guidance": guidance}
    if info.scheduler in SCHEDULERS:  # pipelines built elsewhere name a class: the manifest's default then
        fixed["scheduler"] = info.scheduler
    fixed.update({k: v for k, v in (("height", height), ("width", width)) if v is not None})
    return {"name": f"evaluate-n{n}-seed{seed}", "rows": request_rows(n, seed), "fixed": fixed, "batch_size": batch_size, "threads": torch.get_num_threads()}


def score_requests(pipe, n: int = 200, seed: int = 0, steps: int = 20, guidance: float = 7.5,
                   scorer: AdherenceScorer | None = None, batch_size: int = 16, height: int | None = None,
                   width: int | None = None, out_dir: str | Path | None = None,
                   progress: bool = False) -> RequestScores:
    """Draw the ``n`` random requests through the sweep and score them: accuracy per attribute.

    The images go to ``out_dir`` (PNGs with their parameters and ``results.parquet``; a rerun on it
    draws only what is missing) or a temporary folder. The table's requests and PNGs are scored
    together by ``scorer`` (default ``ProbeScorer()``), as one ``generate`` call's images would be.
    A folder whose rows were drawn in other batches (another ``n``) is refused: their bytes
    could differ from a fresh run's.

    >>> scores = score_requests(load_pipeline(), n=16, steps=8, out_dir="outputs/eval-dpm8")
    >>> scores.accuracy["emotion"], scores.drawn
    """
    from PIL import Image

    from ..sweep import SweepFolderError, expand, load_results, run
    from ..sweep.store import drawn_batches

    scorer = scorer or ProbeScorer()
    spec = request_spec(pipe, n, seed, steps, guidance, batch_size, height, width)
    with tempfile.TemporaryDirectory(prefix="animegen-eval-") as tmp:
        folder = Path(out_dir) if out_dir is not None else Path(tmp)
        rows = expand(spec)
        drawn_in = drawn_batches(folder)
        moved = [r for r in rows if r.id in drawn_in and drawn_in[r.id] != r.batch]
        if moved:
            raise SweepFolderError(f"{folder} holds {len(moved)} of these requests drawn in other batches (a run "
                                   f"with another n?); their images could differ from this run's. Use another "
                                   "out_dir for each n.")
        summary = run(spec, folder, engine="local", progress=progress, pipe=pipe)
        by_id = {rec["id"]: rec for rec in load_results(folder).to_pylist()}
        records = [by_id[r.id] for r in rows]
        images = []
        for rec in records:
            with Image.open(folder / rec["file"]) as im:
                images.append(im.convert("RGB"))
    requests = [{k: rec[k] for k in ATTRIBUTES} for rec in records]
    return RequestScores(accuracy=scorer.accuracy(images, requests), width=images[0].width,
                         height=images[0].height, seconds_per_image=sum(rec["seconds"] for rec in records) / n,
                         drawn=summary.drawn, total=summary.total)


def evaluate_model(pipe, n: int = 200, seed: int = 0, steps: int = 20, guidance: float = 7.5,
                   diversity_prompts: int = 5, diversity_seeds: int = 4, scorer: AdherenceScorer | None = None,
                   batch_size: int = 16, progress: bool = False, height: int | None = None,
                   width: int | None = None, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Probe accuracy per attribute on ``n`` random requests, and same-prompt diversity.

    ``height``/``width`` default to the model's native size (512 for SD1.5). ``scorer``
    defaults to the built-in model's attribute probe (``ProbeScorer``), which reads the
    toy world's drawings only: for other models pass ``ClipScorer()``.

    The requests are drawn as a sweep (``score_requests``) into ``out_dir`` (kept and resumable:
    a rerun draws nothing it holds) or a temporary folder.

    Diversity uses prompts that leave identity open (emotion and style only), each
    drawn with several seeds: the mean pairwise pixel distance among them.
    """
    scorer = scorer or ProbeScorer()
    scored = score_requests(pipe, n, seed, steps, guidance, scorer, batch_size, height, width, out_dir, progress)
    acc = scored.accuracy

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
                  width=scored.width, height=scored.height, seconds_per_image=scored.seconds_per_image)
    return report


__all__ = ["evaluate_model", "score_requests", "request_spec", "request_rows", "RequestScores", "random_requests", "prompt_for", "ProbeScorer", "ClipScorer", "AdherenceScorer",
           "AttributeProbe", "load_probe", "train_probe", "probe_accuracy", "pairwise_pixel_distance",
           "tag_jaccard", "ATTRIBUTES", "REPORT_KEYS"]
