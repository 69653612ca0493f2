"""Free-text character descriptions → the kit's structured request → tags.

Users don't write tags; they write "my OC Mika: silver pigtails, ruby eyes,
furious, in her sailor uniform". The LLM backends fill the ``DESCRIBE_TOOL``
schema (checked by ``validate_request``); the offline backend, and the fallback,
is the lexicon parser ``parser.parse_description``. Either way the result is a
``Parsed`` request that ``request_prompt`` turns into a budgeted ``Prompt``, with
a character sheet merged in by ``merge_character`` (the sheet wins).

>>> prompt = request_prompt(parse_description("furious, silver pigtails"))
>>> prompt.positive.split(", ")[:6]
['1girl', 'solo', 'angry', 'frown', 'v-shaped eyebrows', 'silver hair']
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from animegen_utils.prompts import (
    DEFAULT_NEGATIVE_TAGS,
    EMOTION_TAGS,
    EMOTIONS,
    EYE_COLORS,
    HAIR_COLORS,
    HAIRSTYLES,
    QUALITY_TAGS,
    STYLE_TAGS,
    STYLES,
    SUBJECT_TAGS,
    CharacterSheet,
    Prompt,
    fit_token_budget,
)

from .parser import _SINGLE, KIT_ACCESSORIES, REQUEST_FIELDS, Parsed, empty_request, parse_description

#: Bump when DESCRIBE_SYSTEM_PROMPT / DESCRIBE_TOOL change: it is part of the cache key.
DESCRIBE_TEMPLATE_VERSION = "1"
_CHOICES = {"emotion": EMOTIONS, "style": STYLES, "hair_color": HAIR_COLORS, "eye_color": EYE_COLORS,
            "hairstyle": HAIRSTYLES}

# -- the LLM's tool --------------------------------------------------------------------------------
DESCRIBE_SYSTEM_PROMPT = (
    "You turn a user's free-text description of an anime character (English, Japanese or any other "
    "language) into the structured request of an image generation kit. Fill a field only when the "
    "description states it; never guess a value it does not state. Map synonyms to the kit's values "
    "(furious -> angry, pigtails -> twintails, ruby eyes -> red, sailor suit -> school_uniform, "
    "spectacles -> glasses). A negated trait ('not smiling', 'no glasses') sets nothing: put its "
    "Danbooru tags in avoid_tags. Details the kit's fields cannot hold but an anime checkpoint can "
    "draw (brown hair, ponytail, freckles, cat ears) go in extra_tags as lowercase Danbooru tags of "
    "1 to 4 words. Phrases you cannot map at all go in unresolved, quoted from the description. "
    "The rationale is one short sentence."
)

DESCRIBE_TOOL: dict[str, Any] = {
    "name": "submit_request",
    "description": "Submit the structured request understood from the character description.",
    "input_schema": {
        "type": "object",
        "properties": {
            "emotion": {"type": "string", "enum": list(EMOTIONS)},
            "style": {"type": "string", "enum": list(STYLES), "description": "the outfit"},
            "hair_color": {"type": "string", "enum": list(HAIR_COLORS)},
            "eye_color": {"type": "string", "enum": list(EYE_COLORS)},
            "hairstyle": {"type": "string", "enum": list(HAIRSTYLES)},
            "accessories": {"type": "array", "items": {"type": "string", "enum": list(KIT_ACCESSORIES)}},
            "extra_tags": {"type": "array", "items": {"type": "string"}},
            "avoid_tags": {"type": "array", "items": {"type": "string"}},
            "unresolved": {"type": "array", "items": {"type": "string"}},
            "rationale": {"type": "string"},
        },
        "required": ["accessories", "extra_tags", "avoid_tags", "unresolved", "rationale"],
    },
}


def describe_request_text(text: str) -> str:
    """The user message for one description (the description, verbatim)."""
    return "Character description:\n" + text.strip()


def validate_request(data: object) -> tuple[Parsed | None, list[str]]:
    """Check an LLM's ``submit_request`` answer: ``(Parsed, [])`` or ``(None, errors)``.

    Values must be in the kit's enums (``null`` or a missing key means not stated);
    tags must be tags, not prose.

    >>> validate_request({"emotion": "smug", "accessories": []})[1]
    ["emotion 'smug' is not one of: happy, angry, sad, surprised, neutral (leave it out when unsure)"]
    """
    from .validate import normalize_tag, tag_problem

    if not isinstance(data, Mapping):
        return None, ["the answer is not a JSON object with the submit_request fields"]
    errors: list[str] = []
    request = empty_request()
    for key in _SINGLE:
        value = data.get(key)
        if value in (None, "", "none", "unknown"):
            continue
        # "school uniform" and "school_uniform" both name the style school_uniform.
        value = normalize_tag(value).replace(" ", "_") if key == "style" and isinstance(value, str) else (
            normalize_tag(value) if isinstance(value, str) else value)
        if value not in _CHOICES[key]:
            errors.append(f"{key} {data.get(key)!r} is not one of: {', '.join(_CHOICES[key])} "
                          "(leave it out when unsure)")
            continue
        request[key] = value

    def tag_list(key: str, free: bool) -> list[str]:
        value = data.get(key, [])
        if value is None:
            return []
        if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
            errors.append(f"{key} must be a list of strings")
            return []
        out: list[str] = []
        for raw in value:
            if free and key != "unresolved":
                problem = tag_problem(raw)
                if problem:
                    errors.append(f"{key}: {problem}")
                    continue
            item = normalize_tag(raw) if key != "unresolved" else " ".join(raw.split())
            if item and item not in out:
                out.append(item)
        return out

    accessories = tag_list("accessories", free=False)
    bad = [a for a in accessories if a not in KIT_ACCESSORIES]
    if bad:
        errors.append(f"accessories {bad} are not in: {', '.join(KIT_ACCESSORIES)}; put other items in extra_tags")
    request["accessories"] = [a for a in accessories if a in KIT_ACCESSORIES]
    extra = tag_list("extra_tags", free=True)
    for tag in extra:
        words = tag.split()
        if len(words) == 2 and ((words[1] == "hair" and words[0] in HAIR_COLORS)
                                or (words[1] == "eyes" and words[0] in EYE_COLORS)):
            errors.append(f"extra tag {tag!r} is a kit colour: use the {'hair' if words[1] == 'hair' else 'eye'}"
                          "_color field")
    avoid = tag_list("avoid_tags", free=True)
    unresolved = tag_list("unresolved", free=False)
    rationale = data.get("rationale")
    rationale = " ".join(rationale.split()) if isinstance(rationale, str) else ""
    if errors:
        return None, errors
    return Parsed(request, tuple(unresolved), tuple(avoid), tuple(extra), rationale), []


# -- character sheet and tags -------------------------------------------------------------------------
def merge_character(parsed: Parsed, character: CharacterSheet | None) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The request with the sheet's identity, which wins; and the conflicts, in words.

    >>> p = parse_description("blonde girl with glasses")
    >>> merge_character(p, CharacterSheet("pink", "blue", "twintails"))[1]
    ("hair_color: the description says 'blonde', the character sheet says 'pink' (the sheet wins)",)
    """
    request = {**parsed.request, "accessories": list(parsed.request["accessories"])}
    if character is None:
        return request, ()
    conflicts: list[str] = []
    for key, value in character.identity().items():
        said = request.get(key)
        if said is not None and said != value:
            conflicts.append(f"{key}: the description says {said!r}, the character sheet says {value!r} "
                             "(the sheet wins)")
        request[key] = value
    for accessory in character.accessories:
        if accessory in parsed.avoid:
            conflicts.append(f"accessories: the description asks for no {accessory!r}, the character sheet has it "
                             "(the sheet wins)")
    request["accessories"] = list(dict.fromkeys([*character.accessories, *request["accessories"]]))
    return request, tuple(conflicts)


def request_prompt(
    parsed: Parsed,
    character: CharacterSheet | None = None,
    *,
    variant: int = 0,
    tokenizer: object | None = None,
    backend: str = "offline",
    model: str | None = None,
    rationale: str | None = None,
) -> Prompt:
    """A parsed description → the final ``Prompt`` (subject, emotion, identity, style, extras, quality).

    The tags are the kit's own (``EMOTION_TAGS``, ``STYLE_TAGS``, ``"<colour> hair"``, ...),
    so the built-in model and real anime checkpoints read them the same way. With a
    ``character``, its ``tags()`` form the identity block, byte for byte as in
    ``PromptOptimizer.optimize``. ``variant > 0`` adds a few seeded nuance tags.
    """
    from .offline import COMPOSITION_VOCAB, EMOTION_VOCAB, STYLE_VOCAB
    from .validate import EstimateTokenizer, normalize_tag

    request, conflicts = merge_character(parsed, character)
    emotion, style = request["emotion"], request["style"]
    parts: list[tuple[str, str]] = [(t, "subject") for t in SUBJECT_TAGS]
    if emotion:
        parts += [(t, "emotion") for t in EMOTION_TAGS[emotion]]
    if character is not None:
        identity = [*character.tags(), *(a for a in request["accessories"] if a not in character.accessories)]
    else:
        identity = []
        if request["hair_color"]:
            identity.append(f"{request['hair_color']} hair")
        if request["hairstyle"]:
            identity.append(request["hairstyle"])
        if request["eye_color"]:
            identity.append(f"{request['eye_color']} eyes")
        identity += request["accessories"]
    parts += [(t, "identity") for t in identity]
    if style:
        parts += [(t, "style") for t in STYLE_TAGS[style]]
    parts += [(t, "extra") for t in parsed.extra_tags]
    if variant:
        import hashlib
        import json
        import random

        key = json.dumps([request, list(parsed.extra_tags), int(variant)], sort_keys=True, ensure_ascii=False)
        rng = random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
        if emotion:
            pool = [t for t in EMOTION_VOCAB[emotion] if t not in EMOTION_TAGS[emotion]]
            parts += [(t, "emotion") for t in rng.sample(pool, 1)]
        if style:
            parts += [(t, "style") for t in rng.sample(STYLE_VOCAB[style], 1)]
        parts += [(t, "extra") for t in rng.sample(COMPOSITION_VOCAB, 1)]
    parts += [(t, "quality") for t in QUALITY_TAGS]
    tags: list[str] = []
    roles: list[str] = []
    for tag, role in parts:
        tag = normalize_tag(tag)
        if tag and tag not in tags:
            tags.append(tag)
            roles.append(role)
    avoid = [normalize_tag(t) for t in parsed.avoid if normalize_tag(t) not in tags]
    negative = list(dict.fromkeys([*DEFAULT_NEGATIVE_TAGS, *avoid]))
    prompt = Prompt(
        tags=tuple(tags), roles=tuple(roles), negative_tags=tuple(negative), backend=backend, model=model,
        rationale=rationale or parsed.rationale or None, emotion=emotion, style=style,
        request=request, unresolved=parsed.unresolved, conflicts=conflicts,
    )
    return fit_token_budget(prompt, tokenizer if tokenizer is not None else EstimateTokenizer())


# -- the data set ---------------------------------------------------------------------------------------
def load_descriptions(path: str | None = None) -> list[dict[str, Any]]:
    """``data/descriptions.jsonl``: ``[{"id", "lang", "text", "attributes"}, ...]``.

    ``attributes`` holds what the description asks for, in ``REQUEST_FIELDS`` terms
    (only the stated ones).
    """
    import json
    from pathlib import Path

    from animegen_utils import paths

    file = Path(path) if path is not None else paths.data_dir("descriptions.jsonl")
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: it ships with the animegen repository (data/descriptions.jsonl); "
                                "clone it, or pass path=... to your own JSONL file")
    rows = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        unknown = set(row.get("attributes", {})) - set(REQUEST_FIELDS)
        if "text" not in row or unknown:
            raise ValueError(f"{file}:{n}: each line needs 'text' and 'attributes' with keys from "
                             f"{', '.join(REQUEST_FIELDS)}; got {sorted(row)} / unknown {sorted(unknown)}")
        rows.append(row)
    return rows


def parse_accuracy(rows: Sequence[Mapping[str, Any]], parse=parse_description) -> dict[str, Any]:
    """Per-attribute accuracy of ``parse`` on the attributes each description states.

    Returns ``{"per_attribute": {field: (correct, stated)}, "spurious": [(id, field, value)],
    "errors": [(id, field, expected, got)]}``; ``spurious`` lists values set for attributes a
    description does not state.
    """
    per: dict[str, list[int]] = {k: [0, 0] for k in REQUEST_FIELDS}
    spurious, errors = [], []
    for row in rows:
        got = parse(row["text"]).request
        stated = row["attributes"]
        for key in REQUEST_FIELDS:
            if key in stated:
                expected = sorted(stated[key]) if key == "accessories" else stated[key]
                value = sorted(got[key]) if key == "accessories" else got[key]
                per[key][1] += 1
                if value == expected:
                    per[key][0] += 1
                else:
                    errors.append((row.get("id"), key, expected, value))
            elif got[key] not in (None, []):
                spurious.append((row.get("id"), key, got[key]))
    return {"per_attribute": {k: tuple(v) for k, v in per.items() if v[1]}, "spurious": spurious, "errors": errors}


__all__ = [
    "DESCRIBE_SYSTEM_PROMPT", "DESCRIBE_TEMPLATE_VERSION", "DESCRIBE_TOOL", "KIT_ACCESSORIES", "REQUEST_FIELDS",
    "Parsed", "describe_request_text", "empty_request", "load_descriptions", "merge_character",
    "parse_accuracy", "parse_description", "request_prompt", "validate_request",
]
