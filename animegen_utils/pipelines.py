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

import json
import os
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
    LCMScheduler,
    PNDMScheduler,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    TCDScheduler,
    UniPCMultistepScheduler,
)

from .adapters import LCM_ADAPTER, active_adapters, load_lora, unload_lora
from .errors import ModelNotFoundError
from .reference import SD15_IP_ADAPTER, load_reference_adapter
from .model_hash import model_hash

#: The built-in model (version 2: 128 px on 32x32 latents; version 1's 64-px weights are retired).
TINY = "tiny"
PACKAGE_MODELS = Path(__file__).parent / "models"
TINY_MODEL_DIR = PACKAGE_MODELS / "tiny"
#: The built-in models by name: each folder is a diffusers pipeline, with its own ControlNet
#: (``controlnet/``) and LCM-LoRA (``lcm_lora/``) beside it where they have been trained.
BUILTIN_MODELS: dict[str, Path] = {TINY: TINY_MODEL_DIR}
TINY_CONTROLNET_DIR = TINY_MODEL_DIR / "controlnet"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_CONTROLNET = "lllyasviel/control_v11p_sd15_canny"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")

TASKS: dict[str, type[DiffusionPipeline]] = {
    "txt2img": StableDiffusionPipeline,
    "img2img": StableDiffusionImg2ImgPipeline,
    "controlnet": StableDiffusionControlNetPipeline,
    "controlnet_img2img": StableDiffusionControlNetImg2ImgPipeline,  # a sketch plus a source image
}
CONTROLNET_TASKS = ("controlnet", "controlnet_img2img")

# Short names as A1111/ComfyUI users know them -> (class, config overrides, A1111 label).
SCHEDULERS: dict[str, tuple[type, dict[str, Any], str]] = {
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}, "DPM++ 2M"),
    "dpm++_karras": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}, "DPM++ 2M Karras"),
    "euler_a": (EulerAncestralDiscreteScheduler, {}, "Euler a"),
    "euler": (EulerDiscreteScheduler, {}, "Euler"),
    "ddim": (DDIMScheduler, {}, "DDIM"),
    "pndm": (PNDMScheduler, {"skip_prk_steps": True}, "PLMS"),
    "unipc": (UniPCMultistepScheduler, {}, "UniPC"),
    # Few-step sampling: load_pipeline(scheduler="lcm") also loads the matching LCM-LoRA.
    "lcm": (LCMScheduler, {}, "LCM"),
    # Trajectory Consistency Distillation's sampler (eta=, its gamma, goes to generate): for a TCD
    # or Hyper-SD LoRA given as lcm_lora= (SD1.x default: h1t/TCD-SD15-LoRA).
    "tcd": (TCDScheduler, {}, "TCD"),
}
#: The schedulers that load a few-step adapter (``lcm_lora=``) for their pipeline.
FEW_STEP_SCHEDULERS = ("lcm", "tcd")

# (steps, guidance) that ``generate`` uses when the caller gives none, per scheduler
# short name. Multistep solvers converge in ~20 steps; the rest are listed where
# they need more or less (measured on the built-in model in notebook 06).
DEFAULT_SETTINGS: tuple[int, float] = (20, 7.5)
RECOMMENDED_SETTINGS: dict[str, tuple[int, float]] = {
    "pndm": (50, 7.5),  # diffusers' own default for PNDM/PLMS
    "lcm": (4, 1.0),    # LCM-LoRA: guidance is distilled in; 1.0 skips the unconditional pass (notebook 06)
    "tcd": (4, 1.0),    # TCD-LoRA's model card: 4 steps, no guidance
}

_RENAMED_MODELS = {"runwayml/stable-diffusion-v1-5": SD15}

# The LCM-LoRA that scheduler="lcm" loads: the kit's own for a built-in model, the public one for SD1.5 models.
TINY_LCM_LORA_DIR = TINY_MODEL_DIR / "lcm_lora"
SD15_LCM_LORA = "latent-consistency/lcm-lora-sdv1-5"
SD15_TCD_LORA = "h1t/TCD-SD15-LoRA"  # scheduler="tcd" on SD1.x models; the built-in model uses its LCM-LoRA


@dataclass(frozen=True)
class PipelineInfo:
    """What ``generate`` records about the pipeline in every image's parameters."""

    model: str
    task: str
    scheduler: str
    clip_skip: int | None
    device: str
    dtype: str
    #: ``model_hash.model_hash`` of the loaded weights (None where they can't be read, e.g. not cached)
    model_hash: str | None = None


# One set of components per (model, device, dtype, safety): the "never load twice" cache.
_LOADED: dict[tuple, StableDiffusionPipeline] = {}
_CONTROLNETS: dict[tuple, ControlNetModel] = {}


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
    """A scheduler by short name: its class's defaults, the named option set, and the noise
    schedule of ``config`` (the model's own scheduler config, e.g. ``scheduler/scheduler_config.json``).

    Build from the *model's* config, not from another sampler's: a sampler's options
    (``use_karras_sigmas``, ``algorithm_type``...) would otherwise carry over to the next one.
    ``load_pipeline`` keeps the model's config as ``pipe.animegen_scheduler_config``.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}. Valid choices: {', '.join(SCHEDULERS)}.")
    cls, overrides, _ = SCHEDULERS[name]
    return cls.from_config(config, **overrides)


def model_scheduler_config(pipe: DiffusionPipeline) -> dict:
    """The scheduler config the model came with, kept by the kit across sampler swaps.

    A pipeline built outside the kit has none recorded: its current scheduler's config is
    taken (and recorded) the first time.
    """
    config = getattr(pipe, "animegen_scheduler_config", None)
    if config is None:
        config = pipe.animegen_scheduler_config = dict(pipe.scheduler.config)
    return config


def set_scheduler(pipe: DiffusionPipeline, name: str, lcm_lora: str | None = None) -> DiffusionPipeline:
    """Swap the scheduler in place and record its name.

    ``"lcm"`` also loads the matching LCM-LoRA for this pipeline (see ``default_lcm_lora``);
    leaving ``"lcm"`` drops it again. Other swaps involve no weights.
    """
    if lcm_lora is not None and name not in FEW_STEP_SCHEDULERS:
        raise ValueError(f"lcm_lora is for scheduler='lcm' (or 'tcd'), got scheduler={name!r}.")
    pipe.scheduler = make_scheduler(name, model_scheduler_config(pipe))
    pipe.animegen_info = replace(pipeline_info(pipe), scheduler=name)
    if name in FEW_STEP_SCHEDULERS:
        _attach_lcm_lora(pipe, lcm_lora)
    else:
        _detach_lcm_lora(pipe)
    return pipe


def _builtin_part(model: str, part: str, what: str, how: str) -> Path:
    """``controlnet/`` or ``lcm_lora/`` of a built-in model, or an error that names where one exists."""
    folder = _part_dir(model, part)
    if (folder / ("config.json" if part == "controlnet" else "pytorch_lora_weights.safetensors")).exists():
        return folder
    others = [name for name in BUILTIN_MODELS if name != model and _part_dir(name, part).is_dir()]
    hint = f" model={others[0]!r} has one (see its model card)." if others else ""
    raise ModelNotFoundError(f"The built-in model {model!r} has no {what} yet (nothing in {folder}); a {what} "
                             f"only works with the base it was trained for: train one with `{how}`.{hint}")


def _part_dir(model: str, part: str) -> Path:
    return BUILTIN_MODELS[model] / part


def default_lcm_lora(model: str) -> str:
    """The LCM-LoRA for ``model``: the kit's own for a built-in model, ``latent-consistency/lcm-lora-sdv1-5``
    for every other (Stable Diffusion 1.x) model.

    >>> default_lcm_lora("anything-v5.safetensors")
    'latent-consistency/lcm-lora-sdv1-5'
    """
    if model in BUILTIN_MODELS:
        return str(_builtin_part(model, "lcm_lora", "LCM-LoRA", "python -m animegen_utils.fast distill"))
    return SD15_LCM_LORA


def _lcm_adapter_name(source: str) -> str:
    """``"lcm"`` for the default LCM-LoRAs, ``"lcm_<name>"`` for one the caller chose."""
    if source in (SD15_LCM_LORA, *(str(d / "lcm_lora") for d in BUILTIN_MODELS.values())):
        return LCM_ADAPTER
    stem = Path(source.rstrip("/")).name.removesuffix(".safetensors")
    return LCM_ADAPTER + "_" + ("".join(c if c.isalnum() else "_" for c in stem).strip("_").lower() or "custom")


def _attach_lcm_lora(pipe: DiffusionPipeline, lcm_lora: str | None) -> None:
    """Give ``pipe`` (only) its LCM-LoRA, through the kit's per-pipeline adapter records."""
    info = pipeline_info(pipe)
    tcd = info.scheduler == "tcd" and info.model not in BUILTIN_MODELS
    source = str(lcm_lora) if lcm_lora is not None else SD15_TCD_LORA if tcd else default_lcm_lora(info.model)
    if getattr(pipe, "animegen_lcm_lora", None) not in (None, source):
        _detach_lcm_lora(pipe)
    name = _lcm_adapter_name(source)
    if name not in active_adapters(pipe):
        try:
            # The file name is given for the public adapter: diffusers cannot guess it offline.
            extra = {"weight_name": "pytorch_lora_weights.safetensors"} if source in (SD15_LCM_LORA, SD15_TCD_LORA) else {}
            load_lora(pipe, source, adapter_name=name, scale=1.0, **extra)
        except OSError as err:  # hub errors (offline, not found) subclass OSError
            raise _missing_model_error(source, err) from err
    pipe.animegen_lcm_lora, pipe.animegen_lcm_adapter = source, name
    # LCMScheduler picks its few timesteps from the distillation's skip schedule; a kit-distilled
    # adapter says which one it was trained on (the public ones use diffusers' default, 50).
    skip_steps = lcm_skip_schedule(source)
    if skip_steps is not None and pipe.scheduler.config.get("original_inference_steps") != skip_steps:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, original_inference_steps=skip_steps)


def lcm_skip_schedule(source: str) -> int | None:
    """The DDIM skip-schedule length an LCM-LoRA folder was distilled with (its ``distill.json``),
    or None when it does not say (public adapters: LCMScheduler's default of 50 applies)."""
    meta = Path(source) / "distill.json"
    if not meta.is_file():
        return None
    steps = json.loads(meta.read_text()).get("config", {}).get("num_ddim_timesteps")
    return int(steps) if steps else None


def _detach_lcm_lora(pipe: DiffusionPipeline) -> None:
    source = getattr(pipe, "animegen_lcm_lora", None)
    if source is not None and _lcm_adapter_name(source) in active_adapters(pipe):
        unload_lora(pipe, _lcm_adapter_name(source))
    pipe.animegen_lcm_lora = pipe.animegen_lcm_adapter = None


def recommended_settings(pipe: DiffusionPipeline) -> tuple[int, float]:
    """The (steps, guidance) ``generate`` uses for ``pipe`` when the caller gives none.

    >>> recommended_settings(load_pipeline())
    (20, 7.5)
    """
    return RECOMMENDED_SETTINGS.get(pipeline_info(pipe).scheduler, DEFAULT_SETTINGS)


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


def is_single_file(model: str | os.PathLike) -> bool:
    """Whether ``model`` names a one-file checkpoint (``.safetensors``/``.ckpt``) rather than a folder or Hub id."""
    return Path(str(model)).suffix in SINGLE_FILE_SUFFIXES


def check_config(model: str, config: str | None, kwarg: str = "config") -> None:
    """``config`` is for single files only: a folder or Hub id carries its own configs."""
    if config is not None and not is_single_file(model):
        raise ValueError(f"{kwarg}= is for single-file checkpoints (.safetensors, .ckpt); {model!r} is a folder, "
                         "Hub id or built-in model with its own configs. Leave config out.")


def _single_file_error(path: str, config: str | None, default_config: str, err: Exception,
                       kwarg: str = "config") -> ModelNotFoundError:
    """``from_single_file`` failed: most often offline without the configs it builds the model from."""
    first = str(err).splitlines()[0] if str(err) else ""
    if config is None:
        how = (f"from_single_file builds the model around the file's weights from {default_config!r}'s configs "
               f"(not the weights: a few kB), which are not in the Hugging Face cache. Pass {kwarg}= a diffusers "
               f"folder of the same architecture, or cache the configs once with network access: "
               f"`hf download {default_config} --include '*.json' '*.txt'`.")
    else:
        how = (f"Check that {kwarg}={config!r} is a diffusers folder (or a cached Hub id) of the same architecture "
               "as the file.")
    return ModelNotFoundError(f"Could not load the checkpoint {path!r}: {type(err).__name__}: {first} {how}")


def _missing_model_error(model: str, err: Exception) -> ModelNotFoundError:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    lines = [f"Could not load model {model!r}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"]
    if model in _RENAMED_MODELS:
        lines.append(f"That id was removed from the Hub; use {_RENAMED_MODELS[model]!r}.")
    if offline:
        lines.append("HF_HUB_OFFLINE=1 is set, so only models already in the Hugging Face cache can load. "
                     f"Download it once with network access: `hf download {model}` "
                     "(or unset HF_HUB_OFFLINE), or pass a local folder, or a .safetensors file with config=.")
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
        if model in BUILTIN_MODELS:
            folder = BUILTIN_MODELS[model]
            if not (folder / "model_index.json").exists():
                raise ModelNotFoundError(
                    f"The built-in model {model!r} is missing from {folder}. "
                    "Train it with `python -m animegen_utils.toyworld.train`."
                )
            return StableDiffusionPipeline.from_pretrained(folder, local_files_only=True, **kwargs)
        if path.suffix in SINGLE_FILE_SUFFIXES:
            return _load_single_file(StableDiffusionPipeline, path, config, SD15, kwargs)
        if path.is_dir():
            return StableDiffusionPipeline.from_pretrained(path, local_files_only=True, **kwargs)
        if model.startswith((".", "/", "~")):
            raise ModelNotFoundError(f"No model folder or checkpoint at {path}")
        return StableDiffusionPipeline.from_pretrained(model, **kwargs)
    except ModelNotFoundError:
        raise
    except (OSError, ValueError) as err:  # hub errors subclass OSError / ValueError
        raise _missing_model_error(model, err) from err


def _load_single_file(cls, path: Path, config: str | None, default_config: str, kwargs: dict[str, Any],
                      kwarg: str = "config"):
    """``cls.from_single_file``, with an error that says which configs it needs when it fails."""
    if not path.is_file():
        raise ModelNotFoundError(f"Checkpoint file not found: {path}")
    if config is not None:
        kwargs = {**kwargs, "config": config}
        if Path(config).expanduser().is_dir():
            kwargs["local_files_only"] = True
    try:
        return cls.from_single_file(str(path), **kwargs)
    except (OSError, ValueError) as err:  # hub errors (offline, not cached) subclass OSError / ValueError
        raise _single_file_error(str(path), config, default_config, err, kwarg) from err


def controlnet_from_unet(unet, vae_scale_factor: int = 8) -> ControlNetModel:
    """A ControlNet initialised from ``unet`` (the training starting point).

    Its image encoder downsamples by the VAE factor (8 for SD1.5, 4 for the
    built-in model), so control images line up with the latents.
    """
    steps = int(vae_scale_factor).bit_length() - 1
    channels = (16, 32, 96, 256)[: steps + 1]
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels)
    # Cast only when needed: diffusers' to(dtype) logs a float32-modules warning even when there are none.
    return controlnet if controlnet.dtype == unet.dtype else controlnet.to(unet.dtype)


def check_controlnet_fits(controlnet: ControlNetModel, unet) -> None:
    """A ControlNet adds residuals to the UNet's skip connections: it must have been made from a UNet
    of the same shape, or diffusers fails deep inside a forward pass (or, worse, broadcasts)."""
    keys = ("block_out_channels", "layers_per_block", "cross_attention_dim", "down_block_types", "in_channels")
    differ = [k for k in keys if tuple(_as_tuple(controlnet.config.get(k))) != tuple(_as_tuple(unet.config.get(k)))]
    if differ:
        shown = ", ".join(f"{k} {_as_tuple(controlnet.config.get(k))} vs the UNet's {_as_tuple(unet.config.get(k))}"
                          for k in differ)
        raise ValueError(f"This ControlNet was made for another base model architecture ({shown}). "
                         "Load the ControlNet trained for this base model.")


def _as_tuple(value) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _load_controlnet(controlnet: str | ControlNetModel | None, base: StableDiffusionPipeline,
                     model: str, dtype: torch.dtype, config: str | None = None) -> ControlNetModel:
    if isinstance(controlnet, ControlNetModel):
        return controlnet
    if controlnet in BUILTIN_MODELS or (controlnet is None and model in BUILTIN_MODELS):
        # None on a built-in base: the base's own; otherwise the named built-in model's.
        owner = model if controlnet is None else controlnet
        folder = _builtin_part(owner, "controlnet", "ControlNet", "python -m animegen_utils.control train")
        return ControlNetModel.from_pretrained(folder, local_files_only=True, dtype=dtype)
    name = controlnet or DEFAULT_CONTROLNET
    path = Path(name).expanduser()
    check_config(name, config, kwarg="controlnet_config")
    if is_single_file(name):
        return _load_single_file(ControlNetModel, path, config, DEFAULT_CONTROLNET, {"dtype": dtype},
                                 kwarg="controlnet_config")
    try:
        if path.is_dir():
            return ControlNetModel.from_pretrained(path, local_files_only=True, dtype=dtype)
        if name.startswith((".", "/", "~")):
            raise ModelNotFoundError(f"No ControlNet folder or .safetensors file at {path}")
        return ControlNetModel.from_pretrained(name, dtype=dtype)
    except ModelNotFoundError:
        raise
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
                scheduler: str | None = None, lcm_lora: str | None = None,
                controlnet_config: str | None = None) -> DiffusionPipeline:
    """The same weights as ``pipe`` in a pipeline for another task.

    With scheduler ``"lcm"`` (given, or ``pipe``'s own) the new pipeline gets the LCM-LoRA too.
    ``controlnet_config``: for a ControlNet ``.safetensors``, the diffusers ControlNet folder (or
    cached Hub id) of its architecture, as ``config`` is for a single-file model.

    >>> pipe = load_pipeline()
    >>> img2img = switch_task(pipe, "img2img")
    >>> img2img.unet is pipe.unet
    True
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}. Valid choices: {', '.join(TASKS)}.")
    info = pipeline_info(pipe)
    extra: dict[str, Any] = {}
    if task in CONTROLNET_TASKS:
        cn = getattr(pipe, "controlnet", None) if controlnet is None else None
        if isinstance(controlnet, ControlNetModel):
            cn = controlnet.to(pipe.device)  # in place: the caller's object, on the UNet's device
        elif cn is None:
            # One ControlNet object per (name, model, device, dtype), like the base weights: the
            # controlnet and controlnet_img2img pipelines share it instead of loading it twice.
            key = (controlnet, controlnet_config, info.model, str(pipe.device), pipe.dtype)
            if key not in _CONTROLNETS:
                _CONTROLNETS[key] = _load_controlnet(controlnet, pipe, info.model, pipe.dtype,
                                                     controlnet_config).to(pipe.device)
            cn = _CONTROLNETS[key]
        check_controlnet_fits(cn, pipe.unet)
        extra["controlnet"] = cn
    new = _pipeline_from_components(TASKS[task], pipe, extra)
    new.animegen_scheduler_config = model_scheduler_config(pipe)
    # A scheduler of its own, so changing one pipeline's sampler leaves the other alone.
    new.scheduler = make_scheduler(scheduler, new.animegen_scheduler_config) if scheduler else \
        type(pipe.scheduler).from_config(pipe.scheduler.config)
    new.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
    new.animegen_info = replace(info, task=task, scheduler=scheduler or info.scheduler)
    if new.animegen_info.scheduler in FEW_STEP_SCHEDULERS:
        _attach_lcm_lora(new, lcm_lora or getattr(pipe, "animegen_lcm_lora", None))
    elif lcm_lora is not None:
        raise ValueError(f"lcm_lora is for scheduler='lcm' (or 'tcd'), got scheduler={new.animegen_info.scheduler!r}.")
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
    lcm_lora: str | None = None,
    controlnet_config: str | None = None,
    ip_adapter: bool | str | dict[str, Any] | None = None,
) -> DiffusionPipeline:
    """Load a Stable Diffusion 1.x pipeline for ``task`` (txt2img, img2img, controlnet, controlnet_img2img).

    Args:
        model: ``"tiny"`` (built-in, offline), a Hub id, a local diffusers folder, or
            a single ``.safetensors``/``.ckpt`` checkpoint.
        scheduler: one of ``SCHEDULERS`` (dpm++, dpm++_karras, euler_a, euler, ddim, pndm, unipc, lcm, tcd).
            ``"lcm"`` is few-step sampling: ``LCMScheduler`` plus an LCM-LoRA loaded for this
            pipeline only (``generate`` then defaults to 4 steps at guidance 1.0).
        clip_skip: CLIP layers to skip, diffusers' convention: 1 uses the penultimate
            layer, which is A1111's "Clip skip: 2" that many anime checkpoints expect.
        safety_checker: SD1.5 ships an NSFW filter; pass ``False`` to load without it
            (you take responsibility for the outputs). The built-in model has none.
        controlnet: for the controlnet tasks: a Hub id, a local folder, ``"tiny"`` (the built-in
            canny ControlNet) or a ``ControlNetModel`` (default ``lllyasviel/control_v11p_sd15_canny``;
            for ``model="tiny"`` the built-in one).
        config: for single files only: a diffusers folder (or a Hub id whose configs are cached)
            with the architecture's configs, e.g. a downloaded SD1.5 folder; needed offline, where
            ``from_single_file`` cannot fetch ``stable-diffusion-v1-5/stable-diffusion-v1-5``'s configs.
            Refused for folders and Hub ids, which carry their own.
        variant: weight variant to fetch from the Hub, e.g. ``"fp16"``.
        lcm_lora: for ``scheduler="lcm"`` (or ``"tcd"``), the few-step LoRA to use: a Hub id, a folder or a
            ``.safetensors`` file. Default: the built-in one for ``"tiny"``,
            ``latent-consistency/lcm-lora-sdv1-5`` (``"tcd"``: ``h1t/TCD-SD15-LoRA``) for other models.
        controlnet_config: ``config`` for a ControlNet ``.safetensors`` (its diffusers folder).
        ip_adapter: an IP-Adapter for this pipeline only, for ``generate(..., reference=image)``:
            ``True`` for the model's default (the built-in one for ``"tiny"``, h94's
            ``ip-adapter-plus-face_sd15`` with its ViT-H image encoder for SD1.5 models), a folder,
            a weight file or a Hub repo, or a dict of ``reference.load_reference_adapter`` arguments
            (``{"source": "h94/IP-Adapter", "subfolder": "models", "weight_name": ..., "scale": 0.7}``).
    """
    if lcm_lora is not None and scheduler not in FEW_STEP_SCHEDULERS:
        raise ValueError(f"lcm_lora is for scheduler='lcm' (or 'tcd'), got scheduler={scheduler!r}.")
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}. Valid choices: {', '.join(TASKS)}.")
    if scheduler not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {scheduler!r}. Valid choices: {', '.join(SCHEDULERS)}.")
    if clip_skip is not None and clip_skip < 0:
        raise ValueError(f"clip_skip must be >= 0, got {clip_skip}")
    check_config(model, config)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    key = (model, str(dev), torch_dtype, bool(safety_checker), config, variant)
    base = _LOADED.get(key)
    if base is None:
        base = _load_base(model, torch_dtype, safety_checker, config, variant)
        if base.device != dev:
            base = base.to(dev)
        base.animegen_info = PipelineInfo(model, "txt2img", scheduler, clip_skip, str(dev),
                                          str(torch_dtype).replace("torch.", ""),
                                          model_hash(BUILTIN_MODELS.get(model, model), variant))
        _LOADED[key] = base
    pipe = switch_task(base, task, controlnet=controlnet, scheduler=scheduler, lcm_lora=lcm_lora,
                       controlnet_config=controlnet_config)
    pipe.animegen_info = replace(pipe.animegen_info, clip_skip=clip_skip)
    if ip_adapter is not None and ip_adapter is not False:
        options = dict(ip_adapter) if isinstance(ip_adapter, dict) else \
            {} if ip_adapter is True else {"source": ip_adapter}
        try:
            load_reference_adapter(pipe, **options)
        except ModelNotFoundError:
            raise
        except FileNotFoundError as err:
            raise ModelNotFoundError(str(err)) from err
        except OSError as err:  # hub errors (offline, not found) subclass OSError
            raise _missing_model_error(str(options.get("source") or SD15_IP_ADAPTER["source"]), err) from err
    return pipe


def clear_pipeline_cache() -> None:
    """Forget loaded weights (the next ``load_pipeline`` reads them from disk again)."""
    _LOADED.clear()
    _CONTROLNETS.clear()
