"""Hand-drawn-style sample sketches, made by project code (not the toy renderer's shapes).

>>> from animegen_utils.control.sketches import draw_sketch, SKETCHES
>>> paper = draw_sketch("tilted")          # 384x384 pencil-on-paper picture, RGB
>>> control = sketch_to_control(paper, size=64)

Each sketch is a few dozen pencil strokes: every stroke is a smooth curve with a
slow wobble along its length (a hand, not a ruler), a random pressure (width),
slightly overshooting ends, on off-white paper with grain and uneven light, as a
phone photo of a pencil drawing looks. The proportions differ from the renderer's
(bigger or smaller head, longer neck, tilted head, shifted off centre), so a
ControlNet that only memorised the renderer's outlines would not follow them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Pose:
    """Where and how the figure is drawn, in units of the picture side."""

    cx: float = 0.5
    cy: float = 0.42       # face centre
    head: float = 0.21     # face half-width
    tilt: float = 0.0      # degrees, clockwise
    neck: float = 0.10     # neck length below the chin
    shoulders: float = 0.42
    hair: str = "long"     # long | short | twintails
    mouth: str = "smile"   # smile | open | flat


SKETCHES: dict[str, tuple[Pose, int]] = {
    "tilted": (Pose(cx=0.46, cy=0.40, head=0.22, tilt=-12.0, hair="long", mouth="smile"), 1),
    "big_head": (Pose(cx=0.52, cy=0.44, head=0.27, neck=0.06, shoulders=0.46, hair="short", mouth="open"), 2),
    "small_twintails": (Pose(cx=0.55, cy=0.45, head=0.17, tilt=8.0, neck=0.12, shoulders=0.34,
                             hair="twintails", mouth="flat"), 3),
}


def _curve(points: np.ndarray, n: int = 64) -> np.ndarray:
    """Catmull-Rom spline through ``points`` (k x 2), sampled at ``n`` points."""
    p = np.vstack([points[:1], points, points[-1:]])
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        for t in np.linspace(0, 1, max(2, n // (len(points) - 1)), endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(0.5 * (2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                              + (-p0 + 3 * p1 - 3 * p2 + p3) * t3))
    out.append(p[-2])
    return np.array(out)


def _ellipse(cx: float, cy: float, rx: float, ry: float, start: float = 0, end: float = 360, n: int = 48) -> np.ndarray:
    a = np.radians(np.linspace(start, end, n))
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


def _figure(pose: Pose) -> list[tuple[np.ndarray, float]]:
    """The strokes of the figure (point arrays in face units, centre (0, 0)) with relative widths."""
    s: list[tuple[np.ndarray, float]] = []
    # Face: cheeks down to a pointed chin (anime style), not an ellipse.
    s.append((_curve(np.array([[-1.0, -0.2], [-0.95, 0.35], [-0.6, 0.85], [0.0, 1.15]])), 1.0))
    s.append((_curve(np.array([[1.0, -0.2], [0.95, 0.35], [0.6, 0.85], [0.0, 1.15]])), 1.0))
    # Hair: a dome over the head and bangs in a zigzag.
    s.append((_curve(np.array([[-1.2, 0.3], [-1.25, -0.5], [-0.8, -1.15], [0.0, -1.35], [0.8, -1.15],
                               [1.25, -0.5], [1.2, 0.3]])), 1.2))
    bangs = [[-1.05, -0.25]]
    for i, x in enumerate(np.linspace(-0.8, 0.85, 7)):
        bangs.append([x, -0.15 if i % 2 == 0 else -0.6])
    bangs.append([1.05, -0.25])
    s.append((np.array(bangs, dtype=float), 0.9))
    if pose.hair == "long":
        s.append((_curve(np.array([[-1.2, 0.3], [-1.3, 1.0], [-1.35, 1.9], [-1.2, 2.5]])), 1.1))
        s.append((_curve(np.array([[1.2, 0.3], [1.3, 1.0], [1.35, 1.9], [1.2, 2.5]])), 1.1))
    elif pose.hair == "short":
        s.append((_curve(np.array([[-1.2, 0.3], [-1.15, 0.8], [-0.85, 1.0]])), 1.1))
        s.append((_curve(np.array([[1.2, 0.3], [1.15, 0.8], [0.85, 1.0]])), 1.1))
    else:  # twintails: two long tufts from the sides of the head
        for side in (-1, 1):
            s.append((_curve(np.array([[side * 1.1, -0.7], [side * 1.8, -0.4], [side * 2.0, 0.6],
                                       [side * 1.7, 1.6]])), 1.1))
            s.append((_curve(np.array([[side * 1.15, -0.3], [side * 1.45, 0.4], [side * 1.4, 1.2],
                                       [side * 1.7, 1.6]])), 1.0))
    # Eyes: big ovals with irises and a heavier upper lid; brows.
    for side in (-1, 1):
        ex = side * 0.42
        s.append((_ellipse(ex, 0.22, 0.22, 0.27, 200, 340), 1.5))          # upper lid
        s.append((_ellipse(ex, 0.22, 0.19, 0.25, 20, 160), 0.7))           # lower lid
        s.append((_ellipse(ex, 0.26, 0.11, 0.16), 0.8))                    # iris
        s.append((_ellipse(ex + 0.02, 0.20, 0.04, 0.05), 0.6))             # highlight
        s.append((_ellipse(ex, -0.02, 0.22, 0.10, 200, 330), 0.8))         # brow
    # Nose and mouth.
    s.append((np.array([[0.02, 0.52], [0.0, 0.58]]), 0.6))
    if pose.mouth == "smile":
        s.append((_ellipse(0.0, 0.62, 0.18, 0.12, 20, 160), 0.9))
    elif pose.mouth == "open":
        s.append((_ellipse(0.0, 0.76, 0.12, 0.09), 0.9))
    else:
        s.append((np.array([[-0.12, 0.78], [0.12, 0.78]]), 0.9))
    return s


def _body(pose: Pose, chin_y: float) -> list[tuple[np.ndarray, float]]:
    """Neck and shoulders in picture units (they do not tilt with the head)."""
    cx, h, n, w = pose.cx, pose.head, pose.neck, pose.shoulders
    top = chin_y - 0.05 * h
    base = top + n + 0.05
    s = [(np.array([[cx - 0.32 * h, top], [cx - 0.30 * h, base]]), 1.0),
         (np.array([[cx + 0.32 * h, top], [cx + 0.30 * h, base]]), 1.0)]
    for side in (-1, 1):
        s.append((_curve(np.array([[cx + side * 0.30 * h, base], [cx + side * w * 0.55, base + 0.03],
                                   [cx + side * w * 0.9, base + 0.10], [cx + side * w, 1.02]])), 1.1))
    # A collar: a V from the neck base.
    s.append((np.array([[cx - 0.45 * h, base + 0.02], [cx, base + 0.12], [cx + 0.45 * h, base + 0.02]]), 0.9))
    return s


def _wobble(points: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Shift each point sideways by a slow random wave along the stroke, and overshoot the ends."""
    d = np.gradient(points, axis=0)
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-9
    t = np.linspace(0, 1, len(points))
    wave = sum(rng.normal(0, amount / (k + 1)) * np.sin(2 * math.pi * (k + 1) * t + rng.uniform(0, 6.3))
               for k in range(3))
    out = points + normal * wave[:, None]
    overshoot = rng.uniform(0.0, 0.04, size=2)
    head = out[0] + (out[0] - out[min(2, len(out) - 1)]) * overshoot[0] * 10
    tail = out[-1] + (out[-1] - out[max(-3, -len(out))]) * overshoot[1] * 10
    return np.vstack([head, out, tail])


HAIRS, MOUTHS = ("long", "short", "twintails"), ("smile", "open", "flat")


def random_pose(rng: np.random.Generator) -> Pose:
    """A head-and-shoulders pose as a person might draw one: anywhere near the middle, any head size,
    tilted either way, with the whole head and the shoulders' start inside the picture.

    >>> random_pose(np.random.default_rng(0)).hair in HAIRS
    True
    """
    head = float(rng.uniform(0.13, 0.27))
    neck = float(rng.uniform(0.04, 0.14))
    # Hair top at cy - 1.35 head, the neck's base at cy + 1.15 head + neck + 0.05: both inside.
    cy = float(rng.uniform(0.03 + 1.35 * head, max(0.03 + 1.35 * head, 0.92 - 1.2 * head - neck)))
    cx = float(rng.uniform(0.5 - (0.42 - 1.2 * head), 0.5 + (0.42 - 1.2 * head)))
    return Pose(cx=cx, cy=cy, head=head, tilt=float(rng.uniform(-20, 20)), neck=neck,
                shoulders=float(rng.uniform(0.28, 0.5)), hair=str(rng.choice(HAIRS)),
                mouth=str(rng.choice(MOUTHS)))


def draw_sketch(name: str | Pose = "tilted", size: int = 384, paper: bool = True, seed: int | None = None
                ) -> Image.Image:
    """A pencil drawing (RGB) of one of ``SKETCHES``, or of any ``Pose`` (``seed`` then picks the
    strokes' wobble). ``paper=False``: clean black lines on white.

    >>> draw_sketch(random_pose(np.random.default_rng(5)), seed=5).size
    (384, 384)
    """
    if isinstance(name, Pose):
        pose, seed = name, 0 if seed is None else seed
    elif name in SKETCHES:
        pose, default_seed = SKETCHES[name]
        seed = default_seed if seed is None else seed
    else:
        raise ValueError(f"Unknown sketch {name!r}. Valid choices: {', '.join(SKETCHES)}, or a Pose.")
    rng = np.random.default_rng(seed)
    strokes: list[tuple[np.ndarray, float]] = []
    theta = math.radians(pose.tilt)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    for pts, width in _figure(pose):
        pts = pts @ rot.T * pose.head + np.array([pose.cx, pose.cy])
        strokes.append((pts, width))
    chin = np.array([0.0, 1.15]) @ rot.T * pose.head + np.array([pose.cx, pose.cy])
    strokes += _body(pose, float(chin[1]))

    canvas = np.full((size, size), 255, dtype=np.uint8)
    for pts, width in strokes:
        pts = _wobble(pts * size, rng, amount=size * 0.004)
        thickness = max(1, int(round(size / 110 * width * rng.uniform(0.8, 1.25))))
        shade = int(rng.uniform(25, 70))  # pencil pressure
        cv2.polylines(canvas, [np.round(pts * 4).astype(np.int32)], False, shade, thickness, cv2.LINE_AA, shift=2)
    if not paper:
        return Image.fromarray(canvas).convert("RGB")
    # Off-white paper, grain, a soft shadow across the page (a photo taken by a window).
    yy, xx = np.mgrid[0:size, 0:size] / size
    light = 235 - 40 * (xx * 0.6 + yy * 0.4)
    grain = rng.normal(0, 5, (size, size))
    photo = np.minimum(light + grain, canvas.astype(float) * light / 255 + grain)
    rgb = np.stack([photo, photo * 0.985, photo * 0.95], axis=2)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def save_sketches(folder: str | Path) -> list[Path]:
    """Write every sketch to ``folder/<name>.jpg`` (how ``data/sketches`` was made): JPEG, as a
    phone photo of a drawing would be, compression artefacts included."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in SKETCHES:
        path = folder / f"{name}.jpg"
        draw_sketch(name).save(path, quality=85)
        paths.append(path)
    return paths


def random_sketches(n: int, seed: int = 0, size: int = 384) -> list[tuple[Pose, Image.Image]]:
    """``n`` pencil sketches in random poses (``random_pose``): a held-out set for edge adherence.

    >>> [(pose.hair, photo.size) for pose, photo in random_sketches(2, seed=1)]  # doctest: +SKIP
    """
    rng = np.random.default_rng([seed, 7177])
    poses = [random_pose(rng) for _ in range(n)]
    return [(pose, draw_sketch(pose, size=size, seed=seed * 100_003 + i)) for i, pose in enumerate(poses)]
