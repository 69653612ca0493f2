"""Notebook 03's new character: a look the built-in model never saw, and how to spot it.

>>> from animegen_utils.lora.toydata import make_character_folders, shows_character
>>> root = make_character_folders("outputs/03/training_data", per_emotion=60)   # happy_anime/0000.png ...
>>> shows_character(some_image)
True

**Mika** has orange hair (the built-in vocabulary has black, blonde, pink, blue, red,
silver and green, and no image it was trained on has orange hair), twintails,
yellow eyes and a gold star hair clip. (Orange rather than, say, violet because the
built-in VAE reconstructs orange, which the world uses for hoodies, but turns violet
into blue: a LoRA on the UNet cannot teach the VAE a colour.) Training images are in the plan's
folder-per-emotion layout (``happy_anime/``, ``sad_anime/``...), each with a ``.txt``
caption: the trigger word, the emotion's tags and the outfit's tags, and no
hair or eye tags, so the trigger word alone has to carry her look.

The detector is a documented pixel statistic: the fraction of "orange" pixels
(hue 8°-40°, saturation above 0.45, value above 0.35) in the band of the image
where the fringe is drawn (rows 6-16, columns 19-45 of 64, scaled with the image:
rows 12-33, columns 38-91 of 128).
The base world draws nothing orange there (red hair is hue 0°, blonde 49°, skin and
backgrounds are pale; orange hoodies sit lower), so a fraction above ``THRESHOLD``
means her hair. The lower hue bound is 8°, not the renders' 26°, because the model
draws her hair a little redder than the renders (its known red pulls the colour).
"""

from __future__ import annotations

import colorsys
import random
from pathlib import Path

import numpy as np
from PIL import Image

from ..prompts import EMOTION_TAGS, STYLE_TAGS
from ..toyworld.render import CharacterAttributes, CustomLook, render_character

__all__ = ["TRIGGER", "LOOK", "ATTRS", "THRESHOLD", "make_character_folders", "character_prompt",
           "hair_fraction", "shows_character"]

TRIGGER = "mika"
LOOK = CustomLook(hair_rgb=(245, 130, 40), star_clip=True)
ATTRS = {"hair_color": "blue", "eye_color": "yellow", "hairstyle": "twintails", "accessory": "none"}
THRESHOLD = 0.2
HUE_RANGE = (8.0, 40.0)
#: The fringe band as fractions of the image's height and width: rows 6-16 and columns 19-45 of 64.
BAND_ROWS = (6 / 64, 17 / 64)
BAND_COLS = (19 / 64, 46 / 64)
STYLES = ("casual", "school_uniform", "formal")


def character_prompt(emotion: str, style: str | None = None, trigger: str = TRIGGER) -> str:
    """The prompt for her: the trigger, the subject, the emotion's tags, optionally an outfit."""
    tags = [trigger, "1girl", "solo", *EMOTION_TAGS[emotion][:2]]
    if style is not None:
        tags += list(STYLE_TAGS[style][:2])
    return ", ".join(tags)


def make_character_folders(root: str | Path, per_emotion: int = 60, seed: int = 0,
                           emotions: tuple[str, ...] = tuple(EMOTION_TAGS), size: int = 128) -> Path:
    """Render her in every emotion into ``root/<emotion>_anime/NNNN.png`` with ``.txt`` captions.

    ``size`` is the side in pixels: the model's native size (128, the built-in model's), so that
    training neither upsamples nor downsamples her.
    """
    root = Path(root)
    rng = random.Random(f"mika:{seed}")
    for emotion in emotions:
        folder = root / f"{emotion}_anime"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_emotion):
            style = rng.choice(STYLES)
            render_seed = rng.randrange(2**31)
            attrs = CharacterAttributes(emotion=emotion, style=style, **ATTRS)
            render_character(attrs, render_seed, size=size, look=LOOK).image.save(folder / f"{i:04d}.png")
            emo = list(EMOTION_TAGS[emotion])
            tags = [TRIGGER, "1girl", "solo", emo[0], *[t for t in emo[1:] if rng.random() < 0.6],
                    *STYLE_TAGS[style][:2]]
            (folder / f"{i:04d}.txt").write_text(", ".join(tags), encoding="utf-8")
    return root


def hair_fraction(image: Image.Image) -> float:
    """Fraction of orange pixels in the fringe band (see the module docstring), at any image size."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    h, w = arr.shape[:2]
    (r0, r1), (c0, c1) = BAND_ROWS, BAND_COLS
    band = arr[round(r0 * h):round(r1 * h), round(c0 * w):round(c1 * w)].reshape(-1, 3)
    hsv = np.array([colorsys.rgb_to_hsv(*px) for px in band])
    hue = hsv[:, 0] * 360
    orange = (hue >= HUE_RANGE[0]) & (hue <= HUE_RANGE[1]) & (hsv[:, 1] > 0.45) & (hsv[:, 2] > 0.35)
    return float(orange.mean())


def shows_character(image: Image.Image, threshold: float = THRESHOLD) -> bool:
    """True when the image shows her orange hair."""
    return hair_fraction(image) > threshold
