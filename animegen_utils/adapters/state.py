"""Which adapters each pipeline uses, on weights that pipelines share: load, scale, unload, activate.

See the package docstring (``animegen_utils.adapters``) for the rules.
"""

from __future__ import annotations

import hashlib
import re
import warnings
import weakref
from pathlib import Path
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from .fusing import fuse, fusing_enabled, is_fused, unfuse

__all__ = ["load_lora", "set_lora_scale", "unload_lora", "active_adapters", "activate_adapters",
           "kit_adapter_names", "adapter_sha256", "state_dict_sha256"]

_RECORD = "animegen_adapters"      # on a pipeline: {adapter name: scale}, in load order
_REGISTRY = "_animegen_lora"       # on a shared UNet: {adapter name: _Entry}


class _Entry:
    """One adapter in a shared UNet: where it came from, its weights' hash, and which pipelines use it."""

    def __init__(self, source: str, path_or_id: str = "", weight_name: str | None = None, sha256: str = ""):
        self.source = source
        self.path_or_id, self.weight_name, self.sha256 = path_or_id, weight_name, sha256
        self.owners: weakref.WeakSet = weakref.WeakSet()


def _models(pipe) -> list[Any]:
    return [m for m in (getattr(pipe, "unet", None), getattr(pipe, "text_encoder", None)) if m is not None]


_LAYERS = "_animegen_tuner_layers"  # on a model: (its peft_config object, its keys, its tuner layers)


def _model_tuner_layers(model) -> list[BaseTunerLayer]:
    # peft and diffusers add or remove LoRA layers only together with an entry of ``peft_config``
    # (unload deletes the dict itself), so that dict's identity and keys date the walk. The cache
    # holds the dict, so its id cannot be reused by a new one. Walking the modules on every call
    # cost a 4-step LCM image about 5 % of its time.
    config = model.__dict__.get("peft_config", getattr(model, "peft_config", None))
    keys = tuple(config) if isinstance(config, dict) else ()
    cached = model.__dict__.get(_LAYERS)
    if cached is not None and cached[0] is config and cached[1] == keys:
        return cached[2]
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    object.__setattr__(model, _LAYERS, (config, keys, layers))
    return layers


def _tuner_layers(pipe) -> list[BaseTunerLayer]:
    return [layer for model in _models(pipe) for layer in _model_tuner_layers(model)]


def _present(layers: list[BaseTunerLayer]) -> set[str]:
    return {name for layer in layers for name in getattr(layer, "scaling", {})}


def _registry(pipe) -> dict[str, _Entry]:
    unet = pipe.unet
    if not hasattr(unet, _REGISTRY):
        # A plain attribute on the torch module: it travels with the shared object.
        object.__setattr__(unet, _REGISTRY, {})
    return getattr(unet, _REGISTRY)


def _record(pipe) -> dict[str, float]:
    record = getattr(pipe, _RECORD, None)
    if record is None:
        record = {}
        setattr(pipe, _RECORD, record)
    return record


def _default_name(path_or_id: str | Path, weight_name: str | None) -> str:
    stem = Path(weight_name).stem if weight_name else Path(str(path_or_id).rstrip("/")).name
    name = re.sub(r"\W+", "_", stem.replace(".safetensors", "")).strip("_").lower()
    return name or "lora"


def kit_adapter_names(pipe) -> set[str]:
    """Names of the adapters in ``pipe``'s shared weights that the kit loaded (for any pipeline)."""
    return set(_registry(pipe)) if getattr(pipe, "unet", None) is not None else set()


def active_adapters(pipe) -> dict[str, float]:
    """The adapters this pipeline uses, with their scales (a copy)."""
    return dict(getattr(pipe, _RECORD, None) or {})


def load_lora(pipe, path_or_id: str | Path, adapter_name: str | None = None, scale: float = 1.0,
              **load_kwargs: Any) -> str:
    """Load a LoRA for this pipeline only, and return its adapter name.

    ``path_or_id`` is anything ``pipe.load_lora_weights`` accepts: a folder with
    ``pytorch_lora_weights.safetensors``, a ``.safetensors`` file (diffusers or
    kohya/A1111 keys), or a Hub id (``weight_name=`` goes through ``load_kwargs``).
    The name defaults to the folder or file name. Loading a name that another
    pipeline sharing these weights already loaded from the same source reuses it.

    >>> load_lora(pipe, "outputs/03/lora", adapter_name="mika", scale=0.8)
    'mika'
    """
    if not hasattr(pipe, "load_lora_weights"):
        raise TypeError(f"{type(pipe).__name__} cannot load LoRA weights (it has no load_lora_weights).")
    name = adapter_name or _default_name(path_or_id, load_kwargs.get("weight_name"))
    source = f"{path_or_id}::{load_kwargs.get('weight_name') or ''}"
    registry = _registry(pipe)
    entry = registry.get(name)
    if entry is not None and entry.source != source:
        raise ValueError(f"Adapter name {name!r} is already used for {entry.source.split('::')[0]!r} by a "
                         "pipeline sharing these weights; pass another adapter_name.")
    if entry is None:
        if name in _present(_tuner_layers(pipe)):
            raise ValueError(f"Adapter name {name!r} was loaded with diffusers' load_lora_weights; "
                             "pass another adapter_name.")
        unfuse(pipe.unet)  # new layers go into unmerged weights, and the snapshot is of those
        before = _snapshot(pipe)
        if str(path_or_id).startswith(("/", ".", "~")) and not Path(str(path_or_id)).expanduser().exists():
            raise FileNotFoundError(f"No LoRA file or folder at {path_or_id}")  # not a Hub id: say so
        if isinstance(path_or_id, Path) or Path(str(path_or_id)).expanduser().exists():
            path = Path(path_or_id).expanduser().resolve()  # absolute: reproduce() finds it from anywhere
            if path.is_file():
                load_kwargs.setdefault("weight_name", path.name)
                path_or_id = str(path.parent)
            else:
                path_or_id = str(path)
        digest = _load_weights(pipe, path_or_id, name, load_kwargs)
        # diffusers activates what it just loaded; put the previous state back so the
        # new adapter only shows through this pipeline (activate_adapters does that).
        _restore(pipe, before)
        entry = registry[name] = _Entry(source, str(path_or_id), load_kwargs.get("weight_name"), digest)
    entry.owners.add(pipe)
    _record(pipe)[name] = float(scale)
    return name


def state_dict_sha256(state_dict: dict[str, Any]) -> str:
    """SHA-256 of a LoRA's tensors (names, dtypes, shapes and values): the same weights give the
    same hash whichever file, folder or Hub repo they came from."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _load_weights(pipe, path_or_id: str, name: str, load_kwargs: dict[str, Any]) -> str:
    """Load a LoRA into ``pipe``'s UNet and text encoder as ``name``; returns its weights' hash.

    diffusers' ``load_lora_weights`` does the same in one call, but logs a warning for every
    LoRA without a text-encoder part, and loads the text-encoder part through transformers'
    PEFT integration, which needs a newer peft than the index has (see ``text_encoder``).
    """
    from .text_encoder import load_text_encoder_lora, split_state_dict

    state, alphas, metadata = pipe.lora_state_dict(path_or_id, return_lora_metadata=True, **load_kwargs)
    if not all("lora" in key for key in state):
        raise ValueError(f"{path_or_id} is not a LoRA checkpoint: its tensor names do not all contain 'lora'.")
    unet_part, text_part = split_state_dict(state)
    unfuse(pipe.unet)  # peft unmerges by itself (with a warning) before it adds a layer's adapter
    if not unet_part and not text_part:  # an old unprefixed layout: diffusers' own loader sorts it out
        pipe.load_lora_weights(path_or_id, adapter_name=name, **load_kwargs)
        return state_dict_sha256(state)
    if unet_part:
        with warnings.catch_warnings():
            # Pipelines of one model share a UNet and keep their adapters apart by name
            # (see the module docstring), so a second adapter on it is the design.
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
            pipe.load_lora_into_unet(unet_part, network_alphas=alphas, unet=pipe.unet, adapter_name=name,
                                     metadata=metadata, _pipeline=pipe)
    if text_part:
        if getattr(pipe, "text_encoder", None) is None:
            raise ValueError(f"{path_or_id} has text-encoder LoRA weights but the pipeline has no text encoder.")
        load_text_encoder_lora(pipe.text_encoder, text_part, alphas, metadata, adapter_name=name)
    return state_dict_sha256(state)


def adapter_sha256(pipe, name: str) -> str | None:
    """The weights' hash of adapter ``name`` in ``pipe``'s shared weights (None if the kit did not load it)."""
    entry = _registry(pipe).get(name)
    return entry.sha256 if entry is not None else None


def set_lora_scale(pipe, name: str, scale: float) -> None:
    """Change the scale of one of this pipeline's adapters (0 switches it off, 1 is full strength)."""
    record = _record(pipe)
    if name not in record:
        raise ValueError(f"Pipeline has no adapter {name!r}. Its adapters: {sorted(record) or 'none'}.")
    record[name] = float(scale)


def unload_lora(pipe, name: str | None = None) -> None:
    """Drop one adapter (or, with ``name=None``, all of them) from this pipeline.

    The weights are deleted from the shared model once no pipeline uses them.
    """
    record = _record(pipe)
    if name is not None and name not in record:
        raise ValueError(f"Pipeline has no adapter {name!r}. Its adapters: {sorted(record) or 'none'}.")
    registry = _registry(pipe)
    for n in [name] if name is not None else list(record):
        del record[n]
        entry = registry.get(n)
        if entry is None:
            continue
        entry.owners.discard(pipe)
        if not entry.owners:
            unfuse(pipe.unet)  # peft would subtract the deleted adapter's delta from merged weights
            del registry[n]
            if n in _present(_tuner_layers(pipe)):
                with warnings.catch_warnings():
                    # peft then activates another adapter on the shared UNet; each pipeline
                    # sets its own active adapters before every call, so that is harmless.
                    warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted",
                                            category=UserWarning)
                    pipe.delete_adapters(n)
            if getattr(pipe, "text_encoder", None) is not None:
                from .text_encoder import forget_text_encoder_lora

                forget_text_encoder_lora(pipe.text_encoder, n)


def _snapshot(pipe) -> list[tuple[BaseTunerLayer, list[str], bool]]:
    return [(layer, list(layer.active_adapters), bool(layer.disable_adapters)) for layer in _tuner_layers(pipe)]


def _restore(pipe, snapshot) -> None:
    for layer, names, disabled in snapshot:
        _set_layer(layer, names, enabled=not disabled)
    # Layers created by the load had no previous state: nothing of them is active.
    # (Left enabled: diffusers' later load_lora_weights keeps a layer's enabled flag.)
    known = {id(layer) for layer, _, _ in snapshot}
    for layer in _tuner_layers(pipe):
        if id(layer) not in known:
            _set_layer(layer, [], enabled=True)


def _set_layer(layer: BaseTunerLayer, names: list[str], enabled: bool) -> None:
    # Only touch what differs: peft's set_adapter/enable_adapters also flip requires_grad.
    if list(layer.active_adapters) != names:
        layer.set_adapter(names)
    if bool(layer.disable_adapters) == enabled:
        layer.enable_adapters(enabled)


def _eval_mode(pipe, layers: list[BaseTunerLayer]) -> None:
    # Layers that load_lora_weights injects start in training mode (torch's default for
    # new modules), so a LoRA trained with dropout would drop activations at inference.
    if any(layer.training for layer in layers):
        for model in _models(pipe):
            if not model.training:
                model.eval()


def activate_adapters(pipe, fuse_adapters: bool = True) -> None:
    """Make this pipeline's adapters (and only those of the kit's) active, at their scales, fused
    into the shared weights (``fusing``; ``set_fusing(pipe, False)`` or ``fuse_adapters=False``
    keeps them unfused).

    ``generate`` calls this before every pipeline call, unfused when the call passes
    ``cross_attention_kwargs={"scale": s}`` (peft applies that scale to unfused layers only).
    Adapters that diffusers loaded outside the kit keep the state diffusers gave them; while one
    is active nothing is fused.
    """
    layers = _tuner_layers(pipe)
    _eval_mode(pipe, layers)
    record = getattr(pipe, _RECORD, None) or {}
    if not layers:
        if record:
            raise RuntimeError(f"The pipeline's adapters {sorted(record)} are no longer in its weights "
                               "(removed with unload_lora_weights?). Call unload_lora(pipe) and load them again.")
        return
    present = _present(layers)
    missing = sorted(set(record) - present)
    if missing:
        raise RuntimeError(f"The pipeline's adapters {missing} are no longer in its weights (removed with "
                           "unload_lora_weights or delete_adapters?). Call unload_lora(pipe, name) and load again.")
    kit = set(_registry(pipe))
    foreign = {id(layer): [] if layer.disable_adapters else [n for n in layer.active_adapters if n not in kit]
               for layer in layers}
    fuse_now = bool(record) and fuse_adapters and fusing_enabled(pipe) and not any(foreign.values())
    key = tuple(record.items())
    if fuse_now and is_fused(pipe.unet, key):
        return  # the same adapters at the same scales are merged already: nothing to switch
    unfuse(pipe.unet)
    for layer in layers:
        own = [n for n in record if n in layer.scaling]
        # Never disable a layer (an empty active list does the same): a layer that
        # diffusers' disable_lora switched off stays off unless this pipeline has its own.
        _set_layer(layer, foreign[id(layer)] + own, enabled=bool(own) or not layer.disable_adapters)
        for n in own:
            layer.set_scale(n, record[n])
    if fuse_now:
        fuse(pipe.unet, layers, record)
