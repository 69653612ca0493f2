"""Train the built-in canny ControlNet for the built-in model, on a CPU.

    python -m animegen_utils.control train                       # the shipped run (models/tiny/controlnet)
    python -m animegen_utils.control train --steps 20 --out /tmp/cn --work /tmp/cn-work   # smoke

Pictures and controls are drawn at the base model's own size (``image_size_of``: 64 px for
version 1, 128 px for version 2); the ControlNet is saved in the model's ``controlnet/`` folder.

The recipe is diffusers' ``examples/controlnet/train_controlnet.py``, at toy scale:

* the ControlNet starts as a copy of the UNet's encoder (``ControlNetModel.from_unet``)
  with zero convolutions, so at step 0 it changes nothing;
* the UNet, VAE and text encoder are frozen; only the ControlNet learns;
* the loss is the epsilon-prediction MSE of the UNet *with* the ControlNet's residuals
  added; unlike the script, timesteps lean towards high noise and the loss is weighted
  towards it (see ``controlnet_loss``: that is where a sketch's layout is decided);
* conditioning images are in [0, 1] (white edges on black), captions are dropped
  to "" with ``empty_caption_prob`` so classifier-free guidance and guess mode work.

The toy part: training pairs are drawn fresh every step (a render is a few ms). Each character
is drawn at 4x (``render_supersampled``: flat colours, exact shape boundaries), then:

* moved by one random geometry, the same for picture and control (``random_geometry``): an affine
  (rotation, anisotropic scale, shear, shift) and a smooth elastic warp, so other proportions and
  poses, with the lines still exactly on the picture's boundaries;
* usually (``line_art_prob``) the control is the drawing's *line art*, every shape boundary as one
  stroke of random width (``line_strokes``), shrunk as ``sketch_to_control`` shrinks a user's
  drawing, and the picture is the drawing inked along those strokes: the ControlNet learns to keep a
  sketch's lines and colour between them, as an anime artist colours line art;
* otherwise the control is the canny map of the plain picture, with jittered thresholds and
  sometimes a blur first (only the main contours), for users who start from an image;
* stretches of line are sometimes left out of both control and ink (a sketch leaves things out),
  and strokes are sometimes thickened.

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
from PIL import Image
from tqdm.auto import tqdm

from ..training import atomic_save, warmup_cosine
from ..cli import add_config_flags, config_from_args, use_threads_from_env
from ..model_hash import model_hash
from ..pipelines import BUILTIN_MODELS, TINY, TINY_MODEL_DIR, controlnet_from_unet
from ..toyworld.captions import caption_for
from ..toyworld.dataset import sample_attributes
from ..toyworld.render import render_supersampled
from ..published import git_revision
from .preprocess import auto_canny_thresholds

CONTROLNET_DIR = TINY_MODEL_DIR / "controlnet"
INK = (45, 30, 35)  # the renderer's outline colour


@dataclass
class ControlTrainConfig:
    steps: int = 4_500                 # version 1's ControlNet: 8,000 (a 64-px step costs a quarter)
    batch: int = 16
    lr: float = 2e-4
    warmup: int = 50
    high_noise_bias: float = 3.0       # t = (1 - u**bias) * T: more steps where the layout is decided
    max_x0_weight: float = 5.0         # loss weight 1 + min(1/SNR, this): high-noise errors count
    seed: int = 0
    empty_caption_prob: float = 0.15   # diffusers' --proportion_empty_prompts
    affine_prob: float = 0.8
    max_rotation: float = 20.0         # degrees
    min_scale: float = 0.55            # a head half the renderer's size
    max_scale: float = 1.3
    max_shift: float = 0.2             # fraction of the image side
    elastic_prob: float = 0.6          # smooth warp of picture and control together
    elastic_fraction: float = 0.04     # its largest displacement, as a fraction of the side
    line_art_prob: float = 0.7         # control = line art of the drawing; else its canny map
    max_line_radius: int = 2           # line-art stroke half-width, in 4x pixels of a 64-px picture
    blur_prob: float = 0.3             # blur before canny: main contours only
    thick_prob: float = 0.2
    dropout_prob: float = 0.3
    checkpoint_every: int = 500
    log_every: int = 10
    init: str = ""                     # a ControlNet folder to start from; "" = the UNet's encoder


# --------------------------------------------------------------------------- augmentation

def random_geometry(rng: np.random.Generator, cfg: ControlTrainConfig, side: int) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps for one random pose change of a ``side``-pixel picture: an affine
    (rotation, anisotropic scale, shear, shift) and a smooth elastic warp (other proportions:
    a bigger head, a longer neck, narrower shoulders). Picture and control go through the same
    maps, so the control's lines stay exactly on the picture's boundaries."""
    gx, gy = np.meshgrid(np.arange(side, dtype=np.float32), np.arange(side, dtype=np.float32))
    map_x, map_y = gx, gy
    if rng.random() < cfg.affine_prob:
        angle = math.radians(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
        sx, sy = rng.uniform(cfg.min_scale, cfg.max_scale, size=2)
        shear = rng.uniform(-0.15, 0.15)
        rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        a = rot @ np.array([[sx, shear], [0.0, sy]])
        centre = np.array([side / 2, side / 2])
        shift = rng.uniform(-cfg.max_shift, cfg.max_shift, size=2) * side
        inverse = cv2.invertAffineTransform(np.hstack([a, (centre + shift - a @ centre)[:, None]]))
        map_x = (inverse[0, 0] * gx + inverse[0, 1] * gy + inverse[0, 2]).astype(np.float32)
        map_y = (inverse[1, 0] * gx + inverse[1, 1] * gy + inverse[1, 2]).astype(np.float32)
    if rng.random() < cfg.elastic_prob:
        amp = cfg.elastic_fraction * side * rng.uniform(0.3, 1.0)
        cells = int(rng.integers(3, 5))
        map_x = map_x + _smooth_field(rng, side, side, cells) * amp
        map_y = map_y + _smooth_field(rng, side, side, cells) * amp
    return map_x, map_y


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def shape_boundaries(picture: np.ndarray, min_step: int = 20) -> np.ndarray:
    """Where a flat-coloured picture (``render_supersampled``) changes colour: a uint8 map, 255 on
    the lower/right pixel of every pair of neighbours that differ by more than ``min_step`` in any
    channel. Background gradients change by a level or two per pixel and draw no line."""
    img = np.ascontiguousarray(picture, dtype=np.uint8)
    out = np.zeros(img.shape[:2], dtype=bool)
    # cv2.absdiff on uint8 is |a - b| without a widening copy of the 4x picture
    out[:, 1:] |= cv2.absdiff(img[:, 1:], img[:, :-1]).max(axis=2) > min_step
    out[1:, :] |= cv2.absdiff(img[1:, :], img[:-1, :]).max(axis=2) > min_step
    return np.where(out, 255, 0).astype(np.uint8)


def thin_lines(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a boolean mask: every band becomes its one-pixel centre line."""
    img = np.pad(mask.astype(bool), 1)
    while True:
        changed = False
        for first in (True, False):
            p2, p3, p4 = img[:-2, 1:-1], img[:-2, 2:], img[1:-1, 2:]
            p5, p6, p7 = img[2:, 2:], img[2:, 1:-1], img[2:, :-2]
            p8, p9 = img[1:-1, :-2], img[:-2, :-2]
            ring = [p2, p3, p4, p5, p6, p7, p8, p9, p2]
            neighbours = sum(n.astype(np.uint8) for n in ring[:8])
            crossings = sum((~a & b).astype(np.uint8) for a, b in zip(ring[:-1], ring[1:]))
            if first:
                side = ~(p2 & p4 & p6) & ~(p4 & p6 & p8)
            else:
                side = ~(p2 & p4 & p8) & ~(p2 & p6 & p8)
            remove = img[1:-1, 1:-1] & (neighbours >= 2) & (neighbours <= 6) & (crossings == 1) & side
            if remove.any():
                img[1:-1, 1:-1] &= ~remove
                changed = True
        if not changed:
            return img[1:-1, 1:-1]


def line_strokes(boundaries: np.ndarray, radius: int) -> np.ndarray:
    """Supersampled shape boundaries as a person would ink them: a dark outline's two sides, and
    boundaries closer than a stroke, merge into one centre line, drawn ``2 * radius + 1`` pixels wide."""
    bands = cv2.morphologyEx(boundaries, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
    centre = np.where(thin_lines(bands > 0), 255, 0).astype(np.uint8)
    return cv2.dilate(centre, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2))


def shrink_lines(strokes: np.ndarray, size: int) -> np.ndarray:
    """Strokes shrunk to ``size`` the way ``sketch_to_control`` shrinks a drawing: area average,
    keeping every pixel at least a fifth covered (thin strokes survive)."""
    small = cv2.resize(strokes, (size, size), interpolation=cv2.INTER_AREA)
    return np.where(small >= 255 // 5, 255, 0).astype(np.uint8)


def ink_lines(picture: np.ndarray, strokes: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """Ink ``strokes`` (uint8, ``width`` pixels wide) into ``picture``, as an artist inks line art,
    except where lines crowd together (irises, glasses): there a colourist keeps the colour, so the
    attribute the prompt asked for (eye colour) stays visible. Crowded means more line in a window
    around a pixel than two lone strokes would put there; the ink fades out from 1.5 strokes' worth."""
    lines = strokes.astype(np.float32) / 255.0
    k = 3 * width + 4
    lone = width / k
    density = cv2.blur((lines > 0.5).astype(np.float32), (k, k)) / lone
    alpha = (lines * np.clip((2.0 - density) / 0.5, 0.0, 1.0))[..., None]
    ink = np.array(INK, np.float32) * rng.uniform(0.6, 1.2)
    return (picture * (1 - alpha) + ink * alpha).round().astype(np.uint8)


def drop_lines(edges: np.ndarray, rng: np.random.Generator, cfg: ControlTrainConfig) -> np.ndarray:
    """A sketch leaves things out: sometimes drop ~10-25 % of the lines in smooth blobs."""
    if rng.random() < cfg.dropout_prob:
        h, w = edges.shape
        keep = _smooth_field(rng, h, w, 8) > rng.uniform(-1.4, -0.7)
        edges = edges * keep.astype(np.uint8)
    return edges


def make_pair(index: int, rng: np.random.Generator, cfg: ControlTrainConfig, size: int = 64
              ) -> tuple[np.ndarray, np.ndarray, str]:
    """One training example: (RGB uint8 picture, uint8 control edges, caption).

    The character is drawn at 4x (``render_supersampled``) and moved by ``random_geometry``. Then,
    with ``line_art_prob``, the control is its line art (every shape boundary as one stroke: what a
    person draws) and the picture is the drawing *inked* along those strokes, as an anime artist
    colours line art: the ControlNet learns to keep a drawing's lines, not only to place shapes
    near them. Otherwise the control is the canny map of the plain picture (``canny_map``'s use:
    a user who starts from an image). Lines a sketch leaves out are left out of both.
    """
    attrs, srng = sample_attributes(index, cfg.seed)
    render_seed = srng.getrandbits(31)
    caption = caption_for(attrs, srng)
    big = np.asarray(render_supersampled(attrs, render_seed, size=size).image)
    map_x, map_y = random_geometry(rng, cfg, big.shape[0])
    moved = cv2.remap(big, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    line_art = rng.random() < cfg.line_art_prob
    if line_art:
        # strokes keep their width relative to the picture: a 128-px sketch's lines are twice as wide
        radius = int(rng.integers(1, cfg.max_line_radius + 1)) * max(1, size // 64)
        strokes = line_strokes(shape_boundaries(big), radius)
        strokes = drop_lines(cv2.remap(strokes, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderValue=0), rng, cfg)
        moved = ink_lines(moved, strokes, 2 * radius + 1, rng)
    image = np.asarray(Image.fromarray(moved).resize((size, size), Image.LANCZOS))
    if line_art:
        edges = shrink_lines(strokes, size)
    else:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        source = cv2.GaussianBlur(grey, (3, 3), rng.uniform(0.6, 1.2)) if rng.random() < cfg.blur_prob else grey
        low, high = auto_canny_thresholds(source)
        jitter = rng.uniform(0.7, 1.3)
        low, high = int(min(254, low * jitter)), int(min(255, max(low * jitter + 1, high * jitter)))
        edges = drop_lines(cv2.Canny(source, low, high, L2gradient=True), rng, cfg)
    if rng.random() < cfg.thick_prob:
        edges = cv2.dilate(edges, np.ones((2, 2), np.uint8))
    if rng.random() < cfg.empty_caption_prob:
        caption = ""
    return image, edges, caption


def make_batch(step: int, cfg: ControlTrainConfig, size: int = 64) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Batch ``step`` at ``size`` pixels: pictures in [-1, 1], controls in [0, 1] (3 channels), captions."""
    rng = np.random.default_rng([cfg.seed, step])
    pairs = [make_pair(step * cfg.batch + i, rng, cfg, size) for i in range(cfg.batch)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    controls = torch.from_numpy(np.stack([p[1] for p in pairs])).float().div(255.0)[:, None].repeat(1, 3, 1, 1)
    return images, controls, [p[2] for p in pairs]


# --------------------------------------------------------------------------- training

def _lr_at(step: int, cfg: ControlTrainConfig) -> float:
    return warmup_cosine(step, cfg.steps, cfg.lr, cfg.warmup)


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


def image_size_of(pipe) -> int:
    """The base model's native picture side: latent side times the VAE's downsampling."""
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


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
    size = image_size_of(pipe)
    torch.manual_seed(cfg.seed)
    if cfg.init:
        from diffusers import ControlNetModel

        controlnet = ControlNetModel.from_pretrained(cfg.init, local_files_only=True)
    else:
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
        images, controls, captions = make_batch(step, cfg, size)
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
            atomic_save({"controlnet": controlnet.state_dict(), "opt": opt.state_dict(), "step": step,
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
        "base_model": model_dir.name if model_dir.parent.name == "models" else str(model_dir),
        "image_size": size,
        "base_model_hash": model_hash(model_dir),
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
    parser.add_argument("--model", default=TINY,
                        help=f"the base: a built-in model ({', '.join(BUILTIN_MODELS)}) or a diffusers folder")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the ControlNet is saved (default: the built-in model's controlnet/)")
    parser.add_argument("--work", type=Path, default=None, help="checkpoints and log (default: runs/controlnet-<model>_v2)")
    parser.add_argument("--fresh", action="store_true", help="ignore checkpoints in --work")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    use_threads_from_env()
    cfg = config_from_args(args, ControlTrainConfig)
    model_dir = BUILTIN_MODELS.get(args.model, Path(args.model).expanduser())
    if not (model_dir / "model_index.json").is_file():
        parser.error(f"--model {args.model!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) "
                     "nor a diffusers folder with a model_index.json")
    out = args.out or (model_dir / "controlnet")
    # named by weights version, so a work folder left by version 1's runs ("runs/controlnet") is never resumed
    work = args.work or Path(f"runs/controlnet-{model_dir.name}_v2")
    if args.fresh:
        for name in ("controlnet.pt", "train_log.jsonl"):
            (work / name).unlink(missing_ok=True)
    out = train(cfg, out, work, model_dir, progress=not args.no_progress)
    print(f"saved the ControlNet to {out}")
