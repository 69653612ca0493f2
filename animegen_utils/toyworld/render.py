"""Procedurally drawn head-and-shoulders anime girls for the toy world.

Every attribute of :class:`CharacterAttributes` is drawn so that it reads even at
64×64 (the built-in model draws 128×128): the picture is drawn at 4× with ``PIL.ImageDraw`` and downsampled with
LANCZOS. The face covers about half the image width so the expression
(brows, eyes, mouth, blush, tears) survives the downsampling.

>>> import random
>>> attrs = CharacterAttributes("happy", "casual", "pink", "blue", "twintails", "hair ribbon")
>>> result = render_character(attrs, seed=3)
>>> result.image.size
(64, 64)

Rendering is a pure function of ``(attrs, seed, size)``: the jitter (background,
position, scale, skin tone, colour brightness, hoodie colour) comes from
``random.Random(seed)`` alone and is drawn in a fixed order whatever the
attributes, so two renders with the same seed and one changed attribute differ
only where that attribute is drawn.
"""

from __future__ import annotations

import colorsys
import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from PIL import Image, ImageDraw

from animegen_utils.prompts import ATTRIBUTES

__all__ = [
    "CharacterAttributes",
    "CustomLook",
    "RenderResult",
    "render_character",
    "render_supersampled",
    "eye_boxes",
    "ATTRIBUTE_CHOICES",
    "HAIR_RGB",
    "EYE_RGB",
    "HOODIE_PALETTE",
]

RGB = tuple[int, int, int]

#: Valid values per attribute field, in field order (shared with the probe).
ATTRIBUTE_CHOICES: dict[str, tuple[str, ...]] = ATTRIBUTES

#: Base RGB per hair colour (the strands/outline use a darker shade).
HAIR_RGB: dict[str, RGB] = {
    "black": (42, 38, 52),
    "blonde": (250, 218, 80),
    "pink": (250, 140, 195),
    "blue": (60, 110, 230),
    "red": (205, 40, 40),
    "silver": (205, 205, 225),
    "green": (60, 175, 80),
}

#: Base RGB per eye (iris) colour.
EYE_RGB: dict[str, RGB] = {
    "blue": (35, 105, 240),
    "red": (220, 25, 35),
    "green": (25, 175, 60),
    "purple": (150, 55, 210),
    "yellow": (245, 200, 20),
}

#: Hoodie colours for the casual outfit (chosen away from navy/white/black so
#: they never look like the school uniform or the formal dress).
HOODIE_PALETTE: tuple[RGB, ...] = (
    (245, 140, 60),   # orange
    (60, 185, 175),   # teal
    (240, 205, 70),   # mustard
    (130, 200, 90),   # lime
    (110, 170, 240),  # sky blue
    (240, 110, 120),  # coral
    (175, 130, 220),  # lavender
)

_SCALE = 4  # supersampling factor

_OUTLINE: RGB = (45, 30, 35)
_WHITE: RGB = (255, 255, 255)
_RIBBON: RGB = (225, 20, 50)
_HAIR_TIE: RGB = (45, 35, 85)
_NAVY: RGB = (28, 38, 95)
_SCARF_RED: RGB = (215, 30, 40)
_DRESS: RGB = (22, 20, 28)
_GOLD: RGB = (235, 190, 50)
_MOUTH: RGB = (150, 25, 40)
_TONGUE: RGB = (250, 125, 140)
_TEAR: RGB = (130, 195, 255)
_BLUSH: RGB = (250, 120, 140)


@dataclass(frozen=True)
class CharacterAttributes:
    """What the toy world draws; every field must be one of its vocabulary values."""

    emotion: str
    style: str
    hair_color: str
    eye_color: str
    hairstyle: str = "long hair"
    accessory: str = "none"

    def __post_init__(self) -> None:
        for name, choices in ATTRIBUTE_CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(
                    f"Unknown {name} {value!r}. Valid choices: {', '.join(choices)}."
                )

    @classmethod
    def random(cls, rng: random.Random) -> "CharacterAttributes":
        """Uniform over every field's values (one ``rng.choice`` per field, in field order)."""
        return cls(**{name: rng.choice(choices) for name, choices in ATTRIBUTE_CHOICES.items()})

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CharacterAttributes":
        """Build from a dict; extra keys (``file_name``, ``seed``...) are ignored."""
        missing = [n for n in ("emotion", "style", "hair_color", "eye_color") if n not in data]
        if missing:
            raise ValueError(f"CharacterAttributes.from_dict: missing fields {missing}")
        return cls(**{n: data[n] for n in ATTRIBUTE_CHOICES if n in data})

    def replace(self, **changes: str) -> "CharacterAttributes":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class CustomLook:
    """Drawing overrides outside the base vocabulary, used only to make LoRA training data.

    The built-in model never saw these: notebook 03 teaches one to it with a LoRA.
    ``render_character(attrs, seed, look=None)`` draws exactly as before.

    >>> look = CustomLook(hair_rgb=(150, 60, 230), star_clip=True)
    >>> render_character(CharacterAttributes("happy", "casual", "blue", "yellow"), 0, look=look).image.size
    (64, 64)
    """

    hair_rgb: RGB | None = None   # replaces the hair colour named in the attributes
    star_clip: bool = False       # a gold star hair ornament, on the side opposite a ribbon


@dataclass
class RenderResult:
    image: Image.Image
    attributes: CharacterAttributes
    variation: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- colour helpers


def _shade(c: RGB, f: float) -> RGB:
    """Multiply towards black (f<1) or towards white (f>1, as 2-f of the gap)."""
    if f <= 1.0:
        return tuple(int(round(v * f)) for v in c)  # type: ignore[return-value]
    return tuple(int(round(v + (255 - v) * (f - 1.0))) for v in c)  # type: ignore[return-value]


def _brightness(c: RGB, f: float) -> RGB:
    return tuple(max(0, min(255, int(round(v * f)))) for v in c)  # type: ignore[return-value]


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


# --------------------------------------------------------------------------- variation


def _draw_variation(rng: random.Random) -> dict[str, Any]:
    """All jitter for one render, drawn in a fixed order from ``rng``."""
    hue = rng.random()
    bg_top = _hsv(hue, rng.uniform(0.08, 0.30), rng.uniform(0.86, 0.98))
    hue2 = hue + rng.uniform(-0.15, 0.15)
    bg_bottom = _hsv(hue2, rng.uniform(0.08, 0.35), rng.uniform(0.72, 0.95))
    gradient = rng.random() < 0.5
    if not gradient:
        bg_bottom = bg_top
    skin_f = rng.uniform(-1.0, 1.0)
    skin = (
        int(round(255 - 4 * max(0.0, skin_f))),
        int(round(226 + 10 * skin_f)),
        int(round(204 + 12 * skin_f)),
    )
    return {
        "background": "gradient" if gradient else "solid",
        "bg_top": bg_top,
        "bg_bottom": bg_bottom,
        "dx": rng.uniform(-0.04, 0.04),
        "dy": rng.uniform(-0.04, 0.04),
        "scale": rng.uniform(0.94, 1.06),
        "skin": skin,
        "hair_brightness": rng.uniform(0.92, 1.08),
        "eye_brightness": rng.uniform(0.92, 1.08),
        "hoodie_color": rng.choice(HOODIE_PALETTE),
        "ribbon_side": rng.choice((-1, 1)),
    }


# --------------------------------------------------------------------------- canvas


class _Canvas:
    """ImageDraw in unit coordinates (0..1 of the face frame) with jitter applied."""

    def __init__(self, img: Image.Image, dx: float, dy: float, scale: float) -> None:
        self.img = img
        self.d = ImageDraw.Draw(img)
        self.S = img.size[0]
        self.dx, self.dy, self.s = dx, dy, scale

    def p(self, u: float, v: float) -> tuple[float, float]:
        return (
            (0.5 + (u - 0.5) * self.s + self.dx) * self.S,
            (0.5 + (v - 0.5) * self.s + self.dy) * self.S,
        )

    def pts(self, points) -> list[tuple[float, float]]:
        return [self.p(u, v) for u, v in points]

    def box(self, u0: float, v0: float, u1: float, v1: float) -> list[float]:
        x0, y0 = self.p(u0, v0)
        x1, y1 = self.p(u1, v1)
        return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]

    def w(self, width: float) -> int:
        return max(1, int(round(width * self.s * self.S)))

    # primitives ----------------------------------------------------------
    def ellipse(self, cx, cy, rx, ry, fill=None, outline=None, width=0.0):
        self.d.ellipse(self.box(cx - rx, cy - ry, cx + rx, cy + ry), fill=fill,
                       outline=outline, width=self.w(width) if outline else 0)

    def polygon(self, points, fill=None, outline=None, width=0.0):
        self.d.polygon(self.pts(points), fill=fill, outline=outline,
                       width=self.w(width) if outline else 0)

    def line(self, points, fill, width, joint="curve"):
        self.d.line(self.pts(points), fill=fill, width=self.w(width), joint=joint)

    def arc(self, cx, cy, rx, ry, start, end, fill, width):
        self.d.arc(self.box(cx - rx, cy - ry, cx + rx, cy + ry), start, end, fill=fill,
                   width=self.w(width))

    def pieslice(self, cx, cy, rx, ry, start, end, fill, outline=None, width=0.0):
        self.d.pieslice(self.box(cx - rx, cy - ry, cx + rx, cy + ry), start, end, fill=fill,
                        outline=outline, width=self.w(width) if outline else 0)

    def chord(self, cx, cy, rx, ry, start, end, fill, outline=None, width=0.0):
        self.d.chord(self.box(cx - rx, cy - ry, cx + rx, cy + ry), start, end, fill=fill,
                     outline=outline, width=self.w(width) if outline else 0)

    def outlined_polygon(self, points, fill, outline, width):
        """Filled polygon with a thick outline (outline drawn as a closed line)."""
        self.polygon(points, fill=fill)
        self.line(list(points) + [points[0]], fill=outline, width=width)


def _background(size: int, top: RGB, bottom: RGB) -> Image.Image:
    if top == bottom:
        return Image.new("RGB", (size, size), top)
    mask = Image.linear_gradient("L").resize((size, size))
    return Image.composite(Image.new("RGB", (size, size), bottom),
                           Image.new("RGB", (size, size), top), mask)


# --------------------------------------------------------------------------- geometry

# Face frame (unit coordinates before jitter).
FACE_CX = 0.5
EYE_Y = 0.47
EYE_DX = 0.112           # eye centre offset from the face centre
MOUTH_Y = 0.605
TORSO = [(0.40, 0.74), (0.60, 0.74), (0.76, 0.79), (0.84, 0.86), (0.87, 1.2),
         (0.13, 1.2), (0.16, 0.86), (0.24, 0.79)]
FACE = [(0.255, 0.44), (0.27, 0.54), (0.31, 0.615), (0.42, 0.685), (0.5, 0.71),
        (0.58, 0.685), (0.69, 0.615), (0.73, 0.54), (0.745, 0.44)]


def eye_boxes(seed: int) -> list[tuple[float, float, float, float]]:
    """Where ``render_character(..., seed)`` draws each eye: ``(x0, y0, x1, y1)`` as
    fractions of the image, whatever the attributes (the jitter comes from ``seed`` alone).

    Training uses it to weight the loss on the eyes, a few pixels wide but an attribute.

    >>> [tuple(round(v, 3) for v in box) for box in eye_boxes(3)][0]
    (0.296, 0.362, 0.428, 0.532)
    """
    var = _draw_variation(random.Random(int(seed)))
    s, dx, dy = var["scale"], var["dx"], var["dy"]
    rx, ry = 0.062, 0.080  # the bigger (surprised) eye: the box holds every emotion's
    boxes = []
    for side in (-1, 1):
        cx = FACE_CX + side * EYE_DX
        x0, x1 = (0.5 + (u - 0.5) * s + dx for u in (cx - rx, cx + rx))
        y0, y1 = (0.5 + (v - 0.5) * s + dy for v in (EYE_Y - ry, EYE_Y + ry))
        boxes.append((x0, y0, x1, y1))
    return boxes


def _mirror(points):
    return [(1.0 - u, v) for u, v in points]


# --------------------------------------------------------------------------- hair


def _draw_back_hair(c: _Canvas, style: str, hair: RGB, dark: RGB) -> None:
    ow = 0.012
    if style == "long hair":
        pts = [(0.5, 0.06), (0.70, 0.09), (0.80, 0.22), (0.83, 0.45), (0.85, 0.70),
               (0.90, 0.95), (0.92, 1.2), (0.08, 1.2), (0.10, 0.95), (0.15, 0.70),
               (0.17, 0.45), (0.20, 0.22), (0.30, 0.09)]
        c.outlined_polygon(pts, hair, dark, ow)
    elif style == "short hair":
        pts = [(0.5, 0.06), (0.70, 0.09), (0.80, 0.22), (0.81, 0.45), (0.80, 0.63),
               (0.74, 0.665), (0.26, 0.665), (0.20, 0.63), (0.19, 0.45), (0.20, 0.22),
               (0.30, 0.09)]
        c.outlined_polygon(pts, hair, dark, ow)
    else:  # twintails: just the cranium
        c.ellipse(0.5, 0.33, 0.285, 0.28, fill=hair, outline=dark, width=ow)


def _draw_twintails(c: _Canvas, hair: RGB, dark: RGB) -> None:
    tail = [(0.22, 0.22), (0.13, 0.24), (0.06, 0.34), (0.035, 0.50), (0.05, 0.66),
            (0.10, 0.80), (0.14, 0.88), (0.15, 0.76), (0.19, 0.62), (0.23, 0.46),
            (0.25, 0.30)]
    for pts in (tail, _mirror(tail)):
        c.outlined_polygon(pts, hair, dark, 0.012)
        # two strand lines per tail
        u0 = pts[0][0]
        sgn = -1 if u0 < 0.5 else 1
        c.line([(u0 + sgn * 0.04, 0.30), (u0 + sgn * 0.11, 0.50), (u0 + sgn * 0.09, 0.74)],
               dark, 0.008)
    for u in (0.215, 0.785):  # hair ties
        c.ellipse(u, 0.235, 0.035, 0.03, fill=_HAIR_TIE, outline=_OUTLINE, width=0.006)


def _draw_front_hair(c: _Canvas, style: str, hair: RGB, dark: RGB) -> None:
    ow = 0.012
    # Side locks framing the face.
    if style == "long hair":
        lock = [(0.25, 0.26), (0.21, 0.40), (0.20, 0.60), (0.21, 0.80), (0.22, 1.2),
                (0.29, 1.2), (0.28, 0.85), (0.275, 0.65), (0.27, 0.45), (0.29, 0.30)]
    elif style == "short hair":
        lock = [(0.25, 0.26), (0.21, 0.40), (0.205, 0.56), (0.22, 0.665), (0.30, 0.67),
                (0.285, 0.56), (0.275, 0.42), (0.29, 0.30)]
    else:
        lock = [(0.25, 0.26), (0.225, 0.40), (0.235, 0.53), (0.27, 0.58), (0.275, 0.45),
                (0.29, 0.30)]
    for pts in (lock, _mirror(lock)):
        c.outlined_polygon(pts, hair, dark, ow)
    # Bangs: the top of the head down to a zigzag fringe above the brows.
    bangs = [(0.23, 0.34), (0.22, 0.24), (0.28, 0.13), (0.38, 0.075), (0.5, 0.06),
             (0.62, 0.075), (0.72, 0.13), (0.78, 0.24), (0.77, 0.34),
             (0.72, 0.27), (0.68, 0.325), (0.62, 0.255), (0.56, 0.315), (0.5, 0.245),
             (0.44, 0.315), (0.38, 0.255), (0.32, 0.325), (0.28, 0.27)]
    c.outlined_polygon(bangs, hair, dark, ow)
    # Strands and a highlight band.
    for u0, u1 in ((0.40, 0.36), (0.5, 0.5), (0.60, 0.64)):
        c.line([(u0, 0.10), (u1, 0.23)], dark, 0.008)
    c.arc(0.5, 0.24, 0.20, 0.12, 215, 325, _shade(hair, 1.35), 0.02)


def _draw_ribbon(c: _Canvas, side: int) -> None:
    cu, cv = 0.5 + side * 0.2, 0.125
    dark = _shade(_RIBBON, 0.55)
    left = [(cu, cv), (cu - 0.14, cv - 0.075), (cu - 0.15, cv + 0.075)]
    right = [(cu, cv), (cu + 0.14, cv - 0.075), (cu + 0.15, cv + 0.075)]
    tails = [(cu - 0.02, cv), (cu - 0.06, cv + 0.12), (cu - 0.025, cv + 0.11), (cu, cv + 0.02),
             (cu + 0.025, cv + 0.11), (cu + 0.06, cv + 0.12), (cu + 0.02, cv)]
    c.outlined_polygon(tails, _RIBBON, dark, 0.01)
    c.outlined_polygon(left, _RIBBON, dark, 0.012)
    c.outlined_polygon(right, _RIBBON, dark, 0.012)
    c.ellipse(cu, cv, 0.032, 0.032, fill=_RIBBON, outline=dark, width=0.01)


# --------------------------------------------------------------------------- body & outfits


def _draw_body(c: _Canvas, style: str, skin: RGB, skin_dark: RGB, var: dict) -> None:
    # Neck with a shadow under the chin.
    c.polygon([(0.445, 0.62), (0.555, 0.62), (0.56, 0.80), (0.44, 0.80)], fill=skin)
    c.polygon([(0.445, 0.66), (0.555, 0.66), (0.555, 0.70), (0.5, 0.72), (0.445, 0.70)],
              fill=skin_dark)

    if style == "casual":
        col: RGB = tuple(var["hoodie_color"])  # type: ignore[assignment]
        dark = _shade(col, 0.62)
        c.outlined_polygon(TORSO, col, dark, 0.012)
        # Hood: a thick band around the neck opening.
        c.ellipse(0.5, 0.755, 0.16, 0.075, fill=dark)
        c.ellipse(0.5, 0.755, 0.105, 0.045, fill=skin)
        c.polygon([(0.445, 0.70), (0.555, 0.70), (0.555, 0.76), (0.445, 0.76)], fill=skin)
        # Drawstrings with tips.
        for u0, u1 in ((0.46, 0.445), (0.54, 0.555)):
            c.line([(u0, 0.80), (u1, 0.95)], _WHITE, 0.016)
            c.ellipse(u1, 0.955, 0.014, 0.014, fill=_WHITE, outline=dark, width=0.005)
        # Kangaroo pocket seam.
        c.line([(0.33, 1.0), (0.40, 0.97), (0.60, 0.97), (0.67, 1.0)], dark, 0.01)
    elif style == "formal":
        # Bare shoulders, strapless black dress, gold necklace.
        c.outlined_polygon(TORSO, skin, skin_dark, 0.010)
        dress = [(0.14, 0.90), (0.28, 0.875), (0.40, 0.87), (0.5, 0.905), (0.60, 0.87),
                 (0.72, 0.875), (0.86, 0.90), (0.87, 1.2), (0.13, 1.2)]
        c.outlined_polygon(dress, _DRESS, (0, 0, 0), 0.008)
        c.line([(0.26, 0.90), (0.40, 0.89), (0.5, 0.925), (0.60, 0.89), (0.74, 0.90)],
               (80, 75, 95), 0.008)
        c.arc(0.5, 0.745, 0.085, 0.075, 10, 170, _GOLD, 0.014)
        c.ellipse(0.5, 0.835, 0.022, 0.026, fill=_WHITE, outline=_GOLD, width=0.008)
    else:  # school_uniform
        top: RGB = (246, 246, 250)
        c.outlined_polygon(TORSO, top, (150, 150, 170), 0.010)
        collar = [(0.34, 0.745), (0.66, 0.745), (0.79, 0.80), (0.86, 0.87), (0.64, 0.88),
                  (0.5, 0.99), (0.36, 0.88), (0.14, 0.87), (0.21, 0.80)]
        c.outlined_polygon(collar, _NAVY, (10, 15, 45), 0.008)
        # White stripe along the collar edge.
        c.line([(0.19, 0.845), (0.37, 0.855), (0.5, 0.955), (0.63, 0.855), (0.81, 0.845)],
               _WHITE, 0.012)
        # V opening.
        c.polygon([(0.42, 0.745), (0.58, 0.745), (0.5, 0.86)], fill=skin)
        # Red neckerchief bow.
        bu, bv = 0.5, 0.87
        dark = _shade(_SCARF_RED, 0.55)
        c.outlined_polygon([(bu, bv), (bu - 0.10, bv - 0.045), (bu - 0.10, bv + 0.045)],
                           _SCARF_RED, dark, 0.008)
        c.outlined_polygon([(bu, bv), (bu + 0.10, bv - 0.045), (bu + 0.10, bv + 0.045)],
                           _SCARF_RED, dark, 0.008)
        c.outlined_polygon([(bu - 0.02, bv), (bu - 0.05, bv + 0.13), (bu, bv + 0.11),
                            (bu + 0.05, bv + 0.13), (bu + 0.02, bv)], _SCARF_RED, dark, 0.008)
        c.ellipse(bu, bv, 0.025, 0.025, fill=_SCARF_RED, outline=dark, width=0.008)


# --------------------------------------------------------------------------- face


def _draw_face(c: _Canvas, skin: RGB, skin_dark: RGB) -> None:
    c.ellipse(0.5, 0.42, 0.25, 0.25, fill=skin)
    c.polygon(FACE, fill=skin)
    # Jaw outline.
    c.line(FACE, skin_dark, 0.008)


def _draw_eye(c: _Canvas, ex: float, side: int, emotion: str, iris: RGB, skin: RGB) -> dict:
    """Draw one eye; ``side`` is -1 for the left eye, +1 for the right (inner = towards 0.5)."""
    ey = EYE_Y
    if emotion == "surprised":
        rx, ry, irx, iry = 0.062, 0.080, 0.040, 0.052
    else:
        rx, ry, irx, iry = 0.060, 0.066, 0.047, 0.063
    lash = (35, 25, 30)
    iris_dark = _shade(iris, 0.55)
    # Sclera, iris (darker rim), pupil, highlights.
    c.ellipse(ex, ey, rx, ry, fill=_WHITE)
    icy = ey + (0.0 if emotion == "surprised" else 0.006)
    c.ellipse(ex, icy, irx, iry, fill=iris_dark)
    c.ellipse(ex, icy + 0.004, irx - 0.008, iry - 0.008, fill=iris)
    c.ellipse(ex, icy + 0.028, irx - 0.018, iry * 0.35, fill=_shade(iris, 1.35))
    c.ellipse(ex, icy - 0.004, irx * 0.38, iry * 0.40, fill=_shade(iris, 0.28))
    c.ellipse(ex - 0.016, icy - 0.022, 0.014, 0.014, fill=_WHITE)
    c.ellipse(ex + 0.014, icy + 0.020, 0.007, 0.007, fill=_WHITE)
    outer = ex + side * rx  # outer corner x
    inner = ex - side * rx
    top = ey - ry
    if emotion == "angry":
        # Cut the top diagonally, lower towards the centre of the face.
        hi, lo = top + 0.25 * 2 * ry, top + 0.52 * 2 * ry
        c.polygon([(outer + side * 0.02, top - 0.03), (inner - side * 0.02, top - 0.03),
                   (inner - side * 0.02, lo), (outer + side * 0.02, hi)], fill=skin)
        c.line([(outer + side * 0.012, hi - 0.006), (inner, lo)], lash, 0.022)
    elif emotion == "surprised":
        c.arc(ex, ey, rx, ry, 190, 350, lash, 0.018)
        c.arc(ex, ey, rx, ry, 30, 150, lash, 0.008)
    else:
        # Thick upper lash line with a flick at the outer corner.
        c.arc(ex, ey + 0.006, rx + 0.004, ry + 0.002, 195, 345, lash, 0.022)
        c.line([(ex + side * rx * 0.85, ey - ry * 0.55), (outer + side * 0.016, ey - ry * 0.75)],
               lash, 0.014)
        if emotion == "happy":
            # Lower lid pushed up by the smile: a skin curve cutting the bottom.
            c.chord(ex, ey + ry * 1.35, rx * 1.25, ry * 0.75, 180, 360, fill=skin)
            c.arc(ex, ey + ry * 1.35, rx * 1.05, ry * 0.75, 205, 335, lash, 0.012)
            c.d.rectangle(c.box(ex - rx * 1.3, ey + ry * 1.35, ex + rx * 1.3, ey + ry * 1.6),
                          fill=skin)
        else:
            c.arc(ex, ey, rx, ry, 60, 120, lash, 0.008)
    return {"rx": rx, "ry": ry}


def _draw_brow(c: _Canvas, ex: float, side: int, emotion: str, color: RGB) -> None:
    inner = ex - side * 0.055
    outer = ex + side * 0.055
    if emotion == "angry":
        c.line([(outer, 0.345), (ex, 0.37), (inner + side * 0.008, 0.41)], color, 0.026)
    elif emotion == "sad":
        c.line([(outer, 0.405), (ex, 0.385), (inner, 0.345)], color, 0.022)
    elif emotion == "happy":
        c.arc(ex, 0.375, 0.055, 0.03, 200, 340, color, 0.018)
    elif emotion == "surprised":
        c.arc(ex, 0.355, 0.055, 0.04, 195, 345, color, 0.018)
    else:
        c.line([(outer, 0.372), (inner, 0.372)], color, 0.02)


def _draw_mouth(c: _Canvas, emotion: str, skin_dark: RGB) -> None:
    my = MOUTH_Y
    line = (90, 30, 35)
    if emotion == "happy":
        c.chord(0.5, my - 0.012, 0.062, 0.07, 0, 180, fill=_MOUTH, outline=line, width=0.008)
        c.chord(0.5, my + 0.045, 0.038, 0.022, 180, 360, fill=_TONGUE)
        c.line([(0.438, my - 0.012), (0.562, my - 0.012)], line, 0.01)
    elif emotion == "angry":
        # Bared teeth in a down-turned mouth.
        pts = [(0.435, my + 0.03), (0.455, my - 0.006), (0.545, my - 0.006), (0.565, my + 0.03)]
        c.polygon(pts, fill=_WHITE)
        c.line(pts + [pts[0]], line, 0.01)
        c.line([(0.45, my + 0.014), (0.55, my + 0.014)], (150, 120, 130), 0.006)
    elif emotion == "sad":
        c.arc(0.5, my + 0.03, 0.04, 0.03, 200, 340, line, 0.014)
    elif emotion == "surprised":
        c.ellipse(0.5, my + 0.008, 0.03, 0.042, fill=_MOUTH, outline=line, width=0.008)
    else:
        c.line([(0.458, my), (0.542, my)], (70, 25, 30), 0.015)


def _draw_blush(c: _Canvas) -> None:
    for cu in (0.33, 0.67):
        c.ellipse(cu, 0.555, 0.05, 0.022, fill=_BLUSH)
        for k in (-0.025, 0.0, 0.025):
            c.line([(cu + k - 0.006, 0.57), (cu + k + 0.006, 0.545)], (225, 80, 105), 0.006)


def _draw_tears(c: _Canvas, eyes: dict) -> None:
    dark = (70, 140, 220)
    for side in (-1, 1):
        ex = FACE_CX + side * EYE_DX
        top = EYE_Y + eyes["ry"] - 0.012
        pts = [(ex - 0.022, top), (ex + 0.022, top), (ex + 0.026, 0.62), (ex + side * 0.004, 0.665),
               (ex - 0.026, 0.62)]
        c.polygon(pts, fill=_TEAR)
        c.line([(ex - 0.022, top), (ex - 0.026, 0.62)], dark, 0.006)
        c.line([(ex + 0.022, top), (ex + 0.026, 0.62)], dark, 0.006)
        c.ellipse(ex, EYE_Y + eyes["ry"] - 0.004, 0.032, 0.01, fill=_TEAR)
        c.ellipse(ex - 0.005, 0.60, 0.006, 0.018, fill=_WHITE)


def _draw_anger_vein(c: _Canvas) -> None:
    cu, cv, r = 0.685, 0.19, 0.034
    red = (225, 25, 35)
    for sx, sy in ((-1, -1), (1, -1), (-1, 1), (1, 1)):
        c.arc(cu + sx * r * 1.1, cv + sy * r * 1.1, r, r,
              {(-1, -1): 0, (1, -1): 90, (-1, 1): 270, (1, 1): 180}[(sx, sy)],
              {(-1, -1): 90, (1, -1): 180, (-1, 1): 360, (1, 1): 270}[(sx, sy)], red, 0.02)


def _draw_glasses(c: _Canvas, eyes: dict) -> None:
    rim = (30, 25, 40)
    rx, ry = eyes["rx"] + 0.024, eyes["ry"] + 0.012
    for side in (-1, 1):
        ex = FACE_CX + side * EYE_DX
        c.d.rounded_rectangle(c.box(ex - rx, EYE_Y - ry, ex + rx, EYE_Y + ry),
                              radius=c.w(0.03), outline=rim, width=c.w(0.011))
        c.line([(ex + side * rx, EYE_Y - 0.02), (0.5 + side * 0.245, EYE_Y - 0.03)], rim, 0.01)
    c.line([(FACE_CX - EYE_DX + rx, EYE_Y - 0.01), (0.5, EYE_Y - 0.02),
            (FACE_CX + EYE_DX - rx, EYE_Y - 0.01)], rim, 0.011)


# --------------------------------------------------------------------------- main entry


def _draw_star_clip(c: _Canvas, side: int) -> None:
    import math

    cu, cv, r_out, r_in = 0.5 + side * 0.2, 0.15, 0.085, 0.036
    pts = [(cu + (r_out if k % 2 == 0 else r_in) * math.sin(k * math.pi / 5),
            cv - (r_out if k % 2 == 0 else r_in) * math.cos(k * math.pi / 5)) for k in range(10)]
    c.outlined_polygon(pts, _GOLD, _shade(_GOLD, 0.5), 0.01)


def render_character(attrs: CharacterAttributes, seed: int, size: int = 64,
                     look: CustomLook | None = None) -> RenderResult:
    """Draw ``attrs`` with the jitter of ``seed``; deterministic for ``(attrs, seed, size, look)``."""
    result = render_supersampled(attrs, seed, size, look)
    result.image = result.image.resize((size, size), Image.LANCZOS)
    return result


def render_supersampled(attrs: CharacterAttributes, seed: int, size: int = 64,
                        look: CustomLook | None = None) -> RenderResult:
    """The same drawing as :func:`render_character` before its downsampling: ``size * 4`` pixels,
    flat colours and hard shape boundaries (no antialiasing), so every boundary is exact.

    ``control.train`` takes its line-art controls from these boundaries.

    >>> render_supersampled(CharacterAttributes("happy", "casual", "blue", "yellow"), 0).image.size
    (256, 256)
    """
    if not isinstance(attrs, CharacterAttributes):
        raise TypeError(f"attrs must be a CharacterAttributes, got {type(attrs).__name__}")
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    rng = random.Random(int(seed))
    var = _draw_variation(rng)

    big = size * _SCALE
    img = _background(big, var["bg_top"], var["bg_bottom"])
    c = _Canvas(img, var["dx"], var["dy"], var["scale"])

    skin: RGB = var["skin"]
    skin_dark = _shade(skin, 0.80)
    base_hair = look.hair_rgb if look is not None and look.hair_rgb is not None else HAIR_RGB[attrs.hair_color]
    hair = _brightness(base_hair, var["hair_brightness"])
    hair_dark = _shade(hair, 0.55) if attrs.hair_color != "black" else (15, 12, 20)
    iris = _brightness(EYE_RGB[attrs.eye_color], var["eye_brightness"])
    brow = _shade(hair, 0.5) if attrs.hair_color not in ("black",) else (20, 16, 26)
    if attrs.hair_color in ("silver", "blonde", "pink"):
        brow = _shade(hair, 0.42)
    if base_hair is not HAIR_RGB[attrs.hair_color]:
        hair_dark, brow = _shade(hair, 0.55), _shade(hair, 0.5)

    _draw_back_hair(c, attrs.hairstyle, hair, hair_dark)
    _draw_body(c, attrs.style, skin, skin_dark, var)
    if attrs.hairstyle == "twintails":
        _draw_twintails(c, hair, hair_dark)
    _draw_face(c, skin, skin_dark)
    if attrs.emotion == "happy":
        _draw_blush(c)
    eyes: dict = {}
    for side in (-1, 1):
        eyes = _draw_eye(c, FACE_CX + side * EYE_DX, side, attrs.emotion, iris, skin)
    if attrs.emotion == "sad":
        _draw_tears(c, eyes)
    _draw_mouth(c, attrs.emotion, skin_dark)
    _draw_front_hair(c, attrs.hairstyle, hair, hair_dark)
    for side in (-1, 1):
        _draw_brow(c, FACE_CX + side * EYE_DX, side, attrs.emotion, brow)
    if attrs.emotion == "angry":
        _draw_anger_vein(c)
    if attrs.accessory == "glasses":
        _draw_glasses(c, eyes)
    elif attrs.accessory == "hair ribbon":
        _draw_ribbon(c, var["ribbon_side"])
    if look is not None and look.star_clip:
        _draw_star_clip(c, -var["ribbon_side"])

    return RenderResult(image=img, attributes=attrs, variation=var)
