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
    from animegen_utils.toyworld.model import tiny_components

    return tiny_components(seed=seed, tokenizer=tokenizer)


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
