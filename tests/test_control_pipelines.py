"""ControlNet pipelines (controlnet, controlnet_img2img) from "tiny" and local folders; training moves only
the ControlNet; the shipped ControlNet follows a hand-drawn sketch."""

import warnings

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, StableDiffusionControlNetImg2ImgPipeline, StableDiffusionControlNetPipeline

from animegen_utils import ModelNotFoundError, build_prompt, generate, load_pipeline, switch_task
from animegen_utils.control import canny_map, draw_sketch, sketch_to_control
from animegen_utils.control.train import (ControlTrainConfig, controlnet_loss, ink_lines, line_strokes, make_batch, random_geometry,
                                          shape_boundaries, shrink_lines, thin_lines, train)
from animegen_utils.evaluate.edges import edge_adherence
from animegen_utils.generation import image_sha256
from animegen_utils.pipelines import TINY_CONTROLNET_DIR, controlnet_from_unet


@pytest.fixture(scope="module")
def controlnet_dir(dummy_model_dir, tmp_path_factory):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(dummy_model_dir / "unet")
    torch.manual_seed(0)
    cn = controlnet_from_unet(unet, vae_scale_factor=4)
    path = tmp_path_factory.mktemp("controlnet")
    cn.save_pretrained(path)
    return path


def test_controlnet_from_a_local_folder_shares_components(dummy_model_dir, controlnet_dir):
    txt = load_pipeline(str(dummy_model_dir))
    cn = load_pipeline(str(dummy_model_dir), task="controlnet", controlnet=str(controlnet_dir))
    both = load_pipeline(str(dummy_model_dir), task="controlnet_img2img", controlnet=str(controlnet_dir))
    assert isinstance(cn, StableDiffusionControlNetPipeline)
    assert isinstance(both, StableDiffusionControlNetImg2ImgPipeline)
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        assert getattr(cn, name) is getattr(txt, name) is getattr(both, name)
    # One ControlNet object for both tasks, whether switched from the pipeline or loaded again by name.
    assert switch_task(cn, "controlnet_img2img").controlnet is cn.controlnet is both.controlnet


def test_controlnet_img2img_runs_and_records_both_images(dummy_model_dir, controlnet_dir):
    txt = load_pipeline(str(dummy_model_dir))
    [src] = generate(txt, "1girl", seed=0, steps=2, progress=False)
    control = sketch_to_control(draw_sketch("tilted"), size=64)
    pipe = load_pipeline(str(dummy_model_dir), task="controlnet_img2img", controlnet=str(controlnet_dir))
    [g] = generate(pipe, "1girl, smile", seed=1, steps=4, image=src.image, control_image=control,
                   strength=0.6, controlnet_conditioning_scale=0.8, control_guidance_end=0.5, progress=False)
    assert g.image.size == (64, 64)
    p = g.params
    assert p["task"] == "controlnet_img2img" and p["strength"] == 0.6
    assert p["controlnet_conditioning_scale"] == 0.8 and p["control_guidance_end"] == 0.5
    assert p["image_sha256"] == image_sha256(src.image) and p["control_image_sha256"] == image_sha256(control)


def test_missing_controlnet_folder_and_hub_id_fail_clearly(dummy_model_dir, tmp_path):
    with pytest.raises(ModelNotFoundError, match="No ControlNet folder"):
        load_pipeline(str(dummy_model_dir), task="controlnet", controlnet="./no-such-controlnet")
    with pytest.raises(ModelNotFoundError, match="lllyasviel/control_v11p_sd15_canny"):
        load_pipeline(str(dummy_model_dir), task="controlnet_img2img")
    with pytest.raises(ValueError, match="controlnet_img2img"):
        load_pipeline(str(dummy_model_dir), task="controlnet-img2img")


def test_training_moves_only_controlnet_weights(dummy_model_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(dummy_model_dir)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.requires_grad_(False)
    torch.manual_seed(0)
    cn = controlnet_from_unet(pipe.unet, pipe.vae_scale_factor)
    frozen = {n: {k: v.clone() for k, v in getattr(pipe, n).state_dict().items()} for n in ("unet", "vae", "text_encoder")}
    before = {k: v.clone() for k, v in cn.state_dict().items()}
    opt = torch.optim.AdamW(cn.parameters(), lr=1e-3)
    cfg = ControlTrainConfig(batch=2)
    for step in range(2):
        images, controls, captions = make_batch(step, cfg)
        loss = controlnet_loss(pipe, cn, images, controls, captions, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, state in frozen.items():
        for k, v in getattr(pipe, n).state_dict().items():
            assert torch.equal(v, state[k]), f"{n}.{k} moved"
    assert all(p.grad is None for p in pipe.unet.parameters())
    moved = [k for k, v in cn.state_dict().items() if not torch.equal(v, before[k])]
    assert any("zero_conv" in k or "controlnet_down_blocks" in k for k in moved)
    assert any("controlnet_cond_embedding" in k for k in moved)


def test_training_batches_are_reproducible_and_in_range():
    cfg = ControlTrainConfig(batch=4)
    a, b = make_batch(7, cfg), make_batch(7, cfg)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    assert a[0].shape == (4, 3, 64, 64) and a[1].shape == (4, 3, 64, 64)
    assert a[0].min() >= -1 and a[0].max() <= 1 and set(a[1].unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(make_batch(8, cfg)[1], a[1])


def test_shape_boundaries_are_exact_and_ignore_gradients():
    picture = np.zeros((40, 40, 3), np.uint8)
    picture[:] = np.linspace(100, 140, 40, dtype=np.uint8)[:, None, None]   # a gentle vertical gradient
    picture[10:20, 5:25] = (200, 30, 30)
    lines = shape_boundaries(picture) > 0
    expected = np.zeros((40, 40), bool)
    expected[10, 5:25] = expected[20, 5:25] = True      # the lower/right pixel of each differing pair
    expected[10:20, 5] = expected[10:20, 25] = True
    assert (lines == expected).all()


def test_thinning_leaves_the_centre_line_of_a_band():
    band = np.zeros((20, 40), bool)
    band[8:13, 5:35] = True                               # 5 pixels thick
    thin = thin_lines(band)
    assert thin[10, 8:32].all()                           # the centre row, away from the ends
    assert thin.sum(axis=0)[8:32].max() == 1              # one pixel thick
    assert not thin[:8].any() and not thin[13:].any()


def test_line_art_is_one_stroke_per_boundary_at_the_output_size():
    boundaries = np.zeros((256, 256), np.uint8)
    boundaries[100:104:3, 40:200] = 255                   # both sides of a dark outline, 3 px apart
    edges = shrink_lines(line_strokes(boundaries, radius=1), 64)
    assert edges.shape == (64, 64) and set(np.unique(edges)) == {0, 255}
    rows = np.nonzero(edges[:, 20:40].any(axis=1))[0]
    assert rows.min() >= 24 and rows.max() <= 26          # one line near row 101 / 4, not two


def test_ink_goes_on_lone_lines_and_leaves_crowded_ones_coloured():
    picture = np.full((128, 128, 3), (60, 110, 230), np.uint8)          # a blue iris, say
    strokes = np.zeros((128, 128), np.uint8)
    strokes[20:23, 10:60] = 255                                          # a lone outline, 3 px wide
    for row in range(60, 100, 5):                                        # rings 2 px apart: an iris
        strokes[row:row + 3, 70:120] = 255
    inked = ink_lines(picture, strokes, 3, np.random.default_rng(0))
    assert inked[21, 30].max() < 80                                      # dark ink on the outline
    assert inked[81, 95, 2] > 200                                        # the crowded lines stay blue
    assert tuple(inked[50, 30]) == (60, 110, 230)                        # no line, no ink


def test_random_geometry_is_the_identity_when_switched_off_and_moves_otherwise():
    off = ControlTrainConfig(affine_prob=0.0, elastic_prob=0.0)
    mx, my = random_geometry(np.random.default_rng(0), off, 32)
    assert (mx == np.arange(32)[None]).all() and (my == np.arange(32)[:, None]).all()
    on = ControlTrainConfig(affine_prob=1.0, elastic_prob=1.0)
    mx, my = random_geometry(np.random.default_rng(0), on, 32)
    assert np.abs(mx - np.arange(32)[None]).max() > 1


def test_line_art_controls_lie_on_their_pictures_lines():
    # Picture and control go through one geometry (affine + elastic): the picture's canny edges meet
    # its own line art (measured 0.80-0.96) and not another pair's (0.32-0.63).
    from PIL import Image

    from animegen_utils.control.train import make_pair
    from animegen_utils.evaluate.edges import edge_f1

    cfg = ControlTrainConfig(line_art_prob=1.0, dropout_prob=0.0, thick_prob=0.0, affine_prob=1.0, elastic_prob=1.0)
    rng = np.random.default_rng(0)
    pairs = [make_pair(i, rng, cfg) for i in range(6)]
    own = [edge_f1(Image.fromarray(e), Image.fromarray(im)) for im, e, _ in pairs]
    swapped = [edge_f1(Image.fromarray(pairs[i][1]), Image.fromarray(pairs[i - 1][0])) for i in range(6)]
    assert min(own) > 0.75 and np.mean(own) > 0.8 and all(o > s + 0.15 for o, s in zip(own, swapped))


def test_supersampled_render_is_what_render_character_shrinks():
    from PIL import Image

    from animegen_utils.toyworld import CharacterAttributes, render_character
    from animegen_utils.toyworld.render import render_supersampled

    attrs = CharacterAttributes("sad", "school_uniform", "pink", "green", "twintails", "glasses")
    big = render_supersampled(attrs, 3).image
    assert big.size == (256, 256)
    assert big.resize((64, 64), Image.LANCZOS).tobytes() == render_character(attrs, 3).image.tobytes()


def test_train_command_resumes_and_saves_a_loadable_controlnet(dummy_model_dir, tmp_path):
    cfg = ControlTrainConfig(steps=2, batch=2, checkpoint_every=1, log_every=1)
    out, work = tmp_path / "cn", tmp_path / "work"
    train(cfg, out, work, model_dir=dummy_model_dir, progress=False)
    first = ControlNetModel.from_pretrained(out).state_dict()
    # One more step resumes from step 2 (the log gains exactly one line).
    train(ControlTrainConfig(steps=3, batch=2, checkpoint_every=1, log_every=1), out, work,
          model_dir=dummy_model_dir, progress=False)
    lines = (work / "train_log.jsonl").read_text().splitlines()
    assert [int(line.split('"step": ')[1].split(",")[0]) for line in lines] == [1, 2, 3]
    assert torch.load(work / "controlnet.pt", weights_only=False)["step"] == 3
    assert (out / "training.json").exists() and (out / "loss_curve.png").exists()
    pipe = load_pipeline(str(dummy_model_dir), task="controlnet", controlnet=str(out))
    assert any(not torch.equal(v, first[k]) for k, v in pipe.controlnet.state_dict().items())


# --------------------------------------------------------------------------- the shipped ControlNet

def test_builtin_controlnet_is_the_default_for_tiny_and_loads_without_warnings():
    assert (TINY_CONTROLNET_DIR / "config.json").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cn = load_pipeline("tiny", task="controlnet")
    named = load_pipeline("tiny", task="controlnet_img2img", controlnet="tiny")
    assert cn.unet is load_pipeline("tiny").unet is named.unet
    assert cn.controlnet.config.conditioning_embedding_out_channels == named.controlnet.config.conditioning_embedding_out_channels
    assert sum(p.numel() for p in cn.controlnet.parameters()) < 3_000_000
    with pytest.raises(ModelNotFoundError, match="No ControlNet folder"):
        load_pipeline("tiny", task="controlnet", controlnet="/nonexistent/cn")


def test_builtin_controlnet_pulls_the_layout_towards_the_control():
    # The same character's canny map shifted 10 px right, then 10 px left: the ControlNet's outputs
    # move with it (txt2img's, on the same seeds, cannot). Measured: the outputs' edge centroids
    # differ by 15.9 px (control: 20 px; the ControlNet shipped before the line-art training: 3.6).
    import cv2

    from animegen_utils.control.preprocess import canny_edges
    from animegen_utils.evaluate import prompt_for, random_requests
    from animegen_utils.toyworld import CharacterAttributes, render_character

    txt, cn = load_pipeline("tiny"), load_pipeline("tiny", task="controlnet")
    request = random_requests(1, seed=44)[0]
    picture = np.asarray(render_character(CharacterAttributes(**request), seed=900_000).image)
    centre = {}
    for dx in (10, -10):
        m = np.float32([[0.8, 0, 6.4 + dx], [0, 0.8, 6.4]])
        control = canny_map(cv2.warpAffine(picture, m, (64, 64), borderMode=cv2.BORDER_REPLICATE))
        gens = generate(cn, prompt_for(request), seed=[0, 1, 2, 3], image=control, steps=12, progress=False)
        centre[dx] = np.mean([np.nonzero(canny_edges(g.image))[1].mean() for g in gens])
    assert centre[10] - centre[-10] > 8.0
    # A conditioning scale of 0 turns the ControlNet off: the txt2img picture.
    [off] = generate(cn, prompt_for(request), seed=0, image=control, steps=12, controlnet_conditioning_scale=0.0,
                     progress=False)
    [plain] = generate(txt, prompt_for(request), seed=0, steps=12, progress=False)
    assert np.allclose(np.asarray(off.image, dtype=int), np.asarray(plain.image, dtype=int), atol=1)


def test_edge_adherence_reports_both_arms_on_a_hand_drawn_sketch():
    # A sketch the renderer never drew, through the built-in pipelines: the table the notebook prints.
    txt, cn = load_pipeline("tiny"), load_pipeline("tiny", task="controlnet")
    control = sketch_to_control(draw_sketch("big_head"), size=128)
    r = edge_adherence(cn, txt, [control], [build_prompt("surprised", "casual")], seeds=[0, 1], steps=8)
    assert r["f1_with"].shape == r["f1_without"].shape == (1, 2)
    assert ((0 < r["f1_with"]) & (r["f1_with"] < 1)).all() and ((0 < r["f1_without"]) & (r["f1_without"] < 1)).all()
    assert r["with"][0][0].params["image_sha256"] == image_sha256(control)
    assert r["with"][0][0].image.tobytes() != r["without"][0][0].image.tobytes()


def test_the_shipped_controlnet_was_trained_with_the_default_config():
    # The model card's promise: `python -m animegen_utils.control train` reproduces it.
    import dataclasses
    import json

    from animegen_utils.model_hash import model_hash
    from animegen_utils.pipelines import BUILTIN_MODELS

    folder = BUILTIN_MODELS["tiny"] / "controlnet"
    record = json.loads((folder / "training.json").read_text())
    assert record["config"] == dataclasses.asdict(ControlTrainConfig())
    assert record["image_size"] == load_pipeline("tiny").unet.config.sample_size * 4
    assert record["base_model_hash"] == model_hash(BUILTIN_MODELS["tiny"])  # trained on the shipped base


def test_the_builtin_model_has_its_own_controlnet_also_by_name():
    cn = load_pipeline("tiny", task="controlnet")
    assert cn.controlnet.config.block_out_channels == cn.unet.config.block_out_channels
    by_name = load_pipeline("tiny", task="controlnet", controlnet="tiny")
    assert torch.equal(by_name.controlnet.conv_in.weight, cn.controlnet.conv_in.weight)


def test_a_controlnet_made_for_another_architecture_is_refused_before_drawing(dummy_model_dir):
    from animegen_utils.toyworld.model import TinyConfig, make_unet

    other = controlnet_from_unet(make_unet(TinyConfig()), vae_scale_factor=4)  # version 2's shape
    with pytest.raises(ValueError, match=r"made for another base model architecture \(block_out_channels "
                                         r"\(16, 32, 64, 128\) vs the UNet's \(32, 64, 128\)"):
        load_pipeline(str(dummy_model_dir), task="controlnet", controlnet=other)
