"""Control images with OpenCV: canny edges of a picture, and a user's sketch made into edges.

>>> from animegen_utils.control import canny_map, sketch_to_control, prepare_image
>>> control = canny_map(prepare_image("character.png", 64))     # white edges on black, RGB
>>> control = sketch_to_control("my_drawing.jpg", size=64)       # photo or scan of a pencil sketch

Both return ``PIL.Image`` in RGB (what ``StableDiffusionControlNetPipeline`` takes as
``image=``), are deterministic, and warn (but still return) when they find no edges.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Union

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageLike = Union[str, Path, Image.Image]

# Median-based automatic canny thresholds: (1 -/+ sigma) x median grey level.
CANNY_SIGMA = 0.33


def load_image(image: ImageLike) -> Image.Image:
    """An RGB PIL image from a path or a PIL image (RGBA is laid on white; palette/grey converted).

    >>> load_image("sketch.png").mode
    'RGB'
    """
    if isinstance(image, (str, Path)):
        path = Path(image).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"No image file at {path}")
        try:
            with Image.open(path) as im:
                im.load()
                image = im.copy()
        except UnidentifiedImageError as err:
            raise ValueError(f"{path} is not an image file PIL can read (PNG, JPEG, WebP...)") from err
    if not isinstance(image, Image.Image):
        raise TypeError(f"image must be a PIL.Image or a path, got {type(image).__name__}")
    image = ImageOps.exif_transpose(image)  # phone photos of sketches come rotated by EXIF
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        # Transparent pixels become white paper, not black (what .convert("RGB") would give).
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def prepare_image(image: ImageLike, resolution: int) -> Image.Image:
    """``image`` as an RGB square of ``resolution`` pixels, for img2img.

    Aspect ratio is kept: the image is scaled so its *short* side is ``resolution``
    and the long side is centre-cropped (so a portrait photo loses its top and bottom
    edges, never gets squashed). ``resolution`` must be a multiple of 8 (the VAE's
    downsampling); 64 for the built-in model, 512 for SD1.5.
    """
    if resolution <= 0 or resolution % 8:
        raise ValueError(f"resolution must be a positive multiple of 8, got {resolution}")
    return ImageOps.fit(load_image(image), (resolution, resolution), Image.LANCZOS, centering=(0.5, 0.5))


def _grey(image: ImageLike | np.ndarray) -> np.ndarray:
    if isinstance(image, np.ndarray):
        if image.ndim == 3:
            image = cv2.cvtColor(image.astype(np.uint8), cv2.COLOR_RGB2GRAY)
        return image.astype(np.uint8)
    return np.asarray(load_image(image).convert("L"))


def _warn_if_empty(edges: np.ndarray, what: str) -> None:
    if not edges.any():
        warnings.warn(f"{what} found no edges; the control image is all black "
                      "(ControlNet will then ask for a featureless picture).", stacklevel=3)


def auto_canny_thresholds(grey: np.ndarray, sigma: float = CANNY_SIGMA) -> tuple[int, int]:
    """The median-based thresholds: ``(1 - sigma) * median`` and ``(1 + sigma) * median``."""
    median = float(np.median(grey))
    return int(max(0, (1.0 - sigma) * median)), int(min(255, (1.0 + sigma) * median))


def canny_edges(image: ImageLike | np.ndarray, low: int | None = None, high: int | None = None) -> np.ndarray:
    """Canny edges as a boolean array (no warning on empty); see :func:`canny_map`."""
    grey = _grey(image)
    if (low is None) != (high is None):
        raise ValueError("Give both canny thresholds (low and high) or neither (automatic).")
    if low is None:
        low, high = auto_canny_thresholds(grey)
    if not 0 <= low <= high:
        raise ValueError(f"Canny thresholds need 0 <= low <= high, got low={low}, high={high}")
    return cv2.Canny(grey, int(low), int(high), L2gradient=True) > 0


def canny_map(image: ImageLike, low: int | None = None, high: int | None = None) -> Image.Image:
    """Canny edges of ``image``: white 1-pixel edges on black, RGB, same size.

    With no thresholds, the median-based automatic ones (``auto_canny_thresholds``);
    SD1.5's canny ControlNet was trained with thresholds around (100, 200).

    >>> canny_map(render_character(attrs, seed=0).image)
    """
    edges = canny_edges(image, low, high)
    _warn_if_empty(edges, "canny_map")
    return Image.fromarray(np.where(edges, 255, 0).astype(np.uint8)).convert("RGB")


def sketch_to_control(image: ImageLike, size: int | None = None, min_speck: int | None = None) -> Image.Image:
    """A user's drawing as white-on-black edges for a canny ControlNet.

    Works for dark lines on light paper (pencil, pen, a drawing app) and the reverse
    (chalk on a blackboard, a dark-mode app): the polarity is read off the median,
    since paper covers more of the picture than lines do. Steps:

    1. greyscale; invert if the paper is dark;
    2. adaptive threshold against the local paper level (uneven light in photos);
    3. drop connected specks smaller than ``min_speck`` pixels (paper grain, dust, the
       grid of squared paper), default 0.02 % of the picture;
    4. if ``size`` is given: pad to a square with background (the drawing is never cut)
       and shrink to ``size`` with area averaging, keeping any line that covers at least
       a fifth of a pixel, so thin strokes survive the shrink.

    >>> control = sketch_to_control("photo_of_my_sketch.jpg", size=64)
    """
    grey = _grey(image)
    if size is not None and size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if np.median(grey) < 128:
        grey = 255 - grey
    h, w = grey.shape
    # Block about 1/20 of the picture: wider than a stroke, narrower than a shadow.
    block = max(3, (min(h, w) // 20) | 1)
    lines = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, block, 15)
    min_speck = max(2, int(0.0002 * h * w)) if min_speck is None else int(min_speck)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(lines, connectivity=8)
    keep = np.zeros(n, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_speck
    lines = np.where(keep[labels], 255, 0).astype(np.uint8)
    if size is not None:
        side = max(h, w)
        square = np.zeros((side, side), dtype=np.uint8)
        top, left = (side - h) // 2, (side - w) // 2
        square[top:top + h, left:left + w] = lines
        small = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)
        lines = np.where(small >= 255 // 5, 255, 0).astype(np.uint8)
    _warn_if_empty(lines, "sketch_to_control")
    return Image.fromarray(lines).convert("RGB")
