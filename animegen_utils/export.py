"""Export a diffusers SD1.x pipeline as one original-layout ``.safetensors`` checkpoint.

The single-file layout (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.transformer.*``) is what A1111, ComfyUI and
``StableDiffusionPipeline.from_single_file`` read. This is the inverse of the
key mapping in diffusers' ``single_file_utils``, written for any number of UNet
levels and ``layers_per_block`` (so it works for the built-in model too).

>>> save_single_file(pipe, "animegen-tiny.safetensors")
>>> load_pipeline("animegen-tiny.safetensors", config="path/to/diffusers/folder")
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

_RESNET_TO_LDM = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                  ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_UNET_DIRECT = {
    "time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
}
_VAE_DIRECT = {"conv_norm_out": "norm_out"}
_VAE_ATTN = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _resnet(rest: str) -> str:
    for new, old in _RESNET_TO_LDM:
        rest = rest.replace(new + ".", old + ".", 1) if rest.startswith(new + ".") else rest
    return rest


def unet_to_ldm(state: dict[str, torch.Tensor], layers_per_block: int, up_has_attention: list[bool]) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel keys -> LDM ``model.diffusion_model.*`` keys."""
    n = layers_per_block + 1
    out = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        if module in _UNET_DIRECT:
            new = f"{_UNET_DIRECT[module]}.{param}"
        elif m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            b, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"input_blocks.{1 + b * n + j}.0.{_resnet(rest)}"
        elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            new = f"input_blocks.{1 + int(m[1]) * n + int(m[2])}.1.{m[3]}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            new = f"input_blocks.{(int(m[1]) + 1) * n}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.+)", key):
            new = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"output_blocks.{int(m[1]) * n + int(m[2])}.0.{_resnet(m[3])}"
        elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)", key):
            new = f"output_blocks.{int(m[1]) * n + int(m[2])}.1.{m[3]}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            b = int(m[1])
            new = f"output_blocks.{b * n + layers_per_block}.{2 if up_has_attention[b] else 1}.conv.{m[2]}"
        else:
            raise KeyError(f"No LDM name for UNet key {key!r}")
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], num_blocks: int) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> LDM ``first_stage_model.*`` keys."""
    out = {}
    for key, value in state.items():
        new = key
        if m := re.match(r"(encoder|decoder)\.(.+)", key):
            part, rest = m[1], m[2]
            module, _, param = rest.rpartition(".")
            if module in _VAE_DIRECT:
                rest = f"{_VAE_DIRECT[module]}.{param}"
            elif r := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
                rest = f"down.{r[1]}.block.{r[2]}.{r[3].replace('conv_shortcut', 'nin_shortcut')}"
            elif r := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", rest):
                rest = f"down.{r[1]}.downsample.conv.{r[2]}"
            elif r := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
                rest = f"up.{num_blocks - 1 - int(r[1])}.block.{r[2]}.{r[3].replace('conv_shortcut', 'nin_shortcut')}"
            elif r := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", rest):
                rest = f"up.{num_blocks - 1 - int(r[1])}.upsample.conv.{r[2]}"
            elif r := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", rest):
                rest = f"mid.block_{int(r[1]) + 1}.{r[2].replace('conv_shortcut', 'nin_shortcut')}"
            elif r := re.match(r"mid_block\.attentions\.0\.(.+)", rest):
                attn = r[1]
                for new_name, old_name in _VAE_ATTN:
                    if attn.startswith(new_name + "."):
                        attn = old_name + attn[len(new_name):]
                rest = f"mid.attn_1.{attn}"
                if value.ndim == 2:  # LDM stores these projections as 1x1 convolutions
                    value = value[:, :, None, None]
            new = f"{part}.{rest}"
        out["first_stage_model." + new] = value
    return out


def text_encoder_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModel keys -> ``cond_stage_model.transformer.text_model.*`` keys."""
    out = {}
    for key, value in state.items():
        key = key if key.startswith("text_model.") else "text_model." + key
        out["cond_stage_model.transformer." + key] = value
    return out


def to_ldm_state_dict(pipe) -> dict[str, torch.Tensor]:
    """The whole pipeline (UNet, VAE, text encoder) in single-file layout."""
    unet_cfg = pipe.unet.config
    up_attn = [t.startswith("CrossAttn") for t in unet_cfg.up_block_types]
    state = unet_to_ldm(pipe.unet.state_dict(), unet_cfg.layers_per_block, up_attn)
    state |= vae_to_ldm(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels))
    state |= text_encoder_to_ldm(pipe.text_encoder.state_dict())
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_single_file(pipe, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write ``pipe`` as one ``.safetensors`` file (optionally cast, e.g. to float16)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"Single-file checkpoints are written as .safetensors, got {path.name!r}")
    state = to_ldm_state_dict(pipe)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt", "animegen": "sd15-ldm-layout"})
    return path
