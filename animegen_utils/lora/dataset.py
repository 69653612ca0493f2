"""Image + caption folders for LoRA training, in the three layouts people have.

>>> from animegen_utils.lora import load_image_dataset
>>> ds = load_image_dataset("training_data", resolution=512)   # prints a summary
>>> ds[0]["pixel_values"].shape, ds[0]["caption"]
(torch.Size([3, 512, 512]), 'happy anime')

Layouts (detected in this order):

1. **Hugging Face imagefolder**: ``metadata.jsonl`` at the top, one
   ``{"file_name": ..., "text": ...}`` per line.
2. **kohya repeat folders**: ``10_sakura/*.png`` with ``.txt`` captions beside the
   images; every image is seen ``10`` times per epoch.
3. **A folder per class** (the plan's layout): ``happy_anime/*.png``; the caption
   is the folder name with ``_`` as spaces (``happy anime``) unless the image has
   a ``.txt`` caption beside it.

Images are converted to RGB (transparency composited on white, EXIF rotation
applied), resized so the short side is ``resolution`` and centre-cropped. Files
that are not readable images (``.DS_Store``, truncated PNGs) are skipped and
reported in one warning.
"""

from __future__ import annotations

import json
import os
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = ["load_image_dataset", "ImageCaptionDataset", "Record"]

CAPTION_EXTS = (".txt", ".caption")
METADATA = "metadata.jsonl"
_NOT_IMAGES = {".txt", ".caption", ".json", ".jsonl", ".toml", ".yaml", ".yml", ".md"}
_REPEAT_DIR = re.compile(r"^(\d+)_(.+)$")
LAYOUTS = "a folder per class (happy_anime/*.png), kohya repeat folders (10_name/*.png + .txt) " \
          f"or a Hugging Face imagefolder ({METADATA} with file_name and text)"


@dataclass(frozen=True)
class Record:
    """One training image: its file, caption, group (folder or caption class) and repeats."""

    path: Path
    caption: str
    group: str
    repeats: int = 1


def _read_image(path: Path, resolution: int) -> np.ndarray:
    with Image.open(path) as im:
        im.load()  # truncated or corrupt files fail here, not later in training
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            im = Image.new("RGB", rgba.size, (255, 255, 255))
            im.paste(rgba, mask=rgba.getchannel("A"))
        else:
            im = im.convert("RGB")
    w, h = im.size
    scale = resolution / min(w, h)
    im = im.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BICUBIC)
    left, top = (im.width - resolution) // 2, (im.height - resolution) // 2
    return np.asarray(im.crop((left, top, left + resolution, top + resolution)), dtype=np.uint8)


def _sidecar_caption(image: Path) -> str | None:
    for ext in CAPTION_EXTS:
        cap = image.with_suffix(ext)
        if cap.is_file():
            return cap.read_text(encoding="utf-8").strip()
    return None


def _candidate_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() not in _NOT_IMAGES)


def _scan(root: Path) -> tuple[str, list[Record]]:
    if (root / METADATA).is_file():
        records = []
        for n, line in enumerate((root / METADATA).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "file_name" not in row or "text" not in row:
                raise ValueError(f"{root / METADATA} line {n} needs 'file_name' and 'text', got {sorted(row)}")
            records.append(Record(root / row["file_name"], str(row["text"]).strip(), "metadata.jsonl"))
        return "imagefolder", records
    records, kohya = [], False
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in [root, *folders]:
        match = _REPEAT_DIR.match(folder.name) if folder is not root else None
        kohya |= bool(match)
        repeats = int(match.group(1)) if match else 1
        default = (match.group(2) if match else folder.name).replace("_", " ").strip()
        for path in _candidate_files(folder):
            caption = _sidecar_caption(path)
            records.append(Record(path, caption if caption is not None else default, folder.name, repeats))
    return ("kohya" if kohya else "folders"), records


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory, so that printed outputs (notebooks,
    logs pasted into an issue) do not name the machine's folders."""
    try:
        return Path(os.path.relpath(path)).as_posix()
    except ValueError:  # another drive on Windows
        return str(path)


class ImageCaptionDataset(torch.utils.data.Dataset):
    """Images (uint8, already resized and cropped) with captions; repeats expand the length.

    ``ds[i]`` is ``{"pixel_values": float tensor in [-1, 1], (3, H, W), "caption": str, "index": int}``
    where ``index`` is the image's position in ``ds.records`` (for cached latents).
    """

    def __init__(self, records: list[Record], images: list[np.ndarray], resolution: int,
                 random_flip: bool, layout: str, root: Path, skipped: list[Path]):
        self.records, self.images, self.resolution = records, images, resolution
        self.random_flip, self.layout, self.root, self.skipped = random_flip, layout, root, skipped
        self._order = [i for i, r in enumerate(records) for _ in range(r.repeats)]
        self._flip_rng = random.Random(0)

    def __len__(self) -> int:
        return len(self._order)

    def pixel_values(self, image_index: int, flip: bool = False) -> torch.Tensor:
        arr = self.images[image_index][:, ::-1] if flip else self.images[image_index]
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)

    def __getitem__(self, i: int) -> dict:
        index = self._order[i]
        flip = self.random_flip and self._flip_rng.random() < 0.5
        return {"pixel_values": self.pixel_values(index, flip), "caption": self.records[index].caption,
                "index": index, "flip": flip}

    def summary(self) -> str:
        groups: dict[str, list[Record]] = {}
        for r in self.records:
            groups.setdefault(r.group, []).append(r)
        lines = [f"{len(self.records)} images, {len(self)} samples per epoch, layout: {self.layout} "
                 f"({_shown_path(self.root)})"]
        for name, recs in groups.items():
            reps = recs[0].repeats
            extra = f" x {reps} repeats = {len(recs) * reps} samples" if reps > 1 else ""
            lines.append(f"  {name}: {len(recs)} images{extra}, e.g. caption {recs[0].caption!r}")
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} unreadable or non-image files")
        return "\n".join(lines)


def load_image_dataset(path: str | Path, resolution: int = 64, random_flip: bool = False,
                       verbose: bool = True) -> ImageCaptionDataset:
    """Read a training folder (any of the three layouts) into memory.

    Args:
        path: the folder.
        resolution: output side in pixels (short side resized to it, then centre-cropped).
        random_flip: flip each sample horizontally with probability 0.5.
        verbose: print the per-folder summary.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"No training folder at {root}. Expected {LAYOUTS}.")
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8, got {resolution}")
    layout, candidates = _scan(root)
    records, images, skipped = [], [], []
    for rec in candidates:
        try:
            images.append(_read_image(rec.path, resolution))
            records.append(rec)
        except (OSError, ValueError, Image.DecompressionBombError):
            skipped.append(rec.path)
    if skipped:
        names = ", ".join(p.name for p in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        warnings.warn(f"skipped {len(skipped)} unreadable or non-image files in {root}: {names}", stacklevel=2)
    if not records:
        raise ValueError(f"No readable images in {root}. Looked for {LAYOUTS}; "
                         f"found {len(candidates)} candidate files ({len(skipped)} unreadable).")
    ds = ImageCaptionDataset(records, images, resolution, random_flip, layout, root, skipped)
    if verbose:
        print(ds.summary())
    return ds
