"""Write or stream toy-world datasets.

Layout written by :func:`make_dataset`::

    out_dir/training_data/metadata.jsonl
    out_dir/training_data/happy_anime/000000.png   (+ 000000.txt caption)
    out_dir/training_data/angry_anime/000001.png
    ...

Sample ``i`` of ``(n, seed)`` depends only on ``(seed, i)`` (its own
``random.Random``), so :func:`iter_samples` can be started at any index and a
bigger ``n`` extends a smaller one with the same first samples. Emotions cycle
``EMOTIONS[i % 5]`` so every emotion gets ``n / 5`` samples.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Iterator

from animegen_utils.prompts import EMOTIONS

from .captions import caption_for
from .render import ATTRIBUTE_CHOICES, CharacterAttributes, RenderResult, render_character

__all__ = ["make_dataset", "iter_samples", "render_arrays", "render_seed", "sample_attributes", "load_dataset",
           "emotion_folder"]

TRAINING_DIR = "training_data"
METADATA_FILE = "metadata.jsonl"


def emotion_folder(emotion: str) -> str:
    return f"{emotion}_anime"


def _sample_rng(seed: int, index: int) -> random.Random:
    # str seeds are hashed with SHA-512 by random.Random: stable across runs/platforms.
    return random.Random(f"animegen-toyworld:{int(seed)}:{int(index)}")


def sample_attributes(index: int, seed: int = 0) -> tuple[CharacterAttributes, random.Random]:
    """The attributes of sample ``index`` and its rng (positioned for the caption/render seed)."""
    rng = _sample_rng(seed, index)
    values = {name: rng.choice(choices) for name, choices in ATTRIBUTE_CHOICES.items()}
    values["emotion"] = EMOTIONS[index % len(EMOTIONS)]
    return CharacterAttributes(**values), rng


def render_seed(index: int, seed: int = 0) -> int:
    """The seed ``render_character`` draws sample ``index`` of ``seed`` with (see ``iter_samples``)."""
    return sample_attributes(index, seed)[1].getrandbits(31)


def iter_samples(n: int, seed: int = 0, size: int = 64, start: int = 0,
                 shuffle: bool = True, extras: bool = True
                 ) -> Iterator[tuple[RenderResult, str, int]]:
    """Yield ``(RenderResult, caption, render_seed)`` for samples ``start .. start+n-1``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    for i in range(start, start + n):
        attrs, rng = sample_attributes(i, seed)
        drawn_with = rng.getrandbits(31)
        caption = caption_for(attrs, rng, shuffle=shuffle, extras=extras)
        yield render_character(attrs, drawn_with, size=size), caption, drawn_with


def _render_chunk(args: tuple[int, int, int, int]):
    import numpy as np

    start, n, seed, size = args
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    attrs = []
    for k, (result, _caption, _seed) in enumerate(iter_samples(n, seed=seed, size=size, start=start)):
        images[k] = np.asarray(result.image, dtype=np.uint8)
        attrs.append(result.attributes)
    return images, attrs


def render_arrays(n: int, seed: int = 0, size: int = 64, workers: int | None = None,
                  progress: bool = True, desc: str = "render"):
    """Samples ``0 .. n-1`` as one ``(n, size, size, 3)`` uint8 array and their attributes.

    Rendered in chunks on every core; since sample ``i`` depends only on
    ``(seed, i)``, the pixels are the same as rendering in order.

    >>> images, attrs = render_arrays(4, seed=0, size=32, workers=1, progress=False)
    >>> images.shape, attrs[0].emotion
    ((4, 32, 32, 3), 'happy')
    """
    import os
    from concurrent.futures import ProcessPoolExecutor

    import numpy as np
    from tqdm.auto import tqdm

    chunk = 500
    jobs = [(i, min(chunk, n - i), seed, size) for i in range(0, n, chunk)]
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    attrs: list[CharacterAttributes] = []
    workers = workers or max(1, min(len(jobs), os.cpu_count() or 1))
    bar = tqdm(total=n, desc=desc, disable=not progress)
    if workers == 1:
        results = map(_render_chunk, jobs)
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_render_chunk, jobs)
    for (start, k, _, _), (arr, chunk_attrs) in zip(jobs, results):
        images[start:start + k] = arr
        attrs += chunk_attrs
        bar.update(k)
    bar.close()
    if workers != 1:
        pool.shutdown()
    return images, attrs


def make_dataset(out_dir: str | Path, n: int, seed: int = 0, size: int = 64,
                 progress: bool = True) -> Path:
    """Render ``n`` samples to ``out_dir/training_data``; returns that training_data path."""
    root = Path(out_dir) / TRAINING_DIR
    root.mkdir(parents=True, exist_ok=True)
    for emotion in EMOTIONS:
        (root / emotion_folder(emotion)).mkdir(exist_ok=True)
    samples = iter_samples(n, seed=seed, size=size)
    if progress:
        from tqdm.auto import tqdm

        samples = tqdm(samples, total=n, desc="toyworld", unit="img")
    lines = []
    for i, (result, caption, drawn_with) in enumerate(samples):
        attrs = result.attributes
        rel = f"{emotion_folder(attrs.emotion)}/{i:06d}.png"
        result.image.save(root / rel, format="PNG")
        (root / rel).with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
        record = {"file_name": rel, "text": caption, **attrs.to_dict(), "seed": drawn_with}
        lines.append(json.dumps(record, ensure_ascii=False))
    tmp = root / (METADATA_FILE + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tmp.replace(root / METADATA_FILE)
    return root


def load_dataset(root: str | Path) -> list[dict]:
    """Read ``metadata.jsonl`` back (``root`` is ``out_dir`` or its ``training_data``).

    Each record is the stored JSON object plus ``"path"``: the image's absolute path.
    """
    root = Path(root)
    if not (root / METADATA_FILE).exists() and (root / TRAINING_DIR / METADATA_FILE).exists():
        root = root / TRAINING_DIR
    meta = root / METADATA_FILE
    if not meta.exists():
        raise FileNotFoundError(f"No {METADATA_FILE} in {root} (run make_dataset first)")
    records = []
    with meta.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                record = json.loads(line)
                record["path"] = str((root / record["file_name"]).resolve())
                records.append(record)
    return records
