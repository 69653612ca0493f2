"""Text-encoder LoRA layers injected with peft directly.

transformers' own PEFT integration (``CLIPTextModel.add_adapter`` / ``load_adapter``, which
diffusers' ``load_lora_weights`` calls for a text-encoder LoRA) refuses to run unless peft is
at least its ``MIN_PEFT_VERSION``: 0.22 for transformers 5.24, while the newest peft is 0.21.2.
The kit therefore injects text-encoder LoRA layers with ``peft.inject_adapter_in_model``, the
function that integration calls underneath, and keeps the adapter configs in
``text_encoder.peft_config`` as it does, so peft's state-dict helpers and diffusers' adapter
functions (``set_adapters``, ``delete_adapters``) see the same layers.

>>> from peft import LoraConfig
>>> add_text_encoder_lora(text_encoder, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
>>> load_text_encoder_lora(pipe.text_encoder, state_dict, network_alphas, metadata, adapter_name="mika")
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["add_text_encoder_lora", "load_text_encoder_lora", "forget_text_encoder_lora", "PREFIX"]

PREFIX = "text_encoder"  # the key prefix of a text-encoder LoRA in diffusers' single-file format
_LORA_MODULES = (".q_proj", ".k_proj", ".v_proj", ".out_proj", ".fc1", ".fc2")


def add_text_encoder_lora(text_encoder, config, adapter_name: str = "default", state_dict: dict | None = None) -> None:
    """Inject LoRA layers described by the peft ``LoraConfig`` ``config`` into ``text_encoder``
    (fresh layers to train, or the layers ``state_dict`` has keys for)."""
    from peft import inject_adapter_in_model

    configs = text_encoder.__dict__.pop("peft_config", None) or {}
    if adapter_name in configs:
        text_encoder.__dict__["peft_config"] = configs
        raise ValueError(f"The text encoder already has an adapter named {adapter_name!r}.")
    try:  # without the attribute, peft's tuner keeps its own record and does not warn about ours
        inject_adapter_in_model(config, text_encoder, adapter_name=adapter_name, state_dict=state_dict)
    finally:
        text_encoder.__dict__["peft_config"] = configs  # what peft's state-dict helpers read
    configs[adapter_name] = config


def forget_text_encoder_lora(text_encoder, adapter_name: str) -> None:
    """Drop the record of an adapter whose layers were deleted (``delete_adapters``)."""
    configs = getattr(text_encoder, "peft_config", None)
    if configs is not None:
        configs.pop(adapter_name, None)


def load_text_encoder_lora(text_encoder, state_dict: dict[str, torch.Tensor], network_alphas: dict | None,
                           metadata: dict | None, adapter_name: str) -> None:
    """Load the ``text_encoder.*`` part of a LoRA state dict (diffusers' layout, as
    ``pipe.lora_state_dict`` returns it for diffusers and kohya files) as ``adapter_name``."""
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft
    from diffusers.utils.peft_utils import get_peft_kwargs
    from peft import LoraConfig, set_peft_model_state_dict

    start = PREFIX + "."
    state = {k.removeprefix(start): v for k, v in state_dict.items() if k.startswith(start)}
    if not state:
        return
    state = convert_state_dict_to_peft(convert_state_dict_to_diffusers(state))
    if not hasattr(text_encoder, "text_model"):  # transformers 5.6+ flattened CLIPTextModel
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    # Files the kit (or diffusers) trained carry the LoraConfig as metadata; kohya files do not.
    meta = {k.removeprefix(start): v for k, v in (metadata or {}).items() if k.startswith(start)}
    if meta:
        config = LoraConfig(**meta)
    else:
        ranks = {f"{name}.lora_B.weight": state[f"{name}.lora_B.weight"].shape[1]
                 for name, _ in text_encoder.named_modules()
                 if name.endswith(_LORA_MODULES) and f"{name}.lora_B.weight" in state}
        alphas = {k.removeprefix(start): v for k, v in (network_alphas or {}).items() if k.startswith(start)}
        config = LoraConfig(**get_peft_kwargs(ranks, network_alpha_dict=alphas or None, peft_state_dict=state,
                                              is_unet=False))
    add_text_encoder_lora(text_encoder, config, adapter_name, state_dict=state)
    result = set_peft_model_state_dict(text_encoder, state, adapter_name=adapter_name)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if ".lora_" in k]
    if unexpected:
        raise ValueError(f"The LoRA's text-encoder keys do not fit this text encoder: {', '.join(unexpected[:5])}")
    param = next(text_encoder.parameters())
    text_encoder.to(device=param.device, dtype=param.dtype)


def split_state_dict(state_dict: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(UNet part, text-encoder part) of a prefixed LoRA state dict."""
    unet = {k: v for k, v in state_dict.items() if k.startswith("unet.")}
    text = {k: v for k, v in state_dict.items() if k.startswith(PREFIX + ".")}
    return unet, text
