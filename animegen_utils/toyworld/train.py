"""Train the built-in model from scratch on the toy world, on a CPU.

    python -m animegen_utils.toyworld.train                 # full run (see the model card for its time)
    python -m animegen_utils.toyworld.train --unet-steps 50 --n-images 256 --out /tmp/m   # smoke

Stages: render images -> train the VAE (on crops: it is convolutional, so it runs
on whole pictures afterwards) -> cache latents of whole pictures -> train text
encoder and UNet together (caption dropout for classifier-free guidance, min-SNR
weighting, EMA) -> refine the decoder -> save a diffusers pipeline with
``save_pretrained``. Each stage writes checkpoints to ``--work``; run the same
command again to resume. Wall-clock seconds per stage go to ``training.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..training import atomic_save, warmup_cosine
from .. import prompts
from ..cli import add_config_flags, config_from_args, use_threads_from_env
from ..pipelines import TINY_MODEL_DIR
from ..published import git_revision
from .captions import caption_for
from .dataset import render_arrays, render_seed
from .model import TinyConfig, make_scheduler, make_text_encoder, make_tokenizer, make_unet, make_vae
from .render import CharacterAttributes, eye_boxes
from .text_heads import AttributeHeads


#: ``callback(stage, step)``: called after each training step of the VAE, UNet and decoder stages.
StepCallback = Callable[[str, int], None]


@dataclass
class TrainConfig:
    n_images: int = 24_000
    seed: int = 0
    vae_steps: int = 2_000
    vae_batch: int = 16
    vae_lr: float = 1e-3
    vae_crop: int = 64                 # VAE and decoder train on random crops of this size
    decoder_steps: int = 3_000         # decoder-only refinement, encoder frozen
    decoder_lr: float = 3e-4
    unet_steps: int = 10_000
    batch: int = 32
    lr: float = 5e-4
    warmup: int = 200
    empty_caption_prob: float = 0.10   # classifier-free guidance needs an unconditional model
    junk_caption_prob: float = 0.05    # negative-prompt words alone also mean "unconditional"
    min_snr_gamma: float = 5.0
    eye_loss_weight: float = 6.0       # extra noise-loss weight on the eyes: a few latent pixels, one attribute
    ema_decay: float = 0.999
    text_steps: int = 400              # text-only stage: attribute heads bind colours to nouns
    text_batch: int = 64
    text_lr: float = 1e-3
    text_aux_weight: float = 0.1       # the heads' loss beside the diffusion loss afterwards
    checkpoint_every: int = 250
    log_every: int = 25


# --------------------------------------------------------------------------- utils

def _log(work: Path, record: dict) -> None:
    with open(work / "train_log.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _optimizer_step(opt, params, loss: torch.Tensor, lr: float) -> None:
    """One optimizer step at ``lr``, gradients clipped to norm 1."""
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def _report(bar, work: Path, stage: str, step: int, loss: float, log_every: int) -> None:
    bar.update(1)
    if step % log_every == 0:
        bar.set_postfix(loss=f"{loss:.4f}")
        _log(work, {"stage": stage, "step": step, "loss": loss, "time": time.time()})


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def _to_tensor(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(127.5).sub(1.0)


# --------------------------------------------------------------------------- stages

def render_images(cfg: TrainConfig, work: Path, size: int, progress: bool = True
                  ) -> tuple[torch.Tensor, list[CharacterAttributes]]:
    """Render the training set once (on every core); cached in ``work/data.pt``."""
    path = work / "data.pt"
    if path.exists():
        data = torch.load(path, weights_only=False)
        if data["n"] == cfg.n_images and data["seed"] == cfg.seed and data.get("size", 64) == size:
            return data["images"], [CharacterAttributes.from_dict(a) for a in data["attrs"]]
    arrays, attrs = render_arrays(cfg.n_images, seed=cfg.seed, size=size, progress=progress)
    images = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
    atomic_save({"n": cfg.n_images, "seed": cfg.seed, "size": size, "images": images,
                  "attrs": [a.to_dict() for a in attrs]}, path)
    return images, attrs


def _random_crops(images: torch.Tensor, idx: torch.Tensor, crop: int, gen: torch.Generator) -> torch.Tensor:
    """One random ``crop`` x ``crop`` window per picked image (the whole image when it is no bigger)."""
    size = images.shape[-1]
    if crop >= size:
        return _to_tensor(images[idx])
    offsets = torch.randint(0, size - crop + 1, (len(idx), 2), generator=gen).tolist()
    return _to_tensor(torch.stack([images[i, :, y:y + crop, x:x + crop]
                                   for i, (y, x) in zip(idx.tolist(), offsets)]))


def _generator(seed: int, checkpoint: dict | None) -> torch.Generator:
    """The stage's sampling generator, continued exactly where a checkpoint left it."""
    gen = torch.Generator().manual_seed(seed)
    if checkpoint is not None and "gen" in checkpoint:
        gen.set_state(checkpoint["gen"])
    return gen


def train_vae(cfg: TrainConfig, tiny: TinyConfig, images: torch.Tensor, work: Path, progress: bool = True,
              callback: StepCallback | None = None):
    path = work / "vae.pt"
    torch.manual_seed(cfg.seed)
    vae = make_vae(tiny)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    step, ck = 0, None
    if path.exists():
        ck = torch.load(path, weights_only=False)
        vae.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); step = ck["step"]; _set_rng_state(ck["rng"])
    gen = _generator(cfg.seed + 1000 + step, ck)
    bar = tqdm(total=cfg.vae_steps, initial=step, desc="vae", disable=not progress)
    vae.train()
    while step < cfg.vae_steps:
        idx = torch.randint(0, len(images), (cfg.vae_batch,), generator=gen)
        x = _random_crops(images, idx, cfg.vae_crop, gen)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        rec_loss = F.l1_loss(recon, x) + F.mse_loss(recon, x)
        loss = rec_loss + 1e-6 * posterior.kl().mean()
        _optimizer_step(opt, vae.parameters(), loss, warmup_cosine(step, cfg.vae_steps, cfg.vae_lr, cfg.warmup))
        step += 1
        _report(bar, work, "vae", step, rec_loss.item(), cfg.log_every)
        if step % cfg.checkpoint_every == 0 or step == cfg.vae_steps:
            atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step, "rng": _rng_state(),
                          "gen": gen.get_state()}, path)
        if callback is not None:
            callback("vae", step)
    bar.close()
    vae.eval()
    return vae


def _detail_weight(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel loss weight that is high where the image has small details.

    Eyes are a few pixels wide; a plain L1/MSE lets the decoder blur
    their colour away. Weighting by the difference to a blurred copy puts the
    loss where the identity lives (irises, brows, mouth, outlines).
    """
    blurred = F.avg_pool2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    return 1.0 + 8.0 * (x - blurred).abs().mean(dim=1, keepdim=True)


def finetune_decoder(cfg: TrainConfig, vae, images: torch.Tensor, work: Path, progress: bool = True,
                     callback: StepCallback | None = None):
    """Refine only the decoder (like SD's ft-MSE VAE): the encoder, and so the
    latent space the UNet learns, stays exactly as it was."""
    path = work / "decoder.pt"
    opt = torch.optim.AdamW(vae.decoder.parameters(), lr=cfg.decoder_lr, weight_decay=0.0)
    step, ck = 0, None
    if path.exists():
        ck = torch.load(path, weights_only=False)
        vae.load_state_dict(ck["model"]); opt.load_state_dict(ck["opt"]); step = ck["step"]
    gen = _generator(cfg.seed + 3000 + step, ck)
    bar = tqdm(total=cfg.decoder_steps, initial=step, desc="decoder", disable=not progress)
    vae.encoder.eval(); vae.quant_conv.eval(); vae.decoder.train()
    while step < cfg.decoder_steps:
        idx = torch.randint(0, len(images), (cfg.vae_batch,), generator=gen)
        x = _random_crops(images, idx, cfg.vae_crop, gen)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample(generator=gen)
        recon = vae.decode(z).sample
        w = _detail_weight(x)
        loss = (w * ((recon - x).abs() + (recon - x) ** 2)).mean()
        _optimizer_step(opt, vae.decoder.parameters(), loss,
                        warmup_cosine(step, cfg.decoder_steps, cfg.decoder_lr, cfg.warmup))
        step += 1
        _report(bar, work, "decoder", step, loss.item(), cfg.log_every)
        if step % cfg.checkpoint_every == 0 or step == cfg.decoder_steps:
            atomic_save({"model": vae.state_dict(), "opt": opt.state_dict(), "step": step, "gen": gen.get_state()},
                         path)
        if callback is not None:
            callback("decoder", step)
    bar.close()
    vae.eval()
    return vae


@torch.no_grad()
def cache_latents(vae, images: torch.Tensor, work: Path, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Posterior mean/std of every image, and SD's latent scaling factor (1/std)."""
    path = work / "latents.pt"
    if path.exists():
        d = torch.load(path, weights_only=False)
        return d["mean"], d["std"], d["scaling_factor"]
    means, stds = [], []
    for i in tqdm(range(0, len(images), 64), desc="latents", disable=not progress):
        dist = vae.encode(_to_tensor(images[i:i + 64])).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    mean, std = torch.cat(means), torch.cat(stds)
    noise = torch.randn(std.shape, generator=torch.Generator().manual_seed(0))
    scaling = float(1.0 / (mean + std * noise).std())
    atomic_save({"mean": mean, "std": std, "scaling_factor": scaling}, path)
    return mean, std, scaling


def _caption(attrs: CharacterAttributes, rng: random.Random, cfg: TrainConfig) -> tuple[str, CharacterAttributes | None]:
    """A training caption and the character it describes (None for an empty or junk caption)."""
    r = rng.random()
    if r < cfg.empty_caption_prob:
        return "", None
    if r < cfg.empty_caption_prob + cfg.junk_caption_prob:
        return ", ".join(rng.sample(prompts.DEFAULT_NEGATIVE_TAGS, rng.randint(2, 8))), None
    return caption_for(attrs, rng), attrs


def _caption_batch(tokenizer, attrs: list, idx: torch.Tensor, rng: random.Random, cfg: TrainConfig):
    pairs = [_caption(attrs[i], rng, cfg) for i in idx.tolist()]
    ids = tokenizer([c for c, _ in pairs], padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return ids, [a for _, a in pairs]


def train_text(cfg: TrainConfig, tiny: TinyConfig, tokenizer, attrs: list, work: Path, progress: bool = True,
               callback: StepCallback | None = None):
    """Text-only stage: the encoder learns to bind each colour to its noun (``text_heads``)."""
    path = work / "text.pt"
    torch.manual_seed(cfg.seed + 2)
    text_encoder = make_text_encoder(tiny, tokenizer)
    torch.manual_seed(cfg.seed + 4)
    heads = AttributeHeads(tiny.text_width, tokenizer)
    params = list(text_encoder.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.text_lr, weight_decay=0.01)
    step, ck = 0, None
    if path.exists():
        ck = torch.load(path, weights_only=False)
        text_encoder.load_state_dict(ck["text_encoder"]); heads.load_state_dict(ck["heads"])
        opt.load_state_dict(ck["opt"]); step = ck["step"]
    gen = _generator(cfg.seed + 4000 + step, ck)
    bar = tqdm(total=cfg.text_steps, initial=step, desc="text", disable=not progress)
    text_encoder.train()
    while step < cfg.text_steps:
        rng = random.Random(f"text-captions:{cfg.seed}:{step}")
        idx = torch.randint(0, len(attrs), (cfg.text_batch,), generator=gen)
        ids, described = _caption_batch(tokenizer, attrs, idx, rng, cfg)
        out = text_encoder(ids)
        loss = heads.loss(out.last_hidden_state, out.pooler_output, ids, described)
        _optimizer_step(opt, params, loss, warmup_cosine(step, cfg.text_steps, cfg.text_lr, cfg.warmup))
        step += 1
        _report(bar, work, "text", step, loss.item(), cfg.log_every)
        if step % cfg.checkpoint_every == 0 or step == cfg.text_steps:
            atomic_save({"text_encoder": text_encoder.state_dict(), "heads": heads.state_dict(),
                          "opt": opt.state_dict(), "step": step, "gen": gen.get_state()}, path)
        if callback is not None:
            callback("text", step)
    bar.close()
    return text_encoder, heads


def eye_loss_weights(cfg: TrainConfig, latent_size: int) -> torch.Tensor:
    """``(n_images, 1, L, L)`` per-latent-pixel weights of the noise loss: 1, and
    ``1 + eye_loss_weight`` on latent pixels whose centre lies in an eye's box.

    Eyes cover about 2.5 % of the latents, so a plain mean lets their colour, an
    attribute of its own, weigh less than the background's gradient.
    """
    centres = (torch.arange(latent_size) + 0.5) / latent_size
    weights = torch.ones(cfg.n_images, 1, latent_size, latent_size)
    for i in range(cfg.n_images):
        for x0, y0, x1, y1 in eye_boxes(render_seed(i, cfg.seed)):
            rows = (centres >= y0) & (centres <= y1)
            cols = (centres >= x0) & (centres <= x1)
            weights[i, 0][rows[:, None] & cols[None, :]] = 1.0 + cfg.eye_loss_weight
    return weights


def train_unet(cfg: TrainConfig, tiny: TinyConfig, tokenizer, latents: tuple, attrs: list, work: Path,
               progress: bool = True, callback: StepCallback | None = None, text: tuple | None = None):
    """Train UNet and text encoder together; ``text`` is ``train_text``'s (encoder, heads), if it ran."""
    mean, std, scaling = latents
    path = work / "unet.pt"
    torch.manual_seed(cfg.seed + 1)
    unet = make_unet(tiny)
    if text is None:
        torch.manual_seed(cfg.seed + 2)
        text_encoder, heads = make_text_encoder(tiny, tokenizer), None
    else:
        text_encoder, heads = text
    aux = heads is not None and cfg.text_aux_weight > 0
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params + (list(heads.parameters()) if aux else []), lr=cfg.lr, weight_decay=0.01)
    ema = [p.detach().clone() for p in params]
    step, ck = 0, None
    if path.exists():
        ck = torch.load(path, weights_only=False)
        unet.load_state_dict(ck["unet"]); text_encoder.load_state_dict(ck["text_encoder"])
        if aux:
            heads.load_state_dict(ck["heads"])
        opt.load_state_dict(ck["opt"]); ema = ck["ema"]; step = ck["step"]; _set_rng_state(ck["rng"])
    scheduler = make_scheduler()
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    pixel_weights = eye_loss_weights(cfg, mean.shape[-1]) if cfg.eye_loss_weight else None
    gen = _generator(cfg.seed + 2000 + step, ck)
    bar = tqdm(total=cfg.unet_steps, initial=step, desc="unet", disable=not progress)
    unet.train(); text_encoder.train()
    while step < cfg.unet_steps:
        rng = random.Random(f"captions:{cfg.seed}:{step}")
        idx = torch.randint(0, len(mean), (cfg.batch,), generator=gen)
        z = (mean[idx] + std[idx] * torch.randn(std[idx].shape, generator=gen)) * scaling
        ids, described = _caption_batch(tokenizer, attrs, idx, rng, cfg)
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch,), generator=gen)
        noisy = scheduler.add_noise(z, noise, t)
        text_out = text_encoder(ids)
        pred = unet(noisy, t, text_out.last_hidden_state).sample
        # min-SNR-gamma: stops easy low-noise steps from dominating the loss.
        weight = torch.clamp(snr[t], max=cfg.min_snr_gamma) / snr[t]
        squared = F.mse_loss(pred, noise, reduction="none")
        if pixel_weights is None:
            per_image = squared.mean(dim=(1, 2, 3))
        else:
            w = pixel_weights[idx]
            per_image = (w * squared).mean(dim=(1, 2, 3)) / w.mean(dim=(1, 2, 3))
        loss = (weight * per_image).mean()
        total = loss
        if aux:
            total = loss + cfg.text_aux_weight * heads.loss(text_out.last_hidden_state, text_out.pooler_output,
                                                            ids, described)
        _optimizer_step(opt, params + (list(heads.parameters()) if aux else []), total,
                        warmup_cosine(step, cfg.unet_steps, cfg.lr, cfg.warmup))
        step += 1
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.lerp_(p.detach(), 1 - decay)
        _report(bar, work, "unet", step, loss.item(), cfg.log_every)
        if step % cfg.checkpoint_every == 0 or step == cfg.unet_steps:
            state = {"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), "opt": opt.state_dict(),
                     "ema": ema, "step": step, "rng": _rng_state(), "gen": gen.get_state()}
            if aux:
                state["heads"] = heads.state_dict()
            atomic_save(state, path)
        if callback is not None:
            callback("unet", step)
    bar.close()
    with torch.no_grad():  # ship the EMA weights
        for e, p in zip(ema, params):
            p.copy_(e)
    unet.eval(); text_encoder.eval()
    return unet, text_encoder


# --------------------------------------------------------------------------- outputs

def plot_loss_curves(work: Path, out: Path) -> Path | None:
    log = work / "train_log.jsonl"
    if not log.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    stages = (("vae", "VAE reconstruction (L1+MSE)"), ("text", "text encoder: attribute heads"),
              ("unet", "UNet noise loss (min-SNR)"), ("decoder", "decoder refinement (detail-weighted)"))
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    for ax, (stage, title) in zip(axes, stages):
        pts = {}
        for r in records:
            if r["stage"] == stage:
                pts[r["step"]] = r["loss"]  # a resumed run logs some steps twice: keep the last
        if pts:
            steps = sorted(pts)
            vals = np.array([pts[s] for s in steps])
            ax.plot(steps, vals, alpha=0.3, lw=0.8)
            k = max(1, len(vals) // 30)
            ax.plot(steps[k - 1:], np.convolve(vals, np.ones(k) / k, mode="valid"), lw=1.5)
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
    fig.tight_layout()
    path = out / "loss_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_pipeline(out: Path, vae, text_encoder, tokenizer, unet) -> None:
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    scheduler = DPMSolverMultistepScheduler.from_config(make_scheduler().config, algorithm_type="dpmsolver++")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    # transformers 5 saves only tokenizer.json; keep CLIP's classic vocab/merges files
    # beside it so older transformers and other tools read the same tokenizer.
    source = Path(tokenizer.name_or_path)
    for name in ("vocab.json", "merges.txt"):
        if (source / name).exists():
            shutil.copyfile(source / name, out / "tokenizer" / name)


def train(cfg: TrainConfig, out: Path = TINY_MODEL_DIR, work: Path = Path("runs/tiny_v2"),
          progress: bool = True, callback: StepCallback | None = None) -> Path:
    """Run every stage (resuming from ``work``) and save the pipeline to ``out``.

    ``callback(stage, step)`` is called after every training step (after that step's
    checkpoint, when it has one). A run stopped at any point resumes from the last
    checkpoint and ends with the same weights as a run never stopped.
    """
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    tiny = TinyConfig()
    started = time.time()
    seconds: dict[str, float] = {}

    def timed(stage: str, fn, *args):
        t0 = time.time()
        result = fn(*args)
        seconds[stage] = round(time.time() - t0, 1)
        return result

    tokenizer = make_tokenizer(str(work / "tokenizer"))
    images, attrs = timed("render", render_images, cfg, work, tiny.image_size, progress)
    vae = timed("vae", train_vae, cfg, tiny, images, work, progress, callback)
    latents = timed("latents", cache_latents, vae, images, work, progress)
    vae.register_to_config(scaling_factor=latents[2])
    text = timed("text", train_text, cfg, tiny, tokenizer, attrs, work, progress, callback) if cfg.text_steps else None
    unet, text_encoder = timed("unet", train_unet, cfg, tiny, tokenizer, latents, attrs, work, progress, callback,
                               text)
    vae = timed("decoder", finetune_decoder, cfg, vae, images, work, progress, callback)
    save_pipeline(out, vae, text_encoder, tokenizer, unet)
    plot_loss_curves(work, out)
    meta = {
        "command": "python -m animegen_utils.toyworld.train " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("train.py") else "train()",
        "git_revision": git_revision(),
        "config": dataclasses.asdict(cfg),
        "architecture": dataclasses.asdict(tiny),
        "scaling_factor": latents[2],
        "train_seconds_this_run": round(time.time() - started, 1),
        # a stage resumed from a checkpoint counts only the time of this run
        "stage_seconds_this_run": seconds,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    (out / "training.json").write_text(json.dumps(meta, indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, TrainConfig)
    parser.add_argument("--out", type=Path, default=TINY_MODEL_DIR,
                        help="where the pipeline is saved (the package's folder, loaded as model='tiny')")
    parser.add_argument("--work", type=Path, default=Path("runs/tiny_v2"), help="checkpoints, cached data, logs")
    parser.add_argument("--fresh", action="store_true", help="ignore checkpoints in --work")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    use_threads_from_env()
    cfg = config_from_args(args, TrainConfig)
    if args.fresh:
        for name in ("data.pt", "vae.pt", "latents.pt", "text.pt", "unet.pt", "decoder.pt", "train_log.jsonl"):
            (args.work / name).unlink(missing_ok=True)
    out = train(cfg, args.out, args.work, progress=not args.no_progress)
    print(f"saved the pipeline to {out}")


if __name__ == "__main__":
    main()
