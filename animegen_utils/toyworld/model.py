"""The built-in model's architecture: SD1.5's classes at toy size.

Same classes as ``stable-diffusion-v1-5`` (CLIPTextModel, AutoencoderKL with f=4
instead of 8, UNet2DConditionModel with cross-attention, a scaled-linear
scheduler), so every pipeline code path is the real one. Version 2 draws
128x128 pictures on 32x32x4 latents.

>>> from animegen_utils.toyworld.model import tiny_components
>>> components = tiny_components(seed=0)            # random weights, diffusers-test style
>>> from diffusers import StableDiffusionPipeline
>>> pipe = StableDiffusionPipeline(**components)
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer


@dataclass(frozen=True)
class TinyConfig:
    """Plain values, easy to override (``TinyConfig(unet_channels=(16, 32, 64))``).

    Chosen by measurement on the 2-core CPU (batch 32, forward + backward): the
    finest UNet level runs at 32x32 with 16 channels and the coarser levels carry
    the cross-attention (8x8 and 4x4, plus the middle block); cross-attention at
    16x16 too would cost 2x per step. The text encoder is 4 layers x 128 wide
    (version 1: 2 x 64) so that a colour word stays bound to its noun.
    """

    image_size: int = 128
    vae_channels: tuple[int, ...] = (16, 32, 64)  # 3 levels -> f=4 -> 32x32 latents
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (16, 32, 64, 128)
    unet_cross_attention_levels: tuple[int, ...] = (2, 3)  # indices into unet_channels
    unet_layers_per_block: int = 1
    attention_head_dim: int = 8
    vae_norm_groups: int = 8
    unet_norm_groups: int = 8
    text_width: int = 128
    text_layers: int = 4
    text_heads: int = 4
    max_tokens: int = 77

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)


#: Version 1 of the built-in model (64x64 pictures, 16x16 latents, a 2 x 64 text encoder).
#: The tests' random-weight dummy components are built from it: small, and their
#: recorded expected values stay valid whatever the shipped model is.
TINY_V1_CONFIG = TinyConfig(image_size=64, unet_channels=(32, 64, 128), unet_cross_attention_levels=(1, 2),
                            unet_norm_groups=16, text_width=64, text_layers=2, text_heads=2)


def make_scheduler() -> DDPMScheduler:
    # SD1.5's noise schedule, so the same scheduler swaps (DPM++, Euler a, ...) apply.
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        steps_offset=1,
    )


def make_vae(cfg: TinyConfig) -> AutoencoderKL:
    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels,
        layers_per_block=1,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.vae_norm_groups,
        sample_size=cfg.image_size,
        # No self-attention in the VAE's middle: at 32x32 it costs most of a
        # CPU training step and cartoons reconstruct fine with convolutions.
        mid_block_add_attention=False,
    )


def make_unet(cfg: TinyConfig) -> UNet2DConditionModel:
    n = len(cfg.unet_channels)
    levels = set(cfg.unet_cross_attention_levels)
    if not levels <= set(range(n)):
        raise ValueError(f"unet_cross_attention_levels {sorted(levels)} must be indices into "
                         f"unet_channels (0..{n - 1})")
    # Cross-attention only on the coarser levels: the finest levels are the costliest
    # on a CPU, and the layout they refine is decided at the coarse ones.
    down = tuple("CrossAttnDownBlock2D" if i in levels else "DownBlock2D" for i in range(n))
    up = tuple("CrossAttnUpBlock2D" if i in levels else "UpBlock2D" for i in reversed(range(n)))
    return UNet2DConditionModel(
        sample_size=cfg.latent_size,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=cfg.unet_channels,
        layers_per_block=cfg.unet_layers_per_block,
        cross_attention_dim=cfg.text_width,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.unet_norm_groups,
    )


def make_text_encoder(cfg: TinyConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.text_width,
        intermediate_size=cfg.text_width * 4,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_tokens,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=cfg.text_width,
    )
    return CLIPTextModel(config)


def make_tokenizer(directory: str | None = None) -> CLIPTokenizer:
    """The project's CLIP tokenizer, written to ``directory`` (a temp dir if None)."""
    from .tokenizer import build_clip_tokenizer

    directory = directory or tempfile.mkdtemp(prefix="animegen-tokenizer-")
    return build_clip_tokenizer(directory)


def tiny_components(seed: int = 0, cfg: TinyConfig | None = None, tokenizer: CLIPTokenizer | None = None) -> dict:
    """Freshly initialised components for ``StableDiffusionPipeline(**components)``.

    Seeded, so two calls give identical weights (the pattern of diffusers'
    ``get_dummy_components``).
    """
    cfg = cfg or TinyConfig()
    tokenizer = tokenizer or make_tokenizer()
    torch.manual_seed(seed)
    vae = make_vae(cfg)
    torch.manual_seed(seed + 1)
    unet = make_unet(cfg)
    torch.manual_seed(seed + 2)
    text_encoder = make_text_encoder(cfg, tokenizer)
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": make_scheduler(),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }
