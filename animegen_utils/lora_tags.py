"""A1111's ``<lora:name:weight>`` prompt tags: find the LoRA in the user's folders and use it for one call.

>>> [g] = generate(pipe, "1girl, <lora:mika:0.8>, smile", lora_dirs=["~/sd/models/Lora"])  # doctest: +SKIP

A1111 looks the name up in its ``models/Lora`` folder; the kit looks in the
folders given as ``lora_dirs`` for ``name.safetensors`` (kohya/A1111 or diffusers
keys), ``name.pt``/``name.ckpt``, or a diffusers folder ``name/`` with
``pytorch_lora_weights.safetensors``. The LoRA is active for that ``generate``
call only, at the tag's weight (unet and text encoder alike, as A1111's default).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from .adapters import active_adapters, load_lora, set_lora_scale, unload_lora

LORA_SUFFIXES = (".safetensors", ".pt", ".ckpt")


class LoraNotFoundError(FileNotFoundError):
    """A ``<lora:name:w>`` tag whose LoRA is in none of the ``lora_dirs``."""


def _as_dirs(lora_dirs: str | Path | Sequence[str | Path] | None) -> list[Path]:
    if lora_dirs is None:
        return []
    if isinstance(lora_dirs, (str, Path)):
        lora_dirs = [lora_dirs]
    return [Path(d).expanduser() for d in lora_dirs]


def find_lora(name: str, lora_dirs: str | Path | Sequence[str | Path] | None) -> Path:
    """The file or folder for LoRA ``name`` in ``lora_dirs`` (searched in order, then their subfolders).

    >>> find_lora("mika", ["loras"])  # doctest: +SKIP
    PosixPath('loras/mika.safetensors')
    """
    dirs = _as_dirs(lora_dirs)
    if not dirs:
        raise LoraNotFoundError(f"The prompt asks for LoRA {name!r} (<lora:{name}:...>) but no lora_dirs= was "
                                "given; pass the folder that holds it, e.g. lora_dirs=['stable-diffusion-webui/models/Lora']")
    candidates = [f"{name}{suffix}" for suffix in LORA_SUFFIXES]
    for folder in dirs:
        for pattern in ("", "**/"):  # A1111 also finds LoRAs in subfolders
            for candidate in candidates:
                hits = sorted(folder.glob(pattern + candidate))
                if hits:
                    return hits[0]
            if (folder / name / "pytorch_lora_weights.safetensors").is_file():
                return folder / name
    raise LoraNotFoundError(f"LoRA {name!r} not found: looked for {', '.join(candidates)} or a folder {name}/ in "
                            f"{', '.join(str(d) for d in dirs)}")


def adapter_name(name: str) -> str:
    """The kit's adapter name for an A1111 LoRA tag: ``a1111_`` plus the name in lower case and underscores."""
    return "a1111_" + (re.sub(r"\W+", "_", name).strip("_").lower() or "lora")


_STATE = "_animegen_tag_loras"  # on a pipeline: [(adapter, scale before or None)] loaded for the current call


def apply_prompt_loras(pipe, loras: Sequence[tuple[str, float]], lora_dirs) -> list[str]:
    """Load the tags' LoRAs into ``pipe`` at their weights; ``release_prompt_loras`` puts it back.

    Every LoRA is found before any is loaded, so a missing one changes nothing.
    ``generate`` calls ``release_prompt_loras`` after drawing and again first thing
    in the next call, so even an interrupted call leaves no tag LoRA behind.
    """
    release_prompt_loras(pipe)
    found = [(name, weight, find_lora(name, lora_dirs)) for name, weight in loras]
    before = active_adapters(pipe)
    state: list[tuple[str, float | None]] = []
    setattr(pipe, _STATE, state)
    for name, weight, path in found:
        adapter = adapter_name(name)
        if adapter in before:
            set_lora_scale(pipe, adapter, weight)
        else:
            load_lora(pipe, path, adapter_name=adapter, scale=weight)
        state.append((adapter, before.get(adapter)))
    return [a for a, _ in state]


def release_prompt_loras(pipe) -> None:
    """Undo ``apply_prompt_loras``: unload the LoRAs it loaded, restore the scales it changed."""
    for adapter, scale in reversed(getattr(pipe, _STATE, None) or []):
        if scale is not None:
            set_lora_scale(pipe, adapter, scale)
        elif adapter in active_adapters(pipe):
            unload_lora(pipe, adapter)
    setattr(pipe, _STATE, [])
