"""Latent consistency distillation of a LoRA (LCM-LoRA) for the built-in model, on a CPU.

    python -m animegen_utils.fast distill                       # the shipped adapter (models/tiny/lcm_lora)
    python -m animegen_utils.fast distill                        # version 1's (~60 min, 2 cores)
    python -m animegen_utils.fast distill --max-train-steps 20 --n-images 256 --output-dir /tmp/lcm  # smoke

>>> from animegen_utils.fast.distill import DistillConfig, distill
>>> distill(DistillConfig(max_train_steps=20, n_images=256, output_dir="/tmp/lcm", work_dir="/tmp/lcm-work"))

The recipe is diffusers' ``examples/consistency_distillation/train_lcm_distill_lora_sd_wds.py``
(Luo et al. 2023, "LCM-LoRA"), step by step:

1. a latent ``z`` of a training image is noised to ``z_{t+k}`` at a timestep of the DDIM skip
   schedule (50 solver steps over 1000 training timesteps, so ``k = 20``);
2. the *student* (the UNet with a LoRA, the only trainable weights) predicts ``x0`` from
   ``z_{t+k}``; the boundary-condition scalings ``c_skip, c_out`` make it the consistency function
   ``f(z_{t+k}) = c_skip z_{t+k} + c_out x0``;
3. the frozen *teacher* (the same UNet without the LoRA) runs conditional and unconditional, mixes
   them with a guidance scale ``w ~ U[w_min, w_max]`` (the LCM paper's form
   ``cond + w (cond - uncond)``, i.e. diffusers' ``guidance_scale = w + 1``) and takes one DDIM step
   to ``z_t``: the guidance is distilled into the LoRA, which is why LCM samples at guidance ~1;
4. the *target* is the student itself, without gradients, at ``z_t`` (the recipe uses no separate
   EMA target network for LoRA);
5. a Huber (or L2) loss between the two, AdamW on the LoRA parameters only, through ``accelerate``.

Data: toy-world renders (``animegen_utils.toyworld``) encoded once by the model's own VAE, with
freshly sampled captions every step. Every random draw of step ``s`` comes from generators seeded
with ``(seed, s)``, so a resumed run ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..training import atomic_save
from ..pipelines import TINY, TINY_LCM_LORA_DIR
from ..prompts import DEFAULT_NEGATIVE_TAGS

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"

# The recipe's default LoRA targets: every linear and conv layer of the UNet, not only attention,
# because a consistency model has to change what the resnets do too.
LCM_TARGET_MODULES: tuple[str, ...] = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
    "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj",
)


@dataclass
class DistillConfig:
    """Every value of a distillation run (each one is a ``--flag`` of the CLI)."""

    model: str = TINY                    # the teacher: a built-in model ("tiny") or a diffusers folder
    output_dir: str = ""                 # "": the built-in model's own LCM-LoRA folder (lcm_lora/)
    work_dir: str = ""                   # checkpoints, cached latents, log; "": runs/lcm[-<model>]
    seed: int = 0
    n_images: int = 6_000                # toy-world renders encoded once by the VAE
    data_seed: int = 11                  # renders not used by the base model's training (seed 0)
    max_train_steps: int = 7_000
    batch_size: int = 16
    learning_rate: float = 5e-4          # recipe: 1e-4 for SD1.5 at rank 64; a toy UNet takes more
    lr_scheduler: str = "cosine"         # recipe default "constant"; cosine settles a short run
    lr_warmup_steps: int = 50
    adam_weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    lora_rank: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = LCM_TARGET_MODULES
    w_min: float = 4.0                   # recipe: 5..15 for SD1.5; the toy model is best at CFG 5..9
    w_max: float = 8.0
    num_ddim_timesteps: int = 50
    timestep_scaling_factor: float = 10.0
    loss_type: str = "huber"
    huber_c: float = 0.001
    uncond_prompt: str = ", ".join(DEFAULT_NEGATIVE_TAGS)  # what the kit's CFG uses as unconditional
    mixed_precision: str = "no"
    checkpointing_steps: int = 500
    log_every: int = 10
    progress: bool = True


# --------------------------------------------------------------------------- the recipe's maths

def scalings_for_boundary_conditions(timestep: torch.Tensor, sigma_data: float = 0.5,
                                     timestep_scaling: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``c_skip, c_out`` of the consistency function (as ``LCMScheduler`` uses at sampling)."""
    t = timestep_scaling * timestep.float()
    return sigma_data**2 / (t**2 + sigma_data**2), t / (t**2 + sigma_data**2) ** 0.5


def _per_sample(values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return values[t].reshape(-1, 1, 1, 1)


def predicted_x0(model_output: torch.Tensor, t: torch.Tensor, sample: torch.Tensor, prediction_type: str,
                 alphas: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    a, s = _per_sample(alphas, t), _per_sample(sigmas, t)
    if prediction_type == "epsilon":
        return (sample - s * model_output) / a
    if prediction_type == "v_prediction":
        return a * sample - s * model_output
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"Unknown prediction_type {prediction_type!r}. Valid choices: epsilon, v_prediction, sample.")


def predicted_noise(model_output: torch.Tensor, t: torch.Tensor, sample: torch.Tensor, prediction_type: str,
                    alphas: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    a, s = _per_sample(alphas, t), _per_sample(sigmas, t)
    if prediction_type == "epsilon":
        return model_output
    if prediction_type == "v_prediction":
        return a * model_output + s * sample
    if prediction_type == "sample":
        return (sample - a * model_output) / s
    raise ValueError(f"Unknown prediction_type {prediction_type!r}. Valid choices: epsilon, v_prediction, sample.")


class DDIMSolver:
    """The skip schedule ``[k-1, 2k-1, ..., T-1]`` and one deterministic DDIM step back along it."""

    def __init__(self, alphas_cumprod: torch.Tensor, num_train_timesteps: int = 1000, ddim_timesteps: int = 50):
        step_ratio = num_train_timesteps // ddim_timesteps
        self.timesteps = torch.arange(1, ddim_timesteps + 1) * step_ratio - 1
        self.step_ratio = step_ratio
        prev = torch.cat([alphas_cumprod[:1], alphas_cumprod[self.timesteps[:-1]]])
        self.alphas_cumprod_prev = prev.float()

    def step(self, x0: torch.Tensor, eps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        a_prev = self.alphas_cumprod_prev[index].reshape(-1, 1, 1, 1)
        return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps


# --------------------------------------------------------------------------- data

@torch.no_grad()
def cache_latents(vae, cfg: DistillConfig, work: Path) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Posterior mean/std of ``n_images`` toy-world renders (cached in ``work/latents.pt``)."""
    from ..toyworld.dataset import iter_samples
    from ..toyworld.render import CharacterAttributes

    path = work / "latents.pt"
    size = vae.config.sample_size if isinstance(vae.config.sample_size, int) else 64
    if path.exists():
        d = torch.load(path, weights_only=False)
        if (d["n"], d["data_seed"], d.get("size", 64)) == (cfg.n_images, cfg.data_seed, size):
            return d["mean"], d["std"], [CharacterAttributes.from_dict(a) for a in d["attrs"]]
    means, stds, attrs, batch = [], [], [], []

    def flush():
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        dist = vae.encode(x.to(vae.device, vae.dtype)).latent_dist
        means.append(dist.mean.float().cpu())
        stds.append(dist.std.float().cpu())
        batch.clear()

    samples = iter_samples(cfg.n_images, seed=cfg.data_seed, size=size)
    for result, _caption, _seed in tqdm(samples, total=cfg.n_images, desc="encode", disable=not cfg.progress):
        batch.append(np.asarray(result.image.convert("RGB"), dtype=np.uint8))
        attrs.append(result.attributes)
        if len(batch) == 256:
            flush()
    if batch:
        flush()
    mean, std = torch.cat(means), torch.cat(stds)
    atomic_save({"n": cfg.n_images, "data_seed": cfg.data_seed, "size": size, "mean": mean, "std": std,
                  "attrs": [a.to_dict() for a in attrs]}, path)
    return mean, std, attrs


def _captions(attrs: list, idx: list[int], rng: random.Random) -> list[str]:
    from ..toyworld.captions import caption_for

    return [caption_for(attrs[i], rng) for i in idx]


@torch.no_grad()
def _encode(pipe, texts: list[str]) -> torch.Tensor:
    ids = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids.to(pipe.text_encoder.device)
    return pipe.text_encoder(ids)[0]


# --------------------------------------------------------------------------- checkpoints

def lora_state_dict(unet) -> dict[str, torch.Tensor]:
    """The UNet's LoRA weights, PEFT keys (``...conv1.lora_A.weight``), as the recipe saves them.

    Not ``convert_state_dict_to_diffusers``: it renames only attention layers to the old
    ``lora.down/up`` keys, and diffusers then drops those from a file that mixes both styles.
    """
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(unet).items()}


def save_lora(unet, output_dir: str | Path) -> Path:
    """Write ``pytorch_lora_weights.safetensors`` (loadable with ``pipe.load_lora_weights``)."""
    from diffusers import StableDiffusionPipeline

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(output_dir, unet_lora_layers=lora_state_dict(unet),
                                              safe_serialization=True)
    return output_dir / LORA_WEIGHTS_NAME


def _trainable(unet) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in unet.named_parameters() if p.requires_grad]


def _save_checkpoint(work: Path, step: int, unet, optimizer, lr_scheduler) -> None:
    state = {"step": step, "lora": {n: p.detach().clone() for n, p in _trainable(unet)},
             "optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict()}
    atomic_save(state, work / f"checkpoint-{step:06d}.pt")
    atomic_save(state, work / "checkpoint-latest.pt")
    for old in sorted(work.glob("checkpoint-0*.pt"))[:-2]:  # keep the last two numbered ones
        old.unlink()


def _load_checkpoint(path: Path, unet, optimizer, lr_scheduler) -> int:
    state = torch.load(path, weights_only=False)
    params = dict(_trainable(unet))
    with torch.no_grad():
        for n, value in state["lora"].items():
            params[n].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    return int(state["step"])


def export_checkpoint(checkpoint: str | Path, output_dir: str | Path, cfg: DistillConfig | None = None) -> Path:
    """Write the LoRA of a training checkpoint (``work_dir/checkpoint-*.pt``) as a loadable adapter.

    >>> export_checkpoint("runs/lcm/checkpoint-000300.pt", "runs/lcm-300")   # then lcm_lora="runs/lcm-300"
    """
    checkpoint = Path(checkpoint)
    if cfg is None:
        saved = checkpoint.parent / "config.json"
        cfg = DistillConfig(**{k: tuple(v) if isinstance(v, list) else v
                               for k, v in json.loads(saved.read_text()).items()}) if saved.exists() else DistillConfig()
    unet = _load_teacher_pipeline(cfg.model).unet
    add_lcm_lora(unet, cfg)
    params = dict(_trainable(unet))
    with torch.no_grad():
        for n, value in torch.load(checkpoint, weights_only=False)["lora"].items():
            params[n].copy_(value)
    save_lora(unet, output_dir)
    # The skip schedule travels with the adapter: load_pipeline sets LCMScheduler's timesteps from it.
    (Path(output_dir) / "distill.json").write_text(json.dumps(
        {"config": dataclasses.asdict(cfg), "checkpoint": str(checkpoint)}, indent=2))
    return Path(output_dir)


# --------------------------------------------------------------------------- training

def _load_teacher_pipeline(model: str) -> SimpleNamespace:
    """Fresh components (never the kit's shared cache: the student's LoRA must not leak into it),
    loaded as the LoRA trainer loads them."""
    from ..lora.train import load_training_components

    return SimpleNamespace(**load_training_components(model))


def add_lcm_lora(unet, cfg: DistillConfig) -> None:
    """Freeze ``unet`` and give it the LoRA that becomes the LCM-LoRA (diffusers' ``add_adapter``)."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                init_lora_weights="gaussian", target_modules=list(cfg.target_modules)))
    for _, p in _trainable(unet):
        p.data = p.data.float()  # LoRA weights stay fp32 under mixed precision


def distill_dirs(cfg: DistillConfig) -> tuple[Path, Path]:
    """(work_dir, output_dir) of a run, with the defaults filled in for a built-in teacher.

    >>> distill_dirs(DistillConfig(model="tiny"))
    (PosixPath('runs/lcm-tiny_v2'), PosixPath('.../animegen_utils/models/tiny/lcm_lora'))
    """
    from ..pipelines import BUILTIN_MODELS

    if cfg.model not in BUILTIN_MODELS and not (cfg.work_dir and cfg.output_dir):
        raise ValueError(f"--model {cfg.model!r} is not a built-in model ({', '.join(BUILTIN_MODELS)}): "
                         "pass --work-dir and --output-dir for it")
    default_out = BUILTIN_MODELS.get(cfg.model, Path()) / "lcm_lora"
    # named by weights version, so a work folder left by version 1's runs ("runs/lcm") is never resumed
    default_work = Path(f"runs/lcm-{cfg.model}_v2")
    return Path(cfg.work_dir or default_work), Path(cfg.output_dir or default_out)


@dataclass
class DistillResult:
    """Where the LCM-LoRA went, how far the run got, and the student UNet (base + LoRA)."""

    lora_dir: Path
    step: int
    finished: bool
    unet: torch.nn.Module


def distill(cfg: DistillConfig, resume: bool = True, stop_after: int | None = None) -> DistillResult:
    """Run (or resume from ``work_dir``) a distillation.

    ``stop_after`` ends the run early after that many steps *of this call* (for tests of resume).
    """
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler

    if cfg.loss_type not in ("huber", "l2"):
        raise ValueError(f"Unknown loss_type {cfg.loss_type!r}. Valid choices: huber, l2.")
    if not 0 < cfg.w_min <= cfg.w_max:
        raise ValueError(f"Need 0 < w_min <= w_max, got {cfg.w_min}, {cfg.w_max}")
    work, out = distill_dirs(cfg)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))

    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=not torch.cuda.is_available())
    torch.manual_seed(cfg.seed)
    pipe = _load_teacher_pipeline(cfg.model)
    pipe.vae.to(accelerator.device).requires_grad_(False)
    pipe.text_encoder.to(accelerator.device).requires_grad_(False)
    teacher = copy.deepcopy(pipe.unet).to(accelerator.device).requires_grad_(False).eval()
    unet = pipe.unet.to(accelerator.device)
    add_lcm_lora(unet, cfg)
    unet.train()

    sched = pipe.noise_scheduler.config
    alphas_cumprod = pipe.noise_scheduler.alphas_cumprod.float().to(accelerator.device)
    alphas, sigmas = alphas_cumprod.sqrt(), (1 - alphas_cumprod).sqrt()
    solver = DDIMSolver(alphas_cumprod.cpu(), sched["num_train_timesteps"], cfg.num_ddim_timesteps)
    prediction_type = sched.get("prediction_type", "epsilon")

    optimizer = torch.optim.AdamW([p for _, p in _trainable(unet)], lr=cfg.learning_rate,
                                  weight_decay=cfg.adam_weight_decay)
    lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                                 num_training_steps=cfg.max_train_steps)
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)

    mean, std, attrs = cache_latents(pipe.vae, cfg, work)
    scaling = pipe.vae.config.scaling_factor
    uncond = _encode(pipe, [cfg.uncond_prompt])

    step = 0
    latest = work / "checkpoint-latest.pt"
    if resume and latest.exists():
        step = _load_checkpoint(latest, accelerator.unwrap_model(unet), optimizer, lr_scheduler)
    started, first = time.time(), step
    bar = tqdm(total=cfg.max_train_steps, initial=step, desc="lcm distill", disable=not cfg.progress)
    while step < cfg.max_train_steps and (stop_after is None or step - first < stop_after):
        # Every random draw of this step from its own seeds: resume == uninterrupted.
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        rng = random.Random(f"lcm-captions:{cfg.seed}:{step}")
        idx = torch.randint(0, len(mean), (cfg.batch_size,), generator=gen)
        z = (mean[idx] + std[idx] * torch.randn(std[idx].shape, generator=gen)) * scaling
        index = torch.randint(0, cfg.num_ddim_timesteps, (cfg.batch_size,), generator=gen)
        noise = torch.randn(z.shape, generator=gen)
        w = (cfg.w_max - cfg.w_min) * torch.rand((cfg.batch_size,), generator=gen) + cfg.w_min
        z, noise, w = (x.to(accelerator.device) for x in (z, noise, w.reshape(-1, 1, 1, 1)))
        start_t = solver.timesteps[index].to(accelerator.device)
        end_t = (start_t - solver.step_ratio).clamp(min=0)
        cond = _encode(pipe, _captions(attrs, idx.tolist(), rng))

        c_skip_start, c_out_start = (c.reshape(-1, 1, 1, 1) for c in
                                     scalings_for_boundary_conditions(start_t, timestep_scaling=cfg.timestep_scaling_factor))
        c_skip, c_out = (c.reshape(-1, 1, 1, 1) for c in
                         scalings_for_boundary_conditions(end_t, timestep_scaling=cfg.timestep_scaling_factor))
        noisy = alphas[start_t].reshape(-1, 1, 1, 1) * z + sigmas[start_t].reshape(-1, 1, 1, 1) * noise

        with accelerator.accumulate(unet):
            student_out = unet(noisy, start_t, encoder_hidden_states=cond).sample
            model_pred = c_skip_start * noisy + c_out_start * predicted_x0(student_out, start_t, noisy, prediction_type,
                                                                           alphas, sigmas)
            with torch.no_grad():
                # Teacher: conditional and unconditional in one batch, CFG in the LCM form, one DDIM step.
                both = teacher(torch.cat([noisy, noisy]), torch.cat([start_t, start_t]),
                               encoder_hidden_states=torch.cat([cond, uncond.expand_as(cond)])).sample
                t2, x2 = torch.cat([start_t, start_t]), torch.cat([noisy, noisy])
                x0_c, x0_u = predicted_x0(both, t2, x2, prediction_type, alphas, sigmas).chunk(2)
                eps_c, eps_u = predicted_noise(both, t2, x2, prediction_type, alphas, sigmas).chunk(2)
                x_prev = solver.step(x0_c + w * (x0_c - x0_u), eps_c + w * (eps_c - eps_u), index)
                # Target: the student itself at the earlier point, no gradient, no EMA network.
                target_out = unet(x_prev, end_t, encoder_hidden_states=cond).sample
                target = c_skip * x_prev + c_out * predicted_x0(target_out, end_t, x_prev, prediction_type,
                                                                alphas, sigmas)
            if cfg.loss_type == "l2":
                loss = F.mse_loss(model_pred.float(), target.float())
            else:
                loss = torch.mean(torch.sqrt((model_pred.float() - target.float()) ** 2 + cfg.huber_c**2) - cfg.huber_c)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(unet.parameters(), cfg.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.max_train_steps:
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
            with open(work / "distill_log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, "loss": loss.item(), "lr": lr_scheduler.get_last_lr()[0],
                                    "time": time.time()}) + "\n")
        if step % cfg.checkpointing_steps == 0 or step == cfg.max_train_steps:
            _save_checkpoint(work, step, accelerator.unwrap_model(unet), optimizer, lr_scheduler)
    bar.close()
    student = accelerator.unwrap_model(unet)
    finished = step >= cfg.max_train_steps
    if finished:
        save_lora(student, out)
        meta = {"config": dataclasses.asdict(cfg), "steps": step,
                "seconds_this_call": round(time.time() - started, 1), "torch": torch.__version__,
                "threads": torch.get_num_threads()}
        (out / "distill.json").write_text(json.dumps(meta, indent=2))
    return DistillResult(out, step, finished, student)


__all__ = ["DistillConfig", "DistillResult", "distill", "export_checkpoint", "DDIMSolver", "scalings_for_boundary_conditions", "save_lora",
           "lora_state_dict", "add_lcm_lora", "TINY_LCM_LORA_DIR", "LCM_TARGET_MODULES", "LORA_WEIGHTS_NAME"]
