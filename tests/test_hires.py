"""Hires fix on the built-in model: a 2x picture, recorded and redrawn the way A1111 does."""

import importlib.util

import pytest
from PIL import Image

from animegen_utils import generate, load_pipeline, read_parameters, reproduce, switch_task
from animegen_utils.generation import a1111_parameters
from animegen_utils.infotext import parse_infotext


@pytest.fixture(scope="module")
def tiny():
    return load_pipeline()


def native(pipe):
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


def test_hires_doubles_the_size_and_round_trips(tiny, tmp_path):
    size = native(tiny)
    [g] = generate(tiny, "1girl, solo, (happy:1.2), school uniform", seed=5, steps=3, progress=False,
                   hires_scale=2.0, hires_strength=0.5)
    assert g.image.size == (2 * size, 2 * size)
    assert (g.params["width"], g.params["height"]) == (size, size)  # Size is the first pass, as in A1111
    assert (g.params["hires_scale"], g.params["hires_strength"], g.params["hires_steps"],
            g.params["hires_upscaler"]) == (2.0, 0.5, 3, "latent")
    text = a1111_parameters(g.params)
    assert "Denoising strength: 0.5, Hires upscale: 2.0, Hires steps: 3, Hires upscaler: Latent" in text
    back = parse_infotext(text)  # what an A1111-infotext reader gets from the PNG
    assert {k: back[k] for k in ("hires_scale", "hires_strength", "hires_steps", "hires_upscaler", "width", "seed")} \
        == {k: g.params[k] for k in ("hires_scale", "hires_strength", "hires_steps", "hires_upscaler", "width", "seed")}
    path = g.save(tmp_path / "hires.png")
    assert read_parameters(path) == g.params
    again = reproduce(path, pipe=tiny)
    assert again.max_pixel_diff == 0 and again.image.size == g.image.size


def test_hires_second_pass_changes_the_upscaled_picture(tiny):
    size = native(tiny)
    [low] = generate(tiny, "1girl, smile", seed=9, steps=3, progress=False)
    [up] = generate(tiny, "1girl, smile", seed=9, steps=3, progress=False, hires_scale=2.0, hires_upscaler="lanczos",
                    hires_strength=0.3)
    plain = low.image.resize((2 * size, 2 * size), Image.LANCZOS)
    assert up.image.size == plain.size and up.image.tobytes() != plain.tobytes()


def test_callable_upscaler_is_used(tiny):
    seen = []

    def nearest_2x(image):
        seen.append(image.size)
        return image.resize((image.width * 2, image.height * 2), Image.NEAREST)

    [g] = generate(tiny, "1girl, smile", seed=1, steps=2, progress=False, hires_scale=2.0, hires_upscaler=nearest_2x)
    assert seen == [(native(tiny), native(tiny))] and g.params["hires_upscaler"] == "nearest_2x"


def test_hires_steps_are_the_denoising_steps_a1111_runs(tiny):
    calls = []
    [g] = generate(tiny, "1girl", seed=1, steps=4, progress=False, hires_scale=2.0, hires_strength=0.7, hires_steps=5,
                   callback_on_step_end=lambda pipe, i, t, kw: calls.append(i) or kw)
    # first pass 4 steps, second pass exactly 5 (diffusers is asked for 8 at strength 0.7: int(8 * 0.7) = 5)
    assert len(calls) == 4 + 5 and g.params["hires_steps"] == 5


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(hires_scale=0.5), ValueError, "hires_scale must be a number in [1, 8]"),
    (dict(hires_scale="2"), ValueError, "hires_scale must be a number"),
    (dict(hires_scale=2.0, hires_strength=0), ValueError, "hires_strength must be in (0, 1]"),
    (dict(hires_scale=2.0, hires_steps=-1), ValueError, "hires_steps must be an integer >= 1"),
    (dict(hires_scale=2.0, hires_upscaler="bicubic"), ValueError, "hires_upscaler must be one of latent, lanczos"),
    (dict(hires_scale=2.0, hires_upscaler="missing/4x-UltraSharp.pth"), FileNotFoundError,
     "hires_upscaler model file not found"),
    (dict(hires_scale=1.3), ValueError, "which is not a multiple of"),
])
def test_bad_hires_arguments(tiny, kwargs, error, words):
    with pytest.raises(error, match=words.replace("[", r"\[").replace("(", r"\(").replace("]", r"\]")
                       .replace(")", r"\)")):
        generate(tiny, "1girl", seed=0, steps=1, progress=False, **kwargs)


def test_hires_is_for_txt2img(tiny):
    img2img = switch_task(tiny, "img2img")
    with pytest.raises(ValueError, match="hires_scale is for txt2img pipelines; this one is img2img"):
        generate(img2img, "1girl", seed=0, steps=1, progress=False, hires_scale=2.0,
                 image=Image.new("RGB", (native(tiny),) * 2), strength=0.5)


@pytest.mark.skipif(importlib.util.find_spec("spandrel") is not None, reason="spandrel is installed here")
def test_model_upscaler_without_spandrel_says_how_to_install(tiny, tmp_path):
    model = tmp_path / "4x-UltraSharp.pth"
    model.write_bytes(b"not a model")
    with pytest.raises(ImportError, match="pip install spandrel"):
        generate(tiny, "1girl", seed=0, steps=1, progress=False, hires_scale=2.0, hires_upscaler=model)
