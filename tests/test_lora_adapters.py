"""LoRA adapters per pipeline on shared weights (animegen_utils.adapters)."""

import numpy as np
import pytest
import torch

from animegen_utils import clear_pipeline_cache, generate, load_pipeline
from animegen_utils.adapters import fused_adapters, set_fusing
from animegen_utils.lora import active_adapters, load_lora, set_lora_scale, unload_lora

PROMPT = "1girl, smile, pink hair"


def make_lora(folder, model_dir, seed):
    """A random (non-zero) LoRA in diffusers format for the dummy model's UNet."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def loras(tmp_path_factory, dummy_model_dir):
    root = tmp_path_factory.mktemp("loras")
    return [make_lora(root / f"lora{i}", dummy_model_dir, seed=i) for i in (1, 2)]


# Every test starts from freshly loaded weights and leaves none with adapters behind.
pytestmark = pytest.mark.usefixtures("fresh_pipeline_cache")


def image(pipe, seed=0):
    [g] = generate(pipe, PROMPT, seed=seed, steps=2, guidance=5.0, progress=False)
    return np.asarray(g.image, dtype=np.int16)


@pytest.fixture(scope="module")
def references(dummy_model_dir, loras):
    """Images from unshared pipelines that only ever saw one setting, via diffusers' own API:
    ``refs[key]`` fused with ``fuse_lora`` (what the kit draws: it fuses a call's adapters, as
    diffusers users do for a fixed LoRA), ``refs[key + ":unfused"]`` through peft's unfused layers."""
    def draw(lora_weights, fused):
        clear_pipeline_cache()  # unshared weights for every reference
        p = load_pipeline(str(dummy_model_dir))
        for name, (folder, _) in lora_weights.items():
            p.load_lora_weights(folder, adapter_name=name)
        if lora_weights:
            p.set_adapters(list(lora_weights), adapter_weights=[w for _, w in lora_weights.values()])
            if fused:  # fresh weights each time: diffusers' unfuse_lora subtracts, which is not exact
                p.fuse_lora(components=["unet"], adapter_names=list(lora_weights))
        return image(p)

    settings = {"base": {}, "blend": {"first": (loras[0], 1.0), "second": (loras[1], 0.5)}}
    for i, folder in enumerate(loras, 1):
        settings[f"lora{i}"] = {"a": (folder, 1.0)}
        settings[f"lora{i}@0.5"] = {"a": (folder, 0.5)}
    refs = {}
    for key, lora_weights in settings.items():
        refs[key] = draw(lora_weights, fused=True)
        if lora_weights:
            refs[key + ":unfused"] = draw(lora_weights, fused=False)
    clear_pipeline_cache()
    assert np.abs(refs["lora1"] - refs["base"]).mean() > 1.0, "the test LoRA must change the image"
    assert np.abs(refs["lora1"] - refs["lora2"]).mean() > 1.0
    for key in ("lora1", "lora2", "blend"):  # fusing is a rounding-level change, not another picture
        assert np.abs(refs[key] - refs[key + ":unfused"]).max() <= 2
    return refs


@pytest.mark.parametrize("order", ["lora_pipeline_first", "plain_pipeline_first"])
def test_adapter_changes_only_its_own_pipeline(dummy_model_dir, loras, references, order):
    if order == "lora_pipeline_first":
        with_lora = load_pipeline(str(dummy_model_dir))
        load_lora(with_lora, loras[0])
        plain = load_pipeline(str(dummy_model_dir))
    else:
        plain = load_pipeline(str(dummy_model_dir))
        assert np.array_equal(image(plain), references["base"])
        with_lora = load_pipeline(str(dummy_model_dir))
        load_lora(with_lora, loras[0])
    assert with_lora.unet is plain.unet  # shared weights: the point of the test
    assert np.array_equal(image(plain), references["base"])
    assert np.array_equal(image(with_lora), references["lora1"])
    assert np.array_equal(image(plain), references["base"])
    img2img_plain = load_pipeline(str(dummy_model_dir), task="img2img")
    assert not active_adapters(img2img_plain)
    assert np.array_equal(image(with_lora), references["lora1"])


def test_each_pipeline_its_own_adapter_and_scale(dummy_model_dir, loras, references):
    a, b = load_pipeline(str(dummy_model_dir)), load_pipeline(str(dummy_model_dir))
    assert load_lora(a, loras[0], adapter_name="first") == "first"
    load_lora(b, loras[1], adapter_name="second", scale=0.5)
    assert np.array_equal(image(b), references["lora2@0.5"])
    assert np.array_equal(image(a), references["lora1"])
    set_lora_scale(b, "second", 1.0)
    assert np.array_equal(image(b), references["lora2"])
    # The same adapter from the same source is reused by a second pipeline.
    c = load_pipeline(str(dummy_model_dir))
    load_lora(c, loras[0], adapter_name="first", scale=0.5)
    assert np.array_equal(image(c), references["lora1@0.5"])
    assert np.array_equal(image(a), references["lora1"])


def test_blend_by_name_and_unload(dummy_model_dir, loras, references):
    pipe, other = load_pipeline(str(dummy_model_dir)), load_pipeline(str(dummy_model_dir))
    load_lora(pipe, loras[0], adapter_name="first")
    load_lora(pipe, loras[1], adapter_name="second", scale=0.5)
    assert active_adapters(pipe) == {"first": 1.0, "second": 0.5}
    assert np.array_equal(image(pipe), references["blend"])
    set_lora_scale(pipe, "second", 0.0)
    assert np.array_equal(image(pipe), references["lora1"])
    load_lora(other, loras[1], adapter_name="second")
    unload_lora(pipe, "second")
    assert "second" in pipe.unet.peft_config  # still used by the other pipeline
    assert np.array_equal(image(pipe), references["lora1"])
    assert np.array_equal(image(other), references["lora2"])
    unload_lora(pipe)
    assert active_adapters(pipe) == {}
    assert set(pipe.unet.peft_config) == {"second"}  # "first" had no other user: deleted
    assert np.array_equal(image(pipe), references["base"])
    unload_lora(other)
    assert np.array_equal(image(other), references["base"])


def test_diffusers_own_load_lora_weights_still_works(dummy_model_dir, loras, references):
    pipe, other = load_pipeline(str(dummy_model_dir)), load_pipeline(str(dummy_model_dir))
    load_lora(other, loras[1], adapter_name="kit")
    pipe.load_lora_weights(loras[0])  # diffusers' documented API, not recorded by the kit
    # The kit fuses nothing while an adapter it did not load is active: peft's unfused layers.
    assert np.array_equal(image(pipe), references["lora1:unfused"])
    [g] = generate(pipe, PROMPT, seed=0, steps=2, guidance=5.0, progress=False,
                   cross_attention_kwargs={"scale": 0.5})
    assert np.array_equal(np.asarray(g.image, dtype=np.int16), references["lora1@0.5:unfused"])
    # Generating with another pipeline that has its own kit adapter does not switch it off.
    assert not np.array_equal(image(other), references["lora2:unfused"])  # shared UNet: both adapters show
    assert np.array_equal(image(pipe), references["lora1:unfused"])
    pipe.disable_lora()
    assert np.array_equal(image(pipe), references["base"])


def test_errors_name_the_problem(dummy_model_dir, loras):
    a, b = load_pipeline(str(dummy_model_dir)), load_pipeline(str(dummy_model_dir))
    load_lora(a, loras[0], adapter_name="x")
    with pytest.raises(ValueError, match="already used"):
        load_lora(b, loras[1], adapter_name="x")
    with pytest.raises(ValueError, match="no adapter 'y'"):
        set_lora_scale(a, "y", 1.0)
    with pytest.raises(ValueError, match="no adapter 'y'"):
        unload_lora(a, "y")
    a.unload_lora_weights()  # diffusers removes every LoRA layer from the shared weights
    with pytest.raises(RuntimeError, match="no longer in its weights"):
        image(a)


def test_fused_by_default_unfused_on_request(dummy_model_dir, loras, references):
    pipe = load_pipeline(str(dummy_model_dir))
    load_lora(pipe, loras[0], adapter_name="first")
    assert np.array_equal(image(pipe), references["lora1"])          # what diffusers' fuse_lora draws
    assert fused_adapters(pipe) == {"first": 1.0}
    set_fusing(pipe, False)
    assert np.array_equal(image(pipe), references["lora1:unfused"])  # peft's unfused layers
    assert fused_adapters(pipe) == {}
    set_fusing(pipe, True)
    # A call that scales the unfused layers itself (diffusers' own knob) runs them unfused.
    [g] = generate(pipe, PROMPT, seed=0, steps=2, guidance=5.0, progress=False,
                   cross_attention_kwargs={"scale": 0.5})
    assert np.array_equal(np.asarray(g.image, dtype=np.int16), references["lora1@0.5:unfused"])
    assert np.array_equal(image(pipe), references["lora1"])


@pytest.mark.parametrize("plain_first", [True, False])
def test_shared_weights_come_back_bit_for_bit_after_many_switches(dummy_model_dir, loras, references, plain_first):
    plain = load_pipeline(str(dummy_model_dir))
    original = {k: v.clone() for k, v in plain.unet.state_dict().items()}
    a, b = load_pipeline(str(dummy_model_dir)), load_pipeline(str(dummy_model_dir))
    if plain_first:
        assert np.array_equal(image(plain), references["base"])
    load_lora(a, loras[0], adapter_name="first")
    load_lora(b, loras[1], adapter_name="second", scale=0.5)
    for _ in range(2):
        for pipe, key in ((a, "lora1"), (plain, "base"), (b, "lora2@0.5"), (a, "lora1"), (b, "lora2@0.5")):
            assert np.array_equal(image(pipe), references[key]), key
    assert np.array_equal(image(plain), references["base"])
    after = plain.unet.state_dict()

    def now(key):  # peft moves an adapted layer's own weights under .base_layer
        module, name = key.rsplit(".", 1)
        return after[key] if key in after else after[f"{module}.base_layer.{name}"]

    moved = [k for k in original if k not in after]
    assert moved  # the adapted layers: the ones fusing wrote into
    assert all(torch.equal(original[k], now(k)) for k in original)
