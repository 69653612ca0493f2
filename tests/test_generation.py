import re

import numpy as np
import pytest
from PIL import Image

from animegen_utils import build_prompt, generate, read_parameters, reproduce
from animegen_utils.generation import a1111_parameters


def pixels(gen):
    return np.asarray(gen.image, dtype=np.int16)


def test_same_seed_same_pixels_different_seed_different(dummy_pipe):
    p = build_prompt("happy", "casual")
    [a] = generate(dummy_pipe, p, seed=7, steps=3, progress=False)
    [b] = generate(dummy_pipe, p, seed=7, steps=3, progress=False)
    [c] = generate(dummy_pipe, p, seed=8, steps=3, progress=False)
    assert np.array_equal(pixels(a), pixels(b))
    assert np.abs(pixels(a) - pixels(c)).mean() > 1.0


def test_expected_pixels_recorded_from_a_real_run(dummy_pipe):
    # diffusers-style regression value: random-weight components, fixed seed.
    [g] = generate(dummy_pipe, "1girl, smile, pink hair", seed=0, steps=2, guidance=5.0, progress=False)
    corner = np.asarray(g.image)[-3:, -3:, -1].flatten()
    expected = EXPECTED_CORNER
    assert np.abs(corner.astype(int) - np.array(expected)).max() <= 2


def test_image_depends_only_on_its_seed_not_batch_position(dummy_pipe):
    prompts = [build_prompt(e, "formal") for e in ("happy", "sad", "angry")]
    batch = generate(dummy_pipe, prompts, seed=100, steps=3, progress=False)
    assert [g.params["seed"] for g in batch] == [100, 101, 102]
    [alone] = generate(dummy_pipe, prompts[2], seed=102, steps=3, progress=False)
    assert np.abs(pixels(batch[2]) - pixels(alone)).max() <= 1


def test_one_prompt_many_seeds_is_a_seed_sweep(dummy_pipe):
    gens = generate(dummy_pipe, "1girl", seed=[5, 9, 11], steps=2, progress=False)
    assert [g.params["seed"] for g in gens] == [5, 9, 11]
    with pytest.raises(ValueError, match="seeds"):
        generate(dummy_pipe, ["1girl", "1girl, smile"], seed=[1, 2, 3], steps=2, progress=False)


def test_params_record_everything(dummy_pipe):
    p = build_prompt("sad", "school_uniform")
    [g] = generate(dummy_pipe, p, seed=3, steps=4, guidance=6.0, progress=False)
    assert g.params["prompt"] == p.positive and g.params["negative"] == p.negative
    assert {k: g.params[k] for k in ("seed", "steps", "guidance", "scheduler", "width", "height")} == \
        {"seed": 3, "steps": 4, "guidance": 6.0, "scheduler": "dpm++", "width": 64, "height": 64}


def test_png_metadata_round_trip_and_reproduce(dummy_pipe, tmp_path):
    [g] = generate(dummy_pipe, build_prompt("angry", "formal"), seed=11, steps=3, progress=False)
    path = g.save(tmp_path / "angry.png")
    assert read_parameters(path) == g.params
    text = Image.open(path).info["parameters"]
    assert text == a1111_parameters(g.params)
    assert "Negative prompt: lowres" in text and "Seed: 11" in text and "Sampler: DPM++ 2M" in text
    again = reproduce(path, pipe=dummy_pipe)
    assert again.image.tobytes() == g.image.tobytes()
    assert again.max_pixel_diff == 0
    assert (again.params["batch_size"], again.params["batch_index"]) == (1, 0)


def test_reproduce_redraws_in_the_original_batch_shape(dummy_pipe, tmp_path):
    # Rounding in CPU kernels can depend on the batch size; reproduce() redraws an image
    # in a batch of the size it was made in, so it comes back exact on this machine.
    prompts = [build_prompt(e, s) for e in ("happy", "sad", "angry") for s in ("casual", "formal")]
    gens = generate(dummy_pipe, prompts, seed=[4] * len(prompts), steps=3, batch_size=4, progress=False)
    assert [(g.params["batch_size"], g.params["batch_index"]) for g in gens] == \
        [(4, 0), (4, 1), (4, 2), (4, 3), (2, 0), (2, 1)]
    for g in (gens[2], gens[5]):
        again = reproduce(g.save(tmp_path / f"{g.params['batch_index']}.png"), pipe=dummy_pipe)
        assert again.max_pixel_diff == 0
        assert again.image.tobytes() == g.image.tobytes()
        assert again.params == g.params


def test_reproduce_reports_the_difference_from_the_saved_pixels(dummy_pipe, tmp_path):
    [g] = generate(dummy_pipe, "1girl", seed=2, steps=2, progress=False)
    path = g.save(tmp_path / "g.png")
    pixels_ = np.asarray(Image.open(path).convert("RGB")).copy()
    pixels_[0, 0, 0] = (int(pixels_[0, 0, 0]) + 7) % 256  # someone touched the file
    from animegen_utils.generation import save_image
    save_image(Image.fromarray(pixels_), path, g.params)
    assert reproduce(path, pipe=dummy_pipe).max_pixel_diff == 7


def test_saving_requires_png(dummy_pipe, tmp_path):
    [g] = generate(dummy_pipe, "1girl", seed=0, steps=1, progress=False)
    with pytest.raises(ValueError, match="PNG"):
        g.save(tmp_path / "x.jpg")
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    with pytest.raises(ValueError, match="has no generation parameters: no animegen, A1111"):
        read_parameters(tmp_path / "plain.png")


def test_overlong_prompt_warns_with_the_cut_tags(dummy_pipe):
    # weighting=False reads the prompt as one 77-token CLIP window; by default it is chunked (tests/test_weighting.py).
    p = build_prompt("happy", "casual", extra_tags=[f"filler words number {i}" for i in range(30)])
    with pytest.warns(UserWarning, match="filler words number 29"):
        generate(dummy_pipe, p, seed=0, steps=1, progress=False, weighting=False)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(steps=0), ValueError, "steps must be an integer >= 1; got 0"),
    (dict(steps=2.5), ValueError, "steps must be an integer >= 1; got 2.5"),
    (dict(guidance=-3), ValueError, "guidance must be a number >= 0"),
    (dict(guidance="7"), ValueError, "guidance must be a number >= 0"),
    (dict(seed="abc"), TypeError, "seed must be an int in [0, 2**32) or -1 for a random one; got str 'abc'"),
    (dict(seed=2**32), ValueError, "seed must be in [0, 2**32)"),
    (dict(seed=-2), ValueError, "seed must be in [0, 2**32) or -1"),
    (dict(seed=[]), ValueError, "seed is an empty list"),
    (dict(seed=True), TypeError, "got bool True"),
    (dict(seed=1.5), TypeError, "got float 1.5"),
    (dict(height=60), ValueError, "height must be a positive multiple of 8"),
    (dict(width=0), ValueError, "width must be a positive multiple of 8"),
    (dict(batch_size=0), ValueError, "batch_size must be an integer >= 1"),
    (dict(negative=["lowres"]), TypeError, "negative must be a string"),
    (dict(strength=1.5), ValueError, "strength must be in [0, 1]"),
    (dict(controlnet_conditioning_scale=-1.0), ValueError, "controlnet_conditioning_scale must be a number >= 0"),
    (dict(control_guidance_start=0.8, control_guidance_end=0.2), ValueError, "0 <= start < end <= 1"),
])
def test_bad_arguments_get_clear_errors_before_anything_runs(dummy_pipe, kwargs, error, words):
    with pytest.raises(error) as info:
        generate(dummy_pipe, "1girl", **{"steps": 1, "progress": False, **kwargs})
    assert words in str(info.value)


@pytest.mark.parametrize("prompt, error, words", [
    (None, TypeError, "prompt must be a Prompt, a string, or a non-empty list of them; got NoneType"),
    ([], ValueError, "prompt is an empty list"),
    (["1girl", 3], TypeError, "prompt items must be Prompt or str, got int"),
    (42, TypeError, "got int"),
])
def test_bad_prompts_get_clear_errors(dummy_pipe, prompt, error, words):
    with pytest.raises(error, match=re.escape(words)):
        generate(dummy_pipe, prompt, steps=1, progress=False)


def test_seed_minus_one_draws_a_random_seed_and_records_it(dummy_pipe, tmp_path):
    gens = generate(dummy_pipe, "1girl", seed=[-1, -1, 5], steps=1, height=16, width=16, progress=False)
    seeds = [g.params["seed"] for g in gens]
    assert seeds[2] == 5 and all(0 <= s < 2**32 for s in seeds) and seeds[0] != seeds[1]
    [one] = generate(dummy_pipe, "1girl", seed=-1, steps=2, height=32, width=32, progress=False)
    again = reproduce(one.save(tmp_path / "random.png"), pipe=dummy_pipe)
    assert again.params["seed"] == one.params["seed"] and again.max_pixel_diff == 0


def test_guidance_below_one_is_allowed_and_turns_cfg_off(dummy_pipe):
    [a] = generate(dummy_pipe, "1girl", seed=1, steps=2, guidance=0.0, progress=False)
    [b] = generate(dummy_pipe, "1girl", seed=1, steps=2, guidance=1.0, progress=False)
    assert a.params["guidance"] == 0.0 and a.image.tobytes() == b.image.tobytes()


def test_steps_and_guidance_default_to_the_schedulers_recommendation(dummy_model_dir):
    from animegen_utils import load_pipeline
    from animegen_utils.pipelines import DEFAULT_SETTINGS, RECOMMENDED_SETTINGS

    [g] = generate(load_pipeline(str(dummy_model_dir)), "1girl", seed=0, height=16, width=16, progress=False)
    assert (g.params["steps"], g.params["guidance"]) == DEFAULT_SETTINGS
    pndm = load_pipeline(str(dummy_model_dir), scheduler="pndm")
    [g] = generate(pndm, "1girl", seed=0, height=16, width=16, progress=False)
    assert (g.params["steps"], g.params["guidance"]) == RECOMMENDED_SETTINGS["pndm"]


def test_progress_bar_can_be_silenced(dummy_pipe, capsys):
    generate(dummy_pipe, "1girl", seed=0, steps=2, progress=False)
    assert "it/s" not in capsys.readouterr().err
    generate(dummy_pipe, "1girl", seed=0, steps=2, progress=True)
    assert "2/2" in capsys.readouterr().err


EXPECTED_CORNER = [94, 113, 102, 107, 103, 100, 78, 107, 112]
