"""Adherence and diversity metrics, with pluggable scorers.

``ProbeScorer`` reads attributes with the shipped CNN probe (built-in model);
``ClipScorer`` scores image/text similarity with a CLIP model for real SD models,
when its weights are available locally or on the Hub.

>>> scorer = ProbeScorer()
>>> scorer.accuracy(images, [{"emotion": "happy", "style": "casual"}, ...])
{'emotion': 0.95, 'style': 1.0}
"""

from __future__ import annotations

import itertools
from typing import Protocol, Sequence

import numpy as np
from PIL import Image

from .probe import PROBE_DIRS, AttributeProbe, load_probe, probe_dir_for


class AdherenceScorer(Protocol):
    """Anything that scores how well images match what was requested."""

    name: str

    def accuracy(self, images: Sequence[Image.Image], requested: Sequence[dict[str, str]]) -> dict[str, float]:
        ...


class ProbeScorer:
    """Per-attribute accuracy of the attribute probe against the requested values."""

    name = "probe"

    def __init__(self, probe: AttributeProbe | None = None) -> None:
        self.probe = probe or load_probe()

    @classmethod
    def for_model(cls, model: str, posed: bool = False) -> "ProbeScorer":
        """The probe that reads built-in ``model``'s pictures (``posed=True``: characters in any
        pose, as sketches draw them); for other models the default probe, which reads the toy
        world only.

        >>> ProbeScorer.for_model("tiny").probe.image_size
        128
        """
        known = model in PROBE_DIRS
        return cls(load_probe(probe_dir_for(model if known or posed else "tiny", posed=posed)))

    def predict(self, images: Sequence[Image.Image]) -> dict[str, list[str]]:
        return self.probe.predict(list(images))

    def accuracy(self, images: Sequence[Image.Image], requested: Sequence[dict[str, str]]) -> dict[str, float]:
        if len(images) != len(requested):
            raise ValueError(f"{len(images)} images but {len(requested)} requests")
        pred = self.predict(images)
        keys = sorted({k for r in requested for k in r if k in self.probe.attributes})
        result = {}
        for k in keys:
            pairs = [(p, r[k]) for p, r in zip(pred[k], requested) if k in r]
            result[k] = float(np.mean([p == t for p, t in pairs]))
        return result


DEFAULT_CLIP = "openai/clip-vit-base-patch32"


class ClipScorer:
    """CLIP-score style adherence for real models: which of the candidate values
    does CLIP find closest to the image? Needs CLIP weights (``model_id``, a Hub id or a
    local folder with the model and its processor), so offline they must be cached or local."""

    name = "clip"

    def __init__(self, model_id: str = DEFAULT_CLIP, device: str = "cpu") -> None:
        from pathlib import Path

        from transformers import CLIPModel, CLIPProcessor

        local = Path(model_id).expanduser().is_dir()
        try:
            self.model = CLIPModel.from_pretrained(model_id, local_files_only=local).to(device).eval()
            self.processor = CLIPProcessor.from_pretrained(model_id, local_files_only=local)
        except OSError as err:  # offline and not cached, or a typo
            raise OSError(f"Could not load CLIP {model_id!r} for scoring ({type(err).__name__}). Download it once "
                          f"with `hf download {model_id}`, or pass a local CLIP folder (--clip-model).") from err
        self.device = device

    def accuracy(self, images: Sequence[Image.Image], requested: Sequence[dict[str, str]],
                 choices: dict[str, Sequence[str]] | None = None) -> dict[str, float]:
        import torch

        from .probe import ATTRIBUTES

        choices = choices or ATTRIBUTES
        result = {}
        for key in sorted({k for r in requested for k in r if k in choices}):
            texts = [f"an anime girl, {v.replace('_', ' ')}" for v in choices[key]]
            inputs = self.processor(text=texts, images=list(images), return_tensors="pt", padding=True).to(self.device)
            with torch.no_grad():
                best = self.model(**inputs).logits_per_image.argmax(1).tolist()
            result[key] = float(np.mean([choices[key][b] == r[key] for b, r in zip(best, requested)]))
        return result


def pairwise_pixel_distance(images: Sequence[Image.Image]) -> float:
    """Mean absolute pixel difference (0-1) over all pairs: 0 means identical images."""
    arrays = [np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]
    if len(arrays) < 2:
        raise ValueError("diversity needs at least two images")
    return float(np.mean([np.abs(a - b).mean() for a, b in itertools.combinations(arrays, 2)]))


def tag_jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    """Jaccard similarity of two tag lists (1 = same tags)."""
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0
