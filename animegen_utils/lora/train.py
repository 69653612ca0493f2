"""LoRA fine-tuning of a Stable Diffusion 1.x UNet with PEFT and accelerate.

>>> from animegen_utils.lora import LoraTrainingConfig, train_lora
>>> result = train_lora(LoraTrainingConfig(data_dir="training_data", output_dir="outputs/03/lora",
...                                        max_train_steps=300, rank=8, alpha=32,
...                                        target_modules=("to_k", "to_v"), dropout=0.1))
>>> result.lora_dir / "pytorch_lora_weights.safetensors"

Shell: ``python -m animegen_utils.lora train --data DIR ...``; several GPUs (or CPU processes):
``accelerate launch --multi_gpu --num_processes 2 -m animegen_utils.lora train --data DIR ...``.

This follows diffusers' current recipe (``examples/text_to_image/train_text_to_image_lora.py``):
the base is frozen, ``unet.add_adapter(LoraConfig(...))`` injects the LoRA layers,
LoRA parameters stay in float32 while frozen weights may be fp16/bf16, and the
weights are saved with ``get_peft_model_state_dict`` + ``convert_state_dict_to_diffusers``
through ``StableDiffusionPipeline.save_lora_weights``, so ``pipe.load_lora_weights(dir)``
reads them. The loss is ε or v (from the scheduler config) with optional min-SNR-γ
weighting and noise offset.

Determinism and resuming: which images, timesteps, noise and dropout masks a step
uses are a function of ``(seed, step, process)`` alone, and a checkpoint holds the
LoRA, optimizer and LR-schedule state. A run resumed from a checkpoint therefore
ends with the same LoRA as one that never stopped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .dataset import ImageCaptionDataset, load_image_dataset
from ..adapters.text_encoder import add_text_encoder_lora

__all__ = ["LoraTrainingConfig", "TrainingResult", "train_lora", "load_training_components", "DEFAULT_TARGETS",
           "PLAN_TARGETS"]

DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")   # diffusers' example script
PLAN_TARGETS = ("to_k", "to_v")                          # the plan's choice
TEXT_ENCODER_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
KOHYA_NAME = "lora_kohya.safetensors"
LR_SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


@dataclass
class LoraTrainingConfig:
    """Every training option, with defaults that train on the built-in model on a CPU.

    Real model on a Colab GPU (expect ~7-9 GB of GPU memory and ~1-2 it/s on a T4 at 512 px,
    batch 1, fp16, gradient checkpointing):
    ``LoraTrainingConfig(model="stable-diffusion-v1-5/stable-diffusion-v1-5", resolution=512,
    mixed_precision="fp16", gradient_checkpointing=True, rank=8, ...)``.
    """

    data_dir: str = ""
    output_dir: str = "outputs/03/lora"
    model: str = "tiny"
    config: str | None = None                  # for a single-file model: a diffusers folder with its configs
    resolution: int | None = None              # None: the model's native size (128 tiny, 512 SD1.5)
    # LoRA
    rank: int = 4
    alpha: float | None = None                 # None: alpha = rank (scale 1)
    dropout: float = 0.0
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    train_text_encoder: bool = False
    # optimisation
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    max_train_steps: int | None = None         # wins over num_train_epochs when set
    num_train_epochs: int = 1
    max_grad_norm: float = 1.0
    adam_weight_decay: float = 1e-2
    use_8bit_adam: bool | None = None          # None: when bitsandbytes is installed and on CUDA
    seed: int = 0
    # loss
    prediction_type: str | None = None         # None: from the scheduler config (epsilon / v_prediction)
    snr_gamma: float | None = None             # 5.0 is the min-SNR paper's value
    noise_offset: float = 0.0
    # memory and speed
    mixed_precision: str = "no"                # no, fp16, bf16
    gradient_checkpointing: bool = False
    cache_latents: bool = True
    random_flip: bool = False
    # checkpoints and validation
    checkpointing_steps: int = 500
    checkpoints_total_limit: int | None = None
    resume_from: str | None = None             # "latest" or a checkpoint folder
    validation_prompts: tuple[str, ...] = ()
    validation_seeds: tuple[int, ...] = (0,)
    validation_steps: int = 100                # every N steps, and at the end
    validation_inference_steps: int = 20
    validation_guidance: float = 5.0
    # output
    export_kohya: bool = True
    push_to_hub: bool = False
    hub_model_id: str | None = None
    progress: bool = True

    def validate(self) -> None:
        if not self.data_dir:
            raise ValueError("data_dir is required: a folder of training images (see load_image_dataset).")
        if self.lr_scheduler not in LR_SCHEDULES:
            raise ValueError(f"Unknown lr_scheduler {self.lr_scheduler!r}. Valid choices: {', '.join(LR_SCHEDULES)}.")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"Unknown mixed_precision {self.mixed_precision!r}. Valid choices: no, fp16, bf16.")
        if self.prediction_type not in (None, "epsilon", "v_prediction"):
            raise ValueError(f"Unknown prediction_type {self.prediction_type!r}. "
                             "Valid choices: None (from the scheduler), epsilon, v_prediction.")
        for name in ("rank", "train_batch_size", "gradient_accumulation_steps", "checkpointing_steps",
                     "validation_steps", "num_train_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.target_modules:
            raise ValueError("target_modules is empty; e.g. ('to_k', 'to_v') or "
                             f"{DEFAULT_TARGETS} (diffusers' default).")
        from ..pipelines import check_config

        check_config(self.model, self.config)
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("push_to_hub needs hub_model_id, e.g. 'your-name/my-character-lora'.")


@dataclass
class TrainingResult:
    """What ``train_lora`` returns: where things went and how it went."""

    lora_dir: Path
    config: LoraTrainingConfig
    losses: list[float] = field(default_factory=list)          # per optimisation step
    learning_rates: list[float] = field(default_factory=list)
    validation_grids: dict[int, Path] = field(default_factory=dict)   # step -> grid PNG
    trainable_parameters: int = 0
    seconds: float = 0.0                                        # training loop (validation included)
    cache_seconds: float = 0.0                                  # encoding latents before the loop
    validation_seconds: float = 0.0                             # of ``seconds``, drawing validation grids
    global_step: int = 0
    kohya_file: Path | None = None
    unet: Any = field(default=None, repr=False)          # the trained UNet, LoRA attached (in memory)
    text_encoder: Any = field(default=None, repr=False)


def load_training_components(model: str, dtype: torch.dtype = torch.float32,
                             config: str | None = None) -> dict[str, Any]:
    """Fresh (unshared) tokenizer, text encoder, VAE, UNet and noise scheduler for training.

    Not ``load_pipeline``: its cached components are shared with every pipeline of that
    model, and training adds LoRA layers to the UNet. ``config`` is as in ``load_pipeline``:
    for a single ``.safetensors`` file, the diffusers folder with its architecture's configs.
    """
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from ..pipelines import (BUILTIN_MODELS, SD15, ModelNotFoundError, _load_single_file, _missing_model_error,
                             is_single_file)

    kwargs: dict[str, Any] = {"dtype": dtype, "safety_checker": None, "requires_safety_checker": False}
    try:
        if model in BUILTIN_MODELS:
            pipe = StableDiffusionPipeline.from_pretrained(BUILTIN_MODELS[model], local_files_only=True, **kwargs)
        elif is_single_file(model):
            pipe = _load_single_file(StableDiffusionPipeline, Path(model).expanduser(), config, SD15, kwargs)
        else:
            pipe = StableDiffusionPipeline.from_pretrained(model, **kwargs)
    except ModelNotFoundError:
        raise
    except (OSError, ValueError) as err:
        raise _missing_model_error(model, err) from err
    pipe.set_progress_bar_config(disable=True)
    return {"tokenizer": pipe.tokenizer, "text_encoder": pipe.text_encoder, "vae": pipe.vae, "unet": pipe.unet,
            "noise_scheduler": DDPMScheduler.from_config(pipe.scheduler.config),
            "inference_scheduler_config": pipe.scheduler.config}


# --------------------------------------------------------------------------- pieces


def _step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 1009 + rank) % 2**63)


def _batch_indices(n: int, micro_step: int, batch: int, world: int, rank: int, seed: int) -> list[int]:
    """The dataset positions one process uses at one micro-step: a fresh permutation per epoch."""
    per_epoch = max(1, n // (batch * world))
    epoch, pos = divmod(micro_step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    start = (pos * world + rank) * batch
    return [perm[(start + k) % n] for k in range(batch)]


class _LatentCache:
    """VAE posterior (mean, std) of every image, and of its mirror image when flipping."""

    def __init__(self, dataset: ImageCaptionDataset, vae, device, dtype, batch: int = 32, progress: bool = True):
        self.flip = dataset.random_flip
        means, stds = [], []
        views = [False, True] if self.flip else [False]
        n = len(dataset.records)
        with torch.no_grad():
            for flip in views:
                for s in tqdm(range(0, n, batch), desc="caching latents" + (" (flipped)" if flip else ""),
                              disable=not progress, leave=False):
                    px = torch.stack([dataset.pixel_values(i, flip) for i in range(s, min(n, s + batch))])
                    dist = vae.encode(px.to(device, dtype)).latent_dist
                    means.append(dist.mean.float().cpu())
                    stds.append(dist.std.float().cpu())
        self.mean, self.std, self.n = torch.cat(means), torch.cat(stds), n

    def sample(self, indices: list[int], flips: list[bool], gen: torch.Generator) -> torch.Tensor:
        rows = [i + (self.n if f else 0) for i, f in zip(indices, flips)]
        mean, std = self.mean[rows], self.std[rows]
        return mean + std * torch.randn(mean.shape, generator=gen)


def _encode_prompts(tokenizer, text_encoder, captions: list[str], device) -> torch.Tensor:
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(device)
    return text_encoder(ids, return_dict=False)[0]


def _lora_state(model) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().float().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}


def _save_checkpoint(folder: Path, unet, text_encoder, optimizer, lr_scheduler, step: int,
                     result: TrainingResult) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"unet": _lora_state(unet), "text_encoder": _lora_state(text_encoder) if text_encoder else None,
                "optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(), "step": step,
                "losses": result.losses, "learning_rates": result.learning_rates}, tmp / "state.pt")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)  # atomic: a crash leaves the previous checkpoint intact


def _checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def _load_checkpoint(cfg: LoraTrainingConfig, output_dir: Path) -> Path | None:
    if cfg.resume_from is None:
        return None
    if cfg.resume_from == "latest":
        found = _checkpoints(output_dir)
        return found[-1] if found else None  # nothing yet: start from scratch, as diffusers does
    path = Path(cfg.resume_from)
    if not (path / "state.pt").is_file():
        raise FileNotFoundError(f"No checkpoint at {path} (expected {path / 'state.pt'}); "
                                "use resume_from='latest' or a checkpoint-N folder.")
    return path


def _make_optimizer(params, cfg: LoraTrainingConfig, device: torch.device):
    use_8bit = cfg.use_8bit_adam
    if use_8bit is None:
        try:
            import bitsandbytes  # noqa: F401
            use_8bit = device.type == "cuda"
        except ImportError:
            use_8bit = False
    if use_8bit:
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=cfg.learning_rate, weight_decay=cfg.adam_weight_decay)
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.adam_weight_decay)


def _validation_pipeline(components, unet, text_encoder):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=components["vae"], text_encoder=text_encoder, tokenizer=components["tokenizer"], unet=unet,
        scheduler=DPMSolverMultistepScheduler.from_config(components["inference_scheduler_config"]),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run_validation(cfg, components, unet, text_encoder, step: int, output_dir: Path, resolution: int) -> Path:
    from PIL import Image

    from ..generation import generate

    unet.eval()
    if text_encoder is not None:
        text_encoder.eval()
    pipe = _validation_pipeline(components, unet, text_encoder or components["text_encoder"])
    images = []
    for prompt in cfg.validation_prompts:
        gens = generate(pipe, prompt, seed=list(cfg.validation_seeds), steps=cfg.validation_inference_steps,
                        guidance=cfg.validation_guidance, height=resolution, width=resolution, progress=False)
        images.extend(g.image for g in gens)
    unet.train()
    if text_encoder is not None:
        text_encoder.train()
    cols = len(cfg.validation_seeds)
    w, h = images[0].size
    grid = Image.new("RGB", (w * cols, h * len(cfg.validation_prompts)))
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * w, (i // cols) * h))
    path = output_dir / "validation" / f"step-{step:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


# --------------------------------------------------------------------------- main entry


def train_lora(config: LoraTrainingConfig, dataset: ImageCaptionDataset | None = None) -> TrainingResult:
    """Train a LoRA; returns a ``TrainingResult`` (its ``lora_dir`` loads with ``load_lora``)."""
    from accelerate import Accelerator
    from diffusers import StableDiffusionPipeline
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params, compute_snr
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, set_peft_model_state_dict

    cfg = config
    cfg.validate()
    # cpu=True on GPU-less machines: under a multi-process launch (torchrun, i.e. `accelerate launch
    # --multi_gpu`) accelerate then sets up gloo data parallelism over CPU processes.
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    accelerator = Accelerator(gradient_accumulation_steps=cfg.gradient_accumulation_steps,
                              mixed_precision=cfg.mixed_precision, cpu=not (torch.cuda.is_available() or mps))
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    output_dir = Path(cfg.output_dir).expanduser()
    output_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(cfg.seed)  # LoRA initialisation
    components = load_training_components(cfg.model, config=cfg.config)
    tokenizer, text_encoder, vae, unet = (components[k] for k in ("tokenizer", "text_encoder", "vae", "unet"))
    noise_scheduler = components["noise_scheduler"]
    prediction_type = cfg.prediction_type or noise_scheduler.config.prediction_type
    resolution = cfg.resolution or unet.config.sample_size * (2 ** (len(vae.config.block_out_channels) - 1))
    if dataset is None:
        dataset = load_image_dataset(cfg.data_dir, resolution, random_flip=cfg.random_flip,
                                     verbose=accelerator.is_main_process)
    elif dataset.resolution != resolution:
        raise ValueError(f"dataset resolution {dataset.resolution} != training resolution {resolution}")

    for model in (unet, vae, text_encoder):
        model.requires_grad_(False)
        model.to(device, dtype=weight_dtype) if weight_dtype != torch.float32 else model.to(device)
    alpha = cfg.alpha if cfg.alpha is not None else cfg.rank
    unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=alpha, lora_dropout=cfg.dropout,
                                init_lora_weights="gaussian", target_modules=list(cfg.target_modules)))
    if cfg.train_text_encoder:  # peft directly: transformers' add_adapter wants a peft newer than released
        add_text_encoder_lora(text_encoder, LoraConfig(r=cfg.rank, lora_alpha=alpha, lora_dropout=cfg.dropout,
                                                       init_lora_weights="gaussian",
                                                       target_modules=list(TEXT_ENCODER_TARGETS)))
    trained = [unet] + ([text_encoder] if cfg.train_text_encoder else [])
    cast_training_params(trained, dtype=torch.float32)  # LoRA in fp32 even when the base is fp16
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if cfg.train_text_encoder:
            text_encoder.gradient_checkpointing_enable()
    params = [p for m in trained for p in m.parameters() if p.requires_grad]

    n_samples = len(dataset)
    micro_per_epoch = max(1, n_samples // (cfg.train_batch_size * world))
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.gradient_accumulation_steps)
    max_steps = cfg.max_train_steps or cfg.num_train_epochs * steps_per_epoch
    optimizer = _make_optimizer(params, cfg, device)
    # accelerate steps a prepared scheduler once per process, hence the factor (as in diffusers' script).
    lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=cfg.lr_warmup_steps * world,
                                 num_training_steps=max_steps * world)
    if cfg.train_text_encoder:
        unet, text_encoder, optimizer, lr_scheduler = accelerator.prepare(unet, text_encoder, optimizer, lr_scheduler)
    else:
        unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)

    result = TrainingResult(lora_dir=output_dir, config=cfg,
                            trainable_parameters=sum(p.numel() for p in params))
    start_step = 0
    ckpt = _load_checkpoint(cfg, output_dir)
    if ckpt is not None:
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
        set_peft_model_state_dict(accelerator.unwrap_model(unet), state["unet"])
        if cfg.train_text_encoder and state["text_encoder"]:
            set_peft_model_state_dict(accelerator.unwrap_model(text_encoder), state["text_encoder"])
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        start_step = state["step"]
        result.losses, result.learning_rates = list(state["losses"]), list(state["learning_rates"])
        if accelerator.is_main_process:
            print(f"Resumed from {ckpt} at step {start_step}")

    cache_started = time.perf_counter()
    cache = _LatentCache(dataset, vae, device, weight_dtype, progress=cfg.progress and accelerator.is_main_process) \
        if cfg.cache_latents else None
    result.cache_seconds = time.perf_counter() - cache_started
    flip_rng_seed = cfg.seed + 7919
    text_cache: dict[str, torch.Tensor] = {}

    started = time.perf_counter()
    bar = tqdm(total=max_steps, initial=start_step, desc="LoRA training",
               disable=not (cfg.progress and accelerator.is_main_process))
    unet.train()
    if cfg.train_text_encoder:
        text_encoder.train()
    scaling = vae.config.scaling_factor
    for step in range(start_step, max_steps):
        step_loss = 0.0
        for micro in range(cfg.gradient_accumulation_steps):
            m = step * cfg.gradient_accumulation_steps + micro
            gen = _step_generator(cfg.seed, m, rank)
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))  # dropout masks
            idx = _batch_indices(n_samples, m, cfg.train_batch_size, world, rank, cfg.seed)
            records = [dataset._order[i] for i in idx]
            flips = ([bool(b) for b in torch.rand(len(idx), generator=torch.Generator().manual_seed(
                flip_rng_seed + m * world + rank)) < 0.5] if cfg.random_flip else [False] * len(idx))
            with accelerator.accumulate(*trained if cfg.train_text_encoder else [unet]):
                if cache is not None:
                    latents = cache.sample(records, flips, gen).to(device)
                else:
                    px = torch.stack([dataset.pixel_values(r, f) for r, f in zip(records, flips)])
                    with torch.no_grad():
                        dist = vae.encode(px.to(device, weight_dtype)).latent_dist
                        latents = (dist.mean.float().cpu() + dist.std.float().cpu()
                                   * torch.randn(dist.mean.shape, generator=gen)).to(device)
                latents = (latents * scaling).to(weight_dtype)
                noise = torch.randn(latents.shape, generator=gen).to(device, weight_dtype)
                if cfg.noise_offset:
                    noise = noise + cfg.noise_offset * torch.randn(
                        (latents.shape[0], latents.shape[1], 1, 1), generator=gen).to(device, weight_dtype)
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                          generator=gen).to(device)
                noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                captions = [dataset.records[r].caption for r in records]
                if cfg.train_text_encoder:
                    hidden = _encode_prompts(tokenizer, text_encoder, captions, device)
                else:  # frozen text encoder: each distinct caption is encoded once
                    missing = [c for c in dict.fromkeys(captions) if c not in text_cache]
                    if missing:
                        with torch.no_grad():
                            text_cache.update(zip(missing, _encode_prompts(tokenizer, text_encoder, missing, device)))
                    hidden = torch.stack([text_cache[c] for c in captions])
                target = noise if prediction_type == "epsilon" else \
                    noise_scheduler.get_velocity(latents, noise, timesteps)
                pred = unet(noisy, timesteps, hidden, return_dict=False)[0]
                if cfg.snr_gamma is None:
                    loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
                else:
                    # min-SNR-γ (Hang et al. 2023), as in diffusers' script.
                    snr = compute_snr(noise_scheduler, timesteps)
                    weights = torch.stack([snr, cfg.snr_gamma * torch.ones_like(snr)], dim=1).min(dim=1)[0]
                    weights = weights / (snr if prediction_type == "epsilon" else snr + 1)
                    loss = F.mse_loss(pred.float(), target.float(), reduction="none")
                    loss = (loss.mean(dim=list(range(1, loss.ndim))) * weights).mean()
                step_loss += accelerator.gather(loss.detach()[None]).mean().item() / cfg.gradient_accumulation_steps
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        lr = lr_scheduler.get_last_lr()[0]
        result.losses.append(step_loss)
        result.learning_rates.append(lr)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
        done = step + 1
        if done % cfg.checkpointing_steps == 0 or done == max_steps:
            if accelerator.is_main_process:
                _save_checkpoint(output_dir / f"checkpoint-{done}", accelerator.unwrap_model(unet),
                                 accelerator.unwrap_model(text_encoder) if cfg.train_text_encoder else None,
                                 optimizer, lr_scheduler, done, result)
                if cfg.checkpoints_total_limit:
                    for old in _checkpoints(output_dir)[:-cfg.checkpoints_total_limit]:
                        shutil.rmtree(old)
            accelerator.wait_for_everyone()
        if cfg.validation_prompts and (done % cfg.validation_steps == 0 or done == max_steps):
            if accelerator.is_main_process:
                val_started = time.perf_counter()
                result.validation_grids[done] = _run_validation(
                    cfg, components, accelerator.unwrap_model(unet),
                    accelerator.unwrap_model(text_encoder) if cfg.train_text_encoder else None, done, output_dir,
                    resolution)
                result.validation_seconds += time.perf_counter() - val_started
            accelerator.wait_for_everyone()
    bar.close()
    result.seconds = time.perf_counter() - started
    result.global_step = max_steps

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        unet_l = accelerator.unwrap_model(unet)
        te_l = accelerator.unwrap_model(text_encoder) if cfg.train_text_encoder else None
        unet_layers = convert_state_dict_to_diffusers(_lora_state(unet_l))
        te_layers = convert_state_dict_to_diffusers(_lora_state(te_l)) if te_l is not None else None
        tmp = output_dir / ".saving"
        shutil.rmtree(tmp, ignore_errors=True)
        StableDiffusionPipeline.save_lora_weights(
            tmp, unet_lora_layers=unet_layers, text_encoder_lora_layers=te_layers, safe_serialization=True,
            unet_lora_adapter_metadata=unet_l.peft_config["default"].to_dict(),
            text_encoder_lora_adapter_metadata=te_l.peft_config["default"].to_dict() if te_l is not None else None)
        os.replace(tmp / WEIGHTS_NAME, output_dir / WEIGHTS_NAME)
        shutil.rmtree(tmp, ignore_errors=True)
        if cfg.export_kohya:
            from .export import save_kohya

            result.kohya_file = save_kohya(output_dir / WEIGHTS_NAME, output_dir / KOHYA_NAME)
        _write_run_files(result, dataset, resolution, prediction_type, world)
        if cfg.push_to_hub:
            from huggingface_hub import upload_folder

            upload_folder(repo_id=cfg.hub_model_id, folder_path=str(output_dir),
                          ignore_patterns=["checkpoint-*", "*.tmp"])
    accelerator.wait_for_everyone()
    accelerator.end_training()
    result.unet = accelerator.unwrap_model(unet).eval()
    result.text_encoder = (accelerator.unwrap_model(text_encoder) if cfg.train_text_encoder else text_encoder).eval()
    return result


def _write_run_files(result: TrainingResult, dataset: ImageCaptionDataset, resolution: int,
                     prediction_type: str, world: int) -> None:
    from .card import model_card

    out = result.lora_dir
    (out / "training.json").write_text(json.dumps(
        {"config": asdict(result.config), "resolution": resolution, "prediction_type": prediction_type,
         "processes": world, "steps": result.global_step, "seconds": round(result.seconds, 1),
         "trainable_parameters": result.trainable_parameters, "losses": result.losses,
         "learning_rates": result.learning_rates}, indent=1, default=str))
    (out / "README.md").write_text(model_card(result, dataset, resolution, prediction_type, world))
