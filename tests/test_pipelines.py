import pytest
import torch
from diffusers import (
    ControlNetModel,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
)

from animegen_utils import (
    SCHEDULERS,
    ModelNotFoundError,
    generate,
    load_pipeline,
    resolve_device,
    resolve_dtype,
    set_scheduler,
    switch_task,
)
from animegen_utils.export import save_single_file
from animegen_utils.pipelines import FEW_STEP_SCHEDULERS, TINY_MODEL_DIR, controlnet_from_unet, pipeline_info


def test_auto_device_on_a_cpu_machine():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_dtype_choice():
    assert resolve_dtype("auto", "cuda") == torch.float16
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="fp16"):
        resolve_dtype("half-ish", "cpu")


# "lcm" and "tcd" also load a distilled LoRA made for the model; tests/test_fast.py and
# tests/test_fast_cache.py cover them on "tiny".
@pytest.mark.parametrize("name", [n for n in SCHEDULERS if n not in FEW_STEP_SCHEDULERS])
def test_every_scheduler_name_builds(dummy_pipe, name):
    cls, overrides, _ = SCHEDULERS[name]
    pipe = set_scheduler(dummy_pipe, name)
    assert type(pipe.scheduler) is cls
    for key, value in overrides.items():
        assert pipe.scheduler.config[key] == value
    assert pipeline_info(pipe).scheduler == name


def test_karras_and_euler_a_are_what_they_say(dummy_model_dir):
    karras = load_pipeline(str(dummy_model_dir), scheduler="dpm++_karras")
    assert isinstance(karras.scheduler, DPMSolverMultistepScheduler) and karras.scheduler.config.use_karras_sigmas
    assert isinstance(load_pipeline(str(dummy_model_dir), scheduler="euler_a").scheduler,
                      EulerAncestralDiscreteScheduler)


def test_unknown_scheduler_and_task_name_the_choices(dummy_model_dir):
    with pytest.raises(ValueError, match="dpm\\+\\+_karras"):
        load_pipeline(str(dummy_model_dir), scheduler="k_lms_fancy")
    with pytest.raises(ValueError, match="img2img"):
        load_pipeline(str(dummy_model_dir), task="inpaint")


def test_load_from_a_save_pretrained_folder(dummy_model_dir):
    pipe = load_pipeline(str(dummy_model_dir))
    assert isinstance(pipe, StableDiffusionPipeline)
    assert pipe.dtype == torch.float32 and pipe.device.type == "cpu"
    assert pipe.safety_checker is None


def test_loading_twice_and_switching_task_share_the_weights(dummy_model_dir):
    txt = load_pipeline(str(dummy_model_dir))
    img = load_pipeline(str(dummy_model_dir), task="img2img")
    controlnet = controlnet_from_unet(txt.unet, txt.vae_scale_factor)
    cn = switch_task(txt, "controlnet", controlnet=controlnet)
    assert cn.controlnet is controlnet
    assert isinstance(img, StableDiffusionImg2ImgPipeline) and isinstance(cn, StableDiffusionControlNetPipeline)
    for name in ("unet", "vae", "text_encoder", "tokenizer"):
        assert getattr(img, name) is getattr(txt, name)
        assert getattr(cn, name) is getattr(txt, name)
    assert img.scheduler is not txt.scheduler  # samplers are per pipeline
    set_scheduler(img, "ddim")
    assert not isinstance(txt.scheduler, type(img.scheduler)) or pipeline_info(txt).scheduler == "ddim"
    assert pipeline_info(txt).scheduler == "dpm++"


def test_img2img_and_controlnet_run(dummy_model_dir):
    txt = load_pipeline(str(dummy_model_dir))
    [src] = generate(txt, "1girl, smile", seed=1, steps=2, progress=False)
    img = switch_task(txt, "img2img")
    [out] = generate(img, "1girl, sad", seed=1, steps=4, image=src.image, strength=0.5, progress=False)
    assert out.image.size == src.image.size and out.params["strength"] == 0.5
    cn = switch_task(txt, "controlnet", controlnet=controlnet_from_unet(txt.unet, txt.vae_scale_factor))
    [out] = generate(cn, "1girl", seed=1, steps=2, image=src.image, progress=False)
    assert out.image.size == (64, 64)


def test_single_file_checkpoint_matches_the_folder(dummy_model_dir, tmp_path):
    folder = load_pipeline(str(dummy_model_dir))
    ckpt = save_single_file(folder, tmp_path / "anime.safetensors")
    single = load_pipeline(str(ckpt), config=str(dummy_model_dir))
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(folder, name).state_dict(), getattr(single, name).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    [x] = generate(folder, "1girl, smile", seed=3, steps=3, progress=False)
    [y] = generate(single, "1girl, smile", seed=3, steps=3, progress=False)
    assert x.image.tobytes() == y.image.tobytes()


def test_clip_skip_reaches_the_text_encoder(dummy_model_dir):
    base = load_pipeline(str(dummy_model_dir))
    skip = load_pipeline(str(dummy_model_dir), clip_skip=1)
    [a] = generate(base, "1girl, smile", seed=0, steps=2, progress=False)
    [b] = generate(skip, "1girl, smile", seed=0, steps=2, progress=False)
    assert b.params["clip_skip"] == 1 and a.params["clip_skip"] is None
    assert a.image.tobytes() != b.image.tobytes()


def test_offline_hub_id_explains_how_to_download():
    with pytest.raises(ModelNotFoundError) as err:
        load_pipeline("someone/not-a-cached-model")
    msg = str(err.value)
    assert "someone/not-a-cached-model" in msg and "HF_HUB_OFFLINE" in msg and "hf download" in msg


def test_removed_runwayml_id_points_to_the_new_one():
    with pytest.raises(ModelNotFoundError, match="stable-diffusion-v1-5/stable-diffusion-v1-5"):
        load_pipeline("runwayml/stable-diffusion-v1-5")


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_pipeline(str(tmp_path / "nope.safetensors"))


def test_builtin_model_loads_offline():
    assert (TINY_MODEL_DIR / "model_index.json").exists()
    pipe = load_pipeline("tiny")
    info = pipeline_info(pipe)
    assert (info.model, info.task, info.scheduler, info.device) == ("tiny", "txt2img", "dpm++", "cpu")
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 128
    assert type(pipe.text_encoder).__name__ == "CLIPTextModel"
    assert type(pipe.tokenizer).__name__ == "CLIPTokenizer"


def test_default_controlnet_is_the_sd15_canny_one(dummy_model_dir):
    with pytest.raises(ModelNotFoundError, match="lllyasviel/control_v11p_sd15_canny"):
        load_pipeline(str(dummy_model_dir), task="controlnet")


def test_untrained_controlnet_is_a_no_op(dummy_model_dir):
    # A ControlNet fresh from the UNet has zero convolutions: same pixels as txt2img.
    txt = load_pipeline(str(dummy_model_dir))
    cn = switch_task(txt, "controlnet", controlnet=controlnet_from_unet(txt.unet, txt.vae_scale_factor))
    [a] = generate(txt, "1girl, smile", seed=4, steps=3, progress=False)
    [b] = generate(cn, "1girl, smile", seed=4, steps=3, image=a.image, progress=False)
    assert a.image.tobytes() == b.image.tobytes()


def test_builtin_controlnet_is_the_trained_one():
    # The shipped ControlNet (animegen_utils.control) is the default for "tiny": no fallback, no warning.
    cn = load_pipeline("tiny", task="controlnet")
    assert isinstance(cn, StableDiffusionControlNetPipeline)
    assert any(p.abs().sum() > 0 for n, p in cn.controlnet.named_parameters() if "zero_conv" in n or "controlnet_down" in n)
    assert cn.unet is load_pipeline("tiny").unet


def test_the_builtin_model_loads_offline_at_128_px():
    pipe = load_pipeline("tiny")
    assert pipeline_info(pipe).model == "tiny"
    assert pipe.unet.config.sample_size == 32 and pipe.vae_scale_factor == 4  # 128 px on 32x32 latents
    [g] = generate(pipe, "1girl, smile, red hair, green eyes", seed=0, steps=2, progress=False)
    assert g.image.size == (128, 128)
    with pytest.raises(ModelNotFoundError, match="tiny-v2"):
        load_pipeline("tiny-v2")  # version 2 is "tiny" now: the transition name is not a Hub id either
