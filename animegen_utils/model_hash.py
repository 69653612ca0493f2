"""A short hash of a model's weights, recorded in every PNG beside the model's name.

A name says which model drew a picture, not which weights: ``tiny`` is retrained,
a checkpoint file is replaced by a newer one of the same name. ``reproduce`` compares
the hash in the PNG with the loaded model's, so a changed model is reported as
such rather than as rounding.

The hash is A1111's ``Model hash`` for a single file (the first 10 hex digits of
the file's SHA-256), and for a diffusers folder the same over its UNet, text encoder
and VAE weight files (the ones loaded: the ``variant``'s, e.g. ``fp16``, when one is
given). It reads the files once per process (a few seconds for SD1.5's 2 to 4 GB).

>>> from animegen_utils.model_hash import model_hash
>>> from animegen_utils.pipelines import TINY_MODEL_DIR
>>> len(model_hash(TINY_MODEL_DIR))
10
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: Hex digits kept, as A1111's ``Model hash``.
HASH_LENGTH = 10
_COMPONENTS = ("unet", "text_encoder", "vae")
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_CACHE: dict[tuple, str] = {}


def _variant_of(name: str) -> str | None:
    # diffusion_pytorch_model.fp16.safetensors -> "fp16"; model-00001-of-00002.safetensors -> None
    parts = name.split(".")
    return parts[-2] if len(parts) >= 3 else None


def weight_files(folder: Path, variant: str | None = None) -> list[Path]:
    """The UNet, text-encoder and VAE weight files ``from_pretrained(variant=...)`` loads from ``folder``."""
    files: list[Path] = []
    for component in _COMPONENTS:
        candidates = sorted(p for p in (folder / component).glob("*") if p.suffix in _WEIGHT_SUFFIXES)
        chosen = [p for p in candidates if _variant_of(p.name) == variant] or \
                 [p for p in candidates if _variant_of(p.name) is None]
        safetensors = [p for p in chosen if p.suffix == ".safetensors"]
        files += safetensors or chosen
    return files


def _sha256(files: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in files:
        if len(files) > 1:  # a folder: which file a byte came from is part of the weights
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()[:HASH_LENGTH]


def _local_path(model: str) -> Path | None:
    if os.path.exists(model):
        return Path(model)
    try:  # a Hub id: its cached snapshot, when there is one
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except (OSError, ValueError):  # not cached, or not a repo id: the hash is unknown, not an error
        return None


def model_hash(model: str | os.PathLike, variant: str | None = None) -> str | None:
    """The short weights hash of ``model`` (a diffusers folder, a single file or a cached Hub id), or None if unknown."""
    path = _local_path(str(model))
    if path is None:
        return None
    files = [path] if path.is_file() else weight_files(path, variant)
    if not files:
        return None
    stats = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    key = (stats, variant)
    if key not in _CACHE:
        _CACHE[key] = _sha256(files, path if path.is_dir() else path.parent)
    return _CACHE[key]
