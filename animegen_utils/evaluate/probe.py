"""The attribute probe: a small CNN that reads emotion, style and identity off a 64x64 image.

It is the kit's offline stand-in for CLIP-based adherence metrics: trained on
fresh toy-world renders, it tells whether a generated image shows what the
prompt asked for.

>>> probe = load_probe()
>>> probe.predict([g.image for g in gens])["emotion"]
['happy', 'sad', ...]

Retrain with ``python -m animegen_utils.evaluate.probe`` (a few minutes on a CPU).
"""

from __future__ import annotations

import argparse
import json
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


class AttributeProbe(nn.Module):
    """Four conv blocks and one linear head per attribute (about 0.4M parameters).

    The first block is a single cheap convolution: most of the compute of a CNN
    at 64x64 is in its first layer, and colours and shapes here are coarse.
    """

    def __init__(self, attributes: dict[str, Sequence[str]] = ATTRIBUTES, width: int = 16) -> None:
        super().__init__()
        self.attributes = {k: tuple(v) for k, v in attributes.items()}

        def block(cin: int, cout: int, convs: int = 2) -> nn.Sequential:
            layers: list[nn.Module] = []
            for i in range(convs):
                layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
            return nn.Sequential(*layers, nn.MaxPool2d(2))

        self.features = nn.Sequential(block(3, width, convs=1), block(width, width * 2), block(width * 2, width * 4),
                                      block(width * 4, width * 8))  # 64 -> 4x4
        self.heads = nn.ModuleDict({k: nn.Linear(width * 8 * 16, len(v)) for k, v in self.attributes.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x).flatten(1)
        return {k: head(h) for k, head in self.heads.items()}

    @staticmethod
    def to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
        arr = np.stack([np.asarray(im.convert("RGB").resize((64, 64), Image.BICUBIC), dtype=np.float32)
                        for im in images])
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


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Blur and noise, so the probe also reads a diffusion model's softer images."""
    n = x.shape[0]
    blur = torch.rand(n, generator=gen) < 0.5
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
        x = torch.where(blur[:, None, None, None], F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3), x)
    noise = torch.randn(x.shape, generator=gen) * torch.rand(n, 1, 1, 1, generator=gen) * 0.08
    return (x + noise).clamp(-1, 1)


def _render_batch(n: int, rng: random.Random) -> tuple[list[Image.Image], dict[str, list[str]]]:
    from ..toyworld.render import CharacterAttributes, render_character

    images, labels = [], {k: [] for k in ATTRIBUTES}
    for _ in range(n):
        attrs = CharacterAttributes.random(rng)
        images.append(render_character(attrs, rng.getrandbits(31)).image)
        for k in ATTRIBUTES:
            labels[k].append(getattr(attrs, k))
    return images, labels


def probe_accuracy(probe: AttributeProbe, images: Sequence[Image.Image], labels: dict[str, Sequence[str]]) -> dict[str, float]:
    """Fraction of images whose predicted value equals the label, per attribute."""
    pred = probe.predict(images)
    return {k: float(np.mean([p == t for p, t in zip(pred[k], labels[k])])) for k in labels}


def train_probe(steps: int = 1500, batch: int = 64, seed: int = 0, lr: float = 2e-3,
                progress: bool = True) -> AttributeProbe:
    """Train on freshly rendered images (a new batch every step, never repeated)."""
    torch.manual_seed(seed)
    rng = random.Random(f"probe-train:{seed}")
    gen = torch.Generator().manual_seed(seed)
    probe = AttributeProbe()
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    probe.train()
    for step in tqdm(range(steps), desc="probe", disable=not progress):
        images, labels = _render_batch(batch, rng)
        x = _augment(AttributeProbe.to_tensor(images), gen)
        logits = probe(x)
        loss = sum(F.cross_entropy(logits[k], torch.tensor([probe.attributes[k].index(v) for v in labels[k]]))
                   for k in probe.attributes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    probe.eval()
    return probe


def save_probe(probe: AttributeProbe, directory: Path = PROBE_DIR, metrics: dict | None = None) -> Path:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in probe.state_dict().items()}, directory / "probe.safetensors")
    (directory / "config.json").write_text(json.dumps({"attributes": probe.attributes, "metrics": metrics or {}}, indent=2))
    return directory


def load_probe(directory: str | Path = PROBE_DIR) -> AttributeProbe:
    """The shipped probe (or one saved with ``save_probe``)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / "probe.safetensors").exists():
        raise FileNotFoundError(f"No probe in {directory}; train it with `python -m animegen_utils.evaluate.probe`")
    config = json.loads((directory / "config.json").read_text())
    probe = AttributeProbe(config["attributes"])
    probe.load_state_dict(load_file(directory / "probe.safetensors"))
    return probe.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the attribute probe on fresh toy-world renders.")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-n", type=int, default=2000, help="fresh renders to measure accuracy on")
    parser.add_argument("--out", type=Path, default=PROBE_DIR)
    args = parser.parse_args(argv)
    probe = train_probe(args.steps, args.batch, args.seed)
    images, labels = _render_batch(args.test_n, random.Random(f"probe-test:{args.seed}"))
    acc = probe_accuracy(probe, images, labels)
    print(json.dumps(acc, indent=2))
    save_probe(probe, args.out, metrics={"fresh_render_accuracy": acc, "test_n": args.test_n, "steps": args.steps})
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
