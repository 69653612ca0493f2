"""Danbooru-style captions for toy-world renders.

>>> import random
>>> from animegen_utils.toyworld.render import CharacterAttributes
>>> attrs = CharacterAttributes("sad", "formal", "silver", "red", "long hair", "glasses")
>>> caption_for(attrs, random.Random(0), shuffle=False, extras=False).split(", ")[:3]
['1girl', 'solo', 'sad']

Captions always carry the subject tags, the emotion's first tag plus a random
non-empty subset of its other tags, the style's first tag plus a random subset
of its other tags, and the identity tags (``"<hair> hair"``, hairstyle,
``"<eye> eyes"``, accessory unless ``"none"``). ``extras=True`` sometimes adds
quality/distractor tags the world does not draw, as real captions do.
"""

from __future__ import annotations

import random

from animegen_utils.prompts import (
    ACCESSORIES,
    EMOTION_TAGS,
    EYE_COLORS,
    HAIR_COLORS,
    HAIRSTYLES,
    QUALITY_TAGS,
    STYLE_TAGS,
    SUBJECT_TAGS,
)

from .render import CharacterAttributes

__all__ = ["caption_for", "caption_tags", "caption_words", "identity_tags", "DISTRACTOR_TAGS"]

#: Tags that real captions carry but the toy world does not draw.
DISTRACTOR_TAGS: tuple[str, ...] = (
    "looking at viewer", "upper body", "simple background", "portrait", "8k",
    "high quality", "soft lighting", "highres", "absurdres", "beautiful", "cute",
    "anime", "illustration", "detailed", "sharp focus", "colorful",
)

_EXTRA_POOL: tuple[str, ...] = tuple(dict.fromkeys(QUALITY_TAGS + DISTRACTOR_TAGS))

#: Probability that a caption gets any extra tags (when ``extras=True``).
EXTRAS_PROB = 0.6
#: Probability that all of an emotion's tags are used rather than a subset.
ALL_EMOTION_TAGS_PROB = 0.5
#: Probability that "1girl" is moved back to the front after shuffling.
SUBJECT_FIRST_PROB = 0.7


def identity_tags(attrs: CharacterAttributes) -> list[str]:
    tags = [f"{attrs.hair_color} hair", attrs.hairstyle, f"{attrs.eye_color} eyes"]
    if attrs.accessory != "none":
        tags.append(attrs.accessory)
    return tags


def _first_plus_subset(tags: tuple[str, ...], rng: random.Random, non_empty: bool) -> list[str]:
    first, rest = tags[0], list(tags[1:])
    chosen = [t for t in rest if rng.random() < 0.5]
    if non_empty and rest and not chosen:
        chosen = [rng.choice(rest)]
    return [first, *chosen]


def caption_for(attrs: CharacterAttributes, rng: random.Random, shuffle: bool = True,
                extras: bool = True) -> str:
    """A comma-separated Danbooru-style caption for ``attrs``; randomness only from ``rng``."""
    tags: list[str] = list(SUBJECT_TAGS)
    emo = EMOTION_TAGS[attrs.emotion]
    if rng.random() < ALL_EMOTION_TAGS_PROB:
        tags += list(emo)
    else:
        tags += _first_plus_subset(emo, rng, non_empty=True)
    tags += identity_tags(attrs)
    tags += _first_plus_subset(STYLE_TAGS[attrs.style], rng, non_empty=False)
    if extras and rng.random() < EXTRAS_PROB:
        k = rng.randint(1, 3)
        tags += rng.sample(_EXTRA_POOL, k)
    tags = list(dict.fromkeys(tags))  # de-duplicate, keep order
    if shuffle:
        rng.shuffle(tags)
        if rng.random() < SUBJECT_FIRST_PROB:
            tags.remove(SUBJECT_TAGS[0])
            tags.insert(0, SUBJECT_TAGS[0])
    return ", ".join(tags)


def caption_tags() -> tuple[str, ...]:
    """Sorted tuple of every tag (text between commas) a caption can ever contain."""
    tags: set[str] = set(SUBJECT_TAGS)
    for group in EMOTION_TAGS.values():
        tags.update(group)
    for group in STYLE_TAGS.values():
        tags.update(group)
    tags.update(f"{h} hair" for h in HAIR_COLORS)
    tags.update(f"{e} eyes" for e in EYE_COLORS)
    tags.update(HAIRSTYLES)
    tags.update(a for a in ACCESSORIES if a != "none")
    tags.update(_EXTRA_POOL)
    return tuple(sorted(tags))


def caption_words() -> tuple[str, ...]:
    """Sorted tuple of every whitespace-separated word inside those tags."""
    return tuple(sorted({w for tag in caption_tags() for w in tag.split()}))
