"""Loading Stable Diffusion pipelines: the built-in model, Hub ids, folders and single files.

>>> from animegen_utils import load_pipeline
>>> pipe = load_pipeline()                                    # built-in toy model, offline
>>> pipe = load_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5", safety_checker=False)
>>> pipe = load_pipeline("/content/anything-v5.safetensors")  # one-file anime checkpoint
>>> img2img = load_pipeline(task="img2img")                   # same weights, no second load

Weights are loaded once per (model, device, dtype): asking for another task or
scheduler builds a new pipeline object around the *same* component objects.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    ControlNetModel,
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    UniPCMultistepScheduler,
)

TINY = "tiny"
TINY_MODEL_DIR = Path(__file__).parent / "models" / "tiny"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_CONTROLNET = "lllyasviel/control_v11p_sd15_canny"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")

TASKS: dict[str, type[DiffusionPipeline]] = {
    "txt2img": StableDiffusionPipeline,
    "img2img": StableDiffusionImg2ImgPipeline,
    "controlnet": StableDiffusionControlNetPipeline,
}

# Short names as A1111/ComfyUI users know them -> (class, config overrides, A1111 label).
SCHEDULERS: dict[str, tuple[type, dict[str, Any], str]] = {
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}, "DPM++ 2M"),
    "dpm++_karras": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}, "DPM++ 2M Karras"),
    "euler_a": (EulerAncestralDiscreteScheduler, {}, "Euler a"),
    "euler": (EulerDiscreteScheduler, {}, "Euler"),
    "ddim": (DDIMScheduler, {}, "DDIM"),
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}, "PLMS"),
    "unipc": (UniPCMultistepScheduler, {}, "UniPC"),
}

_RENAMED_MODELS = {"runwayml/stable-diffusion-v1-5": SD15}


class ModelNotFoundError(OSError):
    """A model id or path that cannot be loaded (offline, typo, or missing file)."""


@dataclass(frozen=True)
class PipelineInfo:
    """What ``generate`` records about the pipeline in every image's parameters."""

    model: str
    task: str
    scheduler: str
    clip_skip: int | None
    device: str
    dtype: str


# One set of components per (model, device, dtype, safety): the "never load twice" cache.
_LOADED: dict[tuple, StableDiffusionPipeline] = {}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks cuda, then mps, then cpu."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str | torch.device = "cpu") -> torch.dtype:
    """``"auto"`` is float16 on CUDA and float32 elsewhere (CPU half precision is slow and lossy)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}
    if dtype == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if dtype not in names:
        raise ValueError(f"Unknown dtype {dtype!r}. Valid choices: auto, {', '.join(names)}.")
    return names[dtype]


def make_scheduler(name: str, config: dict) -> Any:
    """A scheduler by short name, built from an existing scheduler's config."""
    if name not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}. Valid choices: {', '.join(SCHEDULERS)}.")
    cls, overrides, _ = SCHEDULERS[name]
    return cls.from_config(config, **overrides)


def set_scheduler(pipe: DiffusionPipeline, name: str) -> DiffusionPipeline:
    """Swap the scheduler in place (no weights involved) and record its name."""
    pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
    pipe.animegen_info = replace(pipeline_info(pipe), scheduler=name)
    return pipe


def pipeline_info(pipe: DiffusionPipeline) -> PipelineInfo:
    """The kit's record of a pipeline; pipelines built elsewhere get a best guess."""
    info = getattr(pipe, "animegen_info", None)
    if info is not None:
        return info
    task = next((t for t, cls in TASKS.items() if type(pipe) is cls), type(pipe).__name__)
    return PipelineInfo(
        model=str(getattr(pipe.config, "_name_or_path", "unknown")),
        task=task,
        scheduler=type(pipe.scheduler).__name__,
        clip_skip=None,
        device=str(pipe.device),
        dtype=str(pipe.dtype).replace("torch.", ""),
    )


def _missing_model_error(model: str, err: Exception) -> ModelNotFoundError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    lines = [f"Could not load model {model!r}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"]
    if model in _RENAMED_MODELS:
        lines.append(f"That id was removed from the Hub; use {_RENAMED_MODELS[model]!r}.")
    if offline:
        lines.append("HF_HUB_OFFLINE=1 is set, so only models already in the Hugging Face cache can load. "
                     f"Download it once with network access: `hf download {model}` "
                     "(or unset HF_HUB_OFFLINE), or pass a local folder / .safetensors path.")
    else:
        lines.append("Check the id or path. Without network, set HF_HUB_OFFLINE=1 and download it first "
                     f"with `hf download {model}`; the built-in offline model is model='tiny'.")
    return ModelNotFoundError(" ".join(lines))


def _load_base(model: str, dtype: torch.dtype, safety_checker: bool, config: str | None,
               variant: str | None) -> StableDiffusionPipeline:
    kwargs: dict[str, Any] = {"dtype": dtype}
    if not safety_checker:
        # Explicit opt-out, as diffusers requires: no checker and no warning about it.
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if variant:
        kwargs["variant"] = variant
    path = Path(model).expanduser()
    try:
        if model == TINY:
            if not (TINY_MODEL_DIR / "model_index.json").exists():
                raise ModelNotFoundError(
                    f"The built-in model is missing from {TINY_MODEL_DIR}. "
                    "Train it with `python -m animegen_utils.toyworld.train`."
                )
            return StableDiffusionPipeline.from_pretrained(TINY_MODEL_DIR, local_files_only=True, **kwargs)
        if path.suffix in SINGLE_FILE_SUFFIXES:
            if not path.is_file():
                raise ModelNotFoundError(f"Checkpoint file not found: {path}")
            if config is not None:
                kwargs["config"] = config
            return StableDiffusionPipeline.from_single_file(str(path), **kwargs)
        if path.is_dir():
            return StableDiffusionPipeline.from_pretrained(path, local_files_only=True, **kwargs)
        if model.startswith((".", "/", "~")):
            raise ModelNotFoundError(f"No model folder or checkpoint at {path}")
        return StableDiffusionPipeline.from_pretrained(model, **kwargs)
    except ModelNotFoundError:
        raise
    except (OSError, ValueError) as err:  # hub errors subclass OSError / ValueError
        raise _missing_model_error(model, err) from err


def controlnet_from_unet(unet, vae_scale_factor: int = 8) -> ControlNetModel:
    """A ControlNet initialised from ``unet`` (the training starting point).

    Its image encoder downsamples by the VAE factor (8 for SD1.5, 4 for the
    built-in model), so control images line up with the latents.
    """
    steps = int(vae_scale_factor).bit_length() - 1
    channels = (16, 32, 96, 256)[: steps + 1]
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels).to(unet.dtype)


def _load_controlnet(controlnet: str | ControlNetModel | None, base: StableDiffusionPipeline,
                     model: str, dtype: torch.dtype) -> ControlNetModel:
    if isinstance(controlnet, ControlNetModel):
        return controlnet
    if controlnet is None and model == TINY:
        if (TINY_MODEL_DIR / "controlnet" / "config.json").exists():
            return ControlNetModel.from_pretrained(TINY_MODEL_DIR / "controlnet", dtype=dtype)
        warnings.warn("The built-in model ships no trained ControlNet yet; using an untrained one "
                      "initialised from the UNet (its zero convolutions make it a no-op).")
        return controlnet_from_unet(base.unet, base.vae_scale_factor)
    name = controlnet or DEFAULT_CONTROLNET
    try:
        return ControlNetModel.from_pretrained(name, dtype=dtype)
    except (OSError, ValueError) as err:
        raise _missing_model_error(name, err) from err


def _pipeline_from_components(cls: type[DiffusionPipeline], pipe: DiffusionPipeline,
                              extra: dict[str, Any]) -> DiffusionPipeline:
    # Like ``cls.from_pipe`` but without its ``.to(dtype)`` call, which makes
    # diffusers log a spurious float32 warning on every switch.
    expected, optional = (set(keys) for keys in cls._get_signature_keys(cls))
    kwargs = {k: v for k, v in pipe.components.items() if k in expected or k in optional}
    kwargs.update(extra)
    if "requires_safety_checker" in expected | optional:
        kwargs["requires_safety_checker"] = bool(pipe.config.get("requires_safety_checker", False))
    for name in expected - kwargs.keys():
        kwargs[name] = None
    return cls(**kwargs)


def switch_task(pipe: DiffusionPipeline, task: str, controlnet: str | ControlNetModel | None = None,
                scheduler: str | None = None) -> DiffusionPipeline:
    """The same weights as ``pipe`` in a pipeline for another task.

    >>> img2img = switch_task(pipe, "img2img")
    >>> img2img.unet is pipe.unet
    True
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}. Valid choices: {', '.join(TASKS)}.")
    info = pipeline_info(pipe)
    extra: dict[str, Any] = {}
    if task == "controlnet":
        cn = getattr(pipe, "controlnet", None) if controlnet is None else None
        extra["controlnet"] = cn or _load_controlnet(controlnet, pipe, info.model, pipe.dtype)
    new = _pipeline_from_components(TASKS[task], pipe, extra)
    # A scheduler of its own, so changing one pipeline's sampler leaves the other alone.
    new.scheduler = make_scheduler(scheduler, pipe.scheduler.config) if scheduler else \
        type(pipe.scheduler).from_config(pipe.scheduler.config)
    new.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
    new.animegen_info = replace(info, task=task, scheduler=scheduler or info.scheduler)
    return new


def load_pipeline(
    model: str = TINY,
    task: str = "txt2img",
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    scheduler: str = "dpm++",
    clip_skip: int | None = None,
    safety_checker: bool = True,
    controlnet: str | ControlNetModel | None = None,
    config: str | None = None,
    variant: str | None = None,
) -> DiffusionPipeline:
    """Load a Stable Diffusion 1.x pipeline for ``task`` (txt2img, img2img, controlnet).

    Args:
        model: ``"tiny"`` (built-in, offline), a Hub id, a local diffusers folder, or
            a single ``.safetensors``/``.ckpt`` checkpoint.
        scheduler: one of ``SCHEDULERS`` (dpm++, dpm++_karras, euler_a, euler, ddim, pndm, unipc).
        clip_skip: CLIP layers to skip, diffusers' convention: 1 uses the penultimate
            layer, which is A1111's "Clip skip: 2" that many anime checkpoints expect.
        safety_checker: SD1.5 ships an NSFW filter; pass ``False`` to load without it
            (you take responsibility for the outputs). The built-in model has none.
        controlnet: for ``task="controlnet"``: a Hub id, folder or ``ControlNetModel``
            (default ``lllyasviel/control_v11p_sd15_canny``; the built-in one for ``"tiny"``).
        config: for single files, a diffusers folder or Hub id describing the architecture.
        variant: weight variant to fetch from the Hub, e.g. ``"fp16"``.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}. Valid choices: {', '.join(TASKS)}.")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {scheduler!r}. Valid choices: {', '.join(SCHEDULERS)}.")
    if clip_skip is not None and clip_skip < 0:
        raise ValueError(f"clip_skip must be >= 0, got {clip_skip}")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    key = (model, str(dev), torch_dtype, bool(safety_checker), config, variant)
    base = _LOADED.get(key)
    if base is None:
        base = _load_base(model, torch_dtype, safety_checker, config, variant)
        if base.device != dev:
            base = base.to(dev)
        base.animegen_info = PipelineInfo(model, "txt2img", scheduler, clip_skip, str(dev),
                                          str(torch_dtype).replace("torch.", ""))
        _LOADED[key] = base
    pipe = switch_task(base, task, controlnet=controlnet, scheduler=scheduler)
    pipe.animegen_info = replace(pipe.animegen_info, clip_skip=clip_skip)
    return pipe


def clear_pipeline_cache() -> None:
    """Forget loaded weights (the next ``load_pipeline`` reads them from disk again)."""
    _LOADED.clear()
