"""Hires fix: A1111's two-pass generation (draw small, upscale, refine with img2img).

>>> from animegen_utils import load_pipeline, generate
>>> pipe = load_pipeline()
>>> [g] = generate(pipe, "1girl, smile", seed=0, hires_scale=2.0, hires_strength=0.5)
>>> g.image.size            # twice the pipeline's native size
(128, 128)

Following A1111 (``modules/processing.py``, ``StableDiffusionProcessingTxt2Img``):

- The first pass draws at ``width x height``. ``Size`` in the infotext stays that size.
- The upscaler: ``"latent"`` resizes the latents bilinearly (A1111's "Latent"); ``"lanczos"``
  decodes, resizes the picture with Lanczos and encodes it again; a model file
  (``.pth``/``.safetensors`` that spandrel can load, e.g. 4x-UltraSharp) upscales the
  decoded picture, which is then resized to the target with Lanczos, as A1111 does
  for model upscalers. A callable ``PIL.Image -> PIL.Image`` works too.
- The second pass is img2img at ``hires_strength`` ("Denoising strength"), with the
  same prompt embeddings, continuing each image's own CPU generator (A1111 also draws
  the second pass's noise from the same seeded generator). It runs ``hires_steps``
  denoising steps (default: the first pass's ``steps``), like A1111, which stretches
  the schedule to ``steps / strength`` and starts part-way; diffusers' img2img runs
  ``int(num_inference_steps * strength)`` steps, so the kit asks it for
  ``int(hires_steps / strength)``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

import torch
import torch.nn.functional as F
from PIL import Image

UPSCALERS = ("latent", "lanczos")
A1111_UPSCALER_NAMES = {"latent": "Latent", "lanczos": "Lanczos"}
MODEL_SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt")

Upscaler = Union[str, Path, Callable[[Image.Image], Image.Image]]


@dataclass(frozen=True)
class HiresConfig:
    """A checked hires-fix request: the target size and the second pass's settings."""

    scale: float
    strength: float
    steps: int
    upscaler: Upscaler
    width: int
    height: int

    @property
    def upscaler_name(self) -> str:
        """What the PNG records: ``latent``, ``lanczos``, a model file's path, or the callable's name."""
        if callable(self.upscaler):
            return getattr(self.upscaler, "__name__", type(self.upscaler).__name__)
        return str(self.upscaler)


def a1111_upscaler_name(name: str) -> str:
    """A1111's label for an upscaler: ``Latent``, ``Lanczos``, or a model file's stem (``4x-UltraSharp``)."""
    return A1111_UPSCALER_NAMES.get(name, Path(name).stem if Path(name).suffix in MODEL_SUFFIXES else name)


def check_hires(pipe, scale: Any, strength: Any, steps: Any, upscaler: Any, width: int, height: int,
                first_steps: int) -> HiresConfig:
    """Validate the hires arguments of ``generate`` and compute the second pass's size.

    Raises ``ValueError`` naming the argument and what is accepted.
    """
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not 1.0 <= scale <= 8.0:
        raise ValueError(f"hires_scale must be a number in [1, 8] (2.0 doubles the size); got {scale!r}")
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0.0 < strength <= 1.0:
        raise ValueError(f"hires_strength must be in (0, 1] (A1111's Denoising strength; 0.5 is typical); "
                         f"got {strength!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0):
        raise ValueError(f"hires_steps must be an integer >= 1, or None/0 for the first pass's steps; got {steps!r}")
    if isinstance(upscaler, (str, Path)) and str(upscaler) not in UPSCALERS:
        path = Path(upscaler).expanduser()
        if path.suffix.lower() not in MODEL_SUFFIXES:
            raise ValueError(f"hires_upscaler must be one of {', '.join(UPSCALERS)}, an upscaler model file "
                             f"({', '.join(MODEL_SUFFIXES)}) or a callable; got {upscaler!r}")
        if not path.is_file():
            raise FileNotFoundError(f"hires_upscaler model file not found: {path}")
        upscaler = str(path)
    elif not isinstance(upscaler, (str, Path)) and not callable(upscaler):
        raise ValueError(f"hires_upscaler must be one of {', '.join(UPSCALERS)}, a model file or a callable; "
                         f"got {type(upscaler).__name__}")
    multiple = max(8, pipe.vae_scale_factor)
    target_w, target_h = int(width * scale), int(height * scale)
    if target_w % multiple or target_h % multiple:
        raise ValueError(f"hires_scale {scale} turns {width}x{height} into {target_w}x{target_h}, which is not a "
                         f"multiple of {multiple}; pick a scale that gives one (2.0 always does)")
    return HiresConfig(scale=float(scale), strength=float(strength), steps=int(steps or first_steps),
                       upscaler=upscaler, width=target_w, height=target_h)


def _decode(pipe, latents: torch.Tensor) -> list[Image.Image]:
    images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(images, output_type="pil")


def load_upscaler_model(path: str | Path) -> Callable[[Image.Image], Image.Image]:
    """An upscaler model file (ESRGAN, 4x-UltraSharp, SwinIR, ...) loaded with spandrel, as a PIL -> PIL function."""
    try:
        import spandrel
    except ImportError as err:
        raise ImportError(f"hires_upscaler={str(path)!r} needs spandrel to load upscaler models: "
                          "pip install spandrel (or use 'latent' / 'lanczos')") from err
    model = spandrel.ModelLoader().load_from_file(str(path)).eval()

    @torch.no_grad()
    def upscale(image: Image.Image) -> Image.Image:
        import numpy as np

        x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        y = model(x.to(model.device, model.dtype)).clamp(0, 1)[0].permute(1, 2, 0).float().cpu().numpy()
        return Image.fromarray((y * 255.0).round().astype("uint8"))

    upscale.__name__ = str(path)
    return upscale


@torch.no_grad()
def hires_pass(pipe, latents: torch.Tensor, text: dict[str, Any], generators: list[torch.Generator],
               guidance: float, config: HiresConfig, progress: bool = True,
               pipeline_kwargs: dict[str, Any] | None = None) -> list[Image.Image]:
    """Upscale first-pass ``latents`` and refine them with img2img; returns the final pictures.

    ``text`` is what the first pass got (prompt strings or embeddings), reused as is;
    so are ``pipeline_kwargs`` (``cross_attention_kwargs``, callbacks, ...).
    """
    from .pipelines import switch_task  # here: pipelines is the layer below generation, not below us

    img2img = switch_task(pipe, "img2img")
    img2img.set_progress_bar_config(disable=not progress)
    if config.upscaler == "latent":
        factor = pipe.vae_scale_factor
        image: Any = F.interpolate(latents, size=(config.height // factor, config.width // factor),
                                   mode="bilinear", antialias=False)
    else:
        upscale = config.upscaler if callable(config.upscaler) else (
            None if config.upscaler == "lanczos" else load_upscaler_model(config.upscaler))
        image = []
        for picture in _decode(pipe, latents):
            if upscale is not None:
                picture = upscale(picture)
            if picture.size != (config.width, config.height):
                picture = picture.resize((config.width, config.height), Image.LANCZOS)
            image.append(picture)
    # diffusers' img2img runs int(n * strength) of n steps; A1111 runs exactly hires_steps.
    n = config.steps
    while int(n * config.strength) < config.steps:
        n += 1
    out = img2img(**text, image=image, strength=config.strength, num_inference_steps=n, guidance_scale=guidance,
                  generator=generators, **(pipeline_kwargs or {}))
    return out.images
