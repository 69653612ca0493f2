"""Which reference (IP-Adapter) adapter each pipeline uses, on a UNet that pipelines share.

See the package docstring (``animegen_utils.reference``) for the rules.
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from ..adapters.state import state_dict_sha256
from .images import reference_image, reference_sha256
from .weights import IP_PROCESSORS, WEIGHT_NAME

__all__ = ["load_reference_adapter", "unload_reference_adapter", "set_reference_scale", "reference_adapter",
           "ReferenceAdapter", "reference_embeds", "default_reference_adapter", "BUILTIN_IP_ADAPTERS",
           "SD15_IP_ADAPTER", "DEFAULT_SCALE"]

_REGISTRY = "_animegen_ip_adapters"   # on a shared UNet: {adapter name: ReferenceAdapter}
_RECORD = "animegen_reference"        # on a pipeline: {"name": adapter name, "scale": its scale}
_ATTACHED = "_animegen_ip_attached"   # on a shared UNet: the adapter installed for the running call

#: The built-in models' own IP-Adapters (``python -m animegen_utils.reference train``), by model name.
BUILTIN_IP_ADAPTERS: dict[str, Path] = {"tiny": Path(__file__).resolve().parent.parent / "models" / "tiny" / "ip_adapter"}
#: The default for every other (SD1.5) model: h94's plus-face adapter and its ViT-H/14 image encoder.
SD15_IP_ADAPTER = {"source": "h94/IP-Adapter", "subfolder": "models",
                   "weight_name": "ip-adapter-plus-face_sd15.safetensors", "image_encoder_folder": "image_encoder"}
#: Scale of an adapter whose folder does not say (``config.json``'s ``default_scale`` does for the kit's own).
DEFAULT_SCALE = 0.6
_EMBED_CACHE_SIZE = 16  # reference images whose embeddings an adapter keeps


@dataclass(eq=False)
class ReferenceAdapter:
    """One IP-Adapter in a shared UNet: where it came from, its modules, and who uses it.

    ``processors`` (decoupled cross-attention, one per cross-attention layer) and ``projection``
    (``MultiIPAdapterImageProjection``) are installed in the UNet only while a pipeline that uses
    this adapter draws; ``image_encoder``/``feature_extractor`` turn a picture into embeddings.
    """

    name: str
    source: str
    subfolder: str
    weight_name: str
    image_encoder_folder: str
    sha256: str
    processors: dict[str, Any]
    projection: Any
    image_encoder: Any
    feature_extractor: Any
    default_scale: float
    default: bool = False                      # the model's own default adapter (found again by name)
    embeds: OrderedDict = field(default_factory=OrderedDict)
    owners: weakref.WeakSet = field(default_factory=weakref.WeakSet)
    encoder_calls: int = 0                     # how many times embeddings were computed (the cache's misses)

    def record(self) -> dict[str, Any]:
        """What an image records about the adapter (``params["reference_adapter"]``)."""
        return {"name": self.name, "source": self.source, "subfolder": self.subfolder,
                "weight_name": self.weight_name, "image_encoder_folder": self.image_encoder_folder,
                "sha256": self.sha256, "default": self.default}


def _registry(unet: Any) -> dict[str, ReferenceAdapter]:
    if not hasattr(unet, _REGISTRY):
        object.__setattr__(unet, _REGISTRY, {})  # travels with the shared module object
    return getattr(unet, _REGISTRY)


def default_reference_adapter(model: str) -> dict[str, Any]:
    """``load_reference_adapter`` arguments of ``model``'s default adapter: the built-in one for a
    built-in model, h94's plus-face SD1.5 adapter for every other model.

    >>> default_reference_adapter("anything-v5.safetensors")["weight_name"]
    'ip-adapter-plus-face_sd15.safetensors'
    """
    if model in BUILTIN_IP_ADAPTERS:
        folder = BUILTIN_IP_ADAPTERS[model]
        if not (folder / WEIGHT_NAME).is_file():
            from ..errors import ModelNotFoundError

            raise ModelNotFoundError(f"The built-in model {model!r} has no IP-Adapter yet (nothing in {folder}); "
                                     "train it with `python -m animegen_utils.reference train`.")
        return {"source": str(folder), "subfolder": "", "weight_name": WEIGHT_NAME, "image_encoder_folder": "image_encoder"}
    return dict(SD15_IP_ADAPTER)


def _model_of(pipe: Any) -> str:
    info = getattr(pipe, "animegen_info", None)
    return str(info.model) if info is not None else str(getattr(pipe.config, "_name_or_path", ""))


def _resolve(source: str | Path, subfolder: str | None, weight_name: str | None) -> tuple[str, str, str]:
    path = Path(str(source)).expanduser()
    if str(source).startswith(("/", ".", "~")) and not path.exists():
        raise FileNotFoundError(f"No IP-Adapter file or folder at {path}")
    if path.is_file():
        return str(path.resolve().parent), "", path.name
    if path.is_dir():
        where = path / (subfolder or "")
        if weight_name is None:
            found = sorted(p.name for p in where.glob("*.safetensors")) if where.is_dir() else []
            if WEIGHT_NAME in found or len(found) != 1:
                weight_name = WEIGHT_NAME
            else:
                weight_name = found[0]
        if not (where / weight_name).is_file():
            raise FileNotFoundError(f"No IP-Adapter weights {weight_name!r} in {where}; pass weight_name= "
                                    "(h94's files: ip-adapter_sd15.safetensors, ip-adapter-plus_sd15.safetensors, "
                                    "ip-adapter-plus-face_sd15.safetensors, ...)")
        return str(path.resolve()), subfolder or "", weight_name
    if weight_name is None:
        raise ValueError(f"weight_name is needed for the Hub repo {source!r} (e.g. "
                         "'ip-adapter-plus-face_sd15.safetensors' with subfolder='models' for h94/IP-Adapter).")
    return str(source), subfolder or "", weight_name


def _load(pipe: Any, name: str, source: str, subfolder: str, weight_name: str, image_encoder_folder: str,
          load_kwargs: dict[str, Any]) -> ReferenceAdapter:
    """diffusers' ``load_ip_adapter``, then the shared UNet and the pipeline put back as they were:
    the adapter's modules are kept aside, installed only while a pipeline using it draws."""
    from diffusers.models.embeddings import IPAdapterFaceIDImageProjection, IPAdapterFaceIDPlusImageProjection
    from transformers import CLIPImageProcessor

    unet = pipe.unet
    procs_before = dict(unet.attn_processors)
    hid_before, type_before = unet.encoder_hid_proj, unet.config.encoder_hid_dim_type
    parts_before = {k: getattr(pipe, k, None) for k in ("image_encoder", "feature_extractor")}
    # diffusers' loader casts the UNet to its own dtype, which logs a warning about float32 modules
    # (there are none) on every load; quiet for this call only.
    quiet = logging.getLogger("diffusers.models.modeling_utils")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        pipe.register_modules(image_encoder=None)  # else diffusers keeps the pipeline's, not the adapter's
        pipe.load_ip_adapter(source, subfolder=subfolder, weight_name=weight_name,
                             image_encoder_folder=image_encoder_folder, **load_kwargs)
        processors = {n: p for n, p in unet.attn_processors.items() if isinstance(p, IP_PROCESSORS)}
        projection, encoder = unet.encoder_hid_proj, getattr(pipe, "image_encoder", None)
    finally:
        # the projection first: a "plus" Resampler's own attention layers count in attn_processors
        unet.encoder_hid_proj = hid_before
        unet.config.encoder_hid_dim_type = type_before
        unet.set_attn_processor(procs_before)
        pipe.register_modules(**parts_before)
        quiet.setLevel(level)
    layers = list(projection.image_projection_layers)
    if any(isinstance(layer, (IPAdapterFaceIDImageProjection, IPAdapterFaceIDPlusImageProjection)) for layer in layers):
        raise ValueError(f"{weight_name} is a FaceID adapter, which reads insightface embeddings, not pictures; the "
                         "kit's reference= takes the plain, plus, plus-face and full-face IP-Adapters.")
    if encoder is None:
        raise ValueError(f"No image encoder was loaded for {weight_name} (image_encoder_folder={image_encoder_folder!r}).")
    encoder.requires_grad_(False).eval()
    size = int(encoder.config.image_size)
    extractor = CLIPImageProcessor(size=size, crop_size=size)  # what load_ip_adapter makes for the encoder
    tensors = {f"image_proj.{k}": v for k, v in projection.state_dict().items()}
    for proc_name, proc in processors.items():
        tensors.update({f"{proc_name}.{k}": v for k, v in proc.state_dict().items()})
    scale = DEFAULT_SCALE
    config = Path(source) / subfolder / "config.json"
    if config.is_file():
        import json

        scale = float(json.loads(config.read_text()).get("default_scale", DEFAULT_SCALE))
    return ReferenceAdapter(name, source, subfolder, weight_name, image_encoder_folder, state_dict_sha256(tensors),
                            processors, projection, encoder, extractor, scale)


def load_reference_adapter(pipe: Any, source: str | Path | None = None, *, subfolder: str | None = None,
                           weight_name: str | None = None, image_encoder_folder: str = "image_encoder",
                           adapter_name: str | None = None, scale: float | None = None, **load_kwargs: Any) -> str:
    """Give this pipeline (only) an IP-Adapter, for ``generate(..., reference=image)``; returns its name.

    ``source``: a folder (the kit's layout: ``ip_adapter.safetensors`` and ``image_encoder/``), a
    weight file, or a Hub repo with ``subfolder``/``weight_name`` as ``pipe.load_ip_adapter`` takes
    them. ``None``: the model's default (``default_reference_adapter``): the built-in adapter for
    ``model="tiny"``, h94's plus-face for SD1.5 models. ``scale`` defaults to the adapter's own
    (``config.json``'s ``default_scale``, else 0.6). Pipelines of one model share the adapter's
    weights (loaded once) but each uses it only when it is its own.

    >>> load_reference_adapter(pipe)                                 # built-in, for model="tiny"
    'ip_adapter'
    >>> load_reference_adapter(sd15, "h94/IP-Adapter", subfolder="models",
    ...                        weight_name="ip-adapter-plus-face_sd15.safetensors", scale=0.6)
    'ip-adapter-plus-face_sd15'
    """
    if not hasattr(pipe, "load_ip_adapter") or getattr(pipe, "unet", None) is None:
        raise TypeError(f"{type(pipe).__name__} cannot take an IP-Adapter (it has no load_ip_adapter/unet).")
    is_default = source is None
    if is_default:
        spec = default_reference_adapter(_model_of(pipe))
        source, subfolder = spec["source"], spec["subfolder"]
        weight_name, image_encoder_folder = spec["weight_name"], spec["image_encoder_folder"]
    elif str(source) == SD15_IP_ADAPTER["source"]:
        subfolder = SD15_IP_ADAPTER["subfolder"] if subfolder is None else subfolder
        weight_name = weight_name or SD15_IP_ADAPTER["weight_name"]
    source, subfolder, weight_name = _resolve(source, subfolder, weight_name)
    name = adapter_name or Path(weight_name).stem
    key = (source, subfolder, weight_name, image_encoder_folder)
    registry = _registry(pipe.unet)
    entry = registry.get(name)
    if entry is not None and (entry.source, entry.subfolder, entry.weight_name, entry.image_encoder_folder) != key:
        raise ValueError(f"Adapter name {name!r} is already used for {entry.source}/{entry.weight_name} by a pipeline "
                         "sharing these weights; pass another adapter_name.")
    if entry is None:
        if getattr(pipe.unet, _ATTACHED, None) is not None:
            raise RuntimeError("Cannot load an IP-Adapter while a pipeline sharing these weights is drawing.")
        entry = registry[name] = _load(pipe, name, source, subfolder, weight_name, image_encoder_folder, load_kwargs)
        entry.default = is_default
    if scale is not None:
        _check_scale(scale)
    old = getattr(pipe, _RECORD, None)
    if old and old["name"] != name:
        unload_reference_adapter(pipe)
    entry.owners.add(pipe)
    setattr(pipe, _RECORD, {"name": name, "scale": float(entry.default_scale if scale is None else scale)})
    return name


def _check_scale(scale: Any) -> float:
    import numbers

    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not 0.0 <= float(scale) <= 10.0:
        raise ValueError(f"reference_scale must be a number in [0, 10] (0: no effect, 1: the adapter's full "
                         f"strength; 0.5-1 is usual); got {scale!r}")
    return float(scale)


def reference_adapter(pipe: Any) -> ReferenceAdapter | None:
    """This pipeline's IP-Adapter (None if it has none)."""
    record = getattr(pipe, _RECORD, None)
    if not record or getattr(pipe, "unet", None) is None:
        return None
    entry = _registry(pipe.unet).get(record["name"])
    if entry is None:
        raise RuntimeError(f"The pipeline's IP-Adapter {record['name']!r} is no longer in its weights.")
    return entry


def reference_scale(pipe: Any) -> float | None:
    """This pipeline's IP-Adapter scale (None if it has no adapter)."""
    record = getattr(pipe, _RECORD, None)
    return record["scale"] if record else None


def set_reference_scale(pipe: Any, scale: float) -> None:
    """Change this pipeline's IP-Adapter scale (0: no effect; ``generate``'s ``reference_scale`` overrides it per call)."""
    record = getattr(pipe, _RECORD, None)
    if not record:
        raise ValueError("The pipeline has no IP-Adapter; load one with load_reference_adapter(pipe) first.")
    record["scale"] = _check_scale(scale)


def unload_reference_adapter(pipe: Any) -> None:
    """Drop this pipeline's IP-Adapter; its weights are forgotten once no pipeline uses them."""
    record = getattr(pipe, _RECORD, None)
    if not record:
        return
    setattr(pipe, _RECORD, None)
    registry = _registry(pipe.unet)
    entry = registry.get(record["name"])
    if entry is not None:
        entry.owners.discard(pipe)
        if not entry.owners:
            del registry[record["name"]]


class _Encoding:
    """Just what diffusers' ``prepare_ip_adapter_image_embeds`` reads off a pipeline, for one adapter."""

    def __init__(self, entry: ReferenceAdapter):
        from diffusers import StableDiffusionPipeline

        self.image_encoder, self.feature_extractor = entry.image_encoder, entry.feature_extractor
        self.unet = type("unet", (), {"encoder_hid_proj": entry.projection})()
        self._encode = StableDiffusionPipeline.encode_image
        self._prepare = StableDiffusionPipeline.prepare_ip_adapter_image_embeds

    def encode_image(self, *args: Any) -> Any:
        return self._encode(self, *args)

    def embeds(self, image: Any, device: Any) -> list[torch.Tensor]:
        return self._prepare(self, image, None, device, 1, True)


def reference_embeds(pipe: Any, reference: Any) -> list[torch.Tensor]:
    """The IP-Adapter embeddings of ``reference`` for this pipeline's adapter, as
    ``ip_adapter_image_embeds`` takes them with classifier-free guidance (unconditional half first).

    Computed once per picture (by its pixels' SHA-256) and kept with the adapter: a grid of prompts
    and seeds with one reference runs the image encoder once.

    >>> embeds = reference_embeds(pipe, "mika.png")
    >>> pipe(prompt, ip_adapter_image_embeds=embeds)      # diffusers' own call, same embeddings
    """
    entry = reference_adapter(pipe)
    if entry is None:
        raise ValueError("The pipeline has no IP-Adapter: load_reference_adapter(pipe) or "
                         "load_pipeline(..., ip_adapter=True) first.")
    return _embeds(entry, reference_image(reference), reference_sha256(reference), pipe.device)


def _embeds(entry: ReferenceAdapter, image: Any, sha: str, device: Any) -> list[torch.Tensor]:
    key = (sha, str(device))
    hit = entry.embeds.get(key)
    if hit is None:
        with torch.no_grad():
            hit = [e.detach() for e in _Encoding(entry).embeds(image, device)]
        entry.encoder_calls += 1
        entry.embeds[key] = hit
        while len(entry.embeds) > _EMBED_CACHE_SIZE:
            entry.embeds.popitem(last=False)
    entry.embeds.move_to_end(key)
    return hit


@contextmanager
def installed(pipe: Any, entry: ReferenceAdapter, scale: float) -> Iterator[None]:
    """``entry``'s modules in the shared UNet at ``scale`` for the duration of the block, and the
    UNet's own attention processors back afterwards (also after an error): other pipelines sharing
    the UNet draw exactly what they drew before."""
    unet = pipe.unet
    if getattr(unet, _ATTACHED, None) is not None:
        raise RuntimeError("An IP-Adapter is already installed in these shared weights (a call is drawing); "
                           "pipelines of one model draw one at a time.")
    before = dict(unet.attn_processors)
    hid_before, type_before = unet.encoder_hid_proj, unet.config.encoder_hid_dim_type
    object.__setattr__(unet, _ATTACHED, entry.name)
    try:
        for proc in entry.processors.values():
            proc.scale = [float(scale)] * len(proc.scale)
        unet.set_attn_processor({**before, **entry.processors})
        unet.encoder_hid_proj = entry.projection
        unet.config.encoder_hid_dim_type = "ip_image_proj"
        yield
    finally:
        unet.encoder_hid_proj = hid_before  # first: a Resampler's attention layers count in attn_processors
        unet.config.encoder_hid_dim_type = type_before
        unet.set_attn_processor(before)
        object.__setattr__(unet, _ATTACHED, None)
