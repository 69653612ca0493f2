"""The steps-vs-adherence map: seconds per image against probe adherence, per sampler setting.

>>> from animegen_utils.fast.frontier import SamplerPoint, measure_adherence, measure_speed, pareto_front
>>> points = [SamplerPoint("pndm", 50, 7.5), SamplerPoint("dpm++", 20, 7.5), SamplerPoint("lcm", 4, 1.0)]
>>> acc = {p: measure_adherence(p, n=200) for p in points}         # batched; images depend only on seeds
>>> speed = measure_speed(points, repeats=10)                       # batch 1, interleaved, one run
>>> front = pareto_front(points, speed, acc)
>>> run(map_spec(points, n=200), "outputs/map")                    # or every point as one sweep
>>> acc = adherence_from_table(load_results("outputs/map"))        # the same numbers, from its table

Adherence uses the evaluation's random requests and its seeds (``EVAL_SEED_BASE`` on: never used
by the base model's or the LCM-LoRA's training), through the evaluation's own code path
(``evaluate.score_requests``: a sweep of the requests, kept in ``out_dir`` when given). Timing draws the points round-robin, so every
point sees the same machine load, and reports the median.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..evaluate import EVAL_SEED_BASE, ProbeScorer, prompt_for, random_requests, request_rows, score_requests
from ..generation import generate
from ..pipelines import load_pipeline

#: The attributes the issue's bars are about.
BAR_ATTRIBUTES: tuple[str, ...] = ("emotion", "style", "hair_color", "eye_color")
#: The built-in model's own bars (its model card).
BARS: dict[str, float] = {"emotion": 0.95, "style": 0.95, "hair_color": 0.85, "eye_color": 0.75}


@dataclass(frozen=True, order=True)
class SamplerPoint:
    """One sampler setting: a kit scheduler name, a step count and a guidance scale."""

    scheduler: str
    steps: int
    guidance: float

    @property
    def label(self) -> str:
        return f"{self.scheduler}-{self.steps} (CFG {self.guidance:g})"

    @property
    def unet_evals(self) -> int:
        """UNet evaluations per image: steps x 2 with classifier-free guidance (guidance > 1)."""
        return self.steps * (2 if self.guidance > 1.0 else 1)


def pipeline_for(point: SamplerPoint, model: str = "tiny", **kwargs):
    """The kit pipeline for a point (components shared between all points of one model)."""
    return load_pipeline(model, scheduler=point.scheduler, **kwargs)


def measure_adherence(point: SamplerPoint, n: int = 200, seed: int = 0, model: str = "tiny",
                      scorer: ProbeScorer | None = None, batch_size: int = 16, pipe=None,
                      progress: bool = False, out_dir: str | Path | None = None) -> dict[str, float]:
    """Probe accuracy per attribute on ``n`` random requests: ``evaluate_model``'s requests, seeds and
    code path (``score_requests``), so a point's numbers are the evaluation's at its steps and guidance.

    ``out_dir``: keep the point's images there (a sweep folder; a rerun draws nothing it holds).

    >>> measure_adherence(SamplerPoint("dpm++", 8, 7.5), n=16)["emotion"]
    """
    pipe = pipe or pipeline_for(point, model)
    return score_requests(pipe, n, seed, steps=point.steps, guidance=point.guidance, scorer=scorer,
                          batch_size=batch_size, out_dir=out_dir, progress=progress).accuracy


def map_spec(points: Sequence[SamplerPoint], n: int = 200, seed: int = 0, model: str = "tiny",
             lcm_lora: str | None = None, batch_size: int = 16) -> dict[str, Any]:
    """The sweep spec of the map's adherence: the evaluation's ``n`` requests and seeds
    (``request_rows``) at every point, read by the probe. Each point's requests form the batches
    ``measure_adherence`` draws, so a point's numbers are the same either way.

    >>> run(map_spec(points, n=12), "outputs/06/map")
    >>> adherence_from_table(load_results("outputs/06/map"))[SamplerPoint("lcm", 4, 1.0)]["emotion"]
    """
    import torch

    def setting(p: SamplerPoint) -> dict[str, Any]:
        extra = {"lcm_lora": lcm_lora} if lcm_lora is not None and p.scheduler == "lcm" else {}
        return {"scheduler": p.scheduler, "steps": p.steps, "guidance": p.guidance, **extra}

    rows = [{**r, **setting(p)} for p in points for r in request_rows(n, seed)]
    return {"name": f"map-n{n}-seed{seed}", "rows": rows, "fixed": {"model": model}, "scorers": ["probe"],
            "batch_size": batch_size, "threads": torch.get_num_threads()}


def adherence_from_table(table) -> dict[SamplerPoint, dict[str, float]]:
    """Probe accuracy per point from a sweep's results table (``load_results``): its rows grouped
    by scheduler, steps and guidance."""
    from ..sweep import accuracy_by

    return {SamplerPoint(g.pop("scheduler"), g.pop("steps"), g.pop("guidance")):
            {k: v for k, v in g.items() if k != "n"} for g in accuracy_by(table, ["scheduler", "steps", "guidance"])}


def measure_speed(points: Sequence[SamplerPoint], repeats: int = 10, model: str = "tiny", seed: int = 7,
                  warmup: int = 1, pipes: dict | None = None) -> dict[SamplerPoint, float]:
    """Median seconds per image at batch 1, the points drawn round-robin in one run."""
    pipes = pipes or {p: pipeline_for(p, model) for p in points}
    request = random_requests(1, seed=seed)[0]
    prompt = prompt_for(request)
    times: dict[SamplerPoint, list[float]] = {p: [] for p in points}
    for r in range(warmup + repeats):
        for p in points:
            started = time.perf_counter()
            generate(pipes[p], prompt, seed=EVAL_SEED_BASE + r, steps=p.steps, guidance=p.guidance,
                     batch_size=1, progress=False)
            if r >= warmup:
                times[p].append(time.perf_counter() - started)
    return {p: statistics.median(t) for p, t in times.items()}


def meets_bars(acc: dict[str, float], reference: dict[str, float] | None = None, within: float = 0.03) -> bool:
    """The issue's adherence bars; with ``reference`` also 'each within ``within`` of it'."""
    for k, bar in BARS.items():
        if acc[k] < bar:
            return False
        if reference is not None and acc[k] < reference[k] - within:
            return False
    return True


def pareto_front(points: Sequence[SamplerPoint], speed: dict[SamplerPoint, float],
                 acc: dict[SamplerPoint, dict[str, float]], key: str = "mean") -> list[SamplerPoint]:
    """Points that no other point beats on both speed and adherence (``key``: an attribute or "mean")."""
    def score(p):
        return mean_adherence(acc[p]) if key == "mean" else acc[p][key]

    front = []
    for p in sorted(points, key=lambda q: (speed[q], -score(q))):
        if not front or score(p) > score(front[-1]):
            front.append(p)
    return front


def mean_adherence(acc: dict[str, float]) -> float:
    """The mean of the four barred attributes (emotion, style, hair, eyes)."""
    return sum(acc[k] for k in BAR_ATTRIBUTES) / len(BAR_ATTRIBUTES)


def plot_map(points: Sequence[SamplerPoint], speed: dict[SamplerPoint, float],
             acc: dict[SamplerPoint, dict[str, float]], title: str = ""):
    """The Pareto plot: s/image (log) against mean adherence, one colour per scheduler."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    names = sorted({p.scheduler for p in points})
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        mine = [p for p in points if p.scheduler == name]
        for j, g in enumerate(sorted({p.guidance for p in mine})):  # one line per guidance scale
            ps = sorted((p for p in mine if p.guidance == g), key=lambda p: p.steps)
            ax.plot([speed[p] for p in ps], [mean_adherence(acc[p]) for p in ps], "o-" if j == 0 else "s:",
                    color=cmap(i % 10), label=name if j == 0 else f"{name} (CFG {g:g})", lw=1, ms=5, alpha=0.85)
        for p in mine:
            ax.annotate(str(p.steps), (speed[p], mean_adherence(acc[p])), textcoords="offset points",
                        xytext=(3, 3), fontsize=7, color=cmap(i % 10))
    front = pareto_front(points, speed, acc)
    ax.plot([speed[p] for p in front], [mean_adherence(acc[p]) for p in front], "k--", lw=1, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image (batch 1, CPU, log scale)")
    ax.set_ylabel("mean probe adherence (emotion, style, hair, eyes)")
    ax.set_title(title or "How few steps? Speed against adherence on the built-in model")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


__all__ = ["SamplerPoint", "measure_adherence", "measure_speed", "pareto_front", "plot_map", "meets_bars",
           "mean_adherence", "pipeline_for", "BARS", "BAR_ATTRIBUTES"]
