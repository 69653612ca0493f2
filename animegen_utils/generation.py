"""Seeded generation and reproducible PNGs.

>>> from animegen_utils import load_pipeline, build_prompt, generate
>>> pipe = load_pipeline()
>>> [g] = generate(pipe, build_prompt("happy", "casual"), seed=42)
>>> g.save("happy.png")            # parameters go into the PNG, A1111-style
>>> again = reproduce("happy.png")  # draws it again from the file alone
>>> again.max_pixel_diff             # 0: the same pixels

Each image gets its own CPU ``torch.Generator`` seeded with its seed, so the
starting noise depends only on the seed, not on batch position or device.

What "reproducible" means here: on the same machine, with the same library
versions and thread count, ``reproduce`` gives the same pixels. The PNG records
the size of the batch the image was drawn in and its position, and ``reproduce``
draws it again in a batch of that size at that position, because float rounding
in the CPU kernels can depend on the batch size (batch 8 against batch 1 moved
one pixel by 1/255 on an AVX-512 CPU). ``reproduce`` compares the result with the
saved image and reports ``max_pixel_diff`` instead of assuming it is zero. Across
machines (another CPU, GPU, or library version) expect differences of a few
levels; the image is the same picture, not the same bytes.
"""

from __future__ import annotations

import inspect
import json
import numbers
import secrets
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from .adapters import activate_adapters, check_recorded_adapters, generation_record, load_recorded_adapters, unload_lora
from .errors import ModelNotFoundError
from .fast.cache import deepcache_config, unet_cache
from .memory import check_memory as _check_memory
from .pipelines import SCHEDULERS, load_pipeline, pipeline_info, recommended_settings
from .prompts import Prompt, check_token_budget
from .reference import (attach_reference, check_recorded_reference, load_recorded_reference, prepare_reference,
                        recorded_reference_kwargs, unload_reference_adapter)
from .hires import a1111_upscaler_name, check_hires, hires_pass
from .lora_tags import apply_prompt_loras, release_prompt_loras
from .infotext import generate_kwargs, read_foreign_parameters
from .weighting import (encode_prompt_pair, has_weight_syntax, needs_chunked_encoding, parse_weights, prompt_warnings,
                        split_lora_tags)

PARAMS_KEY = "animegen"  # exact JSON; "parameters" holds the A1111 text for other tools
RANDOM_SEED = -1         # A1111 and ComfyUI's "pick one for me"
MAX_SEED = 2**32         # seeds are unsigned 32-bit, as in A1111


@dataclass
class Generation:
    """One generated image and everything needed to make it again."""

    image: Image.Image
    params: dict[str, Any] = field(default_factory=dict)
    # Set by ``reproduce``: the largest per-channel difference (0-255) from the saved image,
    # and whether the model's weights differ from those that drew it (None: not recorded).
    max_pixel_diff: int | None = None
    model_changed: bool | None = None

    def save(self, path: str | Path) -> Path:
        return save_image(self.image, path, self.params)

    def _repr_png_(self) -> bytes:  # shows inline in Jupyter
        import io

        buf = io.BytesIO()
        self.image.save(buf, format="PNG")
        return buf.getvalue()


def _as_prompts(prompt: Prompt | str | Sequence[Prompt | str]) -> list[Prompt | str]:
    accepted = "a Prompt, a string, or a non-empty list of them"
    if isinstance(prompt, (Prompt, str)):
        return [prompt]
    if not isinstance(prompt, (list, tuple)):
        raise TypeError(f"prompt must be {accepted}; got {type(prompt).__name__}")
    if not prompt:
        raise ValueError(f"prompt is an empty list; pass {accepted}")
    for p in prompt:
        if not isinstance(p, (Prompt, str)):
            raise TypeError(f"prompt items must be Prompt or str, got {type(p).__name__} ({p!r})")
    return list(prompt)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int in [0, 2**32) or -1 for a random one; got {type(seed).__name__} {seed!r}")
    seed = int(seed)
    if seed == RANDOM_SEED:
        return secrets.randbelow(MAX_SEED)
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"seed must be in [0, 2**32) or -1 for a random one; got {seed}")
    return seed


def _seeds_for(seed: int | Sequence[int], n: int) -> list[int]:
    """One seed per prompt; ``-1`` (alone or in a list) draws a random seed, recorded in the result."""
    if isinstance(seed, (list, tuple)):
        if not seed:
            raise ValueError("seed is an empty list; pass one int or one per prompt")
        seeds = [_check_seed(s) for s in seed]
        if len(seeds) != n and n != 1:
            raise ValueError(f"Got {n} prompts but {len(seeds)} seeds; pass one seed (consecutive seeds follow) "
                             "or one per prompt.")
        return seeds
    first = _check_seed(seed)
    if first + n > MAX_SEED:
        raise ValueError(f"seed {first} with {n} prompts runs past 2**32; pass a smaller seed")
    return [first + i for i in range(n)]


def _check_number(name: str, value: Any, minimum: float, accepted: str, integer: bool = False) -> None:
    kinds = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
        raise ValueError(f"{name} must be {accepted}; got {value!r}")


def _check_size(pipe, height: int, width: int) -> None:
    # diffusers' SD pipelines need multiples of 8 whatever the VAE; latents need the VAE factor.
    multiple = max(8, pipe.vae_scale_factor)
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < multiple or value % multiple:
            raise ValueError(f"{name} must be a positive multiple of {multiple} for this pipeline "
                             f"(VAE factor {pipe.vae_scale_factor}); got {value!r}")


def _takes_size(pipe) -> bool:
    """Whether the pipeline's call takes height/width (txt2img, ControlNet) or draws at its
    source image's size (diffusers' img2img, which swallows height/width in ``**kwargs``)."""
    return "height" in inspect.signature(pipe.__call__).parameters


def _source_size(pipe, image: Any, height: int | None, width: int | None) -> tuple[int, int]:
    """The (height, width) an img2img pipeline draws ``image`` at: its size rounded down to the
    VAE factor, as diffusers' image processor does. A different height/width is refused."""
    first = image[0] if isinstance(image, (list, tuple)) and image else image
    src_h, src_w = pipe.image_processor.get_default_height_width(first)
    if height not in (None, src_h) or width not in (None, src_w):
        raise ValueError(f"{type(pipe).__name__} draws at the source image's size ({src_w}x{src_h}); got "
                         f"height={height}, width={width}. Resize the image, or leave height and width out.")
    return src_h, src_w


def _check_pipeline_kwargs(kwargs: dict[str, Any]) -> None:
    """The img2img / ControlNet arguments that diffusers would otherwise accept silently or fail on late."""
    if "strength" in kwargs and not (isinstance(kwargs["strength"], numbers.Real)
                                     and 0.0 <= kwargs["strength"] <= 1.0):
        raise ValueError(f"strength must be in [0, 1] (0 keeps the input image, 1 redraws it); got {kwargs['strength']!r}")
    scale = kwargs.get("controlnet_conditioning_scale")
    if scale is not None and not isinstance(scale, (list, tuple)):
        _check_number("controlnet_conditioning_scale", scale, 0.0, "a number >= 0")
    start, end = kwargs.get("control_guidance_start", 0.0), kwargs.get("control_guidance_end", 1.0)
    if all(isinstance(v, numbers.Real) for v in (start, end)) and not 0.0 <= start < end <= 1.0:
        raise ValueError(f"control_guidance_start and control_guidance_end must satisfy 0 <= start < end <= 1; "
                         f"got {start!r}, {end!r}")


def generate(
    pipe,
    prompt: Prompt | str | Sequence[Prompt | str],
    seed: int | Sequence[int] = 0,
    steps: int | None = None,
    guidance: float | None = None,
    height: int | None = None,
    width: int | None = None,
    negative: str | None = None,
    batch_size: int = 8,
    progress: bool = True,
    check_memory: bool = True,
    weighting: bool = True,
    lora_dirs: str | Path | Sequence[str | Path] | None = None,
    hires_scale: float | None = None,
    hires_strength: float = 0.5,
    hires_steps: int | None = None,
    hires_upscaler: Any = "latent",
    deepcache: Any = None,
    reference: Any = None,
    reference_scale: float | None = None,
    **pipeline_kwargs: Any,
) -> list[Generation]:
    """Generate one image per (prompt, seed).

    ``prompt`` is a ``Prompt``, a string, or a list of them. ``seed`` is one int
    (consecutive seeds for a list of prompts) or one per prompt; one prompt with
    a list of seeds gives a seed sweep. Extra keyword arguments go to the diffusers
    pipeline (``image=`` and ``strength=`` for img2img, ``image=`` for ControlNet...).
    ``negative`` overrides the prompt's own negative prompt.

    Every argument is checked before anything runs, and errors say what was given
    and what is accepted: ``steps >= 1``; ``guidance >= 0`` (values <= 1 switch
    classifier-free guidance off, as in diffusers; negative values would push
    *away* from the prompt, which no sampler here is meant for); ``height`` and
    ``width`` multiples of 8; ``seed`` an int in ``[0, 2**32)`` or a list of them,
    or ``-1`` for a random seed as in A1111 (the seed drawn is recorded in
    ``params`` and the PNG, so ``reproduce`` still works).

    ``steps`` and ``guidance`` left as ``None`` take the sampler's recommended
    values (``pipelines.recommended_settings``: 20 and 7.5 for the kit's default
    DPM++). ``check_memory=False`` skips the memory guard (``animegen_utils.memory``),
    which otherwise refuses requests whose estimated peak exceeds the free memory.

    A1111 prompt syntax (``animegen_utils.weighting``): ``(word)``, ``(word:1.3)``, ``[word]``,
    escapes and ``BREAK``, with A1111's maths, in positive and negative prompts; prompts
    over 75 tokens are encoded in 75-token chunks, nothing is cut. ``weighting=False``
    reads the text literally and cuts it at 77 tokens with a warning (the kit before
    A1111 syntax). ``<lora:name:w>`` tags load that LoRA from ``lora_dirs`` for this call
    (``animegen_utils.lora_tags``). ``hires_scale=2.0`` turns on A1111's hires fix
    (``animegen_utils.hires``): draw at ``width x height``, upscale with
    ``hires_upscaler`` (``"latent"``, ``"lanczos"``, an upscaler model file or a callable),
    refine with img2img at ``hires_strength`` for ``hires_steps`` (default ``steps``).
    The PNG records the prompt as written.

    ``deepcache=3`` (or ``{"interval": 3, "branch": 0}``) switches DeepCache on for this call's
    (first-pass) pipeline calls only: the full UNet every 3rd step, its deep features reused between
    (``animegen_utils.fast.cache``; off by default, recorded in ``params["deepcache"]``).

    ``reference=`` a picture (PIL image or path, any size or mode) draws with the pipeline's IP-Adapter
    (``load_pipeline(..., ip_adapter=True)`` or ``reference.load_reference_adapter``) at
    ``reference_scale`` (default: the pipeline's, see ``reference.set_reference_scale``); its embeddings
    are computed once per picture and reused, and the PNG records its SHA-256 and the scale
    (``params["reference_sha256"]``, ``params["reference_scale"]``; ``animegen_utils.reference``).

    >>> [g] = generate(pipe, "1girl, (angry:1.4), happy", seed=0, hires_scale=2.0)
    """
    prompts = _as_prompts(prompt)
    seeds = _seeds_for(seed, len(prompts))
    if len(prompts) == 1 and len(seeds) > 1:
        prompts = prompts * len(seeds)
    info = pipeline_info(pipe)
    recorded = generation_record(pipe)  # adapters and LCM-LoRA, before any <lora:> tag of the prompt is applied
    default_steps, default_guidance = recommended_settings(pipe)
    steps = default_steps if steps is None else steps
    guidance = default_guidance if guidance is None else guidance
    _check_number("steps", steps, 1, "an integer >= 1", integer=True)
    _check_number("guidance", guidance, 0.0, "a number >= 0 (<= 1 turns classifier-free guidance off)")
    _check_number("batch_size", batch_size, 1, "an integer >= 1", integer=True)
    if negative is not None and not isinstance(negative, str):
        raise TypeError(f"negative must be a string or None; got {type(negative).__name__}")
    _check_pipeline_kwargs(pipeline_kwargs)
    cache = deepcache_config(pipe, deepcache)
    ref = prepare_reference(pipe, reference, reference_scale, guidance, pipeline_kwargs)
    takes_size = _takes_size(pipe)
    if not takes_size and pipeline_kwargs.get("image") is not None:
        height, width = _source_size(pipe, pipeline_kwargs["image"], height, width)
    if height is None or width is None:
        default = pipe.unet.config.sample_size * pipe.vae_scale_factor
        height = default if height is None else height
        width = default if width is None else width
    _check_size(pipe, height, width)
    if check_memory:
        _check_memory(pipe, min(batch_size, len(prompts)), height, width, guidance)

    hires = None
    if hires_scale is not None:
        if info.task != "txt2img":
            raise ValueError(f"hires_scale is for txt2img pipelines; this one is {info.task}")
        hires = check_hires(pipe, hires_scale, hires_strength, hires_steps, hires_upscaler, width, height, steps)
        if check_memory:
            _check_memory(pipe, min(batch_size, len(prompts)), hires.height, hires.width, guidance)

    positives, negatives, encoded, lora_sets = [], [], [], set()
    notes: dict[str, None] = {}
    for p in prompts:
        pos = p.positive if isinstance(p, Prompt) else p
        neg = negative if negative is not None else (p.negative if isinstance(p, Prompt) else "")
        text, loras = split_lora_tags(pos)  # A1111 removes <lora:...> tags before encoding
        lora_sets.add(tuple(loras))
        if weighting:
            parse_weights(text), parse_weights(neg)  # a bad weight fails here, before anything runs
            notes.update(dict.fromkeys(f"{which} prompt: {note}" for which, t in (("Positive", text), ("Negative", neg))
                                       for note in prompt_warnings(t)))
        else:
            budget = check_token_budget(p if isinstance(p, Prompt) else pos, pipe.tokenizer)
            if not budget.fits:
                warnings.warn(f"Prompt is {budget.n_tokens} tokens (limit {budget.max_tokens}); "
                              f"the text encoder will ignore: {', '.join(budget.cut_tags)}", stacklevel=2)
        positives.append(pos)
        negatives.append(neg)
        encoded.append(text)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    if len(lora_sets) > 1:
        raise ValueError("The prompts of one generate call ask for different <lora:...> tags; call generate once "
                         f"per set of LoRAs (got {sorted(lora_sets)})")
    release_prompt_loras(pipe)  # whatever an interrupted call left behind
    apply_prompt_loras(pipe, list(next(iter(lora_sets))), lora_dirs)

    pipe.set_progress_bar_config(disable=not progress)
    clip_skip = pipeline_kwargs.pop("clip_skip", info.clip_skip)
    results: list[Generation] = []
    # This pipeline's LoRAs only (components are shared), merged into the weights unless the
    # call scales unfused LoRA layers itself.
    activate_adapters(pipe, fuse_adapters="scale" not in (pipeline_kwargs.get("cross_attention_kwargs") or {}))
    for start in range(0, len(positives), batch_size):
        sl = slice(start, start + batch_size)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds[sl]]
        if weighting and (clip_skip or any(needs_chunked_encoding(pipe.tokenizer, t)
                                           for t in (*encoded[sl], *negatives[sl]))):
            pos_embeds, neg_embeds = encode_prompt_pair(pipe, encoded[sl], negatives[sl], clip_skip)
            text = {"prompt_embeds": pos_embeds, "negative_prompt_embeds": neg_embeds}
        elif clip_skip:
            text = {"prompt_embeds": encode_text(pipe, encoded[sl], clip_skip),
                    "negative_prompt_embeds": encode_text(pipe, negatives[sl], clip_skip)}
        else:
            text = {"prompt": encoded[sl], "negative_prompt": negatives[sl] if any(negatives[sl]) else None}
        with unet_cache(pipe, cache), attach_reference(pipe, ref) as reference_kwargs:
            out = pipe(
                **text,
                **reference_kwargs,
                num_inference_steps=steps,
                guidance_scale=guidance,
                **({"height": height, "width": width} if takes_size else {}),
                generator=generators,
                **({"output_type": "latent"} if hires else {}),
                **pipeline_kwargs,
            )
        if hires is None:
            images = out.images
        else:
            with attach_reference(pipe, ref) as reference_kwargs:
                images = hires_pass(pipe, out.images, text, generators, guidance, hires, progress,
                                    {**pipeline_kwargs, **reference_kwargs})
        flagged = _safety_flags(out, len(seeds[sl]))
        batch = list(zip(images, positives[sl], negatives[sl], seeds[sl]))
        for index, (image, pos, neg, s) in enumerate(batch):
            params = {
                "model": info.model, "model_hash": info.model_hash, "task": info.task, "prompt": pos, "negative": neg,
                "seed": s, "steps": steps, "guidance": guidance, "scheduler": info.scheduler,
                "width": width, "height": height, "clip_skip": clip_skip,
                # Rounding can depend on the batch shape: reproduce() redraws in the same one.
                "batch_size": len(batch), "batch_index": index, "weighting": weighting,
            }
            if hires is not None:  # width/height stay the first pass's size, as A1111's Size does
                params.update(hires_scale=hires.scale, hires_strength=hires.strength, hires_steps=hires.steps,
                              hires_upscaler=hires.upscaler_name)
            for k in ("strength", "controlnet_conditioning_scale", "control_guidance_start",
                      "control_guidance_end", "guess_mode"):
                if k in pipeline_kwargs:
                    params[k] = pipeline_kwargs[k]
            for k in ("image", "control_image"):  # input pictures are not in the PNG: their hashes are
                if isinstance(pipeline_kwargs.get(k), Image.Image):
                    params[f"{k}_sha256"] = image_sha256(pipeline_kwargs[k])
            params.update(recorded)
            if ref is not None:
                params.update(ref.record())
            if cache is not None:
                params["deepcache"] = cache.record()
            if flagged[index]:
                params["nsfw_blacked_out"] = True
            results.append(Generation(image=image, params=params))
    release_prompt_loras(pipe)
    return results


def _safety_flags(out: Any, n: int) -> list[bool]:
    """Which images of a pipeline output the safety checker replaced with black (warned about)."""
    flags = [bool(f) for f in (getattr(out, "nsfw_content_detected", None) or [False] * n)]
    if any(flags):
        warnings.warn(f"The safety checker blacked out {sum(flags)} of {n} image(s); their params say "
                      "nsfw_blacked_out. load_pipeline(..., safety_checker=False) turns the checker off.",
                      stacklevel=3)
    return flags


def image_sha256(image: Image.Image) -> str:
    """SHA-256 of the pixels (mode, size, raw bytes): the same picture gives the same hash
    whatever file it was stored in. Recorded for img2img/ControlNet input images."""
    import hashlib

    h = hashlib.sha256(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    h.update(image.tobytes())
    return h.hexdigest()


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
              f"Seed: {params['seed']}", f"Size: {params['width']}x{params['height']}"]
    if params.get("model_hash"):
        fields.append(f"Model hash: {params['model_hash']}")
    fields.append(f"Model: {params['model']}")
    if params.get("clip_skip"):
        # A1111 counts the last layer as 1: its "Clip skip: 2" is diffusers' clip_skip=1.
        fields.append(f"Clip skip: {params['clip_skip'] + 1}")
    if "strength" in params:
        fields.append(f"Denoising strength: {params['strength']}")
    if params.get("nsfw_blacked_out"):
        fields.append("NSFW: blacked out by the safety checker")
    if "hires_scale" in params:  # A1111's hires fields, in its order
        fields += [f"Denoising strength: {params['hires_strength']}", f"Hires upscale: {params['hires_scale']}",
                   f"Hires steps: {params['hires_steps']}",
                   f"Hires upscaler: {a1111_upscaler_name(params['hires_upscaler'])}"]
    if params.get("reference_sha256"):  # the kit's own fields: the picture itself is not in the file
        fields += [f"Reference hash: {params['reference_sha256']}", f"Reference scale: {params['reference_scale']}"]
        if params.get("reference_adapter"):
            fields.append(f"Reference adapter: {params['reference_adapter']['name']}")
    if params.get("weighting") is False and has_weight_syntax(params["prompt"] + params.get("negative", "")):
        fields.append("Emphasis: None")  # A1111's name for brackets read as text
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
    """The generation parameters stored in a PNG: the kit's own, or another tool's.

    A PNG written by ``save_image`` gives back exactly the parameters it was made
    with. One written by A1111, Forge or ComfyUI is read by ``animegen_utils.infotext``
    into the same names, with ``source`` (``"a1111"``, ``"forge"``, ``"comfyui"``),
    ``loras``, ``info`` and ``unknown`` (the fields the kit does not use) added.

    >>> read_parameters("00012-1234.png")["unknown"]   # an A1111 PNG
    {'ENSD': '31337'}
    """
    with Image.open(path) as im:
        text = im.info.get(PARAMS_KEY)
        info = dict(im.info)
    if text is None:
        return read_foreign_parameters(info, str(path))
    return json.loads(text)


def _recorded_pipeline(p: dict[str, Any], pipe=None):
    """The pipeline a kit PNG was drawn with: model, sampler, clip skip, the LCM-LoRA and every
    LoRA it records (``lcm_lora``, ``adapters``), loaded unless the caller gives ``pipe``; a
    LoRA that cannot be loaded is named in the error, and any difference from the record
    (a hash, a scale, a missing or extra adapter) in a warning."""

    lcm, adapters = p.get("lcm_lora") or {}, p.get("adapters") or []
    if pipe is None:
        try:
            pipe = load_pipeline(p["model"], scheduler=p["scheduler"], clip_skip=p.get("clip_skip"),
                                 lcm_lora=None if lcm.get("default", True) else lcm["source"])
        except ModelNotFoundError as err:
            if lcm and lcm["source"] in str(err):
                raise ModelNotFoundError(f"The image was drawn with the LCM-LoRA {lcm['source']!r} "
                                         f"(sha256 {str(lcm.get('sha256'))[:12]}), which cannot be loaded here: {err}") from err
            raise
        load_recorded_adapters(pipe, adapters)
        if p.get("reference_adapter"):
            load_recorded_reference(pipe, p["reference_adapter"])
    check_recorded_adapters(pipe, adapters, lcm)
    if p.get("reference_adapter"):
        problems = check_recorded_reference(pipe, p["reference_adapter"])
        if problems:
            warnings.warn("The pipeline is not the one the image was drawn with: " + "; ".join(problems) + ".",
                          stacklevel=3)
    return pipe


def reproduce(path: str | Path, pipe=None, progress: bool = False, lora_dirs=None,
              scheduler: str | None = None, reference: Any = None) -> Generation:
    """Generate an image again from the parameters stored in its PNG.

    Loads the pipeline named in the file unless ``pipe`` is given, with the LCM-LoRA and
    every LoRA the file records (``params["lcm_lora"]``, ``params["adapters"]``: source,
    scale, SHA-256); one that cannot be loaded is named in a ``ModelNotFoundError``, and
    a given ``pipe`` whose adapters differ from the record gets a warning. The image is
    redrawn in a batch of the size it was first drawn in, at the same position
    (the other places hold copies of it), so the kernels round the same way. The
    returned ``Generation`` carries ``max_pixel_diff``, the largest difference
    from the saved pixels (0 to 255): 0 on the machine that made the file. The file
    records a hash of the model's weights beside its name: when the loaded model's
    differs (``tiny`` retrained, a checkpoint replaced), a warning says the model has
    changed and ``model_changed`` is True.

    A PNG from A1111, Forge or ComfyUI is drawn as the kit's picture of the same
    request: pass ``pipe=`` (their ``Model`` names a file on their machine),
    ``lora_dirs=`` for ``<lora:...>`` tags, ``scheduler=`` where the kit has no match
    for their sampler. Fields the kit does not use are named in a warning, and
    ``max_pixel_diff`` is None (their noise is generated differently).

    A picture drawn with ``reference=`` records only the reference's SHA-256: pass the same
    picture as ``reference=`` (checked against the hash); its IP-Adapter is loaded like a LoRA.

    >>> again = reproduce("happy.png")
    >>> again.max_pixel_diff <= 1
    True
    """
    p = read_parameters(path)
    reference_kwargs = recorded_reference_kwargs(p, reference, str(path))
    if "source" in p:
        if reference_kwargs:
            raise ValueError(f"{path} records a reference picture but no kit parameters; reproduce() redraws "
                             "references from the kit's own PNGs only.")
        return _reproduce_foreign(p, path, pipe, progress, lora_dirs, scheduler)
    if p.get("task", "txt2img") != "txt2img":
        raise ValueError(f"reproduce() handles txt2img images; this one is {p['task']} (its input image is not in the file)")
    loaded = pipe is None
    pipe = _recorded_pipeline(p, pipe)
    size, index = int(p.get("batch_size", 1)), int(p.get("batch_index", 0))
    gens = generate(pipe, [p["prompt"]] * size, seed=[p["seed"]] * size, steps=p["steps"], guidance=p["guidance"],
                    height=p["height"], width=p["width"], negative=p["negative"], batch_size=size,
                    progress=progress, lora_dirs=lora_dirs, **_recorded_options(p), **reference_kwargs)
    if loaded and p.get("adapters"):
        unload_lora(pipe)  # the pipeline was made for this call: its LoRAs leave the shared weights
    if loaded and p.get("reference_adapter"):
        unload_reference_adapter(pipe)
    again = gens[index]
    again.model_changed = _model_changed(p, again.params.get("model_hash"), path)
    with Image.open(path) as saved:
        saved_pixels = np.asarray(saved.convert("RGB"), dtype=np.int16)
    again.params.update(batch_size=size, batch_index=index)
    again.max_pixel_diff = int(np.abs(np.asarray(again.image, dtype=np.int16) - saved_pixels).max())
    return again


def _model_changed(p: dict[str, Any], now: str | None, path: str | Path) -> bool | None:
    """Whether the weights differ from the ones that drew ``path`` (warned); None when either hash is unknown."""
    then = p.get("model_hash")
    if not then or not now:
        return None
    if then != now:
        warnings.warn(f"{path} was drawn by {p['model']!r} with weights {then}; the loaded {p['model']!r} has weights "
                      f"{now}. The model has changed since, so the picture differs by more than rounding.",
                      stacklevel=3)
    return then != now


def _recorded_options(p: dict[str, Any]) -> dict[str, Any]:
    """The A1111-syntax and hires settings a kit PNG records; PNGs from before weighting read prompts literally."""
    options: dict[str, Any] = {"weighting": p.get("weighting", False), "deepcache": p.get("deepcache")}
    if "hires_scale" in p:
        options.update(hires_scale=p["hires_scale"], hires_strength=p["hires_strength"],
                       hires_steps=p["hires_steps"], hires_upscaler=p["hires_upscaler"])
    return options


def _reproduce_foreign(p: dict[str, Any], path: str | Path, pipe, progress: bool, lora_dirs,
                       scheduler: str | None) -> Generation:
    kwargs = generate_kwargs(p, scheduler=scheduler)
    if pipe is None:
        raise ValueError(f"{path} was written by {p['source']} for model {p.get('model')!r}, which names a file on "
                         "that machine; pass pipe=load_pipeline('path/to/that/checkpoint') (or model 'tiny')")
    if p["unknown"]:
        warnings.warn(f"{path}: the kit does not use these {p['source']} fields: "
                      + ", ".join(f"{k}: {v}" for k, v in p["unknown"].items()), stacklevel=3)
    from .pipelines import switch_task

    # A pipeline of its own with the file's sampler: the caller's pipeline keeps its scheduler.
    pipe = switch_task(pipe, pipeline_info(pipe).task, scheduler=kwargs.pop("scheduler"))
    prompt = kwargs.pop("prompt")
    [again] = generate(pipe, prompt, progress=progress, lora_dirs=lora_dirs, **kwargs)
    # Their Model hash is a single checkpoint file's: comparable only with a pipeline loaded from one.
    if Path(str(again.params["model"])).is_file():
        again.model_changed = _model_changed(p, again.params.get("model_hash"), path)
    return again

