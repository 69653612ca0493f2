"""The built-in model's architecture (version 2: 128-px pictures on 32x32 latents) and the binding measurement."""

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from animegen_utils import generate, load_pipeline
from animegen_utils.evaluate import load_probe
from animegen_utils.evaluate.binding import EYES, HAIR, SHARED_COLOURS, binding_report, binding_requests, \
    measure_binding
from animegen_utils.toyworld.model import TINY_V1_CONFIG, TinyConfig, make_unet, tiny_components
from animegen_utils.toyworld.render import CharacterAttributes, render_character


@pytest.fixture(scope="module")
def v2_pipe(tokenizer):
    return StableDiffusionPipeline(**tiny_components(seed=0, tokenizer=tokenizer))


def test_version_2_shapes(v2_pipe):
    cfg = TinyConfig()
    assert (cfg.image_size, cfg.latent_size) == (128, 32)
    unet, vae, text = v2_pipe.unet, v2_pipe.vae, v2_pipe.text_encoder
    assert unet.config.sample_size == 32 and v2_pipe.vae_scale_factor == 4
    assert unet.config.down_block_types == ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D",
                                            "CrossAttnDownBlock2D")
    assert unet.config.up_block_types == ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    assert unet.config.cross_attention_dim == text.config.hidden_size == 128
    assert text.config.num_hidden_layers == 4
    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, 128, 128)).latent_dist.mean
    assert latents.shape == (1, 4, 32, 32)


def test_version_2_draws_128_px_deterministically(v2_pipe, tmp_path):
    a, b = (generate(v2_pipe, "1girl, smile", seed=3, steps=2, progress=False)[0].image for _ in range(2))
    assert a.size == (128, 128)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    v2_pipe.save_pretrained(tmp_path / "v2")
    loaded = load_pipeline(str(tmp_path / "v2"))  # the kit's default sampler from here on
    [c] = generate(loaded, "1girl, smile", seed=3, steps=2, progress=False)
    loaded.save_pretrained(tmp_path / "again")
    [d] = generate(load_pipeline(str(tmp_path / "again")), "1girl, smile", seed=3, steps=2, progress=False)
    assert c.image.size == (128, 128) and np.array_equal(np.asarray(c.image), np.asarray(d.image))


def test_version_1_config_still_builds_the_old_shape():
    unet = make_unet(TINY_V1_CONFIG)
    assert unet.config.sample_size == 16 and unet.config.block_out_channels == (32, 64, 128)
    assert unet.config.down_block_types == ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")


def test_cross_attention_levels_are_checked():
    with pytest.raises(ValueError, match=r"indices into unet_channels \(0\.\.3\)"):
        make_unet(dataclasses.replace(TinyConfig(), unet_cross_attention_levels=(4,)))


def test_binding_requests_can_always_swap():
    requests = binding_requests(200, seed=1)
    assert requests == binding_requests(200, seed=1)
    for r in requests:
        assert r[HAIR] != r[EYES] and (r[HAIR] in SHARED_COLOURS or r[EYES] in SHARED_COLOURS)


def _swapped(request: dict) -> CharacterAttributes:
    """The picture a text encoder that does not bind would draw: each colour word on the other noun
    where that word names a colour of it."""
    values = dict(request)
    if request[EYES] in SHARED_COLOURS:
        values[HAIR] = request[EYES]
    if request[HAIR] in SHARED_COLOURS:
        values[EYES] = request[HAIR]
    return CharacterAttributes(**values)


def test_binding_measurement_tells_bound_from_unbound_pictures():
    probe = load_probe()
    requests = binding_requests(24, seed=2)
    bound = [render_character(CharacterAttributes(**r), 100 + i, size=probe.image_size).image
             for i, r in enumerate(requests)]
    unbound = [render_character(_swapped(r), 100 + i, size=probe.image_size).image for i, r in enumerate(requests)]
    good = binding_report(requests, probe.predict(bound))
    bad = binding_report(requests, probe.predict(unbound))
    assert good["swap_rate"] == 0.0 and good["errors"] == {HAIR: {}, EYES: {}}
    assert bad["swap_rate"] == 1.0
    assert bad["hair_took_eye_colour"] + bad["eyes_took_hair_colour"] >= len(requests)
    assert sum(bad["errors"][HAIR].values()) == sum(r[EYES] in SHARED_COLOURS for r in requests)


def test_binding_report_checks_lengths():
    with pytest.raises(ValueError, match="3 requests but 2 hair"):
        binding_report(binding_requests(3), {HAIR: ["red", "red"], EYES: ["red", "red", "red"]})


def test_measure_binding_runs_on_the_built_in_model():
    report = measure_binding(load_pipeline("tiny"), n=4, steps=2, batch_size=4)
    assert report["n"] == 4 and 0.0 <= report["swap_rate"] <= 1.0
    assert sum(sum(e.values()) for e in report["errors"].values()) <= 8
