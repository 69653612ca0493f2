"""A/B test: the v1.0 manual prompt (A) against an optimized prompt (B), on the same seeds.

>>> from animegen_utils import load_pipeline
>>> from animegen_utils.llm import PromptOptimizer
>>> from animegen_utils.abtest import ab_test
>>> pipe = load_pipeline("tiny")                                  # doctest: +SKIP
>>> opt = PromptOptimizer(backend="offline", tokenizer=pipe.tokenizer)  # doctest: +SKIP
>>> result = ab_test(pipe, opt, emotions=["happy", "sad"], styles=["casual"], seeds=[0, 1])  # doctest: +SKIP
>>> print(result.to_markdown())                                   # doctest: +SKIP
| arm | backend | model | n_images | distinct_tags | mean_jaccard | emotion_accuracy | ...
>>> fig = result.bar_chart(); grid = result.paired_grid("happy")  # doctest: +SKIP

Arm A draws ``build_prompt(emotion, style, character)``; arm B draws
``optimizer.optimize(emotion, style, character, variant=0)``. Every (emotion,
style) cell is drawn with every seed in both arms, so image ``i`` of A and image
``i`` of B differ only by their prompt.

Metrics, one row per arm:

* ``distinct_tags``: the number of distinct tags in the union of a cell's prompt
  variants (A has one variant: ``build_prompt`` is deterministic; B has
  ``variants``), averaged over the cells.
* ``mean_jaccard``: mean pairwise Jaccard similarity of a cell's variants' tag
  sets, averaged over the cells; 1.0 for a single variant (A). Lower = more varied.
* ``emotion_accuracy`` / ``style_accuracy``: the scorer's accuracy for the requested
  emotion and style over all images of the arm (adherence).
* ``consistency`` (only with a ``character``): the scorer's agreement with the
  character sheet's identity (hair_color, eye_color, hairstyle) over all images of
  the arm, i.e. across emotions, styles and seeds, averaged over the three
  attributes (over those the scorer returns). Sheet values outside the scorer's vocabulary (for the probe:
  ``HAIR_COLORS``, ``EYE_COLORS``, ``HAIRSTYLES``) cannot be recognised and count
  as misses. ``None`` without a character.
* ``pixel_diversity``: mean pairwise pixel distance (0-1) among the images of one
  prompt across seeds, averaged over the cells; ``None`` with a single seed.

The scorer is any object with a ``name`` and ``accuracy(images, requested) ->
{attribute: accuracy}`` (``evaluate.ProbeScorer`` by default, ``evaluate.ClipScorer``
for real models); attributes it does not return are reported as ``None``.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

from .evaluate.metrics import pairwise_pixel_distance, tag_jaccard
from .generation import Generation, generate
from .pipelines import pipeline_info
from .prompts import EMOTIONS, STYLES, CharacterSheet, Prompt, check_choice, build_prompt

ARMS = ("A", "B")
ROW_KEYS = ("arm", "backend", "model", "n_images", "distinct_tags", "mean_jaccard", "emotion_accuracy",
            "style_accuracy", "consistency", "pixel_diversity")
# Metrics that are fractions in [0, 1] (drawn on the right panel of ``bar_chart``).
FRACTION_METRICS = ("mean_jaccard", "emotion_accuracy", "style_accuracy", "consistency", "pixel_diversity")
IDENTITY_ATTRIBUTES = ("hair_color", "eye_color", "hairstyle")


def identity_request(character: CharacterSheet) -> dict[str, str]:
    """The sheet's identity in the scorer's vocabulary: ``{"hair_color": "pink", ...}``.

    >>> identity_request(CharacterSheet("pink hair", "blue", "twintails"))
    {'hair_color': 'pink', 'eye_color': 'blue', 'hairstyle': 'twintails'}
    """
    return character.identity()


def _mean(values: Sequence[float | None]) -> float | None:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _prompt_diversity(variants_per_cell: Sequence[Sequence[Prompt]]) -> tuple[float, float]:
    """(mean distinct tags over the union of each cell's variants, mean pairwise Jaccard)."""
    distinct, jaccard = [], []
    for variants in variants_per_cell:
        distinct.append(len({t for p in variants for t in p.tags}))
        pairs = [tag_jaccard(a.tags, b.tags) for a, b in itertools.combinations(variants, 2)]
        jaccard.append(sum(pairs) / len(pairs) if pairs else 1.0)
    return sum(distinct) / len(distinct), sum(jaccard) / len(jaccard)


def _label(prompts: Sequence[Prompt], attr: str) -> str | None:
    values = sorted({str(getattr(p, attr)) for p in prompts if getattr(p, attr) is not None})
    return "+".join(values) if values else None


@dataclass
class ABResult:
    """What ``ab_test`` measured and drew.

    ``images_a[i]`` and ``images_b[i]`` share emotion, style and seed; ``keys[i]``
    is that ``(emotion, style, seed)``. ``prompts_a`` / ``prompts_b`` hold the prompt
    each image was drawn with (``prompts_b[i]`` is variant 0);
    ``variants_b[(emotion, style)]`` holds all of B's variants of a cell.
    """

    rows: list[dict[str, Any]]
    images_a: list[Generation] = field(repr=False)
    images_b: list[Generation] = field(repr=False)
    prompts_a: list[Prompt] = field(repr=False)
    prompts_b: list[Prompt] = field(repr=False)
    keys: list[tuple[str, str, int]] = field(repr=False)
    variants_b: dict[tuple[str, str], list[Prompt]] = field(default_factory=dict, repr=False)
    emotions: list[str] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    character: CharacterSheet | None = None
    scorer: str | None = None
    pipeline_model: str | None = None

    # -- tables -----------------------------------------------------------------------------
    def row(self, arm: str) -> dict[str, Any]:
        check_choice("arm", arm, ARMS)
        return next(r for r in self.rows if r["arm"] == arm)

    def to_markdown(self, digits: int = 3, columns: Sequence[str] = ROW_KEYS) -> str:
        """The rows as a Markdown table, numbers rounded to ``digits``; ``n/a`` for missing."""
        from .llm.usage import to_markdown

        unknown = [c for c in columns if c not in ROW_KEYS]
        if unknown:
            raise ValueError(f"Unknown columns {unknown}. Valid columns: {', '.join(ROW_KEYS)}.")
        rounded = [{k: round(v, digits) if isinstance(v, float) else v for k, v in r.items()} for r in self.rows]
        return to_markdown(rounded, columns=columns)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def prompt_table(self) -> str:
        """One Markdown row per (emotion, style) cell: A's prompt and B's variant-0 prompt."""
        from .llm.usage import to_markdown

        seen: dict[tuple[str, str], int] = {}
        for i, (e, s, _) in enumerate(self.keys):
            seen.setdefault((e, s), i)
        rows = [{"emotion": e, "style": s, "A (manual)": self.prompts_a[i].positive,
                 f"B ({self.row('B')['backend']})": self.prompts_b[i].positive} for (e, s), i in seen.items()]
        return to_markdown(rows)

    # -- figures ----------------------------------------------------------------------------
    def bar_chart(self, title: str | None = None):
        """Two panels: distinct tags per cell (a count) and the [0, 1] metrics, A and B side by side."""
        import matplotlib.pyplot as plt
        import numpy as np

        a, b = self.row("A"), self.row("B")
        metrics = [m for m in FRACTION_METRICS if a[m] is not None or b[m] is not None]
        fig, (ax_tags, ax_frac) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [1, 4]})
        colors = {"A": "#8c8c8c", "B": "#d62790"}
        labels = {"A": "A: manual v1.0", "B": f"B: {b['backend']}"}
        for i, r in enumerate((a, b)):
            bar = ax_tags.bar(i, r["distinct_tags"], color=colors[r["arm"]], label=labels[r["arm"]])
            ax_tags.bar_label(bar, fmt="%.1f", fontsize=8)
        ax_tags.set_xticks([0, 1], ["A", "B"])
        ax_tags.set_title("distinct tags", fontsize=10)
        x = np.arange(len(metrics))
        width = 0.38
        for j, r in enumerate((a, b)):
            values = [r[m] if r[m] is not None else 0.0 for m in metrics]
            bars = ax_frac.bar(x + (j - 0.5) * width, values, width, color=colors[r["arm"]], label=labels[r["arm"]])
            ax_frac.bar_label(bars, labels=["n/a" if r[m] is None else f"{r[m]:.2f}" for m in metrics], fontsize=7)
        ax_frac.set_xticks(x, [m.replace("_", "\n") for m in metrics], fontsize=8)
        ax_frac.set_ylim(0, 1.3)
        ax_frac.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
        ax_frac.set_title(f"adherence ({self.scorer}), consistency, diversity", fontsize=10)
        ax_frac.legend(fontsize=8, loc="upper center", ncol=2, frameon=False)
        for ax in (ax_tags, ax_frac):
            ax.spines[["top", "right"]].set_visible(False)
        fig.suptitle(title or f"A/B: manual vs {b['backend']} prompts, {a['n_images']} images per arm", fontsize=11)
        fig.tight_layout()
        return fig

    def _select(self, which: Sequence[str | int], style: str | None) -> list[tuple[str, str]]:
        cells = list(dict.fromkeys((e, s) for e, s, _ in self.keys))
        if not which:
            chosen = cells
        else:
            chosen = []
            for w in which:
                if isinstance(w, int):
                    chosen.append(cells[w])  # IndexError for a bad index is clear enough
                elif w in self.emotions:
                    chosen += [c for c in cells if c[0] == w]
                else:
                    raise ValueError(f"{w!r} is neither a cell index nor one of the tested emotions "
                                     f"({', '.join(self.emotions)})")
        if style is not None:
            check_choice("style", style, self.styles)
            chosen = [c for c in chosen if c[1] == style]
        if not chosen:
            raise ValueError("paired_grid selected no cells")
        return list(dict.fromkeys(chosen))

    def paired_grid(self, *which: str | int, style: str | None = None, max_seeds: int | None = None,
                    title: str | None = None):
        """A and B images side by side: one row per (emotion, style) cell, columns ``A s``, ``B s`` per seed.

        ``which`` are emotions (all their tested styles) or cell indices (in
        ``emotions`` × ``styles`` order); none means every cell. ``style`` keeps
        only that style.
        """
        from .viz import image_grid

        cells = self._select(which, style)
        seeds = self.seeds[:max_seeds] if max_seeds else self.seeds
        index = {k: i for i, k in enumerate(self.keys)}
        images, col_labels = [], []
        for s in seeds:
            col_labels += [f"A  seed {s}", f"B  seed {s}"]
        for e, st in cells:
            for s in seeds:
                i = index[(e, st, s)]
                images += [self.images_a[i], self.images_b[i]]
        row_labels = [f"{e}\n{st}" for e, st in cells]
        return image_grid(images, rows=len(cells), cols=2 * len(seeds), row_labels=row_labels,
                          col_labels=col_labels,
                          title=title or f"A (manual) vs B ({self.row('B')['backend']}), same seeds")


def ab_test(
    pipe,
    optimizer,
    emotions: Sequence[str] = EMOTIONS,
    styles: Sequence[str] = ("casual",),
    seeds: Sequence[int] = (0, 1),
    character: CharacterSheet | None = None,
    variants: int = 3,
    scorer=None,
    steps: int = 20,
    guidance: float = 7.5,
    progress: bool = False,
    height: int | None = None,
    width: int | None = None,
) -> ABResult:
    """Draw every (emotion, style) with every seed from prompt A (manual) and B (optimized) and score both.

    ``optimizer`` is a ``llm.PromptOptimizer`` (or anything with its ``optimize``);
    B's images use variant 0, and ``variants`` variants per cell measure B's prompt
    diversity. ``scorer`` defaults to ``evaluate.ProbeScorer()`` (the built-in
    model's attribute probe). ``height``/``width`` default to the model's native size
    (512 for SD1.5, 64 for the built-in model). See the module docstring for the metrics.
    """
    emotions = [check_choice("emotion", e, EMOTIONS) for e in emotions]
    styles = [check_choice("style", s, STYLES) for s in styles]
    seeds = [int(s) for s in seeds]
    if not emotions or not styles or not seeds:
        raise ValueError("ab_test needs at least one emotion, one style and one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    if variants < 1:
        raise ValueError(f"variants must be >= 1, got {variants}")
    if scorer is None:
        from .evaluate.metrics import ProbeScorer

        scorer = ProbeScorer()

    cells = [(e, s) for e in emotions for s in styles]
    manual = {c: build_prompt(c[0], c[1], character) for c in cells}
    optimized = {c: [optimizer.optimize(c[0], c[1], character, variant=v) for v in range(variants)] for c in cells}

    keys = [(e, s, seed) for e, s in cells for seed in seeds]
    prompts_a = [manual[(e, s)] for e, s, _ in keys]
    prompts_b = [optimized[(e, s)][0] for e, s, _ in keys]
    seed_list = [seed for _, _, seed in keys]
    size = dict(height=height, width=width)
    images_a = generate(pipe, prompts_a, seed=seed_list, steps=steps, guidance=guidance, progress=progress, **size)
    images_b = generate(pipe, prompts_b, seed=seed_list, steps=steps, guidance=guidance, progress=progress, **size)

    requested = [{"emotion": e, "style": s} for e, s, _ in keys]
    if character is not None:
        requested = [{**r, **identity_request(character)} for r in requested]

    rows = []
    for arm, gens, variant_prompts in (("A", images_a, [[manual[c]] for c in cells]),
                                       ("B", images_b, [optimized[c] for c in cells])):
        images = [g.image for g in gens]
        acc = scorer.accuracy(images, requested)
        distinct, jaccard = _prompt_diversity(variant_prompts)
        consistency = None
        if character is not None:
            consistency = _mean([acc.get(k) for k in IDENTITY_ATTRIBUTES])
        pixel = None
        if len(seeds) > 1:
            n = len(seeds)
            pixel = _mean([pairwise_pixel_distance(images[i:i + n]) for i in range(0, len(images), n)])
        prompts = [p for ps in variant_prompts for p in ps]
        rows.append({
            "arm": arm, "backend": _label(prompts, "backend"), "model": _label(prompts, "model"),
            "n_images": len(images), "distinct_tags": float(distinct), "mean_jaccard": float(jaccard),
            "emotion_accuracy": _float(acc.get("emotion")), "style_accuracy": _float(acc.get("style")),
            "consistency": consistency, "pixel_diversity": pixel,
        })

    return ABResult(
        rows=rows, images_a=images_a, images_b=images_b, prompts_a=prompts_a, prompts_b=prompts_b, keys=keys,
        variants_b=optimized, emotions=emotions, styles=styles, seeds=seeds, character=character,
        scorer=getattr(scorer, "name", type(scorer).__name__), pipeline_model=pipeline_info(pipe).model,
    )


# -- descriptions: free text in, v1.0 (A) vs understood (B) -----------------------------------------
DESCRIPTION_ROW_KEYS = ("arm", "backend", "model", "n_images", "n_checks", "adherence", "emotion", "style",
                        "hair_color", "eye_color", "hairstyle", "accessory", "over_budget")
# Probe attributes in the order the table shows them.
PROBE_ATTRIBUTES = ("emotion", "style", "hair_color", "eye_color", "hairstyle", "accessory")


def scored_request(attributes: dict[str, Any]) -> dict[str, str]:
    """A description's stated attributes in the probe's terms (``accessories`` → ``accessory``).

    The toy world draws one accessory at most, so two stated accessories are not scored.

    >>> scored_request({"emotion": "angry", "accessories": ["glasses"], "hair_color": "silver"})
    {'emotion': 'angry', 'hair_color': 'silver', 'accessory': 'glasses'}
    """
    out = {k: v for k, v in attributes.items() if k in PROBE_ATTRIBUTES}
    accessories = attributes.get("accessories")
    if accessories is not None and len(accessories) <= 1:
        out["accessory"] = accessories[0] if accessories else "none"
    return out


@dataclass
class DescriptionABResult:
    """What ``description_ab_test`` measured and drew.

    ``images_a[i]`` and ``images_b[i]`` share description ``keys[i][0]`` (an index into
    ``descriptions``) and seed ``keys[i][1]``. ``hits_a[i]`` / ``hits_b[i]`` map each scored
    attribute of that image to whether the probe read it back as requested.
    """

    rows: list[dict[str, Any]]
    descriptions: list[dict[str, Any]]
    images_a: list[Generation] = field(repr=False)
    images_b: list[Generation] = field(repr=False)
    prompts_a: list[Prompt] = field(repr=False)
    prompts_b: list[Prompt] = field(repr=False)
    keys: list[tuple[int, int]] = field(repr=False)
    hits_a: list[dict[str, bool]] = field(repr=False)
    hits_b: list[dict[str, bool]] = field(repr=False)
    seeds: list[int] = field(default_factory=list)
    scorer: str | None = None
    pipeline_model: str | None = None

    def row(self, arm: str) -> dict[str, Any]:
        check_choice("arm", arm, ARMS)
        return next(r for r in self.rows if r["arm"] == arm)

    def to_markdown(self, digits: int = 2, columns: Sequence[str] = DESCRIPTION_ROW_KEYS) -> str:
        """The rows as a Markdown table, numbers rounded to ``digits``; ``n/a`` where nothing was asked."""
        from .llm.usage import to_markdown

        unknown = [c for c in columns if c not in DESCRIPTION_ROW_KEYS]
        if unknown:
            raise ValueError(f"Unknown columns {unknown}. Valid columns: {', '.join(DESCRIPTION_ROW_KEYS)}.")
        rounded = [{k: round(v, digits) if isinstance(v, float) else v for k, v in r.items()} for r in self.rows]
        return to_markdown(rounded, columns=columns)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def by_language(self) -> list[dict[str, Any]]:
        """Adherence per arm and description language (``lang`` in the data, ``"?"`` if absent)."""
        out: dict[str, dict[str, Any]] = {}
        for i, (d, _) in enumerate(self.keys):
            lang = self.descriptions[d].get("lang", "?")
            row = out.setdefault(lang, {"lang": lang, "n_images": 0, "A": [0, 0], "B": [0, 0]})
            row["n_images"] += 1
            for arm, hits in (("A", self.hits_a[i]), ("B", self.hits_b[i])):
                row[arm][0] += sum(hits.values())
                row[arm][1] += len(hits)
        return [{"lang": r["lang"], "n_images": r["n_images"],
                 "A": r["A"][0] / r["A"][1] if r["A"][1] else None,
                 "B": r["B"][0] / r["B"][1] if r["B"][1] else None} for r in out.values()]

    def paired_grid(self, which: Sequence[int] | None = None, seed: int | None = None, title: str | None = None):
        """A and B side by side for the same seed, one row per description, with the probe's verdict.

        ``which`` are indices into ``descriptions`` (default: the first 6); each cell's
        caption says how many requested attributes the probe read back (``4/5``).
        """
        from .viz import image_grid

        which = list(range(min(6, len(self.descriptions)))) if which is None else list(which)
        seed = self.seeds[0] if seed is None else seed
        if seed not in self.seeds:
            raise ValueError(f"seed {seed} was not drawn; drawn seeds: {self.seeds}")
        index = {k: i for i, k in enumerate(self.keys)}
        images, captions, row_labels = [], [], []
        for d in which:
            i = index[(d, seed)]
            images += [self.images_a[i], self.images_b[i]]
            captions += [f"{sum(h.values())}/{len(h)}" for h in (self.hits_a[i], self.hits_b[i])]
            desc = self.descriptions[d]
            text = desc["text"] if desc.get("lang", "en") == "en" else f"({desc.get('lang')}) description"
            row_labels.append(f"{desc.get('id', d)}\n{text[:22]}" + ("…" if len(text) > 22 else ""))
        return image_grid(images, rows=len(which), cols=2, row_labels=row_labels,
                          col_labels=["A: naive", f"B: {self.row('B')['backend']}"], captions=captions,
                          title=title or f"Descriptions, seed {seed}: attributes read back / requested")


def description_ab_test(
    pipe,
    optimizer,
    descriptions: Sequence[dict[str, Any]],
    seeds: Sequence[int] = (0,),
    scorer=None,
    steps: int = 20,
    guidance: float = 7.5,
    progress: bool = False,
    height: int | None = None,
    width: int | None = None,
) -> DescriptionABResult:
    """Draw every description with every seed from ``naive_prompt`` (A) and ``optimize_description`` (B).

    ``descriptions`` are rows of ``llm.describe.load_descriptions()``: ``{"text", "attributes",
    ...}``. Both arms are scored against the stated ``attributes`` (not against what B
    understood), so B's parsing mistakes count against it. Per arm: ``adherence`` is the
    fraction of (image, requested attribute) checks the scorer reads back as requested;
    one column per attribute; ``over_budget`` counts prompts longer than the text
    encoder's window (the encoder silently ignores the rest). ``height``/``width``: as in ``ab_test``.
    """
    from .prompts import check_token_budget, naive_prompt

    descriptions = list(descriptions)
    seeds = [int(s) for s in seeds]
    if not descriptions or not seeds:
        raise ValueError("description_ab_test needs at least one description and one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    missing = [i for i, d in enumerate(descriptions) if "text" not in d or "attributes" not in d]
    if missing:
        raise ValueError(f"descriptions {missing} lack 'text' or 'attributes' (what the text asks for)")
    if scorer is None:
        from .evaluate.metrics import ProbeScorer

        scorer = ProbeScorer()

    naive = [naive_prompt(d["text"]) for d in descriptions]
    understood = [optimizer.optimize_description(d["text"]) for d in descriptions]
    keys = [(i, s) for i in range(len(descriptions)) for s in seeds]
    prompts_a = [naive[i] for i, _ in keys]
    prompts_b = [understood[i] for i, _ in keys]
    seed_list = [s for _, s in keys]
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # Long naive prompts overflow the 77-token window, and generate(), the tokenizer and the
    # pipeline each say so for every image; the overflow is counted in ``over_budget`` instead.
    verbosity = transformers_logging.get_verbosity(), diffusers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    diffusers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Prompt is .* tokens")
            size = dict(height=height, width=width)
            images_a = generate(pipe, prompts_a, seed=seed_list, steps=steps, guidance=guidance, progress=progress,
                                **size)
            images_b = generate(pipe, prompts_b, seed=seed_list, steps=steps, guidance=guidance, progress=progress,
                                **size)
    finally:
        transformers_logging.set_verbosity(verbosity[0])
        diffusers_logging.set_verbosity(verbosity[1])
    requested = [scored_request(descriptions[i]["attributes"]) for i, _ in keys]

    def hits(images: list[Generation]) -> list[dict[str, bool]]:
        predict = getattr(scorer, "predict", None)
        if predict is None:  # a scorer with only accuracy(): one image at a time, the attributes it reads
            scored = [(scorer.accuracy([g.image], [r]), r) for g, r in zip(images, requested)]
            return [{k: acc[k] == 1.0 for k in r if k in acc} for acc, r in scored]
        pred = predict([g.image for g in images])
        return [{k: pred[k][n] == v for k, v in r.items() if k in pred} for n, r in enumerate(requested)]

    hits_a, hits_b = hits(images_a), hits(images_b)
    rows = []
    for arm, arm_hits, prompts, unique in (("A", hits_a, prompts_a, naive), ("B", hits_b, prompts_b, understood)):
        checks = [v for h in arm_hits for v in h.values()]
        row: dict[str, Any] = {
            "arm": arm, "backend": _label(unique, "backend"), "model": _label(unique, "model"),
            "n_images": len(prompts), "n_checks": len(checks),
            "adherence": sum(checks) / len(checks) if checks else None,
        }
        for attr in PROBE_ATTRIBUTES:
            values = [h[attr] for h in arm_hits if attr in h]
            row[attr] = sum(values) / len(values) if values else None
        row["over_budget"] = sum(not check_token_budget(p, pipe.tokenizer).fits for p in unique)
        rows.append(row)
    return DescriptionABResult(
        rows=rows, descriptions=descriptions, images_a=images_a, images_b=images_b, prompts_a=prompts_a,
        prompts_b=prompts_b, keys=keys, hits_a=hits_a, hits_b=hits_b, seeds=seeds,
        scorer=getattr(scorer, "name", type(scorer).__name__), pipeline_model=pipeline_info(pipe).model,
    )


__all__ = ["ab_test", "ABResult", "identity_request", "ROW_KEYS", "FRACTION_METRICS", "description_ab_test",
           "DescriptionABResult", "DESCRIPTION_ROW_KEYS", "scored_request"]
