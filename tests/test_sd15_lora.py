"""LoRAs on SD1.5's real architecture: training (text encoder, single files), loading, and
``reproduce`` with adapters and a custom LCM-LoRA (issue 20). Random weights, 64 px, 1-2 steps."""

import shutil

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors import safe_open

from animegen_utils import ModelNotFoundError, clear_pipeline_cache, generate, load_pipeline
from animegen_utils.generation import read_parameters, reproduce
from animegen_utils.lora import LoraTrainingConfig, load_lora, train_lora, unload_lora
from animegen_utils.toyworld import CharacterAttributes, render_character

DRAW = dict(seed=0, steps=2, height=64, width=64, progress=False)


def random_lora(pipe, folder, seed: int, text_encoder: bool = False, rank: int = 4):
    """A non-zero LoRA (diffusers format) for ``pipe``'s attention layers, written as
    ``pytorch_lora_weights.safetensors`` in ``folder``."""
    gen = torch.Generator().manual_seed(seed)

    def layers(model, suffixes):
        out = {}
        for name, module in model.named_modules():
            module = getattr(module, "base_layer", module)  # a layer an earlier LoRA wrapped
            if name.endswith(suffixes) and isinstance(module, torch.nn.Linear):
                out[f"{name}.lora_A.weight"] = 0.1 * torch.randn(rank, module.in_features, generator=gen)
                out[f"{name}.lora_B.weight"] = 0.1 * torch.randn(module.out_features, rank, generator=gen)
        return out

    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=layers(pipe.unet, ("to_k", "to_v")),
        text_encoder_lora_layers=layers(pipe.text_encoder, ("q_proj", "v_proj")) if text_encoder else None,
        safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd15-lora-data") / "happy_anime"
    root.mkdir()
    for i in range(2):
        render_character(CharacterAttributes("happy", "casual", "pink", "blue"), seed=i).image.save(root / f"{i}.png")
    return root.parent


def training(data_dir, model, out, **overrides):
    return LoraTrainingConfig(**{**dict(data_dir=str(data_dir), output_dir=str(out), model=str(model), resolution=64,
                                        max_train_steps=1, rank=2, progress=False, checkpointing_steps=100),
                                 **overrides})


def test_text_encoder_lora_trains_and_loads(data_dir, sd15_model_dir, tmp_path, fresh_pipeline_cache):
    result = train_lora(training(data_dir, sd15_model_dir, tmp_path / "lora", train_text_encoder=True))
    with safe_open(str(result.lora_dir / "pytorch_lora_weights.safetensors"), "pt") as f:
        assert any(k.startswith("text_encoder.") for k in f.keys())
    with safe_open(str(result.kohya_file), "pt") as f:
        assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj") for k in f.keys())
    trained = {k.replace(".default.", "."): v for k, v in result.text_encoder.state_dict().items() if ".lora_" in k}
    del result
    pipe = load_pipeline(str(sd15_model_dir))
    load_lora(pipe, tmp_path / "lora", adapter_name="te")
    loaded = {k.replace(".te.", "."): v for k, v in pipe.text_encoder.state_dict().items() if ".lora_" in k}
    assert loaded.keys() == trained.keys() and all(torch.allclose(loaded[k], trained[k]) for k in trained)
    [g] = generate(pipe, "1girl", **DRAW)
    assert g.params["adapters"][0]["name"] == "te"


def test_lora_trains_on_a_single_file_offline_and_validates_at_its_resolution(
        data_dir, sd15_single_file, sd15_model_dir, tmp_path, fresh_pipeline_cache):  # one 860M UNet in memory
    with pytest.raises(ModelNotFoundError, match="config="):
        train_lora(training(data_dir, sd15_single_file, tmp_path / "no-config"))
    with pytest.raises(ValueError, match="single-file"):
        training(data_dir, sd15_model_dir, tmp_path / "x", config=str(sd15_model_dir)).validate()
    result = train_lora(training(data_dir, sd15_single_file, tmp_path / "lora", config=str(sd15_model_dir),
                                 validation_prompts=("1girl",), validation_inference_steps=1, export_kohya=False))
    from PIL import Image

    assert Image.open(result.validation_grids[1]).size == (64, 64)  # drawn at 64 px, as trained


def test_a_unet_only_lora_loads_without_the_text_encoder_warning(sd15_pipe, tmp_path):
    import logging

    random_lora(sd15_pipe, tmp_path / "unet-only", seed=1)
    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = seen.append  # diffusers' loggers do not propagate to pytest's; listen on theirs
    logging.getLogger("diffusers").addHandler(handler)
    try:
        load_lora(sd15_pipe, tmp_path / "unet-only", adapter_name="unet_only")
    finally:
        logging.getLogger("diffusers").removeHandler(handler)
        unload_lora(sd15_pipe, "unet_only")
    assert not [r for r in seen if "No LoRA keys associated" in r.getMessage()]
    assert sd15_pipe.text_encoder.__dict__.get("peft_config") in (None, {})  # nothing injected there


def test_reproduce_loads_the_recorded_loras_or_names_the_missing_one(sd15_model_dir, tmp_path):
    pipe = load_pipeline(str(sd15_model_dir))
    folder = random_lora(pipe, tmp_path / "mika", seed=2, text_encoder=True)
    [plain] = generate(pipe, "1girl", **DRAW)
    load_lora(pipe, folder, adapter_name="mika", scale=0.8)
    [g] = generate(pipe, "1girl", **DRAW)
    assert g.image.tobytes() != plain.image.tobytes()
    png = g.save(tmp_path / "mika.png")
    [record] = read_parameters(png)["adapters"]
    assert (record["name"], record["source"], record["scale"]) == ("mika", str(folder), 0.8)
    assert len(record["sha256"]) == 64
    unload_lora(pipe)
    assert reproduce(png).max_pixel_diff == 0
    shutil.move(folder, tmp_path / "moved")
    with pytest.raises(ModelNotFoundError, match=f"LoRA 'mika'.*{folder}"):
        reproduce(png)


def test_reproduce_uses_the_recorded_custom_lcm_lora(sd15_model_dir, sd15_pipe, tmp_path, fresh_pipeline_cache):
    lcm_dir = random_lora(sd15_pipe, tmp_path / "my-lcm", seed=3)
    pipe = load_pipeline(str(sd15_model_dir), scheduler="lcm", lcm_lora=str(lcm_dir))
    [g] = generate(pipe, "1girl", **{**DRAW, "guidance": 1.0})
    png = g.save(tmp_path / "lcm.png")
    assert read_parameters(png)["lcm_lora"]["source"] == str(lcm_dir)
    assert "adapters" not in read_parameters(png)  # the LCM-LoRA goes with the sampler, not as a LoRA
    assert reproduce(png).max_pixel_diff == 0
    shutil.rmtree(lcm_dir)
    clear_pipeline_cache()  # otherwise the shared UNet still holds the adapter, and nothing is read from disk
    with pytest.raises(ModelNotFoundError, match=f"LCM-LoRA '{lcm_dir}'"):
        reproduce(png)


def test_reproduce_warns_when_a_given_pipe_lacks_the_recorded_lora(sd15_model_dir, tmp_path):
    pipe = load_pipeline(str(sd15_model_dir))
    load_lora(pipe, random_lora(pipe, tmp_path / "style", seed=4), adapter_name="style")
    png = generate(pipe, "1girl", **DRAW)[0].save(tmp_path / "style.png")
    with pytest.warns(UserWarning, match="LoRA 'style' .* is not loaded"):
        again = reproduce(png, pipe=load_pipeline(str(sd15_model_dir)))
    assert again.max_pixel_diff > 0
    unload_lora(pipe)
    assert np.asarray(again.image).shape == (64, 64, 3)
