"""Sizes, scoring and the safety checker on SD1.5's real architecture (issue 20, "also seen").

On SD1.5 the native size is 512 px; every high-level helper takes a size so that a CPU
(or these tests, at 64 px) can use it. Random weights, 1-2 steps.
"""

import warnings

import pytest
import torch
from PIL import Image

from animegen_utils import generate
from animegen_utils.abtest import ab_test
from animegen_utils.control import strength_sweep, transfer_emotion
from animegen_utils.evaluate.__main__ import main as evaluate_main
from animegen_utils.evaluate.metrics import ClipScorer
from animegen_utils.llm import PromptOptimizer
from animegen_utils.widgets import generator_ui

SOURCE = Image.new("RGB", (80, 80), "pink")


def test_transfer_emotion_and_strength_sweep_take_a_resolution(sd15_pipe):
    g = transfer_emotion(sd15_pipe, SOURCE, "angry", strength=0.5, steps=2, resolution=64)
    assert g.image.size == (64, 64) and (g.params["width"], g.params["height"]) == (64, 64)
    row = strength_sweep(sd15_pipe, SOURCE, "sad", strengths=(0.0, 0.5), steps=2, resolution=64)
    assert [r.image.size for r in row] == [(64, 64), (64, 64)]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, tokenizer):
    """A small random CLIP with a processor, saved like a downloaded one (offline scoring)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    path = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    config = CLIPConfig(text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77),
                        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=32, patch_size=8), projection_dim=16)
    CLIPModel(config).save_pretrained(path)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def test_evaluate_cli_scores_an_sd15_model_with_clip_at_a_given_size(sd15_model_dir, clip_dir, tmp_path):
    with pytest.raises(OSError, match="--clip-model"):  # auto: CLIP for any model but the built-in one
        evaluate_main(["--model", str(sd15_model_dir), "--clip-model", "nobody/no-such-clip"])
    report = evaluate_main(["--model", str(sd15_model_dir), "--n", "2", "--steps", "1", "--height", "64",
                            "--width", "64", "--scorer", "clip", "--clip-model", str(clip_dir),
                            "--diversity-prompts", "1", "--diversity-seeds", "2", "--output", str(tmp_path / "r.json")])
    assert report["scorer"] == "clip" and (report["width"], report["height"]) == (64, 64)
    assert 0.0 <= report["emotion_accuracy"] <= 1.0 and report["diversity"] >= 0.0


def test_ab_test_draws_at_the_given_size(sd15_pipe, clip_dir):
    result = ab_test(sd15_pipe, PromptOptimizer(backend="offline", tokenizer=sd15_pipe.tokenizer), ["happy"],
                     ["casual"], [0], variants=1, steps=1, scorer=ClipScorer(str(clip_dir)), height=64, width=64)
    assert {g.image.size for g in result.images_a + result.images_b} == {(64, 64)}


def test_the_widget_draws_at_the_given_size(sd15_pipe):
    ui = generator_ui(sd15_pipe, height=64, width=64)
    ui.steps.value = 1
    ui.click()
    assert ui.last is not None and ui.last.image.size == (64, 64), ui.status.value


def test_an_image_blacked_out_by_the_safety_checker_says_so(sd15_pipe, tmp_path):
    from diffusers import StableDiffusionPipeline
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    config = CLIPConfig(vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=32, patch_size=8), projection_dim=16)
    checker = StableDiffusionSafetyChecker(config).eval()
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-10.0)  # every image scores above every concept's threshold
    pipe = StableDiffusionPipeline(**{**sd15_pipe.components, "safety_checker": checker,
                                      "feature_extractor": CLIPImageProcessor(size={"shortest_edge": 32},
                                                                              crop_size={"height": 32, "width": 32})})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [g] = generate(pipe, "1girl", seed=0, steps=1, height=64, width=64, progress=False)
    assert g.image.getextrema() == ((0, 0), (0, 0), (0, 0))  # what the checker does to a flagged image
    assert g.params["nsfw_blacked_out"] is True
    assert any("safety checker blacked out 1 of 1" in str(w.message) for w in caught)
    assert "NSFW: blacked out" in Image.open(g.save(tmp_path / "black.png")).info["parameters"]
