"""SD1.5's real architecture through the kit's loading, sampling and memory paths (issue 20).

Random weights from SD1.5's published configs (``sd15_model_dir`` in conftest), 64 px, 1-2 steps.
"""

import pytest
import torch
from PIL import Image

from animegen_utils import ModelNotFoundError, generate, load_pipeline, set_scheduler, switch_task
from animegen_utils.generation import read_parameters
from animegen_utils.memory import HEADROOM, estimate_memory
from animegen_utils.pipelines import SD15, controlnet_from_unet

DRAW = dict(seed=0, steps=2, height=64, width=64, progress=False)


def test_a_scheduler_swap_starts_from_the_model_not_the_previous_sampler(sd15_model_dir):
    swapped = load_pipeline(str(sd15_model_dir), scheduler="dpm++_karras")
    set_scheduler(swapped, "euler")
    fresh = load_pipeline(str(sd15_model_dir), scheduler="euler")
    assert dict(swapped.scheduler.config) == dict(fresh.scheduler.config)
    assert not swapped.scheduler.config.use_karras_sigmas
    switched = switch_task(load_pipeline(str(sd15_model_dir), scheduler="dpm++_karras"), "img2img", scheduler="euler")
    assert dict(switched.scheduler.config) == dict(fresh.scheduler.config)
    [a], [b] = generate(swapped, "1girl", **DRAW), generate(fresh, "1girl", **DRAW)
    assert a.image.tobytes() == b.image.tobytes()


def test_config_is_refused_for_a_folder_instead_of_ignored(sd15_model_dir):
    with pytest.raises(ValueError, match="single-file"):
        load_pipeline(str(sd15_model_dir), config=str(sd15_model_dir))


def test_single_file_offline_without_configs_says_which_configs_it_needs(sd15_single_file):
    with pytest.raises(ModelNotFoundError) as err:
        load_pipeline(str(sd15_single_file))
    msg = str(err.value)
    assert "config=" in msg and f"hf download {SD15} --include" in msg
    assert f"hf download {sd15_single_file}" not in msg


def test_single_file_loads_offline_with_a_config_folder(sd15_single_file, sd15_model_dir, fresh_pipeline_cache):
    folder = load_pipeline(str(sd15_model_dir), dtype="fp16")
    single = load_pipeline(str(sd15_single_file), config=str(sd15_model_dir), dtype="fp16")
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(folder, name).state_dict(), getattr(single, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_controlnet_safetensors_file_loads_with_its_config(sd15_pipe, tmp_path, fresh_pipeline_cache):
    from safetensors.torch import save_file

    cn = controlnet_from_unet(sd15_pipe.unet, sd15_pipe.vae_scale_factor)
    cn.save_pretrained(tmp_path / "cn-config")  # its config.json is what from_single_file needs offline
    save_file({k: v.half().contiguous() for k, v in cn.state_dict().items()}, str(tmp_path / "cn.safetensors"))
    del cn
    with pytest.raises(ModelNotFoundError) as err:
        switch_task(sd15_pipe, "controlnet", controlnet=str(tmp_path / "cn.safetensors"))
    assert "controlnet_config=" in str(err.value) and "lllyasviel/control_v11p_sd15_canny" in str(err.value)
    pipe = switch_task(sd15_pipe, "controlnet", controlnet=str(tmp_path / "cn.safetensors"),
                       controlnet_config=str(tmp_path / "cn-config"))
    assert pipe.controlnet.config.block_out_channels == sd15_pipe.unet.config.block_out_channels
    [g] = generate(pipe, "1girl", image=Image.new("RGB", (64, 64)), **{**DRAW, "steps": 1})
    assert g.image.size == (64, 64)


def test_fp16_sd15_decode_is_counted_in_fp16(sd15_model_dir, sd15_pipe):
    half = load_pipeline(str(sd15_model_dir), dtype="fp16")
    assert half.vae.config.force_upcast  # SD1.5's VAE config says so, but its pipelines never read it
    fp16, fp32 = estimate_memory(half, 8, 512, 512), estimate_memory(sd15_pipe, 8, 512, 512)
    assert 2 * fp16.vae_bytes == fp32.vae_bytes
    # notebook 01's default grid (batch 8 at 512 px) fits a T4 with 12 GiB free after loading
    assert fp16.peak_bytes <= HEADROOM * 12 * 2**30


def _allocated_peak(fn) -> int:
    """Peak of the bytes allocated and not yet freed while ``fn`` runs (weights excluded)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    running = peak = 0
    for _, delta in sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()):
        running += delta
        peak = max(peak, running)
    return peak


@torch.no_grad()
def test_unet_estimate_covers_a_measured_sd15_step(sd15_pipe):
    latents, text = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 768)  # 64 px, guidance on: 2 rows
    measured = _allocated_peak(lambda: sd15_pipe.unet(latents, 999, encoder_hidden_states=text).sample)
    estimated = estimate_memory(sd15_pipe, 1, 64, 64, guidance=7.5).unet_bytes
    assert measured <= estimated <= 1.5 * measured


def test_img2img_records_the_size_it_draws_at(sd15_pipe, tmp_path):
    img2img = switch_task(sd15_pipe, "img2img")
    source = Image.new("RGB", (96, 64), "pink")
    [g] = generate(img2img, "1girl", image=source, strength=0.5, seed=0, steps=2, progress=False)
    assert g.image.size == (96, 64) and (g.params["width"], g.params["height"]) == (96, 64)
    assert "Size: 96x64" in Image.open(g.save(tmp_path / "a.png")).info["parameters"]
    assert read_parameters(tmp_path / "a.png")["width"] == 96
    with pytest.raises(ValueError, match="source image's size"):
        generate(img2img, "1girl", image=source, strength=0.5, height=64, width=64, steps=2, progress=False)
