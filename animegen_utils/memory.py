"""A memory guard: refuse a request that would run the machine out of memory.

A 2560×2560 batch on a laptop does not fail politely: the kernel kills the
process, and in Jupyter that is a dead kernel and lost work. ``generate`` calls
``check_memory`` before it runs anything:

>>> from animegen_utils import load_pipeline
>>> from animegen_utils.memory import estimate_peak_bytes, check_memory
>>> pipe = load_pipeline()
>>> estimate_peak_bytes(pipe, batch=1, height=64, width=64) < 2**30
True
>>> check_memory(pipe, batch=3, height=16384, width=16384)   # ~600 GiB: raises MemoryEstimateError

The estimate is deliberately simple and conservative. For one denoising step
(the UNet, with classifier-free guidance doubling the batch) and for the VAE
decode it adds up the activations that are alive at the same time:

- UNet: the skip connections kept from every down block; the top-level transformer's
  feed-forward (GEGLU: its 2 × inner projection, the gate's GELU and their product) on
  top of the residual stream (measured on SD1.5's UNet: 8321 values per latent token
  and image row at 256 and at 512 px, estimated 8460; ``benchmarks/bench_memory.py``);
  and self-attention: ``heads × tokens²`` scores per
  image when the attention implementation materialises them (the classic
  processors, or MPS), ``heads × tokens × head_dim`` when it is a fused
  (flash / memory-efficient) kernel, divided by the slice count under
  ``pipe.enable_attention_slicing()``.
- VAE decode: about a dozen tensors of the decoder's top block at full image
  resolution per image (measured on the built-in model: 11 at 1280² px, on SD1.5's
  VAE: 6 at 256 and 512 px; 14 are counted, for margin), in the dtype the pipeline
  decodes in (SD1.5's pipelines never upcast an fp16 VAE; SDXL's read ``force_upcast``),
  for the whole batch unless ``pipe.enable_vae_slicing()``, and bounded by the
  tile size under ``pipe.enable_vae_tiling()``.

It is compared with what the device has free: ``torch.cuda.mem_get_info`` on
CUDA, MemAvailable of ``/proc/meminfo`` (or the physical memory) on the CPU,
and MPS's recommended maximum on Apple silicon. Skip the check with
``generate(..., check_memory=False)`` or ``ANIMEGEN_MEMORY_CHECK=0``, e.g. on a
machine with swap you are willing to use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

VAE_TENSORS_PER_PIXEL = 14      # decoder top-block tensors alive at once (measured 11; margin for error)
UNET_WORKING_TENSORS = 6        # resnet temporaries at the top level, for a UNet without transformers
RESIDUAL_TENSORS = 3            # a transformer's input, residual and norm, beside its feed-forward
HEADROOM = 0.8                  # leave 20 % for the allocator, Python, the notebook and the estimate's error


class MemoryEstimateError(MemoryError):
    """A request whose estimated peak memory exceeds what the device has free."""


@dataclass(frozen=True)
class MemoryEstimate:
    unet_bytes: int
    vae_bytes: int

    @property
    def peak_bytes(self) -> int:
        return max(self.unet_bytes, self.vae_bytes)


FUSED_PROCESSORS = ("AttnProcessor2_0", "XFormersAttnProcessor", "FusedAttnProcessor2_0")


def _first_parameter(model) -> torch.Tensor:
    # Not ``pipe.device`` or ``model.dtype``: diffusers walks every module for offload hooks
    # there, which cost a 4-step LCM image 15 % of its time.
    return next(model.parameters())


def _device(pipe) -> torch.device:
    return _first_parameter(pipe.unet).device


def _attention_layout(pipe) -> tuple[bool, int]:
    """(fused, slices): whether self-attention runs as one fused kernel that never holds tokens²
    scores, and how many pieces ``enable_attention_slicing`` splits it into (1 if not). One walk."""
    fused, slices = _device(pipe).type != "mps", 1
    for module in pipe.unet.modules():
        processor = getattr(module, "processor", None)
        if processor is None:
            continue
        fused = fused and type(processor).__name__ in FUSED_PROCESSORS
        slice_size = getattr(module, "sliceable_head_dim", None)
        if slices == 1 and slice_size and getattr(processor, "slice_size", None):
            slices = max(1, int(slice_size) // max(1, int(processor.slice_size)))
    return fused, slices


def _feed_forward(unet) -> tuple[int, int] | None:
    """(level, values per token alive in one transformer feed-forward) for the highest-resolution
    level with transformers; None for a UNet without any. GEGLU (SD1.5's) keeps its projection
    (2 × inner), the GELU of the gate (inner) and their product (inner) alive at once."""
    for level, block in enumerate(getattr(unet, "down_blocks", ())):
        for attention in getattr(block, "attentions", None) or ():
            for transformer in getattr(attention, "transformer_blocks", ()):
                ff = getattr(transformer, "ff", None)
                if ff is None or not hasattr(ff, "net"):
                    continue
                proj = getattr(ff.net[0], "proj", None)
                out = ff.net[-1]
                if isinstance(proj, torch.nn.Linear) and isinstance(out, torch.nn.Linear):
                    return level, proj.out_features + 2 * out.in_features
    return None


def _working_values(unet, channels: list[int], tokens: int) -> int:
    """Temporaries beside the skips at the peak, per image row. With transformers the peak is a
    feed-forward at the top level, on top of the residual stream (block input, its residual and
    norm: ``RESIDUAL_TENSORS``); measured on SD1.5's UNet (benchmarks/bench_memory.py)."""
    found = _feed_forward(unet)
    if found is None:
        return UNET_WORKING_TENSORS * channels[0] * tokens
    level, ff_values = found
    return (ff_values + RESIDUAL_TENSORS * channels[level]) * (tokens // 4**level)


def _vae_decode_dtype(pipe) -> torch.dtype:
    """The dtype the pipeline decodes in. ``force_upcast`` in a VAE config is read only by pipelines
    that upcast (SDXL's, the x4 upscaler: those with an ``upcast_vae`` method), and only for fp16;
    SD1.5's txt2img, img2img and ControlNet pipelines decode in the VAE's own dtype."""
    dtype = _first_parameter(pipe.vae).dtype
    if dtype == torch.float16 and getattr(pipe.vae.config, "force_upcast", False) and hasattr(pipe, "upcast_vae"):
        return torch.float32
    return dtype


def estimate_peak_bytes(pipe, batch: int, height: int, width: int, guidance: float = 7.5) -> int:
    """Estimated peak bytes of generating ``batch`` images at ``height``×``width`` with ``pipe``."""
    return estimate_memory(pipe, batch, height, width, guidance).peak_bytes


def estimate_memory(pipe, batch: int, height: int, width: int, guidance: float = 7.5,
                    attention_layout: tuple[bool | None, int] | None = None) -> MemoryEstimate:
    """Peak bytes of the UNet and of the VAE decode. ``attention_layout`` is (fused, slices) of the
    attention processors, with fused None for the larger of both layouts; None reads them from the
    UNet (a walk over its modules)."""
    unet, vae = pipe.unet, pipe.vae
    itemsize = torch.finfo(_first_parameter(unet).dtype).bits // 8
    rows = batch * (2 if guidance > 1 else 1)  # classifier-free guidance runs cond and uncond together
    factor = pipe.vae_scale_factor
    tokens = (height // factor) * (width // factor)

    channels = list(unet.config.block_out_channels)
    layers = unet.config.layers_per_block
    layers = layers[0] if isinstance(layers, (list, tuple)) else layers
    # Skip connections: (layers + 1) tensors per down level, each a quarter the size of the last.
    skips = sum((layers + 1) * c * tokens // 4**i for i, c in enumerate(channels))
    working = _working_values(unet, channels, tokens)

    heads_cfg = unet.config.num_attention_heads or unet.config.attention_head_dim
    fused, slices = attention_layout or _attention_layout(pipe)
    attention = 0
    for i, block in enumerate(unet.config.down_block_types):
        if "CrossAttn" not in block:
            continue
        level_tokens = tokens // 4**i
        heads = heads_cfg[i] if isinstance(heads_cfg, (list, tuple)) else heads_cfg
        head_dim = channels[i] // max(1, heads)
        scores = level_tokens * (max(head_dim, level_tokens) if fused is None else head_dim if fused else level_tokens)
        attention = max(attention, 2 * heads * scores // (1 if fused else slices))
    unet_bytes = rows * (skips + working + attention) * itemsize

    vae_dtype_bytes = torch.finfo(_vae_decode_dtype(pipe)).bits // 8
    top_channels = vae.config.block_out_channels[0]
    pixels = height * width
    if getattr(vae, "use_tiling", False):
        tile = int(getattr(vae, "tile_sample_min_size", 512))
        pixels = min(pixels, tile * tile)
    images_at_once = 1 if getattr(vae, "use_slicing", False) else batch
    vae_bytes = images_at_once * VAE_TENSORS_PER_PIXEL * top_channels * pixels * vae_dtype_bytes
    return MemoryEstimate(unet_bytes=int(unet_bytes), vae_bytes=int(vae_bytes))


def available_bytes(device: torch.device | str) -> int:
    """Free memory on ``device``: CUDA's free memory, MPS's budget, or the CPU's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory())
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # not Linux: fall back to the physical memory
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_memory(pipe, batch: int, height: int, width: int, guidance: float = 7.5) -> MemoryEstimate:
    """Raise ``MemoryEstimateError`` when the request would not fit; returns the estimate otherwise
    (the bound over both attention layouts when that fits already).

    Set ``ANIMEGEN_MEMORY_CHECK=0`` (or pass ``check_memory=False`` to ``generate``) to skip it.
    """
    if os.environ.get("ANIMEGEN_MEMORY_CHECK", "1").lower() in ("0", "false", "no", "off"):
        return estimate_memory(pipe, batch, height, width, guidance)
    free = available_bytes(_device(pipe))
    # First the bound over both attention layouts, unsliced: when even that fits, the processors
    # need not be read, a walk over every module that cost a 4-step LCM image about 4 % of its time.
    bound = estimate_memory(pipe, batch, height, width, guidance, attention_layout=(None, 1))
    if bound.peak_bytes <= HEADROOM * free:
        return bound
    estimate = estimate_memory(pipe, batch, height, width, guidance)
    if estimate.peak_bytes <= HEADROOM * free:
        return estimate
    per_image = estimate_memory(pipe, 1, height, width, guidance).peak_bytes
    part = "the VAE decode" if estimate.vae_bytes >= estimate.unet_bytes else "the UNet"
    remedies = []
    if batch > 1 and per_image <= HEADROOM * free:
        remedies.append(f"a smaller batch (batch_size={max(1, int(HEADROOM * free // per_image))} fits)")
    remedies.append(f"a smaller size (the model's native size is "
                    f"{pipe.unet.config.sample_size * pipe.vae_scale_factor}px)")
    if part == "the VAE decode":
        remedies.append("pipe.enable_vae_tiling() or pipe.enable_vae_slicing()")
    else:
        remedies.append("pipe.enable_attention_slicing()")
    raise MemoryEstimateError(
        f"Generating {batch} image(s) at {width}x{height} needs about {_gib(estimate.peak_bytes)} "
        f"(mostly {part}), but {_device(pipe).type} has {_gib(free)} free. Try {'; or '.join(remedies)}. "
        "If you know better, skip this check with generate(..., check_memory=False) or ANIMEGEN_MEMORY_CHECK=0."
    )
