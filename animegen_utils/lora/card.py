"""The model card (README.md) written beside a trained LoRA."""

from __future__ import annotations

from dataclasses import asdict


def model_card(result, dataset, resolution: int, prediction_type: str, processes: int) -> str:
    """Markdown: base model, data summary, every hyperparameter, the last validation grid."""
    cfg = result.config
    from ..pipelines import BUILTIN_MODELS

    base = (f"the kit's built-in toy model `{cfg.model}` (animegen_utils/models/{BUILTIN_MODELS[cfg.model].name})"
            if cfg.model in BUILTIN_MODELS else f"`{cfg.model}`")
    rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in asdict(cfg).items())
    grid = ""
    if result.validation_grids:
        step = max(result.validation_grids)
        rel = result.validation_grids[step].relative_to(result.lora_dir)
        grid = f"\n## Validation (step {step})\n\nPrompts {list(cfg.validation_prompts)}, seeds " \
               f"{list(cfg.validation_seeds)} (one row per prompt):\n\n![validation]({rel.as_posix()})\n"
    last = f"{result.losses[-1]:.4f}" if result.losses else "n/a"
    return f"""---
base_model: {"animegen-tiny" if cfg.model == "tiny" else cfg.model}
library_name: diffusers
tags: [lora, stable-diffusion, text-to-image, animegen]
---
# LoRA trained with animegen

Base model: {base}. Trained with `animegen_utils.lora.train_lora` (PEFT LoRA on the UNet
{"and text encoder " if cfg.train_text_encoder else ""}through accelerate, {processes} process(es)).

## Use

```python
from animegen_utils import load_pipeline, generate
from animegen_utils.lora import load_lora
pipe = load_pipeline({cfg.model!r})
load_lora(pipe, "{result.lora_dir.as_posix()}", scale=1.0)
# or plain diffusers: pipe.load_lora_weights("{result.lora_dir.as_posix()}")
```

A1111 / ComfyUI: `lora_kohya.safetensors` (kohya keys) goes in `models/Lora` / `models/loras`.

## Data

```
{dataset.summary()}
```

## Training

{result.global_step} steps, {result.seconds:.0f} s, {result.trainable_parameters:,} trainable parameters,
resolution {resolution}, loss on {prediction_type}, final loss {last}.

| hyperparameter | value |
|---|---|
{rows}
{grid}"""
