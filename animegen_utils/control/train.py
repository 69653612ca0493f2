"""Train the built-in canny ControlNet for the built-in model, on a CPU.

    python -m animegen_utils.control train                        # the shipped run
    python -m animegen_utils.control train --steps 20 --out /tmp/cn --work /tmp/cn-work   # smoke

The recipe is diffusers' ``examples/controlnet/train_controlnet.py``, at toy scale:

* the ControlNet starts as a copy of the UNet's encoder (``ControlNetModel.from_unet``)
  with zero convolutions, so at step 0 it changes nothing;
* the UNet, VAE and text encoder are frozen; only the ControlNet learns;
* the loss is the epsilon-prediction MSE of the UNet *with* the ControlNet's residuals
  added; unlike the script, timesteps lean towards high noise and the loss is weighted
  towards it (see ``controlnet_loss``: that is where a sketch's layout is decided);
* conditioning images are in [0, 1] (white edges on black), captions are dropped
  to "" with ``empty_caption_prob`` so classifier-free guidance and guess mode work.

The toy part: training pairs are drawn fresh every step (a render is ~1 ms), and the
control image is the canny map of the *augmented* render. Augmentations teach it to
follow what a person draws rather than only the renderer's outlines:

* a random affine (rotation, anisotropic scale, shear, shift) applied to the picture
  *before* taking edges: other proportions and poses, edges still exact;
* jittered canny thresholds, and sometimes a blur first (only the main contours, as in a sketch);
* on the edges only: a smooth random warp (wobbly hand strokes), thicker strokes,
  and dropped stretches of line (a sketch leaves things out).

Every random draw comes from ``(seed, step)``, so a resumed run is the same run.
Checkpoints go to ``--work`` every ``checkpoint_every`` steps; the same command resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..cli import add_config_flags, config_from_args, use_threads_from_env
from ..pipelines import TINY_MODEL_DIR, controlnet_from_unet
from ..toyworld.captions import caption_for
from ..toyworld.dataset import sample_attributes
from ..toyworld.render import render_character
from ..toyworld.train import git_revision
from .preprocess import auto_canny_thresholds

CONTROLNET_DIR = TINY_MODEL_DIR / "controlnet"


@dataclass
class ControlTrainConfig:
    steps: int = 8_000
    batch: int = 16
    lr: float = 2e-4
    warmup: int = 50
    high_noise_bias: float = 3.0       # t = (1 - u**bias) * T: more steps where the layout is decided
    max_x0_weight: float = 5.0         # loss weight 1 + min(1/SNR, this): high-noise errors count
    seed: int = 0
    empty_caption_prob: float = 0.15   # diffusers' --proportion_empty_prompts
    affine_prob: float = 0.8
    max_rotation: float = 15.0         # degrees
    min_scale: float = 0.75
    max_scale: float = 1.3
    max_shift: float = 0.18            # fraction of the image side
    blur_prob: float = 0.3             # blur before canny: main contours only
    wobble_prob: float = 0.5
    wobble_pixels: float = 1.2
    thick_prob: float = 0.2
    dropout_prob: float = 0.3
    checkpoint_every: int = 500
    log_every: int = 10


# --------------------------------------------------------------------------- augmentation

def random_affine(image: np.ndarray, rng: np.random.Generator, cfg: ControlTrainConfig) -> np.ndarray:
    """The picture under a random rotation, anisotropic scale, shear and shift (border replicated)."""
    h, w = image.shape[:2]
    angle = math.radians(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
    sx, sy = rng.uniform(cfg.min_scale, cfg.max_scale, size=2)
    shear = rng.uniform(-0.15, 0.15)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    a = rot @ np.array([[sx, shear], [0.0, sy]])
    centre = np.array([w / 2, h / 2])
    shift = rng.uniform(-cfg.max_shift, cfg.max_shift, size=2) * np.array([w, h])
    m = np.hstack([a, (centre + shift - a @ centre)[:, None]])
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def sketchify(edges: np.ndarray, rng: np.random.Generator, cfg: ControlTrainConfig) -> np.ndarray:
    """Make exact edges (uint8 0/255) look more hand drawn: wobble, thicken, drop stretches."""
    h, w = edges.shape
    if rng.random() < cfg.wobble_prob:
        amp = cfg.wobble_pixels * rng.uniform(0.5, 1.0)
        dx, dy = (_smooth_field(rng, h, w, 6) * amp for _ in range(2))
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        edges = cv2.remap(edges, gx + dx, gy + dy, interpolation=cv2.INTER_LINEAR, borderValue=0)
        edges = np.where(edges >= 96, 255, 0).astype(np.uint8)
    if rng.random() < cfg.dropout_prob:
        keep = _smooth_field(rng, h, w, 8) > rng.uniform(-1.4, -0.7)  # drops ~10-25 % in blobs
        edges = edges * keep.astype(np.uint8)
    if rng.random() < cfg.thick_prob:
        edges = cv2.dilate(edges, np.ones((2, 2), np.uint8))
    return edges


def make_pair(index: int, rng: np.random.Generator, cfg: ControlTrainConfig, size: int = 64
              ) -> tuple[np.ndarray, np.ndarray, str]:
    """One training example: (RGB uint8 picture, uint8 control edges, caption)."""
    attrs, srng = sample_attributes(index, cfg.seed)
    render_seed = srng.getrandbits(31)
    caption = caption_for(attrs, srng)
    image = np.asarray(render_character(attrs, render_seed, size=size).image)
    if rng.random() < cfg.affine_prob:
        image = random_affine(image, rng, cfg)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    source = cv2.GaussianBlur(grey, (3, 3), rng.uniform(0.6, 1.2)) if rng.random() < cfg.blur_prob else grey
    low, high = auto_canny_thresholds(source)
    jitter = rng.uniform(0.7, 1.3)
    low, high = int(min(254, low * jitter)), int(min(255, max(low * jitter + 1, high * jitter)))
    edges = cv2.Canny(source, low, high, L2gradient=True)
    edges = sketchify(edges, rng, cfg)
    if rng.random() < cfg.empty_caption_prob:
        caption = ""
    return image, edges, caption


def make_batch(step: int, cfg: ControlTrainConfig) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Batch ``step``: pictures in [-1, 1], controls in [0, 1] (3 channels), captions."""
    rng = np.random.default_rng([cfg.seed, step])
    pairs = [make_pair(step * cfg.batch + i, rng, cfg) for i in range(cfg.batch)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    controls = torch.from_numpy(np.stack([p[1] for p in pairs])).float().div(255.0)[:, None].repeat(1, 3, 1, 1)
    return images, controls, [p[2] for p in pairs]


# --------------------------------------------------------------------------- training

def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _lr_at(step: int, cfg: ControlTrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def controlnet_loss(pipe, controlnet, images: torch.Tensor, controls: torch.Tensor, captions: list[str],
                    generator: torch.Generator, high_noise_bias: float = 3.0, max_x0_weight: float = 5.0
                    ) -> torch.Tensor:
    """diffusers' ControlNet objective: noise-prediction MSE of the frozen UNet plus ControlNet residuals.

    Two changes from the uniform recipe, both because a sketch decides the *layout*, which the
    sampler fixes in its first, noisiest steps: timesteps are drawn ``(1 - u**high_noise_bias) * T``
    (cubic sampling, as diffusers' T2I-Adapter SDXL script does; ``1.0`` is uniform), and each
    example's loss is weighted ``1 + min(1/SNR, max_x0_weight)`` (``0`` gives the plain MSE). At
    high noise the epsilon error is tiny while the implied picture error is ~1/SNR times larger;
    with uniform sampling and plain MSE the first run (800 steps) helped at t=300-600 and not at all
    at t=900, and its outputs did not follow the sketch's layout.
    """
    with torch.no_grad():
        latents = pipe.vae.encode(images).latent_dist.sample(generator=generator) * pipe.vae.config.scaling_factor
        ids = pipe.tokenizer(captions, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        text = pipe.text_encoder(ids)[0]
    noise = torch.randn(latents.shape, generator=generator)
    n_train = pipe.scheduler.config.num_train_timesteps
    u = torch.rand(len(latents), generator=generator)
    t = ((1 - u ** high_noise_bias) * n_train).long().clamp(0, n_train - 1)
    noisy = pipe.scheduler.add_noise(latents, noise, t)
    down, mid = controlnet(noisy, t, encoder_hidden_states=text, controlnet_cond=controls, return_dict=False)
    pred = pipe.unet(noisy, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                     mid_block_additional_residual=mid).sample
    alphas = pipe.scheduler.alphas_cumprod[t]
    weight = 1.0 + torch.clamp((1 - alphas) / alphas, max=max_x0_weight)
    return (weight * F.mse_loss(pred.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3))).mean()


def _base_pipeline(model_dir: Path):
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True)
    # Training noise follows the DDPM schedule the model was trained with.
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
        module.eval()
    return pipe


def train(cfg: ControlTrainConfig, out: Path = CONTROLNET_DIR, work: Path = Path("runs/controlnet"),
          model_dir: Path = TINY_MODEL_DIR, progress: bool = True) -> Path:
    """Train (resuming from ``work``) and save the ControlNet to ``out`` with ``save_pretrained``."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    pipe = _base_pipeline(model_dir)
    torch.manual_seed(cfg.seed)
    controlnet = controlnet_from_unet(pipe.unet, pipe.vae_scale_factor)
    controlnet.train()
    opt = torch.optim.AdamW(controlnet.parameters(), lr=cfg.lr, weight_decay=1e-2)
    path = work / "controlnet.pt"
    step, seconds = 0, 0.0
    if path.exists():
        ck = torch.load(path, weights_only=False)
        controlnet.load_state_dict(ck["controlnet"]); opt.load_state_dict(ck["opt"])
        step, seconds = ck["step"], ck.get("seconds", 0.0)
    bar = tqdm(total=cfg.steps, initial=step, desc="controlnet", disable=not progress)
    started = time.time() - seconds
    log = open(work / "train_log.jsonl", "a", encoding="utf-8")
    while step < cfg.steps:
        images, controls, captions = make_batch(step, cfg)
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        loss = controlnet_loss(pipe, controlnet, images, controls, captions, generator,
                               cfg.high_noise_bias, cfg.max_x0_weight)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
            log.write(json.dumps({"step": step, "loss": loss.item(), "time": time.time()}) + "\n")
            log.flush()
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            _atomic_save({"controlnet": controlnet.state_dict(), "opt": opt.state_dict(), "step": step,
                          "seconds": time.time() - started}, path)
    bar.close()
    log.close()
    controlnet.eval()
    out.mkdir(parents=True, exist_ok=True)
    controlnet.save_pretrained(out, safe_serialization=True)
    plot_loss_curve(work, out)
    meta = {
        "command": "python -m animegen_utils.control train " + " ".join(sys.argv[2:]) if "control" in sys.argv[0] else "train()",
        "git_revision": git_revision(),
        "config": dataclasses.asdict(cfg),
        "base_model": "animegen_utils/models/tiny",
        "train_seconds": round(time.time() - started, 1),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    (out / "training.json").write_text(json.dumps(meta, indent=2))
    return out


def plot_loss_curve(work: Path, out: Path) -> Path | None:
    log = work / "train_log.jsonl"
    if not log.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = {}
    for line in log.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            points[r["step"]] = r["loss"]  # a resumed run logs some steps twice: keep the last
    steps = sorted(points)
    values = np.array([points[s] for s in steps])
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(steps, values, alpha=0.3, lw=0.8)
    k = max(1, len(values) // 20)
    ax.plot(steps[k - 1:], np.convolve(values, np.ones(k) / k, mode="valid"), lw=1.5)
    ax.set_xlabel("step")
    ax.set_title("ControlNet noise-prediction loss", fontsize=10)
    fig.tight_layout()
    path = out / "loss_curve.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m animegen_utils.control train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, ControlTrainConfig)
    parser.add_argument("--out", type=Path, default=CONTROLNET_DIR, help="where the ControlNet is saved")
    parser.add_argument("--work", type=Path, default=Path("runs/controlnet"), help="checkpoints and log")
    parser.add_argument("--model", type=Path, default=TINY_MODEL_DIR, help="the base model folder")
    parser.add_argument("--fresh", action="store_true", help="ignore checkpoints in --work")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    use_threads_from_env()
    cfg = config_from_args(args, ControlTrainConfig)
    if args.fresh:
        for name in ("controlnet.pt", "train_log.jsonl"):
            (args.work / name).unlink(missing_ok=True)
    out = train(cfg, args.out, args.work, args.model, progress=not args.no_progress)
    print(f"saved the ControlNet to {out}")
