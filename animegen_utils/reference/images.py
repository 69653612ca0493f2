"""Reference images: what ``generate(..., reference=...)`` accepts, and their hash.

>>> reference_image("mika.png").mode            # a path or a PIL image, any size or mode
'RGB'
>>> reference_sha256(Image.open("mika.png"))    # the pixels' hash, recorded in the PNG
'3f1c...'
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

__all__ = ["reference_image", "reference_sha256", "ACCEPTED"]

ACCEPTED = ("a PIL.Image.Image (any size; RGB, RGBA, L, P, ... modes) or the path (str or pathlib.Path) "
            "of an image file PIL can open (PNG, JPEG, WebP, ...)")


def _open(reference: Any) -> Image.Image:
    if isinstance(reference, Image.Image):
        return reference
    if isinstance(reference, (str, os.PathLike)):
        path = Path(reference).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Reference image not found: {path}. reference must be {ACCEPTED}.")
        try:
            with Image.open(path) as im:
                im.load()
                return im.copy()
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"Reference {path} is not an image PIL can read ({type(err).__name__}: {err}). "
                             f"reference must be {ACCEPTED}.") from None
    raise TypeError(f"reference must be {ACCEPTED}; got {type(reference).__name__}")


def reference_image(reference: Any) -> Image.Image:
    """The reference as the RGB picture the image encoder reads.

    Transparent pixels are put on white (an RGBA cut-out keeps its outline, not whatever colour its
    invisible pixels hold); grey and palette pictures become RGB. The size does not matter: the
    adapter's image processor resizes and centre-crops to its encoder's input.

    >>> reference_image(Image.new("LA", (300, 200))).size
    (300, 200)
    """
    image = _open(reference)
    if image.size[0] < 1 or image.size[1] < 1:
        raise ValueError(f"Reference image is empty ({image.size[0]}x{image.size[1]}).")
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def reference_sha256(reference: Any) -> str:
    """SHA-256 of the reference's pixels (mode, size, raw bytes), the same definition as
    ``generation.image_sha256``: the same picture gives the same hash whatever file holds it."""
    image = _open(reference)
    h = hashlib.sha256(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()
