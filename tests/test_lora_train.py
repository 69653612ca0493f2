"""LoRA training (animegen_utils.lora.train), export, resume and the shell entry point.

All runs use the random-weight dummy model (64 px) and a handful of rendered images.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from animegen_utils import clear_pipeline_cache, generate, load_pipeline
from animegen_utils.lora import LoraTrainingConfig, load_lora, train_lora
from animegen_utils.adapters import set_fusing
from animegen_utils.toyworld import CharacterAttributes, render_character

PROMPT = "1girl, happy, smile"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora-data")
    for emotion in ("happy", "sad"):
        folder = root / f"{emotion}_anime"
        folder.mkdir()
        for i in range(4):
            render_character(CharacterAttributes(emotion, "casual", "pink", "blue"), seed=i).image.save(
                folder / f"{i}.png")
    return root


def config(data_dir, model_dir, out, **overrides):
    base = dict(data_dir=str(data_dir), output_dir=str(out), model=str(model_dir), max_train_steps=3,
                train_batch_size=2, learning_rate=1e-2, rank=4, alpha=16, progress=False, checkpointing_steps=100)
    base.update(overrides)
    return LoraTrainingConfig(**base)


# Every test starts from freshly loaded weights and leaves none with adapters behind.
pytestmark = pytest.mark.usefixtures("fresh_pipeline_cache")


def image(pipe, seed=0):
    [g] = generate(pipe, PROMPT, seed=seed, steps=3, guidance=5.0, progress=False)
    return np.asarray(g.image, dtype=np.int16)


@pytest.fixture(scope="module")
def trained(data_dir, dummy_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora-out")
    return train_lora(config(data_dir, dummy_model_dir, out, target_modules=("to_k", "to_v"), dropout=0.1,
                             snr_gamma=5.0, noise_offset=0.05))


def test_training_changes_only_lora_parameters(trained, dummy_model_dir):
    from diffusers import UNet2DConditionModel

    original = UNet2DConditionModel.from_pretrained(dummy_model_dir, subfolder="unet").state_dict()
    after = trained.unet.state_dict()
    base_keys = {k.replace(".base_layer", "") : k for k in after if "lora_" not in k}
    assert set(base_keys) == set(original)
    for key, name in base_keys.items():
        assert torch.equal(original[key], after[name]), key           # bit-identical base
    lora_b = [v for k, v in after.items() if "lora_B" in k]
    assert lora_b and all(v.abs().max() > 0 for v in lora_b)           # gaussian init has B = 0: it trained
    assert {k.split(".")[-2] for k in after if "lora_A" in k} == {"default"}
    assert all(("to_k" in k or "to_v" in k) for k in after if "lora_" in k)
    assert trained.trainable_parameters == sum(v.numel() for k, v in after.items() if "lora_" in k)
    assert len(trained.losses) == 3 and all(np.isfinite(trained.losses))


def test_saved_lora_gives_the_in_memory_image(trained, dummy_model_dir):
    from diffusers import StableDiffusionPipeline

    kit = load_pipeline(str(dummy_model_dir))
    in_memory = StableDiffusionPipeline(**{**kit.components, "unet": trained.unet})
    expected = image(in_memory)
    clear_pipeline_cache()
    pipe = load_pipeline(str(dummy_model_dir))
    base = image(pipe)
    load_lora(pipe, trained.lora_dir)
    fused = image(pipe)                                                # the kit merges a call's adapters
    set_fusing(pipe, False)
    loaded = image(pipe)                                               # peft's unfused layers, as trained
    assert np.abs(expected - base).mean() > 0.5                        # the LoRA matters
    assert np.array_equal(loaded, expected)                            # alpha 16 / rank 4 survived saving
    assert np.abs(fused - expected).max() <= 2                         # merging is a rounding-level change


def test_kohya_export_round_trips(trained, dummy_model_dir):
    kohya = trained.lora_dir / "lora_kohya.safetensors"
    with safe_open(str(kohya), framework="pt") as f:
        keys = list(f.keys())
        alpha = f.get_tensor(next(k for k in keys if k.endswith(".alpha")))
    assert all(k.startswith("lora_unet_") for k in keys)
    assert any(k.endswith("_attn2_to_k.lora_down.weight") for k in keys)
    assert any(k.endswith("_attn2_to_v.lora_up.weight") for k in keys)
    assert float(alpha) == 16.0
    diffusers_weights = load_file(str(trained.lora_dir / "pytorch_lora_weights.safetensors"))
    assert len(keys) == len(diffusers_weights) * 3 // 2                 # down, up, alpha per module
    a, b = load_pipeline(str(dummy_model_dir)), load_pipeline(str(dummy_model_dir))
    load_lora(a, trained.lora_dir, adapter_name="diffusers_format")
    load_lora(b, kohya, adapter_name="kohya_format")
    assert np.array_equal(image(a), image(b))


def test_model_card_and_run_record(trained):
    card = (trained.lora_dir / "README.md").read_text()
    for needed in ("Base model", "happy_anime: 4 images", "`rank` | `4`", "`alpha` | `16`", "`target_modules`",
                   "load_lora_weights"):
        assert needed in card, needed
    record = json.loads((trained.lora_dir / "training.json").read_text())
    assert record["prediction_type"] == "epsilon" and record["steps"] == 3 and record["processes"] == 1


def test_resumed_run_ends_with_the_same_lora(data_dir, dummy_model_dir, tmp_path):
    kwargs = dict(max_train_steps=6, checkpointing_steps=3, lr_scheduler="cosine", lr_warmup_steps=2,
                  gradient_accumulation_steps=2, dropout=0.1, snr_gamma=5.0, noise_offset=0.05, random_flip=True)
    full = train_lora(config(data_dir, dummy_model_dir, tmp_path / "full", **kwargs))
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(tmp_path / "full" / "checkpoint-3", resumed_dir / "checkpoint-3")  # as if stopped at 3
    resumed = train_lora(config(data_dir, dummy_model_dir, resumed_dir, resume_from="latest", **kwargs))
    assert resumed.losses[:3] == full.losses[:3]
    a = load_file(str(tmp_path / "full" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(resumed_dir / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.losses == full.losses
    # A different seed really gives a different LoRA (the comparison above can fail).
    other = train_lora(config(data_dir, dummy_model_dir, tmp_path / "other", seed=1, **kwargs))
    c = load_file(str(tmp_path / "other" / "pytorch_lora_weights.safetensors"))
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert other.global_step == 6


def test_v_prediction_follows_the_scheduler_config(data_dir, dummy_model_dir, tmp_path):
    model = tmp_path / "v-model"
    shutil.copytree(dummy_model_dir, model)
    sched = model / "scheduler" / "scheduler_config.json"
    cfg = json.loads(sched.read_text())
    cfg["prediction_type"] = "v_prediction"
    sched.write_text(json.dumps(cfg))
    eps = train_lora(config(data_dir, dummy_model_dir, tmp_path / "eps", max_train_steps=1))
    v = train_lora(config(data_dir, model, tmp_path / "v", max_train_steps=1))
    assert json.loads((tmp_path / "v" / "training.json").read_text())["prediction_type"] == "v_prediction"
    assert v.losses[0] != eps.losses[0]                                 # same batch, other target


def test_cli_end_to_end(data_dir, dummy_model_dir, tmp_path, capsys):
    from animegen_utils.lora.__main__ import HELP, build_parser, main

    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert all(flag in help_text for flag in ("--data", "--output", "--max-train-steps", "--rank", "--resume-from"))
    assert set(HELP) == set(LoraTrainingConfig.__dataclass_fields__)
    out = tmp_path / "cli"
    main(["train", "--data", str(data_dir), "--output", str(out), "--model", str(dummy_model_dir),
          "--max-train-steps", "2", "--train-batch-size", "2", "--rank", "2", "--target-modules", "to_k", "to_v",
          "--validation-prompts", "1girl, happy", "1girl, sad", "--validation-seeds", "0", "1",
          "--validation-steps", "1", "--validation-inference-steps", "2", "--no-progress"])
    assert "LoRA written to" in capsys.readouterr().out
    for name in ("pytorch_lora_weights.safetensors", "lora_kohya.safetensors", "README.md", "training.json",
                 "checkpoint-2/state.pt", "validation/step-000001.png", "validation/step-000002.png"):
        assert (out / name).exists(), name
    from PIL import Image

    assert Image.open(out / "validation" / "step-000002.png").size == (128, 128)  # 2 prompts x 2 seeds
    assert "validation/step-000002.png" in (out / "README.md").read_text()


def test_two_process_data_parallel_run_on_cpu(data_dir, dummy_model_dir, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # accelerate 1.x's `--cpu` launcher starts one process unless MPI is installed; `--multi_gpu` goes
    # through torchrun, and on a machine without GPUs train_lora asks accelerate for gloo over CPU processes.
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "animegen_utils.lora", "train", "--data", str(data_dir), "--output", str(out),
           "--model", str(dummy_model_dir), "--max-train-steps", "2", "--train-batch-size", "2", "--no-progress"]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("LoRA written to") == 1                   # main process only
    record = json.loads((out / "training.json").read_text())
    assert record["processes"] == 2 and record["steps"] == 2
    pipe = load_pipeline(str(dummy_model_dir))
    base = image(pipe)
    load_lora(pipe, out)
    assert not np.array_equal(image(pipe), base)


def test_text_encoder_lora_trains_loads_and_exports(data_dir, dummy_model_dir, tmp_path):
    # transformers' own add_adapter/load_adapter refuse peft < their MIN_PEFT_VERSION; the kit injects with peft.
    result = train_lora(config(data_dir, dummy_model_dir, tmp_path / "te", train_text_encoder=True))
    kohya = load_file(str(result.kohya_file))
    assert any(k.startswith("lora_te_text_model_encoder_layers_") and k.endswith(".lora_down.weight") for k in kohya)
    trained = {k.replace(".default.", "."): v for k, v in result.text_encoder.state_dict().items() if ".lora_" in k}
    for source, name in ((tmp_path / "te", "te"), (result.kohya_file, "te_kohya")):
        pipe = load_pipeline(str(dummy_model_dir))
        load_lora(pipe, source, adapter_name=name)
        loaded = {k.replace(f".{name}.", "."): v for k, v in pipe.text_encoder.state_dict().items() if ".lora_" in k}
        assert loaded.keys() == trained.keys()
        assert all(torch.allclose(loaded[k], trained[k], atol=1e-6) for k in trained)
        clear_pipeline_cache()
