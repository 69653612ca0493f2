"""DeepCache (``generate(..., deepcache=...)``, ``animegen_utils.fast.cache``): per call, exact when off."""

import json
import sys

import numpy as np
import pytest
import torch

from animegen_utils import build_prompt, clear_pipeline_cache, generate, load_pipeline, reproduce
from animegen_utils.fast.cache import (DeepCacheConfig, deepcache_config, helper_branch_id, is_cached, skip_branches,
                                       unet_cache)
from animegen_utils.pipelines import TINY_MODEL_DIR

pytest.importorskip("DeepCache")

PROMPT = build_prompt("happy", "school_uniform")
STEPS = 4  # cached steps between full ones (interval 3: full at 0 and 3), cheap on the CPU


def _pixels(pipe, seed=3, **kw):
    [g] = generate(pipe, PROMPT, seed=seed, steps=kw.pop("steps", STEPS), progress=False, **kw)
    return np.asarray(g.image, dtype=np.int16), g


def _forward_attributes(unet):
    return [name for name, m in unet.named_modules() if "forward" in m.__dict__]


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_pipeline_cache()
    yield
    clear_pipeline_cache()


def test_cache_changes_the_image_and_off_is_bit_identical():
    pipe = load_pipeline("tiny")
    reference, plain = _pixels(pipe)
    cached, g = _pixels(pipe, deepcache=3)
    assert np.abs(cached - reference).mean() > 0.5
    assert g.params["deepcache"] == {"interval": 3, "branch": 0} and "deepcache" not in plain.params
    assert not is_cached(pipe.unet) and _forward_attributes(pipe.unet) == []  # nothing left on the modules
    assert np.array_equal(_pixels(pipe)[0], reference)
    # interval 1 runs the full UNet every step: the same pixels as no cache at all
    assert np.array_equal(_pixels(pipe, deepcache=1)[0], reference)


def test_deeper_branch_and_longer_interval_draw_other_images():
    pipe = load_pipeline("tiny")
    a, b, c = (_pixels(pipe, deepcache=d)[0] for d in (2, {"interval": 2, "branch": 3}, 3))
    assert not np.array_equal(a, b) and not np.array_equal(a, c)


def test_other_pipelines_sharing_the_unet_are_unaffected():
    plain_ref = _pixels(load_pipeline("tiny"))[0]
    lcm_ref = _pixels(load_pipeline("tiny", scheduler="lcm"), steps=4)[0]
    clear_pipeline_cache()
    plain, lcm = load_pipeline("tiny"), load_pipeline("tiny", scheduler="lcm")
    assert plain.unet is lcm.unet
    _pixels(plain, deepcache=2)  # the plain pipeline's cached call first, then LCM's
    lcm_cached = _pixels(lcm, steps=4, deepcache=2)[0]
    assert np.abs(lcm_cached - lcm_ref).mean() > 0.5   # LCM's fused adapter and the cache together
    assert np.array_equal(_pixels(plain)[0], plain_ref)
    assert np.array_equal(_pixels(lcm, steps=4)[0], lcm_ref)


def test_an_error_inside_the_call_still_switches_the_cache_off():
    pipe = load_pipeline("tiny")
    reference = _pixels(pipe)[0]

    def boom(*_):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        generate(pipe, PROMPT, seed=3, steps=STEPS, progress=False, deepcache=2, callback_on_step_end=boom)
    assert not is_cached(pipe.unet) and _forward_attributes(pipe.unet) == []
    assert np.array_equal(_pixels(pipe)[0], reference)


def test_nested_use_of_one_unet_is_refused():
    pipe = load_pipeline("tiny")
    with unet_cache(pipe, DeepCacheConfig(2)):
        assert is_cached(pipe.unet)
        with pytest.raises(RuntimeError, match="share their UNet"):
            generate(load_pipeline("tiny", scheduler="lcm"), PROMPT, progress=False, deepcache=2)
    assert not is_cached(pipe.unet)


def test_plms_repeated_timestep_and_batches_work():
    # PLMS repeats a timestep, which the package's own step lookup would miscount; batches of a
    # call each start their cache afresh, so an image does not depend on its batch.
    pipe = load_pipeline("tiny", scheduler="pndm")
    pipe.scheduler.set_timesteps(STEPS)
    steps = pipe.scheduler.timesteps.tolist()
    assert len(set(steps)) < len(steps)  # e.g. [999, 799, 799, 599, ...]
    [single] = generate(pipe, PROMPT, seed=5, steps=STEPS, progress=False, deepcache=2)
    gens = generate(pipe, [PROMPT, PROMPT], seed=[5, 5], steps=STEPS, progress=False, deepcache=2, batch_size=1)
    assert np.array_equal(np.asarray(gens[0].image), np.asarray(gens[1].image))
    assert np.array_equal(np.asarray(single.image), np.asarray(gens[1].image))


def test_reproduce_redraws_a_cached_image(tmp_path):
    pipe = load_pipeline("tiny")
    _, g = _pixels(pipe, deepcache={"interval": 3, "branch": 1})
    path = g.save(tmp_path / "cached.png")
    again = reproduce(path)
    assert again.max_pixel_diff == 0 and again.params["deepcache"] == {"interval": 3, "branch": 1}


@pytest.mark.parametrize("value, error, match", [
    (0, ValueError, r"interval must be an integer >= 1"),
    ({"interval": 2, "branch": 8}, ValueError, r"branch must be an integer from 0 to 7 for this UNet \(4 blocks x 2"),
    ({"interval": 2, "branch": -1}, ValueError, r"from 0 to 7"),
    ({"intervall": 2}, ValueError, r"unknown keys \['intervall'\]; valid keys: interval, branch"),
    ("fast", TypeError, r"deepcache must be None, an interval \(int >= 1\), a dict with keys interval, branch"),
    (True, TypeError, r"deepcache must be None"),
    (2.5, TypeError, r"deepcache must be None"),
])
def test_bad_arguments_name_the_valid_choices(value, error, match):
    pipe = load_pipeline("tiny")
    with pytest.raises(error, match=match):
        generate(pipe, PROMPT, progress=False, deepcache=value)


def test_missing_package_says_how_to_install(monkeypatch):
    pipe = load_pipeline("tiny")
    monkeypatch.setitem(sys.modules, "DeepCache", None)
    with pytest.raises(ImportError, match=r"pip install deepcache .*animegen\[fast\]"):
        deepcache_config(pipe, 3)
    assert deepcache_config(pipe, None) is None  # off needs no package


def _unet(**overrides):
    from diffusers import UNet2DConditionModel

    config = json.loads((TINY_MODEL_DIR / "unet" / "config.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    torch.manual_seed(0)
    return UNet2DConditionModel(**{**config, **overrides}).eval()


# SD1.5's topology (tests/conftest.py's SD15_UNET) at small widths: 2 layers per block, 3 up layers.
SD15_SHAPE = dict(layers_per_block=2, block_out_channels=(32, 32, 64, 64), norm_num_groups=8, cross_attention_dim=32,
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                    "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))


@pytest.mark.parametrize("shape, branches, last_up", [({}, 8, "up_blocks.3.resnets.1"),
                                                      (SD15_SHAPE, 12, "up_blocks.3.resnets.2")])
def test_branches_and_what_a_cached_step_computes(shape, branches, last_up):
    from types import SimpleNamespace

    from diffusers import DPMSolverMultistepScheduler

    unet = _unet(**shape)
    assert skip_branches(unet) == branches
    if branches == 12:  # SD1.5: the kit's numbers are the package's
        assert [helper_branch_id(unet, b) for b in range(12)] == list(range(12))
    else:
        assert [helper_branch_id(unet, b) for b in range(8)] == [0, 1, 3, 4, 6, 7, 9, 10]
    ran: list[str] = []
    for name, m in unet.named_modules():
        if name.endswith("resnets.0") or name.endswith("resnets.1") or name.endswith("resnets.2"):
            m.conv1.register_forward_hook(lambda *_, n=name: ran.append(n))
    scheduler = DPMSolverMultistepScheduler()
    scheduler.set_timesteps(4)
    pipe = SimpleNamespace(unet=unet, scheduler=scheduler)
    x, text = torch.randn(1, 4, 8, 8), torch.randn(1, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        full = [unet(x, t, encoder_hidden_states=text).sample for t in scheduler.timesteps[:2]]
        with unet_cache(pipe, DeepCacheConfig(interval=2, branch=0)):
            first = unet(x, scheduler.timesteps[0], encoder_hidden_states=text).sample
            ran.clear()
            second = unet(x, scheduler.timesteps[1], encoder_hidden_states=text).sample
        assert ran == [last_up]  # branch 0: only the last up layer's resnet runs on a cached step
        assert torch.equal(first, full[0]) and not torch.equal(second, full[1])
        assert torch.equal(unet(x, scheduler.timesteps[1], encoder_hidden_states=text).sample, full[1])


# --------------------------------------------------------------------------- scheduler="tcd" (notebook 06's TCD / Hyper-SD path)

def test_tcd_scheduler_takes_a_few_step_lora(dummy_model_dir, monkeypatch):
    from diffusers import TCDScheduler

    from animegen_utils.lora import active_adapters
    from animegen_utils.pipelines import SD15_TCD_LORA, ModelNotFoundError, recommended_settings

    pipe = load_pipeline("tiny", scheduler="tcd")  # the built-in model has no TCD-LoRA: its LCM-LoRA
    assert isinstance(pipe.scheduler, TCDScheduler) and active_adapters(pipe) == {"lcm": 1.0}
    assert recommended_settings(pipe) == (4, 1.0)
    [g] = generate(pipe, PROMPT, seed=0, progress=False, eta=0.3)
    assert g.params["scheduler"] == "tcd" and g.params["steps"] == 4
    with pytest.raises(ValueError, match=r"lcm_lora is for scheduler='lcm' \(or 'tcd'\)"):
        load_pipeline("tiny", scheduler="ddim", lcm_lora=SD15_TCD_LORA)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # an SD1.x folder: TCD loads h1t/TCD-SD15-LoRA from the Hub
    with pytest.raises(ModelNotFoundError, match="h1t/TCD-SD15-LoRA"):
        load_pipeline(str(dummy_model_dir), scheduler="tcd")
