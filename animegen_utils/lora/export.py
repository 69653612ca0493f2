"""Export a diffusers LoRA with kohya keys, the format A1111 and ComfyUI load.

>>> from animegen_utils.lora.export import save_kohya
>>> save_kohya("outputs/03/lora/pytorch_lora_weights.safetensors", "outputs/03/lora/lora_kohya.safetensors")

diffusers keys look like ``unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight``;
kohya's are ``lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight``,
with ``lora_up`` for ``lora_B`` and one ``.alpha`` scalar per module (the LoRA scale is alpha / rank).
Text-encoder modules become ``lora_te_text_model_encoder_layers_<i>_self_attn_<proj>``.
Copy the file into A1111's ``models/Lora`` (prompt: ``<lora:lora_kohya:1>``) or ComfyUI's ``models/loras``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["to_kohya", "save_kohya"]

_PREFIXES = {"unet.": "lora_unet_", "text_encoder.": "lora_te_"}
# convert_state_dict_to_diffusers names text-encoder layers lora_linear_layer.down/up, UNet ones lora_A/B.
_SUFFIXES = {".lora.down.weight": "lora_down.weight", ".lora.up.weight": "lora_up.weight",
             ".lora_linear_layer.down.weight": "lora_down.weight", ".lora_linear_layer.up.weight": "lora_up.weight",
             ".lora_A.weight": "lora_down.weight", ".lora_B.weight": "lora_up.weight"}


def _module_alphas(metadata: dict[str, str]) -> dict[str, tuple]:
    """(lora_alpha, alpha_pattern) per component from the LoraConfig diffusers stores in the file."""
    packed = json.loads(metadata.get("lora_adapter_metadata") or "{}")  # {"unet.lora_alpha": 32, ...}
    return {c: (packed.get(f"{c}.lora_alpha"), packed.get(f"{c}.alpha_pattern") or {})
            for c in ("unet", "text_encoder") if f"{c}.lora_alpha" in packed}


def to_kohya(state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """Rename a diffusers LoRA state dict to kohya keys and add the ``.alpha`` entries.

    Without metadata, alpha is the rank (scale 1), which is what diffusers assumes then too.
    """
    alphas = _module_alphas(metadata or {})
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
        suffix = next((sfx for sfx in _SUFFIXES if key.endswith(sfx)), None)
        if prefix is None or suffix is None:
            raise ValueError(f"Not a diffusers LoRA key: {key!r} (expected unet.* or text_encoder.* "
                             "ending in lora.down/lora.up/lora_linear_layer.down/up/lora_A/lora_B .weight; no biases or DoRA)")
        module = key[len(prefix):-len(suffix)]
        component = prefix.rstrip(".")
        if component == "text_encoder" and not module.startswith("text_model."):
            module = "text_model." + module  # kohya names CLIP modules from text_model down
        name = _PREFIXES[prefix] + module.replace(".", "_")
        part = _SUFFIXES[suffix]
        out[f"{name}.{part}"] = tensor.contiguous()
        if part == "lora_down.weight":
            rank = tensor.shape[0]
            alpha, pattern = alphas.get(component, (None, {}))
            alpha = next((v for pat, v in pattern.items() if module.endswith(pat)), alpha)
            out[f"{name}.alpha"] = torch.tensor(float(alpha if alpha is not None else rank))
    return out


def save_kohya(diffusers_file: str | Path, out_file: str | Path) -> Path:
    """Read ``pytorch_lora_weights.safetensors`` and write the kohya-keyed copy (atomically)."""
    diffusers_file, out_file = Path(diffusers_file), Path(out_file)
    with safe_open(str(diffusers_file), framework="pt") as f:
        metadata = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    tmp = out_file.with_name(out_file.name + ".tmp")
    save_file(to_kohya(state, metadata), str(tmp), metadata={"ss_network_module": "networks.lora",
                                                              "ss_output_name": out_file.stem})
    os.replace(tmp, out_file)
    return out_file
