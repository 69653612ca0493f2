"""IP-Adapter weights in the layout ``pipe.load_ip_adapter`` reads, written from diffusers' modules.

h94's IP-Adapter files (and ``load_ip_adapter``) hold one state dict with two parts:

* ``image_proj.*``: the image projection, in the *original* IP-Adapter names (``proj.weight`` of
  the plain adapter; ``latents``, ``proj_in``, ``layers.{i}.0.to_kv`` ... of the "plus" Resampler),
  which diffusers renames on load (``UNet2DConditionModel._convert_ip_adapter_image_proj_to_diffusers``);
* ``ip_adapter.{k}.to_k_ip.weight`` / ``to_v_ip.weight``: the decoupled cross-attention's key and
  value projections, ``k = 1, 3, 5, ...`` over the UNet's cross-attention layers in
  ``unet.attn_processors`` order (the original numbering, which counts self-attention layers too).

``ip_adapter_state_dict`` inverts diffusers' renaming, so the kit's trained adapter (and the tests'
random plus-face-shaped one) are files ``load_ip_adapter`` loads like h94's own.

>>> save_ip_adapter(projection, processors, "models/tiny/ip_adapter")   # -> ip_adapter.safetensors
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch
from diffusers.models.attention_processor import (IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0,
                                                  IPAdapterXFormersAttnProcessor)
from diffusers.models.embeddings import ImageProjection, IPAdapterPlusImageProjection

#: The weight file name the kit writes (and the built-in adapter ships).
WEIGHT_NAME = "ip_adapter.safetensors"
IP_PROCESSORS = (IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0, IPAdapterXFormersAttnProcessor)

__all__ = ["WEIGHT_NAME", "IP_PROCESSORS", "ip_adapter_state_dict", "save_ip_adapter", "new_ip_processors",
           "cross_attention_names"]


def cross_attention_names(unet: Any) -> list[str]:
    """The UNet's cross-attention processor names (``...attn2.processor``), in ``attn_processors`` order."""
    return [n for n in unet.attn_processors if not n.endswith("attn1.processor") and "motion_modules" not in n]


def _hidden_size(unet: Any, name: str) -> int:
    channels = list(unet.config.block_out_channels)
    if name.startswith("mid_block"):
        return channels[-1]
    block = int(name.split(".")[1])
    return list(reversed(channels))[block] if name.startswith("up_blocks") else channels[block]


def new_ip_processors(unet: Any, num_tokens: int, scale: float = 1.0, init_from_unet: bool = True
                      ) -> dict[str, IPAdapterAttnProcessor2_0]:
    """Fresh decoupled cross-attention processors for ``unet``'s cross-attention layers.

    ``init_from_unet``: ``to_k_ip``/``to_v_ip`` start as copies of the layer's own ``to_k``/``to_v``
    (the IP-Adapter recipe: the image tokens start out read like text tokens).
    """
    procs = {}
    modules = dict(unet.named_modules())
    for name in cross_attention_names(unet):
        proc = IPAdapterAttnProcessor2_0(hidden_size=_hidden_size(unet, name),
                                         cross_attention_dim=unet.config.cross_attention_dim, scale=scale,
                                         num_tokens=(num_tokens,))
        if init_from_unet:
            attn = modules[name.removesuffix(".processor")]
            with torch.no_grad():
                proc.to_k_ip[0].weight.copy_(getattr(attn.to_k, "base_layer", attn.to_k).weight)
                proc.to_v_ip[0].weight.copy_(getattr(attn.to_v, "base_layer", attn.to_v).weight)
        procs[name] = proc.to(device=unet.device, dtype=unet.dtype)
    return procs


def _projection_to_original(projection: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = {k: v.detach().cpu().contiguous() for k, v in projection.state_dict().items()}
    if isinstance(projection, ImageProjection):
        return {k.replace("image_embeds", "proj"): v for k, v in state.items()}
    if not isinstance(projection, IPAdapterPlusImageProjection):
        raise TypeError(f"Cannot write a {type(projection).__name__} image projection; the kit writes "
                        "ImageProjection (plain IP-Adapter) and IPAdapterPlusImageProjection (plus, plus-face).")
    out: dict[str, torch.Tensor] = {}
    kv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = re.match(r"layers\.(\d+)\.(.+)$", key)
        if m is None:  # latents, proj_in, proj_out, norm_out keep their names
            out[key] = value
            continue
        i, rest = m.groups()
        if rest.startswith(("ln0.", "ln1.")):
            out[f"layers.{i}.0.norm{int(rest[2]) + 1}.{rest[4:]}"] = value
        elif rest.startswith(("attn.to_k.", "attn.to_v.")):
            kv.setdefault(f"layers.{i}.0.to_kv.{rest.split('.')[-1]}", {})[rest[5:9]] = value
        elif rest.startswith("attn.to_out.0."):
            out[f"layers.{i}.0.to_out.{rest[len('attn.to_out.0.'):]}"] = value
        elif rest.startswith("attn.to_q."):
            out[f"layers.{i}.0.to_q.{rest[len('attn.to_q.'):]}"] = value
        elif rest.startswith("ff.0."):
            out[f"layers.{i}.1.0.{rest[5:]}"] = value
        elif rest.startswith("ff.1.net.0.proj."):
            out[f"layers.{i}.1.1.{rest[len('ff.1.net.0.proj.'):]}"] = value
        elif rest.startswith("ff.1.net.2."):
            out[f"layers.{i}.1.3.{rest[len('ff.1.net.2.'):]}"] = value
        else:
            raise ValueError(f"Unexpected Resampler weight {key!r}")
    for key, parts in kv.items():
        out[key] = torch.cat([parts["to_k"], parts["to_v"]], dim=0)
    return out


def ip_adapter_state_dict(projection: torch.nn.Module, processors: Mapping[str, Any],
                          unet: Any) -> dict[str, torch.Tensor]:
    """``image_proj.*`` + ``ip_adapter.*`` tensors of one adapter, in h94's layout (see the module
    docstring). ``processors`` maps ``unet``'s cross-attention processor names to IP processors."""
    state = {f"image_proj.{k}": v for k, v in _projection_to_original(projection).items()}
    names = cross_attention_names(unet)
    missing = [n for n in names if not isinstance(processors.get(n), IP_PROCESSORS)]
    if missing:
        raise ValueError(f"No IP-Adapter processor for {missing[:3]}{'...' if len(missing) > 3 else ''}")
    for index, name in enumerate(names):
        proc = processors[name]
        key_id = 2 * index + 1
        state[f"ip_adapter.{key_id}.to_k_ip.weight"] = proc.to_k_ip[0].weight.detach().cpu().contiguous()
        state[f"ip_adapter.{key_id}.to_v_ip.weight"] = proc.to_v_ip[0].weight.detach().cpu().contiguous()
    return state


def save_ip_adapter(projection: torch.nn.Module, processors: Mapping[str, Any], unet: Any,
                    folder: str | Path, weight_name: str = WEIGHT_NAME, image_encoder: Any = None) -> Path:
    """Write ``folder/weight_name`` (and, given one, the image encoder to ``folder/image_encoder``),
    loadable with ``pipe.load_ip_adapter(folder, subfolder="", weight_name=weight_name)``.

    >>> save_ip_adapter(projection, processors, pipe.unet, "my_adapter", image_encoder=encoder)
    PosixPath('my_adapter/ip_adapter.safetensors')
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / weight_name
    save_file(ip_adapter_state_dict(projection, processors, unet), str(path))
    if image_encoder is not None:
        image_encoder.save_pretrained(folder / "image_encoder", safe_serialization=True)
    return path
