"""The offline backend: curated Danbooru vocabularies and seeded sampling, no network.

It is both a backend of its own and the fallback of the LLM backends, so a
notebook without an API key (or with a flaky network) still gets good prompts.

>>> out = offline_generate("happy", "casual", variant=0)
>>> out["positive_tags"][:3]
['1girl', 'solo', 'happy']
>>> out == offline_generate("happy", "casual", variant=0)   # same variant, same prompt
True
>>> out == offline_generate("happy", "casual", variant=1)   # another variant, another prompt
False
"""

from __future__ import annotations

import hashlib
import json
import random

from animegen_utils.prompts import (
    DEFAULT_NEGATIVE_TAGS,
    EMOTION_TAGS,
    QUALITY_TAGS,
    STYLE_TAGS,
    SUBJECT_TAGS,
    CharacterSheet,
)

# Synonyms and nuances per emotion. EMOTION_TAGS[emotion][0] is always kept; the
# rest of EMOTION_TAGS is part of the pool so the toy world's captions stay likely.
EMOTION_VOCAB: dict[str, tuple[str, ...]] = {
    "happy": EMOTION_TAGS["happy"] + (
        "grin", "laughing", "open mouth", "sparkling eyes", "cheerful", "closed eyes", "teeth",
    ),
    "angry": EMOTION_TAGS["angry"] + (
        "glaring", "clenched teeth", "furrowed brow", "annoyed", "anger vein", "pout", "scowl",
    ),
    "sad": EMOTION_TAGS["sad"] + (
        "teary eyes", "crying", "streaming tears", "downcast eyes", "looking down", "wavy mouth",
    ),
    "surprised": EMOTION_TAGS["surprised"] + (
        "shocked", "gasp", "raised eyebrows", "constricted pupils", "blush", "hands up",
    ),
    "neutral": EMOTION_TAGS["neutral"] + (
        "calm", "blank stare", "straight face", "half-closed eyes", "neutral expression",
    ),
}

# All STYLE_TAGS of the style are kept; a few of these add variety.
STYLE_VOCAB: dict[str, tuple[str, ...]] = {
    "casual": ("jeans", "sneakers", "t-shirt", "denim jacket", "shorts", "hood down", "casual clothes"),
    "formal": ("evening gown", "earrings", "elbow gloves", "bare shoulders", "elegant", "high heels"),
    "school_uniform": ("pleated skirt", "neckerchief", "kneehighs", "school bag", "loafers", "classroom"),
}

# Framing and light: role "extra", the first things dropped after quality.
COMPOSITION_VOCAB: tuple[str, ...] = (
    "upper body", "portrait", "looking at viewer", "simple background", "white background",
    "soft lighting", "depth of field", "cowboy shot",
)

QUALITY_VOCAB: tuple[str, ...] = QUALITY_TAGS + (
    "highres", "absurdres", "sharp focus", "beautiful detailed eyes", "high quality",
)
# Always kept among the quality tags: the two that anime checkpoints respond to most.
CORE_QUALITY: tuple[str, ...] = ("masterpiece", "best quality")


def seed_for(emotion: str, style: str, character: CharacterSheet | None, variant: int) -> int:
    """A stable 64-bit seed; Python's ``hash()`` is salted per process, sha256 is not."""
    key = json.dumps(
        [emotion, style, character.to_dict() if character else None, int(variant)],
        sort_keys=True, default=list,
    )
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def offline_generate(
    emotion: str, style: str, character: CharacterSheet | None = None, variant: int = 0
) -> dict:
    """Tags in the same shape an LLM's ``submit_prompt`` call returns.

    Order: subject, emotion, identity, style, composition, quality (the same
    order ``build_prompt`` uses, which is also the trimming priority).
    """
    rng = random.Random(seed_for(emotion, style, character, variant))
    # The first two EMOTION_TAGS (e.g. "happy", "smile") are what the toy world
    # draws and captions: always kept. Synonyms add nuance and variety.
    core_emotion = list(EMOTION_TAGS[emotion][:2])
    first_emotion = core_emotion[0]
    emotion_pool = [t for t in EMOTION_VOCAB[emotion] if t not in core_emotion]
    emotion_tags = core_emotion + rng.sample(emotion_pool, rng.randint(1, 2))
    style_extra = rng.sample(STYLE_VOCAB[style], rng.randint(1, 2))
    composition = rng.sample(COMPOSITION_VOCAB, rng.randint(1, 2))
    quality_pool = [t for t in QUALITY_VOCAB if t not in CORE_QUALITY]
    quality = list(CORE_QUALITY) + rng.sample(quality_pool, rng.randint(1, 2))
    identity = list(character.tags()) if character else []
    positive = [*SUBJECT_TAGS, *emotion_tags, *identity, *STYLE_TAGS[style], *style_extra, *composition, *quality]
    negative = list(DEFAULT_NEGATIVE_TAGS)
    if emotion != "sad":
        negative.append("tears")  # a stray tear reads as sadness in every other emotion
    rationale = (
        f"offline rule-based expansion (variant {variant}): kept {first_emotion!r} and the "
        f"{style} outfit tags, sampled {', '.join(emotion_tags[2:])} for nuance."
    )
    return {"positive_tags": positive, "negative_tags": negative, "rationale": rationale}
