"""The toy world: procedurally drawn anime girls with exact captions.

Only the drawing, captions and dataset modules are imported here; the toy
tokenizer/model/training code lives in sibling modules and is imported directly.
"""

from .captions import DISTRACTOR_TAGS, caption_for, caption_tags, caption_words
from .dataset import iter_samples, load_dataset, make_dataset, sample_attributes
from .render import (
    ATTRIBUTE_CHOICES,
    CharacterAttributes,
    RenderResult,
    render_character,
)

__all__ = [
    "ATTRIBUTE_CHOICES",
    "CharacterAttributes",
    "RenderResult",
    "render_character",
    "caption_for",
    "caption_tags",
    "caption_words",
    "DISTRACTOR_TAGS",
    "iter_samples",
    "load_dataset",
    "make_dataset",
    "sample_attributes",
]
