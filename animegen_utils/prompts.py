"""Prompts: the emotion × style vocabulary, character sheets and the CLIP token budget.

The v1.0 prompt of the original project was ``f"{base}, {emotion_desc}"``. This
module keeps that idea but makes every part explicit Danbooru-style tags, so the
same words drive the built-in toy model (whose captions use this vocabulary), real
anime checkpoints, and the LLM optimizer.

>>> from animegen_utils import build_prompt, CharacterSheet
>>> sheet = CharacterSheet(hair_color="pink", eye_color="blue", hairstyle="twintails")
>>> p = build_prompt("happy", "school_uniform", character=sheet)
>>> p.positive.split(", ")[:4]
['1girl', 'solo', 'happy', 'smile']
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterable, Sequence

EMOTIONS: tuple[str, ...] = ("happy", "angry", "sad", "surprised", "neutral")
STYLES: tuple[str, ...] = ("casual", "formal", "school_uniform")

# Tags per emotion / style. The first tags are what the toy world draws and
# captions; real checkpoints know all of them from Danbooru.
EMOTION_TAGS: dict[str, tuple[str, ...]] = {
    "happy": ("happy", "smile", "blush"),
    "angry": ("angry", "frown", "v-shaped eyebrows"),
    "sad": ("sad", "tears", "frown"),
    "surprised": ("surprised", "open mouth", "wide-eyed"),
    "neutral": ("expressionless", "closed mouth"),
}
STYLE_TAGS: dict[str, tuple[str, ...]] = {
    "casual": ("casual", "hoodie"),
    "formal": ("formal", "black dress", "necklace"),
    "school_uniform": ("school uniform", "serafuku", "sailor collar"),
}

# Identity values the toy world can draw. Real models accept any colour word, so
# CharacterSheet does not restrict itself to these.
HAIR_COLORS: tuple[str, ...] = ("black", "blonde", "pink", "blue", "red", "silver", "green")
EYE_COLORS: tuple[str, ...] = ("blue", "red", "green", "purple", "yellow")
HAIRSTYLES: tuple[str, ...] = ("short hair", "long hair", "twintails")
ACCESSORIES: tuple[str, ...] = ("none", "hair ribbon", "glasses")

# Every attribute the toy world draws and the attribute probe reads, with its values.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "emotion": EMOTIONS,
    "style": STYLES,
    "hair_color": HAIR_COLORS,
    "eye_color": EYE_COLORS,
    "hairstyle": HAIRSTYLES,
    "accessory": ACCESSORIES,
}

SUBJECT_TAGS: tuple[str, ...] = ("1girl", "solo")
QUALITY_TAGS: tuple[str, ...] = ("masterpiece", "best quality", "detailed eyes", "anime style")
DEFAULT_NEGATIVE_TAGS: tuple[str, ...] = (
    "lowres", "bad anatomy", "bad hands", "text", "error", "extra digits",
    "cropped", "worst quality", "low quality", "jpeg artifacts", "signature",
    "watermark", "blurry",
)

# Roles rank tags for trimming to the token budget: the first roles survive.
ROLE_PRIORITY: tuple[str, ...] = ("subject", "emotion", "identity", "style", "extra", "quality")

CLIP_MAX_TOKENS = 77


def check_choice(kind: str, value: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError naming them all."""
    if value not in choices:
        raise ValueError(f"Unknown {kind} {value!r}. Valid choices: {', '.join(choices)}.")
    return value


@dataclass(frozen=True)
class CharacterSheet:
    """Identity tags that stay fixed while the emotion changes.

    >>> CharacterSheet("silver", "red", "long hair", accessories=("glasses",)).tags()
    ('silver hair', 'long hair', 'red eyes', 'glasses')
    """

    hair_color: str
    eye_color: str
    hairstyle: str = "long hair"
    outfit_details: tuple[str, ...] = ()
    accessories: tuple[str, ...] = ()
    name: str | None = None

    def __post_init__(self) -> None:
        for attr in ("hair_color", "eye_color", "hairstyle"):
            value = getattr(self, attr)
            if not isinstance(value, str) or not value.strip() or "," in value:
                raise ValueError(f"CharacterSheet.{attr} must be one non-empty tag, got {value!r}")
        # Tuples keep the sheet hashable (it is part of cache keys).
        object.__setattr__(self, "outfit_details", tuple(self.outfit_details))
        object.__setattr__(self, "accessories", tuple(a for a in self.accessories if a != "none"))

    def identity(self) -> dict[str, str]:
        """Hair colour, eye colour and hairstyle as bare values (``"pink"``, not ``"pink hair"``).

        >>> CharacterSheet("pink hair", "blue", "twintails").identity()
        {'hair_color': 'pink', 'eye_color': 'blue', 'hairstyle': 'twintails'}
        """
        def bare(value: str, suffix: str) -> str:
            value = " ".join(value.split())
            return value[: -len(suffix)] if value.endswith(suffix) else value

        return {"hair_color": bare(self.hair_color, " hair"), "eye_color": bare(self.eye_color, " eyes"),
                "hairstyle": " ".join(self.hairstyle.split())}

    def tags(self) -> tuple[str, ...]:
        """The identity tags, in a stable order."""
        ident = self.identity()
        return _dedupe((f"{ident['hair_color']} hair", ident["hairstyle"], f"{ident['eye_color']} eyes",
                        *self.accessories, *self.outfit_details))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CharacterSheet":
        return cls(**data)


@dataclass(frozen=True)
class Prompt:
    """A positive/negative prompt pair built from tags.

    ``roles`` runs parallel to ``tags`` and says what each tag is for
    (see ``ROLE_PRIORITY``); the token-budget trimming uses it. ``backend``,
    ``model`` and ``rationale`` say who wrote the prompt (``"manual"`` for
    ``build_prompt``, an LLM backend for ``animegen_utils.llm``).
    """

    tags: tuple[str, ...]
    negative_tags: tuple[str, ...] = DEFAULT_NEGATIVE_TAGS
    roles: tuple[str, ...] = ()
    backend: str = "manual"
    model: str | None = None
    rationale: str | None = None
    emotion: str | None = None
    style: str | None = None
    dropped_tags: tuple[str, ...] = field(default=())
    # From a free-text description (``PromptOptimizer.optimize_description``): what was
    # understood (``llm.describe.REQUEST_FIELDS``), what was not, and where a character
    # sheet overrode the text.
    request: dict | None = field(default=None, hash=False)
    unresolved: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(self.tags))
        object.__setattr__(self, "negative_tags", tuple(self.negative_tags))
        roles = tuple(self.roles) or ("extra",) * len(self.tags)
        if len(roles) != len(self.tags):
            raise ValueError(f"Prompt has {len(self.tags)} tags but {len(roles)} roles")
        object.__setattr__(self, "roles", roles)

    @property
    def positive(self) -> str:
        return ", ".join(self.tags)

    @property
    def negative(self) -> str:
        return ", ".join(self.negative_tags)

    def __str__(self) -> str:
        return self.positive

    def tags_with_role(self, role: str) -> tuple[str, ...]:
        return tuple(t for t, r in zip(self.tags, self.roles) if r == role)

    def without(self, drop: Iterable[str]) -> "Prompt":
        """A copy without the given tags (recorded in ``dropped_tags``)."""
        drop = set(drop)
        kept = [(t, r) for t, r in zip(self.tags, self.roles) if t not in drop]
        return dataclasses.replace(
            self,
            tags=tuple(t for t, _ in kept),
            roles=tuple(r for _, r in kept),
            dropped_tags=self.dropped_tags + tuple(t for t in self.tags if t in drop),
        )


def _dedupe(tags: Iterable[str]) -> tuple[str, ...]:
    kept: list[str] = []
    seen: set[str] = set()
    for tag in tags:
        tag = " ".join(tag.strip().split())
        if tag and tag.lower() not in seen:
            seen.add(tag.lower())
            kept.append(tag)
    return tuple(kept)


def build_prompt(
    emotion: str,
    style: str,
    character: CharacterSheet | None = None,
    extra_tags: Sequence[str] = (),
    quality: bool = True,
    negative_tags: Sequence[str] = DEFAULT_NEGATIVE_TAGS,
) -> Prompt:
    """The v1.0 manual prompt: subject, emotion, identity, style, extras, quality.

    ``emotion`` and ``style`` must be one of ``EMOTIONS`` / ``STYLES``; a free-form
    emotion goes in ``extra_tags`` (``build_prompt("neutral", "casual",
    extra_tags=["smug"])``).
    """
    check_choice("emotion", emotion, EMOTIONS)
    check_choice("style", style, STYLES)
    if isinstance(extra_tags, str):
        raise TypeError("extra_tags must be a sequence of tags, e.g. ['smug', 'outdoors'], not one string")
    parts: list[tuple[str, str]] = [(t, "subject") for t in SUBJECT_TAGS]
    parts += [(t, "emotion") for t in EMOTION_TAGS[emotion]]
    if character is not None:
        parts += [(t, "identity") for t in character.tags()]
    parts += [(t, "style") for t in STYLE_TAGS[style]]
    parts += [(t, "extra") for t in extra_tags]
    if quality:
        parts += [(t, "quality") for t in QUALITY_TAGS]
    kept = _dedupe(t for t, _ in parts)
    role_of: dict[str, str] = {}
    for tag, role in parts:
        role_of.setdefault(" ".join(tag.strip().split()), role)
    return Prompt(
        tags=kept,
        roles=tuple(role_of[t] for t in kept),
        negative_tags=_dedupe(negative_tags),
        emotion=emotion,
        style=style,
    )


#: The v1.0 base of ``naive_prompt``: subject and quality tags.
NAIVE_BASE: str = ", ".join(SUBJECT_TAGS + QUALITY_TAGS)


def naive_prompt(description: str, base: str = NAIVE_BASE) -> Prompt:
    """The v1.0 way with free text: the plan's ``f"{base}, {description}"``, words passed through as written.

    It is the baseline of notebook 02's description A/B test (arm A).

    >>> naive_prompt("silver pigtails, ruby eyes, furious").positive
    '1girl, solo, masterpiece, best quality, detailed eyes, anime style, silver pigtails, ruby eyes, furious'
    """
    if not isinstance(description, str) or not description.strip():
        raise ValueError(f"description must be a non-empty string, got {description!r}")
    text = " ".join(description.split())  # newlines would end the prompt for some UIs
    base_tags = tuple(t.strip() for t in base.split(",") if t.strip())
    return Prompt(tags=(*base_tags, text), roles=("subject",) * len(base_tags) + ("extra",), backend="naive")


class TokenBudgetError(ValueError):
    """A prompt does not fit the text encoder's token window."""


@dataclass(frozen=True)
class TokenBudget:
    """How a prompt fits a tokenizer's window (``max_tokens`` includes BOS/EOS)."""

    n_tokens: int
    max_tokens: int
    cut_tags: tuple[str, ...]
    # How ``generate`` encodes it (A1111's 75-token chunks, weights and BREAK read): nothing is cut.
    n_chunks: int = 1

    @property
    def fits(self) -> bool:
        """Whether it fits one 77-token window (what the LLM optimizer keeps to)."""
        return not self.cut_tags


def check_token_budget(prompt: Prompt | str, tokenizer, raise_on_cut: bool = False) -> TokenBudget:
    """Report which tags one 77-token window would cut off, and how many chunks ``generate`` uses; never truncates.

    ``generate`` encodes a longer prompt in A1111's 75-token chunks (``n_chunks``), so
    nothing is lost; ``cut_tags`` is what a single CLIP window (and
    ``generate(..., weighting=False)``) would drop, the budget the LLM optimizer keeps to.

    >>> from animegen_utils import load_pipeline
    >>> pipe = load_pipeline()          # counted with the pipeline's own tokenizer
    >>> budget = check_token_budget(build_prompt("happy", "casual"), pipe.tokenizer)
    >>> budget.fits, budget.n_tokens, budget.cut_tags, budget.n_chunks
    (True, 27, (), 1)
    """
    tags = prompt.tags if isinstance(prompt, Prompt) else tuple(t.strip() for t in prompt.split(","))
    max_tokens = int(getattr(tokenizer, "model_max_length", CLIP_MAX_TOKENS))
    if max_tokens > 100_000:  # tokenizers without a limit report a huge sentinel
        max_tokens = CLIP_MAX_TOKENS
    n_tokens = len(tokenizer(", ".join(tags), truncation=False)["input_ids"])
    cut: list[str] = []
    if n_tokens > max_tokens:
        # Count tokens tag by tag; a tag is cut if any of its tokens falls outside.
        for i, tag in enumerate(tags):
            used = len(tokenizer(", ".join(tags[: i + 1]), truncation=False)["input_ids"])
            if used > max_tokens:
                cut = list(tags[i:])
                break
    if hasattr(tokenizer, "get_vocab"):  # a real CLIP tokenizer: A1111's chunking, exactly
        from .weighting import tokenize_chunks

        n_chunks = tokenize_chunks(tokenizer, ", ".join(tags)).n_chunks
    else:  # an estimate (the LLM's EstimateTokenizer): 75 prompt tokens per chunk
        n_chunks = max(1, -(-(n_tokens - 2) // 75))
    budget = TokenBudget(n_tokens=n_tokens, max_tokens=max_tokens, cut_tags=tuple(cut), n_chunks=n_chunks)
    if cut and raise_on_cut:
        raise TokenBudgetError(
            f"Prompt is {n_tokens} tokens, over the {max_tokens}-token window; "
            f"these tags would be cut: {', '.join(cut)}"
        )
    return budget


def fit_token_budget(prompt: Prompt, tokenizer) -> Prompt:
    """Drop the lowest-priority tags (quality first, emotion and identity last) until it fits.

    The dropped tags are listed in ``result.dropped_tags``.
    """
    current = prompt
    order = {role: i for i, role in enumerate(ROLE_PRIORITY)}
    while True:
        budget = check_token_budget(current, tokenizer)
        if budget.fits:
            return current
        # Never trim down to an empty prompt: that would silently generate "anything".
        if len(current.tags) <= 1:
            raise TokenBudgetError(
                f"Cannot fit prompt into {budget.max_tokens} tokens: {current.positive}"
            )
        # Lowest priority role, and within it the last tag.
        candidates = sorted(
            range(len(current.tags)), key=lambda i: (order.get(current.roles[i], len(order)), i)
        )
        current = current.without([current.tags[candidates[-1]]])
