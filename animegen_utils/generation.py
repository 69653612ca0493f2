"""Seeded generation and reproducible PNGs.

>>> from animegen_utils import load_pipeline, build_prompt, generate
>>> pipe = load_pipeline()
>>> [g] = generate(pipe, build_prompt("happy", "casual"), seed=42)
>>> g.save("happy.png")            # parameters go into the PNG, A1111-style
>>> again = reproduce("happy.png")  # same pixels, from the file alone

Each image gets its own CPU ``torch.Generator`` seeded with its seed, so an
image depends only on its seed, not on batch position or device.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from .pipelines import SCHEDULERS, load_pipeline, pipeline_info
from .prompts import Prompt, check_token_budget

PARAMS_KEY = "animegen"  # exact JSON; "parameters" holds the A1111 text for other tools


@dataclass
class Generation:
    """One generated image and everything needed to make it again."""

    image: Image.Image
    params: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        return save_image(self.image, path, self.params)

    def _repr_png_(self) -> bytes:  # shows inline in Jupyter
        import io

        buf = io.BytesIO()
        self.image.save(buf, format="PNG")
        return buf.getvalue()


def _as_prompts(prompt: Prompt | str | Sequence[Prompt | str]) -> list[Prompt | str]:
    if isinstance(prompt, (Prompt, str)):
        return [prompt]
    prompts = list(prompt)
    if not prompts:
        raise ValueError("prompt is an empty list")
    for p in prompts:
        if not isinstance(p, (Prompt, str)):
            raise TypeError(f"prompt items must be Prompt or str, got {type(p).__name__}")
    return prompts


def _seeds_for(seed: int | Sequence[int], n: int) -> list[int]:
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + i for i in range(n)]
    seeds = [int(s) for s in seed]
    if len(seeds) == n:
        return seeds
    if n == 1:
        return seeds
    raise ValueError(f"Got {n} prompts but {len(seeds)} seeds; pass one seed (consecutive seeds follow) or one per prompt.")


def generate(
    pipe,
    prompt: Prompt | str | Sequence[Prompt | str],
    seed: int | Sequence[int] = 0,
    steps: int = 20,
    guidance: float = 7.5,
    height: int | None = None,
    width: int | None = None,
    negative: str | None = None,
    batch_size: int = 8,
    progress: bool = True,
    **pipeline_kwargs: Any,
) -> list[Generation]:
    """Generate one image per (prompt, seed).

    ``prompt`` is a ``Prompt``, a string, or a list of them. ``seed`` is one int
    (consecutive seeds for a list of prompts) or one per prompt; one prompt with
    a list of seeds gives a seed sweep. Extra keyword arguments go to the diffusers
    pipeline (``image=`` and ``strength=`` for img2img, ``image=`` for ControlNet...).
    ``negative`` overrides the prompt's own negative prompt.
    """
    prompts = _as_prompts(prompt)
    seeds = _seeds_for(seed, len(prompts))
    if len(prompts) == 1 and len(seeds) > 1:
        prompts = prompts * len(seeds)
    info = pipeline_info(pipe)
    if height is None or width is None:
        default = pipe.unet.config.sample_size * pipe.vae_scale_factor
        height, width = height or default, width or default

    positives, negatives = [], []
    for p in prompts:
        pos = p.positive if isinstance(p, Prompt) else p
        neg = negative if negative is not None else (p.negative if isinstance(p, Prompt) else "")
        budget = check_token_budget(p if isinstance(p, Prompt) else pos, pipe.tokenizer)
        if not budget.fits:
            warnings.warn(f"Prompt is {budget.n_tokens} tokens (limit {budget.max_tokens}); "
                          f"the text encoder will ignore: {', '.join(budget.cut_tags)}", stacklevel=2)
        positives.append(pos)
        negatives.append(neg)

    pipe.set_progress_bar_config(disable=not progress)
    clip_skip = pipeline_kwargs.pop("clip_skip", info.clip_skip)
    results: list[Generation] = []
    for start in range(0, len(positives), batch_size):
        sl = slice(start, start + batch_size)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds[sl]]
        if clip_skip:
            text = {"prompt_embeds": encode_text(pipe, positives[sl], clip_skip),
                    "negative_prompt_embeds": encode_text(pipe, negatives[sl], clip_skip)}
        else:
            text = {"prompt": positives[sl], "negative_prompt": negatives[sl] if any(negatives[sl]) else None}
        out = pipe(
            **text,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=height,
            width=width,
            generator=generators,
            **pipeline_kwargs,
        )
        for image, pos, neg, s in zip(out.images, positives[sl], negatives[sl], seeds[sl]):
            params = {
                "model": info.model, "task": info.task, "prompt": pos, "negative": neg,
                "seed": s, "steps": steps, "guidance": guidance, "scheduler": info.scheduler,
                "width": width, "height": height, "clip_skip": clip_skip,
            }
            for k in ("strength", "controlnet_conditioning_scale"):
                if k in pipeline_kwargs:
                    params[k] = pipeline_kwargs[k]
            results.append(Generation(image=image, params=params))
    return results


@torch.no_grad()
def encode_text(pipe, texts: list[str], clip_skip: int) -> torch.Tensor:
    """CLIP embeddings from ``clip_skip`` layers before the last, then the final layer norm.

    Done here rather than through the pipeline's own ``clip_skip`` argument, which
    reaches for ``text_encoder.text_model``: transformers 5.6 flattened that away.
    """
    ids = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids.to(pipe.text_encoder.device)
    hidden = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-(clip_skip + 1)]
    encoder = getattr(pipe.text_encoder, "text_model", pipe.text_encoder)
    return encoder.final_layer_norm(hidden).to(pipe.unet.dtype)


def a1111_parameters(params: dict[str, Any]) -> str:
    """The ``parameters`` text that A1111 and its readers (civitai, ComfyUI) understand."""
    sampler = SCHEDULERS.get(params.get("scheduler", ""), (None, None, params.get("scheduler")))[2]
    fields = [f"Steps: {params['steps']}", f"Sampler: {sampler}", f"CFG scale: {params['guidance']}",
              f"Seed: {params['seed']}", f"Size: {params['width']}x{params['height']}",
              f"Model: {params['model']}"]
    if params.get("clip_skip"):
        # A1111 counts the last layer as 1: its "Clip skip: 2" is diffusers' clip_skip=1.
        fields.append(f"Clip skip: {params['clip_skip'] + 1}")
    if "strength" in params:
        fields.append(f"Denoising strength: {params['strength']}")
    return f"{params['prompt']}\nNegative prompt: {params.get('negative', '')}\n" + ", ".join(fields)


def save_image(image: Image.Image, path: str | Path, params: dict[str, Any]) -> Path:
    """Save a PNG with its generation parameters in text chunks."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"Parameters can only be embedded in PNG files, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", a1111_parameters(params))
    info.add_text(PARAMS_KEY, json.dumps(params, sort_keys=True))
    image.save(path, pnginfo=info)
    return path


def read_parameters(path: str | Path) -> dict[str, Any]:
    """The generation parameters stored in a PNG written by ``save_image``."""
    with Image.open(path) as im:
        text = im.info.get(PARAMS_KEY)
    if text is None:
        raise ValueError(f"{path} has no animegen parameters (was it saved with Generation.save?)")
    return json.loads(text)


def reproduce(path: str | Path, pipe=None, progress: bool = False) -> Generation:
    """Generate an image again from the parameters stored in its PNG.

    Loads the pipeline named in the file unless ``pipe`` is given.
    """
    p = read_parameters(path)
    if p.get("task", "txt2img") != "txt2img":
        raise ValueError(f"reproduce() handles txt2img images; this one is {p['task']} (its input image is not in the file)")
    pipe = pipe or load_pipeline(p["model"], scheduler=p["scheduler"], clip_skip=p.get("clip_skip"))
    [g] = generate(pipe, p["prompt"], seed=p["seed"], steps=p["steps"], guidance=p["guidance"],
                   height=p["height"], width=p["width"], negative=p["negative"], progress=progress)
    return g
