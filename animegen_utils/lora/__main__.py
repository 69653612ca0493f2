"""Train a LoRA from the shell.

    python -m animegen_utils.lora train --data training_data --output outputs/03/lora --max-train-steps 300
    accelerate launch --multi_gpu --num_processes 2 -m animegen_utils.lora train --data ...  # 2 GPUs, or 2 CPU processes

Every ``LoraTrainingConfig`` field is a flag (``--rank 8 --alpha 32 --target-modules to_k to_v``);
the defaults train on the built-in model.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from .train import LR_SCHEDULES, LoraTrainingConfig

HELP: dict[str, str] = {
    "data_dir": "training folder: class folders (happy_anime/*.png), kohya repeat folders (10_name/*.png + .txt) "
                "or an imagefolder with metadata.jsonl",
    "output_dir": "where the LoRA, checkpoints, validation grids and model card go",
    "model": "base model: 'tiny' (built-in), a Hub id, a diffusers folder or a .safetensors checkpoint",
    "config": "for a .safetensors model: a diffusers folder with its configs (needed offline)",
    "resolution": "training resolution in pixels (default: the model's native size)",
    "rank": "LoRA rank r",
    "alpha": "LoRA alpha (scale = alpha / rank; default: alpha = rank)",
    "dropout": "LoRA dropout",
    "target_modules": "UNet modules to adapt (diffusers' default: to_q to_k to_v to_out.0; the plan: to_k to_v)",
    "train_text_encoder": "also train a LoRA on the text encoder (q/k/v/out projections)",
    "learning_rate": "AdamW learning rate",
    "lr_scheduler": f"learning-rate schedule: {', '.join(LR_SCHEDULES)}",
    "lr_warmup_steps": "warm-up steps of the schedule",
    "train_batch_size": "images per step per process",
    "gradient_accumulation_steps": "micro-batches per optimiser step",
    "max_train_steps": "optimiser steps (wins over --num-train-epochs)",
    "num_train_epochs": "epochs when --max-train-steps is not given",
    "max_grad_norm": "gradient clipping norm (0: off)",
    "adam_weight_decay": "AdamW weight decay",
    "use_8bit_adam": "bitsandbytes 8-bit AdamW (default: when installed and on CUDA)",
    "seed": "seed for LoRA init, batches, noise and timesteps",
    "prediction_type": "epsilon or v_prediction (default: the scheduler config's)",
    "snr_gamma": "min-SNR-gamma loss weighting (5.0 is the paper's value; default: off)",
    "noise_offset": "noise offset (e.g. 0.05; default 0)",
    "mixed_precision": "no, fp16 or bf16 (GPU); LoRA weights stay float32",
    "gradient_checkpointing": "trade compute for memory (GPU, large models)",
    "cache_latents": "encode every image with the VAE once, before training",
    "random_flip": "flip images horizontally at random",
    "checkpointing_steps": "save a resumable checkpoint every N steps",
    "checkpoints_total_limit": "keep only the newest N checkpoints",
    "resume_from": "'latest' or a checkpoint-N folder",
    "validation_prompts": "prompts for validation grids (one row each)",
    "validation_seeds": "seeds for validation grids (one column each)",
    "validation_steps": "make a validation grid every N steps",
    "validation_inference_steps": "sampling steps for validation images",
    "validation_guidance": "guidance scale for validation images",
    "export_kohya": "also write lora_kohya.safetensors for A1111/ComfyUI",
    "push_to_hub": "upload the output folder to --hub-model-id (needs a Hugging Face login)",
    "hub_model_id": "Hub repository for --push-to-hub",
    "progress": "show progress bars",
}

# Fields whose default is None: the type their value takes.
_OPTIONAL_TYPES = {"resolution": int, "alpha": float, "max_train_steps": int, "prediction_type": str,
                   "snr_gamma": float, "checkpoints_total_limit": int, "resume_from": str, "hub_model_id": str,
                   "config": str}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m animegen_utils.lora", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a LoRA", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(LoraTrainingConfig):
        flag = "--" + f.name.replace("_", "-")
        names = {"data_dir": ["--data", flag], "output_dir": ["--output", flag]}.get(f.name, [flag])
        default = f.default
        kwargs: dict = {"dest": f.name, "default": default, "help": HELP[f.name]}
        if f.name == "use_8bit_adam" or isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, tuple):
            kwargs.update(nargs="+", type=int if default and isinstance(default[0], int) else str)
        elif default is None:
            kwargs["type"] = _OPTIONAL_TYPES[f.name]
        else:
            kwargs["type"] = type(default)
        if f.name == "data_dir":
            kwargs["required"] = True
        train.add_argument(*names, **kwargs)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = vars(build_parser().parse_args(argv))
    args.pop("command")
    for name, value in args.items():
        if isinstance(value, list):
            args[name] = tuple(value)
    from .train import train_lora

    result = train_lora(LoraTrainingConfig(**args))
    if os.environ.get("RANK", "0") == "0":  # the main process, also under accelerate launch
        print(f"LoRA written to {result.lora_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
