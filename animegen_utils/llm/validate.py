"""Checking LLM output, assigning roles and assembling the final ``Prompt``.

Nothing an LLM writes reaches the pipeline without passing ``validate_output``:

>>> tags, neg, why, errors = validate_output(
...     {"positive_tags": ["1girl", "Smile", "**great** prompt!"], "negative_tags": []},
...     emotion="happy", character=None)
>>> errors
["tag '**great** prompt!' looks like prose or markdown", "emotion tag 'happy' is missing"]
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

from animegen_utils.prompts import (
    CLIP_MAX_TOKENS,
    DEFAULT_NEGATIVE_TAGS,
    EMOTION_TAGS,
    HAIR_COLORS,
    EYE_COLORS,
    HAIRSTYLES,
    STYLE_TAGS,
    SUBJECT_TAGS,
    CharacterSheet,
    Prompt,
    fit_token_budget,
)

from .offline import EMOTION_VOCAB, QUALITY_VOCAB, STYLE_VOCAB

MAX_TAG_WORDS = 6
MAX_TAG_CHARS = 48
# Markdown, code and line structure never occur in a Danbooru tag.
_FORBIDDEN = re.compile(r"[*#`\n\r\t{}<>|\[\]]")
# A sentence: "...word. Next" or a tag ending in "." / "!" / "?" / ":".
_SENTENCE = re.compile(r"[.!?:]\s|[.!?:]$")

EMOTION_ROLE_TAGS = frozenset(t for tags in EMOTION_VOCAB.values() for t in tags)
STYLE_ROLE_TAGS = frozenset(t for tags in (*STYLE_TAGS.values(), *STYLE_VOCAB.values()) for t in tags)
QUALITY_ROLE_TAGS = frozenset(QUALITY_VOCAB)
_COLOR_WORDS = frozenset(HAIR_COLORS + EYE_COLORS + ("brown", "white", "grey", "gray", "orange", "aqua", "purple"))


def normalize_tag(tag: str) -> str:
    """Lowercase, strip, ``_`` → space, collapse whitespace.

    >>> normalize_tag("  Long_Hair ")
    'long hair'
    """
    return " ".join(str(tag).replace("_", " ").strip().lower().split())


def tag_problem(tag: str) -> str | None:
    """Why a (raw) tag is not a tag, or None if it is fine."""
    if _FORBIDDEN.search(tag) or _SENTENCE.search(tag.strip()):
        return f"tag {tag!r} looks like prose or markdown"
    if len(tag.split()) > MAX_TAG_WORDS or len(tag) > MAX_TAG_CHARS:
        return f"tag {tag!r} is too long (at most {MAX_TAG_WORDS} words)"
    return None


def _as_tag_list(value: object, field: str, errors: list[str]) -> list[str]:
    # Small local models sometimes answer "a, b, c" instead of a list: accept it.
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
        errors.append(f"{field} must be a list of strings")
        return []
    out: list[str] = []
    for raw in value:
        problem = tag_problem(raw)
        if problem:
            errors.append(problem)
        elif normalize_tag(raw) and normalize_tag(raw) not in out:
            out.append(normalize_tag(raw))
    return out


def validate_output(
    data: object, emotion: str, character: CharacterSheet | None
) -> tuple[list[str], list[str], str, list[str]]:
    """Parse and check one answer: ``(positive, negative, rationale, errors)``.

    ``errors`` empty means the tags are safe to use. Required: a non-empty list
    of short tags, the emotion (its first ``EMOTION_TAGS`` tag or the emotion
    word) and every identity tag of ``character``.
    """
    errors: list[str] = []
    if not isinstance(data, Mapping):
        return [], [], "", ["the answer is not a JSON object with positive_tags, negative_tags, rationale"]
    positive = _as_tag_list(data.get("positive_tags"), "positive_tags", errors)
    negative = _as_tag_list(data.get("negative_tags") or list(DEFAULT_NEGATIVE_TAGS), "negative_tags", errors)
    rationale = data.get("rationale")
    rationale = " ".join(rationale.split()) if isinstance(rationale, str) else ""
    if not positive and "positive_tags must be a list of strings" not in errors:
        errors.append("positive_tags is empty")
    if positive and not {EMOTION_TAGS[emotion][0], emotion} & set(positive):
        errors.append(f"emotion tag {EMOTION_TAGS[emotion][0]!r} is missing")
    if positive and character is not None:
        missing = [t for t in character.tags() if normalize_tag(t) not in positive]
        if missing:
            errors.append(f"identity tags of the character sheet are missing: {', '.join(missing)}")
    return positive, negative, rationale, errors


def _conflicts_with(tag: str, character: CharacterSheet) -> bool:
    """A hair/eye colour or hairstyle tag that contradicts the sheet (e.g. 'blonde hair' for pink)."""
    identity = {normalize_tag(t) for t in character.tags()}
    words = tag.split()
    if len(words) == 2 and words[1] in ("hair", "eyes") and words[0] in _COLOR_WORDS:
        return tag not in identity
    return tag in HAIRSTYLES and tag not in identity


def assign_role(tag: str, identity: Sequence[str] = ()) -> str:
    """The ``ROLE_PRIORITY`` role of one normalized tag."""
    if tag in SUBJECT_TAGS:
        return "subject"
    if tag in identity:
        return "identity"
    if tag in EMOTION_ROLE_TAGS:
        return "emotion"
    if tag in STYLE_ROLE_TAGS:
        return "style"
    if tag in QUALITY_ROLE_TAGS:
        return "quality"
    return "extra"


class EstimateTokenizer:
    """A rough stand-in for CLIP's tokenizer, used only when none is given.

    It is an ESTIMATE: each run of letters counts one token per 5 letters
    (rounded up), each digit and punctuation mark one token, plus BOS/EOS. CLIP's
    BPE has whole-word tokens for common tag words, so this usually over-counts a
    little, i.e. trims a bit more than needed. Pass ``pipe.tokenizer`` for an
    exact budget.

    >>> len(EstimateTokenizer()("1girl, smile")["input_ids"])  # BOS 1 girl , smile EOS
    6
    """

    model_max_length = CLIP_MAX_TOKENS
    _pieces = re.compile(r"[^\W\d_]+|\d|[^\w\s]|_")

    def __call__(self, text: str, truncation: bool = False, **_: object) -> dict[str, list[int]]:
        n = 2  # BOS + EOS
        for piece in self._pieces.findall(text):
            n += -(-len(piece) // 5) if piece.isalpha() else 1
        return {"input_ids": list(range(n))}


def assemble_prompt(
    positive: Sequence[str],
    negative: Sequence[str],
    *,
    emotion: str,
    style: str,
    character: CharacterSheet | None,
    tokenizer: object | None,
    backend: str,
    model: str | None,
    rationale: str | None,
) -> Prompt:
    """Validated tags → the final ``Prompt``, with roles, fixed identity and a fitting budget.

    The subject tags lead and the emotion's and style's first tags are added if missing. Identity
    tags are removed from wherever the LLM put them and ``character.tags()`` is
    inserted as one block after the emotion tags, in the sheet's order, so every
    emotion of one character carries byte-identical identity tags.
    """
    identity = tuple(normalize_tag(t) for t in character.tags()) if character else ()
    tags = [normalize_tag(t) for t in positive]
    if character is not None:
        tags = [t for t in tags if t not in identity and not _conflicts_with(t, character)]
    # Subject tags lead, in SUBJECT_TAGS order, wherever the LLM put them; then the
    # emotion's first tag (the one the toy world is captioned with), even if the LLM
    # only wrote the emotion word (e.g. "neutral" without "expressionless").
    first_emotion = EMOTION_TAGS[emotion][0]
    tags = list(SUBJECT_TAGS) + ([] if first_emotion in tags else [first_emotion]) + [
        t for t in tags if t not in SUBJECT_TAGS]
    if STYLE_TAGS[style][0] not in tags:
        tags.append(STYLE_TAGS[style][0])
    # Identity goes right after the last subject/emotion tag that leads the list.
    cut = 0
    while cut < len(tags) and assign_role(tags[cut]) in ("subject", "emotion"):
        cut += 1
    tags = list(dict.fromkeys(tags[:cut] + list(identity) + tags[cut:]))
    negative = [t for t in dict.fromkeys(normalize_tag(t) for t in negative) if t and t not in tags]
    prompt = Prompt(
        tags=tuple(tags),
        roles=tuple(assign_role(t, identity) for t in tags),
        negative_tags=tuple(negative),
        backend=backend,
        model=model,
        rationale=rationale or None,
        emotion=emotion,
        style=style,
    )
    return fit_token_budget(prompt, tokenizer if tokenizer is not None else EstimateTokenizer())


__all__ = [
    "EstimateTokenizer", "assemble_prompt", "assign_role", "normalize_tag", "tag_problem",
    "validate_output",
]
