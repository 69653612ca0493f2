"""A pipeline's adapters fused into the shared weights while they are active, and unfused exactly.

An unfused LoRA layer runs its base layer and then, for every adapter, two more matmuls
(``x A^T B^T``), on every step. Fused (peft's ``merge``, what diffusers' ``fuse_lora`` does), the
layer is one matmul with ``W + s B A``. At batch 1 on the built-in model the unfused layers made
an LCM-4 image cost 1.9x the fused one (issue 22's measurement).

Pipelines of one model share their UNet and text encoder, so a fused adapter shows through every
pipeline sharing them. ``activate_adapters`` (which ``generate`` calls first) therefore fuses the
calling pipeline's adapters, and takes them out again before another pipeline activates different
ones, and before the kit loads, unloads or deletes any adapter. The original weights are copied
back (kept on the CPU), not subtracted: ``W + D - D`` is not ``W`` in floating point, and a plain
pipeline must draw the same pixels after a LoRA pipeline ran as before.

>>> from animegen_utils.adapters import fused_adapters, set_fusing
>>> generate(lora_pipe, "1girl")        # fuses lora_pipe's adapters, at their scales
>>> fused_adapters(lora_pipe)
{'mika': 0.8}
>>> generate(plain, "1girl")            # original weights back, bit for bit
>>> set_fusing(lora_pipe, False)        # peft's unfused layers for this pipeline (e.g. to compare)

A switch costs one ``B @ A`` per adapted layer to fuse and one copy of those layers' weights to
unfuse: ``benchmarks/bench_fast.py`` measures both on the built-in model; for SD1.5 with
``lcm-lora-sdv1-5`` (rank 64 on every linear and conv layer of the UNet, ~0.8 G weights touched)
it is a few hundred milliseconds on a GPU, once per switch, not per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer

_FUSED = "_animegen_fused"      # on a shared UNet: the FusedState of what is merged into it
_FUSING = "animegen_fuse_adapters"  # on a pipeline: False to run its adapters unfused


@dataclass
class _Layer:
    layer: BaseTunerLayer
    names: list[str]
    weight: torch.Tensor
    bias: torch.Tensor | None


@dataclass
class FusedState:
    """What is merged into a shared UNet and text encoder: the (adapter, scale) pairs, in the
    order they were merged, and each merged layer's original weights."""

    key: tuple[tuple[str, float], ...]
    layers: list[_Layer] = field(default_factory=list)


def _state(unet: Any) -> FusedState | None:
    return getattr(unet, _FUSED, None)


def set_fusing(pipe: Any, enabled: bool = True) -> None:
    """Run ``pipe``'s adapters fused (the default) or unfused from its next call on."""
    setattr(pipe, _FUSING, bool(enabled))


def fusing_enabled(pipe: Any) -> bool:
    return bool(getattr(pipe, _FUSING, True))


def fused_adapters(pipe: Any) -> dict[str, float]:
    """The adapters merged into ``pipe``'s shared weights right now, with their scales (may be
    another pipeline's: the last one that drew)."""
    unet = getattr(pipe, "unet", None)
    state = _state(unet) if unet is not None else None
    return dict(state.key) if state is not None else {}


def is_fused(unet: Any, key: tuple[tuple[str, float], ...]) -> bool:
    """Whether ``key``'s adapters are merged into ``unet`` and peft's layers still say so (a
    ``disable_lora`` or ``set_adapters`` from outside the kit since then says they are not)."""
    state = _state(unet)
    return (state is not None and state.key == key and bool(state.layers)
            and all(list(item.layer.merged_adapters) == item.names and not item.layer.disable_adapters
                    for item in state.layers))


def unfuse(unet: Any) -> None:
    """Put back the original weights of every layer merged into ``unet`` (and its pipeline's text
    encoder), bit for bit, and tell peft the layers are unmerged."""
    state = _state(unet)
    if state is None:
        return
    with torch.no_grad():
        for item in state.layers:
            base = item.layer.get_base_layer()
            base.weight.data.copy_(item.weight)
            if item.bias is not None:
                base.bias.data.copy_(item.bias)
            item.layer.merged_adapters = []
    object.__setattr__(unet, _FUSED, None)


def fuse(unet: Any, layers: list[BaseTunerLayer], record: dict[str, float]) -> None:
    """Merge ``record``'s adapters (name -> scale, set on the layers already) into ``layers``.

    Adapters at scale 0 add nothing and are skipped. ``unfuse`` first if anything is merged.
    """
    if _state(unet) is not None:
        raise RuntimeError("unfuse() first: the shared weights already hold fused adapters")
    state = FusedState(key=tuple(record.items()))
    object.__setattr__(unet, _FUSED, state)  # before merging: an error halfway still unfuses what was merged
    with torch.no_grad():
        for layer in layers:
            names = [n for n, scale in record.items() if n in layer.scaling and scale != 0]
            if not names:
                continue
            base = layer.get_base_layer()
            bias = getattr(base, "bias", None)
            state.layers.append(_Layer(layer, names, base.weight.detach().to("cpu", copy=True),
                                       bias.detach().to("cpu", copy=True) if bias is not None else None))
            layer.merge(adapter_names=names)


__all__ = ["set_fusing", "fusing_enabled", "fused_adapters", "is_fused", "fuse", "unfuse", "FusedState"]
