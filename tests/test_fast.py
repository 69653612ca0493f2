"""Few-step generation: scheduler="lcm", the LCM-LoRA distillation, the SD1.5 path."""

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import LCMScheduler

from animegen_utils import build_prompt, clear_pipeline_cache, generate, load_pipeline, switch_task
from animegen_utils.fast.distill import (LCM_TARGET_MODULES, DDIMSolver, DistillConfig, add_lcm_lora, distill,
                                         save_lora, scalings_for_boundary_conditions)
from animegen_utils.lora import active_adapters, load_lora, unload_lora
from animegen_utils.pipelines import (SD15_LCM_LORA, TINY_LCM_LORA_DIR, ModelNotFoundError, recommended_settings,
                                      set_scheduler)

PROMPT = build_prompt("happy", "school_uniform")


def _pixels(pipe, seed=3, **kw):
    [g] = generate(pipe, PROMPT, seed=seed, progress=False, **kw)
    return np.asarray(g.image, dtype=np.int16), g.params


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_pipeline_cache()
    yield
    clear_pipeline_cache()


def _random_lora(unet, folder, targets, seed, rank=4, std=0.05):
    """A LoRA with random (non-zero) weights for ``unet``'s architecture, saved in diffusers format."""
    import copy

    from peft import LoraConfig

    u = copy.deepcopy(unet)
    u.requires_grad_(False)
    u.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), init_lora_weights=False))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in u.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return save_lora(u, folder)


# --------------------------------------------------------------------------- the built-in LCM-LoRA

def test_lcm_on_tiny_loads_adapter_sets_scheduler_and_defaults_follow():
    pipe = load_pipeline("tiny", scheduler="lcm")
    assert isinstance(pipe.scheduler, LCMScheduler)
    assert active_adapters(pipe) == {"lcm": 1.0}
    assert recommended_settings(pipe) == (4, 1.0)
    img, params = _pixels(pipe)
    assert (params["steps"], params["guidance"], params["scheduler"]) == (4, 1.0, "lcm")
    explicit, _ = _pixels(pipe, steps=4, guidance=1.0)
    assert np.array_equal(img, explicit)
    # The adapter is what makes 4 steps work: the same scheduler without it draws another image.
    from animegen_utils.lora import set_lora_scale

    set_lora_scale(pipe, "lcm", 0.0)
    without, _ = _pixels(pipe)
    assert np.abs(img - without).mean() > 5


@pytest.mark.parametrize("lcm_first", [False, True])
def test_lcm_pipeline_leaves_other_pipelines_of_the_model_alone(lcm_first):
    reference, _ = _pixels(load_pipeline("tiny"))  # computed alone, then the cache is cleared
    lcm_reference, _ = _pixels(load_pipeline("tiny", scheduler="lcm"))
    clear_pipeline_cache()
    if lcm_first:
        lcm = load_pipeline("tiny", scheduler="lcm")
        plain = load_pipeline("tiny")
    else:
        plain = load_pipeline("tiny")
        lcm = load_pipeline("tiny", scheduler="lcm")
    assert plain.unet is lcm.unet  # shared weights...
    assert np.array_equal(_pixels(plain)[0], reference)  # ...separate behaviour
    assert np.array_equal(_pixels(lcm)[0], lcm_reference)
    assert np.array_equal(_pixels(plain)[0], reference)


def test_lcm_composes_with_a_character_lora_and_unloads_cleanly(tmp_path):
    lcm = load_pipeline("tiny", scheduler="lcm")
    lcm_only, _ = _pixels(lcm)
    char_dir = tmp_path / "character"
    # strong enough to show: version 2 has attention only on its two coarsest levels
    _random_lora(lcm.unet, char_dir, ("to_q", "to_k", "to_v", "to_out.0"), seed=1, std=0.2)
    load_lora(lcm, char_dir, adapter_name="character", scale=0.8)
    assert active_adapters(lcm) == {"lcm": 1.0, "character": 0.8}
    both, params = _pixels(lcm)
    assert params["steps"] == 4
    assert np.abs(both - lcm_only).mean() > 1
    unload_lora(lcm, "character")
    assert active_adapters(lcm) == {"lcm": 1.0}
    assert "character" not in lcm.unet.peft_config
    assert np.array_equal(_pixels(lcm)[0], lcm_only)


def test_lcm_img2img_and_switching(tmp_path):
    lcm = load_pipeline("tiny", scheduler="lcm")
    [g] = generate(lcm, PROMPT, seed=1, progress=False)
    img2img = switch_task(lcm, "img2img")
    assert isinstance(img2img.scheduler, LCMScheduler) and active_adapters(img2img) == {"lcm": 1.0}
    [h] = generate(img2img, PROMPT, seed=1, image=g.image, strength=0.5, progress=False)
    assert h.params["task"] == "img2img" and h.image.size == g.image.size
    direct = load_pipeline("tiny", task="img2img", scheduler="lcm")
    [k] = generate(direct, PROMPT, seed=1, image=g.image, strength=0.5, progress=False)
    assert np.array_equal(np.asarray(h.image), np.asarray(k.image))
    # ControlNet with LCM (a ControlNet initialised from the UNet: its zero convolutions add nothing).
    from diffusers import UNet2DConditionModel

    from animegen_utils.pipelines import TINY_MODEL_DIR, controlnet_from_unet

    clean_unet = UNet2DConditionModel.from_pretrained(TINY_MODEL_DIR / "unet")  # without LoRA layers
    cn = load_pipeline("tiny", task="controlnet", scheduler="lcm",
                       controlnet=controlnet_from_unet(clean_unet, lcm.vae_scale_factor))
    assert isinstance(cn.scheduler, LCMScheduler) and active_adapters(cn) == {"lcm": 1.0}
    [c] = generate(cn, PROMPT, seed=1, image=g.image, progress=False)
    assert np.abs(np.asarray(c.image, dtype=np.int16) - np.asarray(g.image, dtype=np.int16)).max() <= 2
    # set_scheduler leaves LCM (and its adapter) and comes back.
    plain_ref, _ = _pixels(load_pipeline("tiny"))
    set_scheduler(lcm, "dpm++")
    assert active_adapters(lcm) == {} and np.array_equal(_pixels(lcm)[0], plain_ref)
    set_scheduler(lcm, "lcm")
    assert active_adapters(lcm) == {"lcm": 1.0}
    with pytest.raises(ValueError, match="lcm_lora is for scheduler='lcm'"):
        load_pipeline("tiny", lcm_lora="x")


def test_shipped_lcm_lora_is_diffusers_format():
    from safetensors.torch import load_file

    state = load_file(TINY_LCM_LORA_DIR / "pytorch_lora_weights.safetensors")
    assert state and all(k.startswith("unet.") and ".lora_" in k for k in state)
    assert (TINY_LCM_LORA_DIR / "README.md").exists()


# --------------------------------------------------------------------------- SD1.5 path

def _fake_hub_lora(cache: "Path", file) -> None:
    """Put ``file`` into a Hugging Face cache layout as latent-consistency/lcm-lora-sdv1-5."""
    import shutil

    revision = "0" * 40
    repo = cache / ("models--" + SD15_LCM_LORA.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    shutil.copy(file, snap / "pytorch_lora_weights.safetensors")


def test_sd15_path_loads_the_public_lcm_lora(dummy_model_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants

    model = str(dummy_model_dir)  # an SD1.5-shaped diffusers folder (tiny random weights)
    base = load_pipeline(model)
    lora_file = _random_lora(base.unet, tmp_path / "lcm", LCM_TARGET_MODULES, seed=2)

    with pytest.raises(ModelNotFoundError, match="latent-consistency/lcm-lora-sdv1-5.*hf download"):
        load_pipeline(model, scheduler="lcm")  # offline, not cached: the error names the id

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    _fake_hub_lora(tmp_path / "hub", lora_file)
    pipe = load_pipeline(model, scheduler="lcm")
    assert isinstance(pipe.scheduler, LCMScheduler)
    assert active_adapters(pipe) == {"lcm": 1.0} and pipe.animegen_lcm_lora == SD15_LCM_LORA
    img, params = _pixels(pipe)
    assert (params["steps"], params["guidance"]) == (4, 1.0)

    # The same weights given as a file: the same image, under its own adapter name.
    by_file = load_pipeline(model, scheduler="lcm", lcm_lora=str(lora_file))
    assert active_adapters(by_file) == {"lcm_pytorch_lora_weights": 1.0}
    assert np.array_equal(_pixels(by_file)[0], img)
    # And the base pipeline of the model is untouched by either.
    assert active_adapters(base) == {}
    assert not np.array_equal(_pixels(base, steps=4, guidance=1.0)[0], img)


# --------------------------------------------------------------------------- distillation

def test_recipe_pieces():
    c_skip, c_out = scalings_for_boundary_conditions(torch.tensor([0, 999]))
    assert torch.allclose(c_skip[0], torch.tensor(1.0)) and c_out[0] == 0  # f(x, 0) = x: the boundary condition
    assert c_skip[1] < 1e-6 and c_out[1] > 0.999
    alphas = torch.linspace(0.999, 0.01, 1000)
    solver = DDIMSolver(alphas, 1000, 50)
    assert solver.timesteps[0] == 19 and solver.timesteps[-1] == 999 and solver.step_ratio == 20
    x0, eps = torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
    assert torch.allclose(solver.step(x0, eps, torch.tensor([0])), alphas[0].sqrt().reshape(1, 1, 1, 1))


def _tiny_cfg(model, tmp_path, name, **kw):
    return DistillConfig(model=model, output_dir=str(tmp_path / name / "out"), work_dir=str(tmp_path / name / "work"),
                         n_images=16, batch_size=4, max_train_steps=4, checkpointing_steps=2, lora_rank=4,
                         lora_alpha=4, lr_warmup_steps=1, progress=False, **kw)


def test_distill_moves_only_lora_weights_and_resume_is_identical(dummy_model_dir, tmp_path):
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    model = str(dummy_model_dir)
    full = distill(_tiny_cfg(model, tmp_path, "full"))
    assert full.finished and full.step == 4
    original = UNet2DConditionModel.from_pretrained(dummy_model_dir / "unet").state_dict()
    moved = 0
    for name, p in full.unet.named_parameters():
        if "lora_" in name:
            moved += int("lora_B" in name and p.abs().sum() > 0)  # B starts at zero
        else:
            assert torch.equal(p, original[name.replace(".base_layer", "")]), name
    assert moved > 0

    cfg = _tiny_cfg(model, tmp_path, "resumed")
    first = distill(cfg, stop_after=2)
    assert not first.finished and first.step == 2
    assert not (tmp_path / "resumed" / "out" / "pytorch_lora_weights.safetensors").exists()
    second = distill(cfg)  # picks up checkpoint-latest
    assert second.finished
    a = load_file(full.lora_dir / "pytorch_lora_weights.safetensors")
    b = load_file(second.lora_dir / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_distill_cli_help_lists_every_option(capsys):
    from animegen_utils.fast.__main__ import main

    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    text = capsys.readouterr().out
    for flag in ("--max-train-steps", "--w-min", "--w-max", "--num-ddim-timesteps", "--loss-type", "--lora-rank",
                 "--checkpointing-steps", "--work-dir", "--fresh"):
        assert flag in text


def test_add_lcm_lora_targets_resnets_and_attention(tokenizer):
    from tests.conftest import get_dummy_components

    unet = get_dummy_components(tokenizer)["unet"]
    add_lcm_lora(unet, DistillConfig(lora_rank=4, lora_alpha=4))
    trainable = [n for n, p in unet.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("resnets.0.conv1" in n for n in trainable) and any("attn1.to_q" in n for n in trainable)


# --------------------------------------------------------------------------- the map's arithmetic

def test_frontier_bars_and_pareto_front():
    from animegen_utils.fast.frontier import SamplerPoint, meets_bars, pareto_front

    slow, mid, fast, dominated = (SamplerPoint("pndm", 50, 7.5), SamplerPoint("ddim", 8, 7.5),
                                  SamplerPoint("lcm", 4, 1.0), SamplerPoint("lcm", 8, 1.0))
    assert (slow.unet_evals, fast.unet_evals, SamplerPoint("lcm", 4, 1.5).unet_evals) == (100, 4, 8)
    acc = {slow: dict(emotion=1.0, style=1.0, hair_color=0.88, eye_color=0.8),
           mid: dict(emotion=1.0, style=1.0, hair_color=0.86, eye_color=0.78),
           fast: dict(emotion=0.9, style=1.0, hair_color=0.8, eye_color=0.5),
           dominated: dict(emotion=0.8, style=1.0, hair_color=0.7, eye_color=0.4)}
    speed = {slow: 10.0, mid: 2.0, fast: 1.0, dominated: 2.5}
    assert pareto_front(list(acc), speed, acc) == [fast, mid, slow]
    assert meets_bars(acc[mid]) and meets_bars(acc[mid], reference=acc[slow])
    assert not meets_bars(acc[fast])
    ref = dict(emotion=1.0, style=1.0, hair_color=0.95, eye_color=0.8)
    assert not meets_bars(acc[mid], reference=ref)  # hair 0.86 is more than 0.03 below 0.95


def test_the_map_as_one_sweep_reads_the_numbers_measure_adherence_gives(tmp_path):
    from animegen_utils.fast.frontier import SamplerPoint, adherence_from_table, map_spec, measure_adherence
    from animegen_utils.sweep import load_results, run

    points = [SamplerPoint("dpm++", 3, 7.5), SamplerPoint("lcm", 2, 1.0)]
    run(map_spec(points, n=6, batch_size=4), tmp_path / "map", progress=False)
    table = load_results(tmp_path / "map")
    assert table.num_rows == 12 and set(table.column("scheduler").to_pylist()) == {"dpm++", "lcm"}
    from_table = adherence_from_table(table)
    assert list(from_table) == points
    for p in points:
        single = tmp_path / f"{p.scheduler}-{p.steps}"
        assert measure_adherence(p, n=6, batch_size=4, out_dir=single) == from_table[p]
        # the same batches, so the same bytes
        drawn = {r["seed"]: r["png_sha256"] for r in load_results(single).to_pylist()}
        assert drawn == {r["seed"]: r["png_sha256"] for r in table.to_pylist() if r["scheduler"] == p.scheduler}


def test_lcm_timesteps_follow_the_adapters_skip_schedule(dummy_model_dir, tmp_path):
    """An adapter distilled on a 10-step skip schedule samples on that schedule's timesteps."""
    from animegen_utils.pipelines import lcm_skip_schedule

    out = distill(_tiny_cfg(str(dummy_model_dir), tmp_path, "k100", num_ddim_timesteps=10)).lora_dir
    assert lcm_skip_schedule(str(out)) == 10
    pipe = load_pipeline(str(dummy_model_dir), scheduler="lcm", lcm_lora=str(out))
    assert pipe.scheduler.config.original_inference_steps == 10
    pipe.scheduler.set_timesteps(4)
    assert set(pipe.scheduler.timesteps.tolist()) <= set(range(99, 1000, 100))   # [99, 199, ..., 999]
    # A public adapter (no distill.json) keeps LCMScheduler's default of 50.
    assert lcm_skip_schedule(str(tmp_path)) is None
    plain = load_pipeline(str(dummy_model_dir), scheduler="lcm", lcm_lora=str(_random_lora(
        pipe.unet, tmp_path / "public", LCM_TARGET_MODULES, seed=1).parent))
    assert plain.scheduler.config.original_inference_steps == 50


def test_the_builtin_model_loads_its_own_lcm_lora():
    import json

    from animegen_utils.adapters import fused_adapters
    from animegen_utils.fast.distill import DistillConfig
    from animegen_utils.pipelines import BUILTIN_MODELS, default_lcm_lora

    source = default_lcm_lora("tiny")
    assert Path(source) == BUILTIN_MODELS["tiny"] / "lcm_lora"
    record = json.loads((Path(source) / "distill.json").read_text())
    # distilled from these weights while they were still named "tiny-v2", with the default recipe
    assert record["config"]["model"] == "tiny-v2" and record["steps"] == DistillConfig().max_train_steps
    pipe = load_pipeline("tiny", scheduler="lcm")
    [g] = generate(pipe, "1girl, smile", seed=0, steps=2, guidance=1.0, progress=False)
    assert g.image.size == (128, 128) and fused_adapters(pipe)


def test_a_builtin_model_without_a_part_says_where_one_is(tmp_path, monkeypatch):
    import shutil

    from animegen_utils.pipelines import BUILTIN_MODELS

    bare = tmp_path / "tiny_bare"
    shutil.copytree(BUILTIN_MODELS["tiny"], bare, ignore=shutil.ignore_patterns("lcm_lora", "controlnet"))
    monkeypatch.setitem(BUILTIN_MODELS, "tiny-bare", bare)
    with pytest.raises(ModelNotFoundError, match=r"'tiny-bare' has no LCM-LoRA yet .*fast distill.* model='tiny' has one"):
        load_pipeline("tiny-bare", scheduler="lcm")
