"""Is it still the same character? Measurements for notebook 07 (consistent characters).

>>> from animegen_utils.evaluate.consistency import face_similarity, identity_of, identity_kept
>>> face_similarity(picture, picture)
1.0
>>> mika = identity_of(scorer.predict([reference]))            # what the probe reads on her picture
>>> identity_kept(scorer.predict(images), mika)
{'hair_color': 0.9, 'eye_color': 0.4, 'hairstyle': 1.0, 'accessory': 0.8, 'all': 0.35}

Three numbers per way of drawing a character again:

* **identity kept** (``identity_kept``): the share of pictures whose hair colour, eye colour,
  hairstyle and accessory, as the attribute probe reads them, are the reference's
  (``evaluate.reference.IDENTITY``), per attribute and all four at once;
* **face similarity** (``face_similarity``): a pixel statistic on the face crop
  (``FACE_BOX``: rows 20-70 %, columns 25-75 % of the picture, where the toy world draws the
  face, eyes and fringe): ``1 - mean |a - b| / 255`` over RGB pixels of both crops at the same
  size. 1.0 means the same pixels; two unrelated toy-world characters score about 0.8-0.9, because
  skin and background are pale in both. It is blunt (a changed expression lowers it too) and is
  meant to compare ways on the same seeds, not as an absolute identity score;
* **emotion hit** (``emotion_hit``): the share whose probe-read emotion is the one asked for.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from .reference import IDENTITY

__all__ = ["FACE_BOX", "IDENTITY", "face_crop", "face_similarity", "mean_face_similarity", "identity_of",
           "identity_kept", "emotion_hit", "files_size", "rank_ways"]

#: The face region as fractions of the picture: (top, bottom) rows and (left, right) columns.
FACE_BOX = ((0.20, 0.70), (0.25, 0.75))


def face_crop(image: Image.Image, box: tuple[tuple[float, float], tuple[float, float]] = FACE_BOX,
              size: int = 64) -> np.ndarray:
    """The face region of ``image`` (RGB) resized to ``size`` × ``size``, as a float32 array in 0..255."""
    img = image.convert("RGB")
    w, h = img.size
    (r0, r1), (c0, c1) = box
    crop = img.crop((round(c0 * w), round(r0 * h), round(c1 * w), round(r1 * h)))
    return np.asarray(crop.resize((size, size), Image.BILINEAR), dtype=np.float32)


def face_similarity(a: Image.Image, b: Image.Image,
                    box: tuple[tuple[float, float], tuple[float, float]] = FACE_BOX) -> float:
    """``1 - mean |a - b| / 255`` over the face crops of two pictures of any sizes (1.0: identical)."""
    return float(1.0 - np.abs(face_crop(a, box) - face_crop(b, box)).mean() / 255.0)


def mean_face_similarity(images: Iterable[Image.Image], reference: Image.Image) -> float:
    """The mean ``face_similarity`` of each picture to ``reference``."""
    scores = [face_similarity(im, reference) for im in images]
    if not scores:
        raise ValueError("no images")
    return float(np.mean(scores))


def identity_of(readings: Mapping[str, Sequence[str]], keys: Sequence[str] = IDENTITY) -> dict[str, str]:
    """The identity the probe reads on one or more pictures of the character: the most common
    reading of each attribute (``readings`` as ``ProbeScorer.predict`` returns them)."""
    return {k: Counter(readings[k]).most_common(1)[0][0] for k in keys}


def identity_kept(readings: Mapping[str, Sequence[str]], identity: Mapping[str, str],
                  keys: Sequence[str] = IDENTITY) -> dict[str, float]:
    """Per attribute, the share of pictures read as ``identity``; ``"all"``: all of them at once."""
    n = len(readings[keys[0]])
    if n == 0:
        raise ValueError("no readings")
    hits = {k: [r == identity[k] for r in readings[k]] for k in keys}
    out = {k: sum(v) / n for k, v in hits.items()}
    out["all"] = sum(all(hits[k][i] for k in keys) for i in range(n)) / n
    return out


def emotion_hit(readings: Mapping[str, Sequence[str]], asked: Sequence[str]) -> float:
    """The share of pictures whose probe-read emotion is the one asked for (same order)."""
    read = readings["emotion"]
    if len(read) != len(asked) or not asked:
        raise ValueError(f"{len(read)} readings for {len(asked)} requests")
    return sum(r == a for r, a in zip(read, asked)) / len(asked)


def files_size(paths: Iterable[str | Path]) -> tuple[int, int]:
    """(number of files, total bytes) of the files or folders (recursively) a way needs."""
    count = size = 0
    for p in map(Path, paths):
        for f in ([p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())):
            count, size = count + 1, size + f.stat().st_size
    return count, size


def rank_ways(results: Mapping[str, Mapping[str, float]], by: str) -> list[tuple[int, str, float]]:
    """(rank, way, value) sorted by ``results[way][by]``, highest first; ties share a rank."""
    rows = sorted(results.items(), key=lambda kv: -kv[1][by])
    ranked, last, rank = [], None, 0
    for i, (way, r) in enumerate(rows, start=1):
        if r[by] != last:
            rank, last = i, r[by]
        ranked.append((rank, way, float(r[by])))
    return ranked
