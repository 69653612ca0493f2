"""Shared fixtures: tiny random-weight components, diffusers-test style.

Tests never touch the network: HF_HUB_OFFLINE is set before anything imports
huggingface_hub.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    from animegen_utils.toyworld.tokenizer import build_clip_tokenizer

    return build_clip_tokenizer(tmp_path_factory.mktemp("tokenizer"))


def get_dummy_components(tokenizer, seed: int = 0) -> dict:
    from animegen_utils.toyworld.model import TINY_V1_CONFIG, tiny_components

    # The small version-1 shape (64 px): the expected values the tests recorded from it hold
    # whatever architecture the shipped built-in model has.
    return tiny_components(seed=seed, cfg=TINY_V1_CONFIG, tokenizer=tokenizer)


@pytest.fixture(scope="session")
def dummy_model_dir(tmp_path_factory, tokenizer):
    """A random-weight SD-architecture pipeline saved with save_pretrained."""
    from diffusers import StableDiffusionPipeline

    path = tmp_path_factory.mktemp("dummy-model")
    StableDiffusionPipeline(**get_dummy_components(tokenizer)).save_pretrained(path)
    return path


@pytest.fixture()
def dummy_pipe(dummy_model_dir):
    from animegen_utils import load_pipeline

    return load_pipeline(str(dummy_model_dir))


@pytest.fixture()
def fresh_pipeline_cache():
    """Freshly loaded weights for the test, and none with adapters left behind after it."""
    from animegen_utils import clear_pipeline_cache

    clear_pipeline_cache()
    yield
    clear_pipeline_cache()


# SD1.5's published configs (stable-diffusion-v1-5/stable-diffusion-v1-5: unet/, vae/, text_encoder/,
# scheduler/ config.json), so the real-model code paths run on the real architecture offline.
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
    attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280), norm_num_groups=32, norm_eps=1e-5,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    act_fn="silu", center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0,
    mid_block_scale_factor=1,
)
SD15_VAE = dict(
    sample_size=512, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), act_fn="silu",
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)  # force_upcast is not in SD1.5's file: AutoencoderKL's default (True) applies, as on the Hub
SD15_TEXT_ENCODER = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
    bos_token_id=0, eos_token_id=2, pad_token_id=1,
)
SD15_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,  # (its clip_sample: not a PNDM option)
)


@pytest.fixture(scope="session")
def sd15_model_dir(tmp_path_factory, tokenizer):
    """A diffusers folder with SD1.5's architecture (860M-parameter UNet) and random weights, in fp16.

    Built once per session (about 2 GB on disk). Without a safety checker, like
    ``load_pipeline(..., safety_checker=False)``. Run it at 64 px and 1-2 steps only.
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    path = tmp_path_factory.mktemp("sd15-random")
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel(**SD15_UNET).half(), vae=AutoencoderKL(**SD15_VAE).half(),
        text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT_ENCODER)).half(), tokenizer=tokenizer,
        scheduler=PNDMScheduler(**SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.save_pretrained(path)
    del pipe
    return path


@pytest.fixture()
def sd15_pipe(sd15_model_dir):
    """The SD1.5-shaped pipeline (fp32 on the CPU), loaded once and shared as ``load_pipeline`` shares it."""
    from animegen_utils import load_pipeline

    return load_pipeline(str(sd15_model_dir))


@pytest.fixture(scope="session")
def sd15_single_file(sd15_model_dir, tmp_path_factory):
    """``sd15_model_dir`` as one fp16 ``.safetensors`` checkpoint in the original (LDM) layout."""
    import torch

    from animegen_utils.export import save_single_file
    from animegen_utils.pipelines import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(sd15_model_dir, dtype=torch.float16, local_files_only=True)
    return save_single_file(pipe, tmp_path_factory.mktemp("sd15-single") / "anime.safetensors")
