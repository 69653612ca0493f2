"""The attribute probe: a small CNN that reads emotion, style and identity off a picture.

It is the kit's offline stand-in for CLIP-based adherence metrics: trained on
fresh toy-world renders, it tells whether a generated image shows what the
prompt asked for.

>>> probe = load_probe()
>>> probe.predict([g.image for g in gens])["emotion"]
['happy', 'sad', ...]

It reads pictures at its own ``image_size`` (the built-in model's size; other
sizes are resized to it). Retrain with ``python -m animegen_utils.evaluate.probe``
(about ten minutes on a 2-core CPU).

The probes are trained on the renderer's centred layout. Pictures drawn from a sketch in
another pose (tilted, off-centre, a big or small head) need the *posed* probe
(``probe_dir_for(model, posed=True)``, trained with ``--pose-prob 0.7``): the centred one reads
the eye colour of correctly drawn, posed renders only about three times in four.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from ..prompts import ATTRIBUTES

PROBE_DIR = Path(__file__).resolve().parent.parent / "models" / "probe"
#: Each built-in model's probe, trained on renders at that model's picture size.
PROBE_DIRS: dict[str, Path] = {"tiny": PROBE_DIR}
#: Probes that also read characters in other poses (for pictures drawn from sketches).
POSED_PROBE_DIRS: dict[str, Path] = {"tiny": PROBE_DIR.parent / "probe_posed"}


def probe_dir_for(model: str, posed: bool = False) -> Path:
    """The probe that reads a built-in model's pictures (``ValueError`` naming them otherwise);
    ``posed=True``: the one trained on renders in random poses too.

    >>> probe_dir_for("tiny").name
    'probe'
    >>> probe_dir_for("tiny", posed=True).name
    'probe_posed'
    """
    if posed:
        if model not in POSED_PROBE_DIRS:
            raise ValueError(f"No posed attribute probe for {model!r}; posed probes: {', '.join(POSED_PROBE_DIRS)}")
        return POSED_PROBE_DIRS[model]
    if model not in PROBE_DIRS:
        raise ValueError(f"No attribute probe for {model!r}: the probes read the built-in models' toy-world "
                         f"pictures ({', '.join(PROBE_DIRS)}); pass --probe DIR for a model trained on them, "
                         "or score with CLIP")
    return PROBE_DIRS[model]


class AttributeProbe(nn.Module):
    """Conv blocks down to 4x4 and one linear head per attribute (about 0.4M parameters).

    The first blocks are single cheap convolutions: most of the compute of a CNN
    is in its full-resolution layers, and colours and shapes here are coarse.
    Channels double per block and end at ``width * 8``, whatever ``image_size``.
    """

    def __init__(self, attributes: dict[str, Sequence[str]] = ATTRIBUTES, width: int = 16,
                 image_size: int = 128) -> None:
        super().__init__()
        levels = int(round(np.log2(image_size / 4)))
        if image_size < 16 or 4 * 2 ** levels != image_size:
            raise ValueError(f"image_size must be a power of two >= 16, got {image_size}")
        self.attributes = {k: tuple(v) for k, v in attributes.items()}
        self.image_size = image_size

        def block(cin: int, cout: int, convs: int = 2) -> nn.Sequential:
            layers: list[nn.Module] = []
            for i in range(convs):
                layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
            return nn.Sequential(*layers, nn.MaxPool2d(2))

        channels = [max(4, width * 8 // 2 ** (levels - 1 - i)) for i in range(levels)]
        blocks, cin = [], 3
        for i, cout in enumerate(channels):
            blocks.append(block(cin, cout, convs=1 if i < levels - 3 else 2))
            cin = cout
        self.features = nn.Sequential(*blocks)  # image_size -> 4x4
        self.heads = nn.ModuleDict({k: nn.Linear(width * 8 * 16, len(v)) for k, v in self.attributes.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x).flatten(1)
        return {k: head(h) for k, head in self.heads.items()}

    def to_tensor(self, images: Sequence[Image.Image]) -> torch.Tensor:
        size = (self.image_size, self.image_size)
        arr = np.stack([np.asarray(_resized(im.convert("RGB"), size), dtype=np.float32) for im in images])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).div(127.5).sub(1.0)

    @torch.no_grad()
    def predict(self, images: Sequence[Image.Image], batch_size: int = 256) -> dict[str, list[str]]:
        """The most likely value of every attribute, per image."""
        self.eval()
        out: dict[str, list[str]] = {k: [] for k in self.attributes}
        for i in range(0, len(images), batch_size):
            logits = self(self.to_tensor(images[i:i + batch_size]))
            for k, v in logits.items():
                out[k] += [self.attributes[k][j] for j in v.argmax(1).tolist()]
        return out


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image if image.size == size else image.resize(size, Image.BICUBIC)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur, a down-and-up resampling and noise, so the probe also reads a diffusion
    model's softer images (and pictures drawn at half its size)."""
    n = x.shape[0]
    soft = torch.rand(n, generator=gen) < 0.25
    if soft.any():
        half = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear", align_corners=False)
        x = torch.where(soft[:, None, None, None], half, x)
    blur = torch.rand(n, generator=gen) < 0.5
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
        x = torch.where(blur[:, None, None, None], F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3), x)
    noise = torch.randn(x.shape, generator=gen) * torch.rand(n, 1, 1, 1, generator=gen) * 0.08
    return (x + noise).clamp(-1, 1)


def random_pose_warp(x: torch.Tensor, gen: torch.Generator, prob: float, max_rotation: float = 20.0,
                     scale: tuple[float, float] = (0.55, 1.3), max_shift: float = 0.2) -> torch.Tensor:
    """Move, turn and resize the character in a share ``prob`` of the pictures (the poses
    ``control.sketches.random_pose`` draws), filling the border with the picture's edge."""
    n = x.shape[0]
    warp = torch.rand(n, generator=gen) < prob
    if not warp.any():
        return x
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(max_rotation)
    zoom = scale[0] + torch.rand(n, generator=gen) * (scale[1] - scale[0])
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * max_shift * 2  # affine_grid spans [-1, 1]
    # theta maps output to input coordinates: the inverse of "zoom, turn, then move".
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)
    offset = -(theta @ shift[:, :, None])
    theta = torch.cat([theta, offset], 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    moved = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return torch.where(warp[:, None, None, None], moved, x)


def pose_warped_images(images: Sequence[Image.Image], seed: int = 0) -> list[Image.Image]:
    """Every picture moved into a random pose (``random_pose_warp`` with ``prob=1``), as pictures."""
    x = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images])).permute(0, 3, 1, 2).float() / 127.5 - 1
    moved = random_pose_warp(x, torch.Generator().manual_seed(seed), prob=1.0)
    arr = ((moved.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arr]


def _render_batch(n: int, rng: random.Random, size: int = 128) -> tuple[list[Image.Image], dict[str, list[str]]]:
    from ..toyworld.render import CharacterAttributes, render_character

    images, labels = [], {k: [] for k in ATTRIBUTES}
    for _ in range(n):
        attrs = CharacterAttributes.random(rng)
        images.append(render_character(attrs, rng.getrandbits(31), size=size).image)
        for k in ATTRIBUTES:
            labels[k].append(getattr(attrs, k))
    return images, labels


def probe_accuracy(probe: AttributeProbe, images: Sequence[Image.Image], labels: dict[str, Sequence[str]]) -> dict[str, float]:
    """Fraction of images whose predicted value equals the label, per attribute."""
    pred = probe.predict(images)
    return {k: float(np.mean([p == t for p, t in zip(pred[k], labels[k])])) for k in labels}


def train_probe(steps: int = 3000, batch: int = 64, seed: int = 0, lr: float = 2e-3, image_size: int = 128,
                pool: int = 20_000, progress: bool = True, pose_prob: float = 0.0) -> AttributeProbe:
    """Train on a pool of ``pool`` renders (drawn once, on every core), each batch
    freshly augmented (and a share ``pose_prob`` moved into random poses, ``random_pose_warp``);
    accuracy is then measured on renders it never saw.

    >>> probe = train_probe(steps=2, batch=4, image_size=32, pool=8, progress=False)
    >>> sorted(probe.predict([probe_test_images(1, image_size=32)[0][0]]))[:2]
    ['accessory', 'emotion']
    """
    from ..toyworld.dataset import render_arrays

    arrays, attrs = render_arrays(pool, seed=_POOL_SEED + seed, size=image_size, progress=progress,
                                  desc="probe renders")
    data = torch.from_numpy(arrays).permute(0, 3, 1, 2)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    probe = AttributeProbe(image_size=image_size)
    labels = {k: torch.tensor([probe.attributes[k].index(getattr(a, k)) for a in attrs]) for k in probe.attributes}
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    probe.train()
    for _ in tqdm(range(steps), desc="probe", disable=not progress):
        idx = torch.randint(0, pool, (batch,), generator=gen)
        x = data[idx].float().div(127.5).sub(1.0)
        if pose_prob:
            x = random_pose_warp(x, gen, pose_prob)
        x = _augment(x, gen)
        logits = probe(x)
        loss = sum(F.cross_entropy(logits[k], labels[k][idx]) for k in probe.attributes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    probe.eval()
    return probe


#: Seeds of the probe's training pool and its test renders: far from the base model's
#: training set (seed 0) and from each other.
_POOL_SEED = 7_000_000
_TEST_SEED = 9_000_000


def probe_test_images(n: int, image_size: int = 128, seed: int = 0) -> tuple[list[Image.Image], dict[str, list[str]]]:
    """``n`` fresh renders the probe never trained on, with their labels."""
    return _render_batch(n, random.Random(f"probe-test:{_TEST_SEED + seed}"), size=image_size)


def save_probe(probe: AttributeProbe, directory: Path = PROBE_DIR, metrics: dict | None = None) -> Path:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in probe.state_dict().items()}, directory / "probe.safetensors")
    config = {"attributes": probe.attributes, "image_size": probe.image_size, "metrics": metrics or {}}
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory


def load_probe(directory: str | Path = PROBE_DIR) -> AttributeProbe:
    """The shipped probe (or one saved with ``save_probe``)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / "probe.safetensors").exists():
        raise FileNotFoundError(f"No probe in {directory}; train it with `python -m animegen_utils.evaluate.probe`")
    config = json.loads((directory / "config.json").read_text())
    # probes saved before image_size was recorded read 64-pixel pictures
    probe = AttributeProbe(config["attributes"], image_size=config.get("image_size", 64))
    probe.load_state_dict(load_file(directory / "probe.safetensors"))
    return probe.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the attribute probe on toy-world renders.")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--pool", type=int, default=20_000, help="renders to train on")
    parser.add_argument("--pose-prob", type=float, default=0.0,
                        help="share of training pictures moved into random poses (0.7 for the posed probes)")
    parser.add_argument("--test-n", type=int, default=2000, help="fresh renders to measure accuracy on")
    parser.add_argument("--out", type=Path, default=PROBE_DIR)
    args = parser.parse_args(argv)
    probe = train_probe(args.steps, args.batch, args.seed, image_size=args.image_size, pool=args.pool,
                        pose_prob=args.pose_prob)
    images, labels = probe_test_images(args.test_n, image_size=args.image_size, seed=args.seed)
    acc = probe_accuracy(probe, images, labels)
    posed = {}
    if args.pose_prob:  # the same fresh renders, every one moved into a random pose
        moved = pose_warped_images(images, seed=_TEST_SEED)
        posed = {"fresh_posed_render_accuracy": probe_accuracy(probe, moved, labels)}
    print(json.dumps({"fresh_render_accuracy": acc, **posed}, indent=2))
    save_probe(probe, args.out, metrics={"fresh_render_accuracy": acc, **posed, "test_n": args.test_n, "steps": args.steps,
                                         "pool": args.pool, "pose_prob": args.pose_prob, "command": "python -m animegen_utils.evaluate.probe "
                                         + " ".join(argv if argv is not None else __import__("sys").argv[1:])})
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
