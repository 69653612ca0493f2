"""What every training loop of the kit shares (base model, ControlNet, LCM-LoRA, IP-Adapter).

>>> from animegen_utils.training import atomic_save, warmup_cosine
>>> atomic_save({"step": 3}, Path("runs/x/checkpoint.pt"))     # never a half-written checkpoint
>>> warmup_cosine(0, total=100, base=1e-3, warmup=10)
0.0001
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_save", "warmup_cosine"]


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, then rename it over ``path``: a run killed mid-write
    leaves the previous checkpoint intact, so the next run resumes from it."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def warmup_cosine(step: int, total: int, base: float, warmup: int) -> float:
    """The learning rate at ``step``: linear warm-up over ``warmup`` steps, then a cosine from
    ``base`` down to a tenth of it at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
