"""Train the built-in IP-Adapter for the built-in model, on a CPU.

    python -m animegen_utils.reference train                        # the shipped run (models/tiny/ip_adapter)
    python -m animegen_utils.reference train --encoder-steps 10 --steps 10 --out /tmp/ipa --work /tmp/ipa-work

The recipe is IP-Adapter's (Ye et al. 2023, arXiv:2308.06721; diffusers' ``load_ip_adapter`` layout), at
toy scale, in two stages:

1. **The image encoder**, a small ``CLIPVisionModelWithProjection`` (64-px input, 8-px patches, 4
   layers of 128): there are no CLIP weights offline, and IP-Adapter freezes a *pretrained* encoder,
   so the kit pretrains one on the toy world first, CLIP-style: two renders of the same character
   (other emotion, outfit and jitter) are a positive pair, every other character in the batch a
   negative (symmetric InfoNCE on ``image_embeds``), plus linear heads reading hair colour, eye
   colour, hairstyle and accessory off the embedding (thrown away afterwards). The embedding is
   thereby made to carry identity and to ignore emotion, outfit, background and pose.
2. **The adapter**, with the UNet, VAE, text encoder *and* image encoder frozen: the plain IP-Adapter's
   image projection (``ImageProjection``: the embedding as 4 extra tokens) and the decoupled
   cross-attention (``to_k_ip``/``to_v_ip`` per cross-attention layer, started from the layer's own
   ``to_k``/``to_v``), trained on the epsilon-prediction MSE through diffusers' own
   ``IPAdapterAttnProcessor2_0``. Every example is a pair: the *reference* and the *target* show the
   same character in another emotion (always), outfit (``other_style_prob``) and jitter, and the
   target's caption has no identity words (emotion and outfit tags only), so identity can only come
   from the reference. Text, image or both are dropped (``drop_*_prob``, 5 % each as in the paper) so
   classifier-free guidance works with and without a reference.

Why freeze the encoder in stage 2 (the paper does): stage 1 already makes its embedding identity-only;
letting the diffusion loss move it would let emotion back in, and costs a backward pass through it.

Every random draw comes from ``(seed, stage, step)``, so a resumed run is the same run. Checkpoints go
to ``--work`` every ``checkpoint_every`` steps; the same command resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..training import atomic_save, warmup_cosine
from ..prompts import ATTRIBUTES
from ..toyworld.captions import caption_for, identity_tags
from ..toyworld.render import CharacterAttributes, render_character
from .state import BUILTIN_IP_ADAPTERS
from .weights import WEIGHT_NAME, new_ip_processors, save_ip_adapter

TINY_DIR = BUILTIN_IP_ADAPTERS["tiny"].parent
IP_ADAPTER_DIR = BUILTIN_IP_ADAPTERS["tiny"]
IDENTITY = ("hair_color", "eye_color", "hairstyle", "accessory")


@dataclass
class IPAdapterTrainConfig:
    # stage 1: the image encoder
    encoder_steps: int = 300           # ~2.5 s/step at 1 thread (64 pairs: rendering is half of it)
    encoder_batch: int = 64            # characters per batch (two renders each)
    encoder_lr: float = 1e-3
    temperature: float = 0.1
    attribute_weight: float = 1.0      # identity heads' cross-entropy beside InfoNCE
    encoder_hidden: int = 128
    encoder_layers: int = 4
    encoder_heads: int = 4
    encoder_image_size: int = 64
    encoder_patch: int = 8
    projection_dim: int = 128
    # stage 2: image projection + decoupled cross-attention, base frozen
    steps: int = 1_700                 # ~1.4 s/step at 1 thread: both stages fit in ~52 minutes
    batch: int = 16
    lr: float = 3e-4
    warmup: int = 50
    weight_decay: float = 1e-2
    num_tokens: int = 4
    high_noise_bias: float = 2.0       # t = (1 - u**bias) * T: more steps where colours and shapes are set
    other_style_prob: float = 0.75     # target in another outfit than the reference (emotion: always other)
    drop_text_prob: float = 0.05
    drop_image_prob: float = 0.05
    drop_both_prob: float = 0.05
    default_scale: float = 1.0         # written to config.json: what load_reference_adapter uses
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10


# --------------------------------------------------------------------------- data

def _identity(rng: random.Random) -> dict[str, str]:
    return {k: rng.choice(ATTRIBUTES[k]) for k in IDENTITY}


def _other(rng: random.Random, field: str, not_this: str) -> str:
    return rng.choice([v for v in ATTRIBUTES[field] if v != not_this])


def make_pair(rng: random.Random, cfg: IPAdapterTrainConfig, size: int = 128) -> tuple[Any, Any, str, dict[str, str]]:
    """One example: (reference picture, target picture, target caption, identity).

    Same character (hair, eyes, hairstyle, accessory); the target in another emotion, usually another
    outfit, drawn with another render seed (background, position, scale, skin tone, colour brightness);
    its caption is the toy world's caption without the identity tags.
    """
    ident = _identity(rng)
    ref_emotion, ref_style = rng.choice(ATTRIBUTES["emotion"]), rng.choice(ATTRIBUTES["style"])
    emotion = _other(rng, "emotion", ref_emotion)
    style = _other(rng, "style", ref_style) if rng.random() < cfg.other_style_prob else ref_style
    ref = CharacterAttributes(ref_emotion, ref_style, **ident)
    target = CharacterAttributes(emotion, style, **ident)
    reference = render_character(ref, rng.getrandbits(31), size=size).image
    picture = render_character(target, rng.getrandbits(31), size=size).image
    drop = set(identity_tags(target))
    caption = ", ".join(t for t in caption_for(target, rng).split(", ") if t not in drop)
    return reference, picture, caption, ident


def new_image_encoder(cfg: IPAdapterTrainConfig) -> Any:
    """The built-in adapter's (randomly initialised) image encoder."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=cfg.encoder_hidden, intermediate_size=4 * cfg.encoder_hidden,
                              num_hidden_layers=cfg.encoder_layers, num_attention_heads=cfg.encoder_heads,
                              image_size=cfg.encoder_image_size, patch_size=cfg.encoder_patch,
                              projection_dim=cfg.projection_dim)
    return CLIPVisionModelWithProjection(config)


def _processor(cfg: IPAdapterTrainConfig) -> Any:
    from transformers import CLIPImageProcessor

    size = cfg.encoder_image_size
    return CLIPImageProcessor(size=size, crop_size=size)  # what load_ip_adapter builds for the encoder


def _pixels(processor: Any, images: list) -> torch.Tensor:
    return processor(images, return_tensors="pt").pixel_values


# --------------------------------------------------------------------------- stage 1

def encoder_loss(encoder: Any, heads: torch.nn.ModuleDict, a: torch.Tensor, b: torch.Tensor,
                 labels: dict[str, torch.Tensor], temperature: float, attribute_weight: float) -> torch.Tensor:
    """Symmetric InfoNCE between two renders of each character, plus identity heads on both."""
    za = encoder(pixel_values=a).image_embeds
    zb = encoder(pixel_values=b).image_embeds
    logits = F.normalize(za, dim=-1) @ F.normalize(zb, dim=-1).T / temperature
    target = torch.arange(len(za))
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    both = torch.cat([za, zb])
    for k, head in heads.items():
        loss = loss + attribute_weight * F.cross_entropy(head(both), labels[k].repeat(2))
    return loss


def _encoder_batch(step: int, cfg: IPAdapterTrainConfig, processor: Any):
    rng = random.Random(f"ip-adapter-encoder:{cfg.seed}:{step}")
    pairs = [make_pair(rng, cfg) for _ in range(cfg.encoder_batch)]
    labels = {k: torch.tensor([ATTRIBUTES[k].index(p[3][k]) for p in pairs]) for k in IDENTITY}
    return _pixels(processor, [p[0] for p in pairs]), _pixels(processor, [p[1] for p in pairs]), labels


# --------------------------------------------------------------------------- stage 2

def _base(model_dir: Path):
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)  # the noise the base was trained with
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
        module.eval()
    return pipe


def attach_trainable(unet: Any, cfg: IPAdapterTrainConfig) -> tuple[Any, dict[str, Any]]:
    """Fresh image projection and decoupled cross-attention, installed in ``unet`` the way
    ``load_ip_adapter`` installs them (so training runs diffusers' own IP-Adapter code)."""
    from diffusers.models.embeddings import ImageProjection, MultiIPAdapterImageProjection

    projection = ImageProjection(cross_attention_dim=unet.config.cross_attention_dim,
                                 image_embed_dim=cfg.projection_dim, num_image_text_embeds=cfg.num_tokens)
    processors = new_ip_processors(unet, cfg.num_tokens)
    unet.set_attn_processor({**unet.attn_processors, **processors})
    unet.encoder_hid_proj = MultiIPAdapterImageProjection([projection])
    unet.config.encoder_hid_dim_type = "ip_image_proj"
    for module in (projection, *processors.values()):
        module.requires_grad_(True)
        module.train()
    return projection, processors


def adapter_parameters(projection: Any, processors: dict[str, Any]) -> list[torch.nn.Parameter]:
    """What stage 2 trains: the image projection and every ``to_k_ip``/``to_v_ip``."""
    return [*projection.parameters(), *(p for proc in processors.values() for p in proc.parameters())]


def adapter_loss(pipe: Any, encoder: Any, processor: Any, step: int, cfg: IPAdapterTrainConfig,
                 size: int) -> torch.Tensor:
    """Batch ``step``'s epsilon-prediction MSE of the frozen UNet with the adapter's image tokens."""
    rng = random.Random(f"ip-adapter:{cfg.seed}:{step}")
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    pairs = [make_pair(rng, cfg, size) for _ in range(cfg.batch)]
    captions, keep_image = [], []
    for _, _, caption, _ in pairs:
        u = rng.random()
        drop_text = u < cfg.drop_text_prob or cfg.drop_text_prob + cfg.drop_image_prob <= u < \
            cfg.drop_text_prob + cfg.drop_image_prob + cfg.drop_both_prob
        drop_image = cfg.drop_text_prob <= u < cfg.drop_text_prob + cfg.drop_image_prob + cfg.drop_both_prob
        captions.append("" if drop_text else caption)
        keep_image.append(0.0 if drop_image else 1.0)
    images = torch.from_numpy(np.stack([np.asarray(p[1].convert("RGB")) for p in pairs])).permute(0, 3, 1, 2)
    images = images.float() / 127.5 - 1.0
    with torch.no_grad():
        latents = pipe.vae.encode(images).latent_dist.sample(generator=gen) * pipe.vae.config.scaling_factor
        ids = pipe.tokenizer(captions, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        text = pipe.text_encoder(ids)[0]
        # a dropped image is the zero embedding: what diffusers' encode_image gives the unconditional half
        embeds = encoder(pixel_values=_pixels(processor, [p[0] for p in pairs])).image_embeds
        embeds = embeds * torch.tensor(keep_image)[:, None]
    noise = torch.randn(latents.shape, generator=gen)
    n_train = pipe.scheduler.config.num_train_timesteps
    u = torch.rand(len(latents), generator=gen)
    t = ((1 - u ** cfg.high_noise_bias) * n_train).long().clamp(0, n_train - 1)
    noisy = pipe.scheduler.add_noise(latents, noise, t)
    pred = pipe.unet(noisy, t, encoder_hidden_states=text, added_cond_kwargs={"image_embeds": [embeds[:, None]]}).sample
    return F.mse_loss(pred.float(), noise.float())


# --------------------------------------------------------------------------- the run

def _loop(name: str, start: int, total: int, step_fn, params, opt, lr: float, warmup: int,
          cfg: IPAdapterTrainConfig, log, save, progress: bool) -> None:
    """Steps ``start .. total`` of one stage: AdamW, warm-up then cosine to a tenth, grad clip 1."""
    step = start
    bar = tqdm(total=total, initial=step, desc=name, disable=not progress)
    while step < total:
        loss = step_fn(step)
        for g in opt.param_groups:
            g["lr"] = warmup_cosine(step, total, lr, warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == total:
            bar.set_postfix(loss=f"{loss.item():.4f}")
            log.write(json.dumps({"stage": name, "step": step, "loss": loss.item(), "time": time.time()}) + "\n")
            log.flush()
        if step % cfg.checkpoint_every == 0 or step == total:
            save(name, step, opt)
    bar.close()


def train(cfg: IPAdapterTrainConfig, out: Path = IP_ADAPTER_DIR, work: Path = Path("runs/ip_adapter-tiny"),
          model_dir: Path = TINY_DIR, progress: bool = True) -> Path:
    """Run both stages (resuming from ``work``) and write the adapter to ``out`` in h94's layout.

    >>> train(IPAdapterTrainConfig(encoder_steps=2, steps=2, batch=2, encoder_batch=4), Path("/tmp/ipa"),
    ...       Path("/tmp/ipa-work"), progress=False)
    PosixPath('/tmp/ipa')
    """
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    torch.manual_seed(cfg.seed)
    pipe = _base(model_dir)
    size = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    processor = _processor(cfg)
    encoder = new_image_encoder(cfg)
    heads = torch.nn.ModuleDict({k: torch.nn.Linear(cfg.projection_dim, len(ATTRIBUTES[k])) for k in IDENTITY})
    projection, processors = attach_trainable(pipe.unet, cfg)
    path = work / "ip_adapter.pt"
    state: dict[str, Any] = torch.load(path, weights_only=False) if path.exists() else {}
    if state:
        encoder.load_state_dict(state["encoder"])
        heads.load_state_dict(state["heads"])
        projection.load_state_dict(state["projection"])
        for n, proc in processors.items():
            proc.load_state_dict(state["processors"][n])
    steps = {"encoder": state.get("encoder_step", 0), "adapter": state.get("adapter_step", 0)}
    started = time.time() - state.get("seconds", 0.0)

    def save(stage: str, step: int, opt: torch.optim.Optimizer) -> None:
        steps[stage] = step
        atomic_save({"encoder": encoder.state_dict(), "heads": heads.state_dict(),
                      "projection": projection.state_dict(),
                      "processors": {n: p.state_dict() for n, p in processors.items()},
                      "encoder_step": steps["encoder"], "adapter_step": steps["adapter"], "stage": stage,
                      "opt": opt.state_dict(), "seconds": time.time() - started}, path)

    with open(work / "train_log.jsonl", "a", encoding="utf-8") as log:
        enc_params = [*encoder.parameters(), *heads.parameters()]
        if steps["encoder"] < cfg.encoder_steps:
            opt = torch.optim.AdamW(enc_params, lr=cfg.encoder_lr, weight_decay=1e-4)
            if state.get("stage") == "encoder":
                opt.load_state_dict(state["opt"])
            encoder.train()

            def encoder_step(step: int) -> torch.Tensor:
                a, b, labels = _encoder_batch(step, cfg, processor)
                return encoder_loss(encoder, heads, a, b, labels, cfg.temperature, cfg.attribute_weight)

            _loop("encoder", steps["encoder"], cfg.encoder_steps, encoder_step, enc_params, opt, cfg.encoder_lr,
                  min(cfg.warmup, cfg.encoder_steps), cfg, log, save, progress)
        encoder.requires_grad_(False).eval()
        params = adapter_parameters(projection, processors)
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if state.get("stage") == "adapter":
            opt.load_state_dict(state["opt"])
        _loop("adapter", steps["adapter"], cfg.steps, lambda step: adapter_loss(pipe, encoder, processor, step, cfg, size),
              params, opt, cfg.lr, min(cfg.warmup, cfg.steps), cfg, log, save, progress)
    return _write(cfg, out, work, model_dir, pipe, projection, processors, encoder, processor, time.time() - started)


def _write(cfg: IPAdapterTrainConfig, out: Path, work: Path, model_dir: Path, pipe: Any, projection: Any,
           processors: dict[str, Any], encoder: Any, processor: Any, seconds: float) -> Path:
    from ..model_hash import model_hash
    from ..published import git_revision

    projection.eval()
    save_ip_adapter(projection, processors, pipe.unet, out, WEIGHT_NAME, image_encoder=encoder)
    processor.save_pretrained(out / "image_encoder")
    (out / "config.json").write_text(json.dumps({"default_scale": cfg.default_scale, "num_tokens": cfg.num_tokens,
                                                 "image_projection": "ImageProjection"}, indent=2))
    meta = {
        "command": ("python -m animegen_utils.reference train " + " ".join(sys.argv[2:]))
        if "reference" in " ".join(sys.argv[:2]) else "train()",
        "git_revision": git_revision(),
        "config": dataclasses.asdict(cfg),
        "base_model": model_dir.name,
        "base_model_hash": model_hash(model_dir),
        "train_seconds": round(seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    (out / "training.json").write_text(json.dumps(meta, indent=2))
    (out / "README.md").write_text(model_card(meta))
    return out


def model_card(meta: dict[str, Any]) -> str:
    """The adapter folder's README: what it is, how it was trained, how to use and measure it."""
    cfg = meta["config"]
    return f"""# Built-in IP-Adapter for the built-in model ({meta['base_model']})

A plain IP-Adapter (image embedding -> {cfg['num_tokens']} extra cross-attention tokens, decoupled
cross-attention on every cross-attention layer) in h94's file layout (`ip_adapter.safetensors`), with its
own small `CLIPVisionModelWithProjection` (`image_encoder/`: {cfg['encoder_layers']} layers of
{cfg['encoder_hidden']}, {cfg['encoder_image_size']}-px input, {cfg['projection_dim']}-d embedding).
It carries a toy-world character's identity (hair colour, eye colour, hairstyle, accessory) from a
reference picture; the prompt sets emotion and outfit.

    from animegen_utils import load_pipeline, generate
    pipe = load_pipeline(ip_adapter=True)
    [g] = generate(pipe, "1girl, angry, school uniform", seed=0, reference="mika.png")

Default scale: {cfg['default_scale']} (`config.json`).

## Training

`{meta['command']}` (git {meta['git_revision']}), {meta['train_seconds'] / 60:.1f} minutes on
{meta['torch_threads']} CPU thread(s), torch {meta['torch']}; base model hash {meta['base_model_hash']}.

1. Image encoder from random init, {cfg['encoder_steps']} steps of {cfg['encoder_batch']} characters:
   InfoNCE between two renders of one character (other emotion, outfit, jitter) plus identity heads.
2. Adapter, {cfg['steps']} steps of {cfg['batch']} pairs, UNet/VAE/text encoder/image encoder frozen:
   reference and target are one character in another emotion and usually another outfit; the target's
   caption has no identity words. Text/image/both dropped {cfg['drop_text_prob']}/{cfg['drop_image_prob']}/
   {cfg['drop_both_prob']}. lr {cfg['lr']}, seed {cfg['seed']}. Full config: `training.json`.

## Measured

`python -m animegen_utils.evaluate.reference --n 200 --output benchmarks/results/ip_adapter.json`:
identity kept (probe-read hair, eyes, hairstyle, accessory equal to the reference's, no identity words in
the prompt) and emotion hit; bars 0.90 each.
"""


def main(argv: list[str] | None = None) -> None:
    from ..cli import add_config_flags, config_from_args, use_threads_from_env

    parser = argparse.ArgumentParser(prog="python -m animegen_utils.reference train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, IPAdapterTrainConfig)
    parser.add_argument("--out", type=Path, default=IP_ADAPTER_DIR, help=f"default: {IP_ADAPTER_DIR}")
    parser.add_argument("--work", type=Path, default=Path("runs/ip_adapter-tiny"), help="checkpoints and log")
    parser.add_argument("--fresh", action="store_true", help="ignore checkpoints in --work")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    use_threads_from_env()
    cfg = config_from_args(args, IPAdapterTrainConfig)
    if args.fresh:
        for name in ("ip_adapter.pt", "train_log.jsonl"):
            (args.work / name).unlink(missing_ok=True)
    out = train(cfg, args.out, args.work, progress=not args.no_progress)
    print(f"saved the IP-Adapter to {out}; measure it with `python -m animegen_utils.evaluate.reference`")
