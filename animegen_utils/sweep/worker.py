"""Drawing and scoring one batch of the manifest: the part every engine runs the same way.

>>> drawer = Drawer(load_spec("sweep.yaml"))
>>> results = drawer.draw(batches(expand("sweep.yaml"))[0])   # [(row, image, params, scores), ...]
"""

from __future__ import annotations

import hashlib
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..generation import generate
from ..pipelines import load_pipeline
from ..prompts import CharacterSheet, build_prompt
from .manifest import Batch, Row
from .spec import SweepSpec, _resolve
from .store import PROBE_ATTRIBUTES

PIPELINE_KEYS = ("model", "scheduler", "clip_skip", "lcm_lora", "task")


@dataclass
class Drawn:
    """One drawn row: the image, the parameters its PNG records, and its scores."""

    row: Row
    image: Image.Image
    params: dict[str, Any]
    scores: dict[str, Any]
    seconds: float
    worker: str


def prompt_of(params: dict[str, Any]) -> tuple[str, str | None]:
    """The positive prompt text of a row (with its ``<lora:...>`` tag) and the negative it asks for."""
    if "prompt" in params:
        positive, negative = params["prompt"], ""
    else:
        sheet = None
        if "hair_color" in params:
            acc = params.get("accessory", "none")
            sheet = CharacterSheet(params["hair_color"], params["eye_color"], params.get("hairstyle", "long hair"),
                                   accessories=(acc,) if acc != "none" else ())
        p = build_prompt(params["emotion"], params["style"], character=sheet)
        positive, negative = p.positive, p.negative
    if "lora" in params:
        positive = f"{positive}, <lora:{params['lora']}:{params['lora_scale']:g}>"
    return positive, params.get("negative", negative)


class Drawer:
    """Holds one process's pipelines (one per pipeline setting, weights shared) and scorers.

    ``threads`` is set for the whole process: PNG bytes depend on the thread count, so every
    engine runs every worker at the spec's ``threads``. ``pipe``: draw every row with this
    already-loaded pipeline instead (``evaluate_model``'s); the rows' ``model`` and ``scheduler``
    then only name it, in the ids and the table.
    """

    def __init__(self, spec: SweepSpec, device: str | torch.device = "auto", worker: str | None = None,
                 pipe: Any = None) -> None:
        self.spec = spec
        self.pipe = pipe
        self.device = device
        self.worker = worker or socket.gethostname()
        torch.set_num_threads(spec.threads)
        self._pipes: dict[tuple, Any] = {}
        self._probe = None
        self._clip = None
        if "probe" in spec.scorers:
            from ..evaluate.metrics import ProbeScorer

            self._probe = ProbeScorer()
        if "clip" in spec.scorers:
            self._clip = ClipScore(spec.clip_model, device="cpu")

    def pipeline(self, params: dict[str, Any]):
        """The pipeline a row is drawn with (loaded once per pipeline setting)."""
        if self.pipe is not None:
            return self.pipe
        key = tuple(params.get(k) for k in PIPELINE_KEYS)
        if key not in self._pipes:
            kwargs = {k: v for k, v in zip(PIPELINE_KEYS, key) if v is not None}
            self._pipes[key] = load_pipeline(device=self.device, **kwargs)
        return self._pipes[key]

    def draw(self, batch: Batch) -> list[Drawn]:
        """Generate every row of ``batch`` in one ``generate`` call, then score them together."""
        first = batch.rows[0].params
        texts = [prompt_of(r.params) for r in batch.rows]
        kwargs: dict[str, Any] = {k: first[k] for k in ("steps", "guidance", "width", "height", "weighting",
                                                          "hires_scale", "hires_strength", "hires_steps",
                                                          "hires_upscaler", "strength") if k in first}
        if "lora_dirs" in first:
            kwargs["lora_dirs"] = _resolve(self.spec, first["lora_dirs"])
        if "image" in first:
            with Image.open(_resolve(self.spec, first["image"])) as im:
                kwargs["image"] = im.convert("RGB")
        started = time.perf_counter()
        gens = generate(self.pipeline(first), [t for t, _ in texts], seed=[r.params["seed"] for r in batch.rows],
                        negative=texts[0][1], batch_size=len(batch.rows), progress=False, **kwargs)
        scores = self.score(batch, [g.image for g in gens], [t for t, _ in texts])
        seconds = (time.perf_counter() - started) / len(batch.rows)
        out = []
        for r, g, s in zip(batch.rows, gens, scores):
            params = {**g.params, "sweep_row": r.id}
            out.append(Drawn(r, g.image, params, s, seconds, self.worker))
        return out

    def score(self, batch: Batch, images: list[Image.Image], texts: list[str]) -> list[dict[str, Any]]:
        """Scores per image: the probe's reading (and whether it is what the row asked for), CLIP score."""
        scores: list[dict[str, Any]] = [{} for _ in images]
        if self._probe is not None:
            pred = self._probe.predict(images)
            for s, r, i in zip(scores, batch.rows, range(len(images))):
                for a in PROBE_ATTRIBUTES:
                    s[f"probe_{a}"] = pred[a][i] if a in pred else None
                    asked = r.params.get(a, "none" if a == "accessory" and "hair_color" in r.params else None)
                    s[f"probe_{a}_ok"] = None if asked is None or a not in pred else pred[a][i] == asked
        if self._clip is not None:
            for s, v in zip(scores, self._clip(images, texts)):
                s["clip_score"] = v
        return scores


class ClipScore:
    """CLIP score (100 x cosine of image and prompt embeddings, floored at 0, as torchmetrics defines it).

    ``model`` is a CLIP model id or folder (``openai/clip-vit-base-patch32``); it must be on disk
    or in the Hugging Face cache where there is no network. ``<lora:...>`` tags and A1111
    brackets are scored as written.
    """

    def __init__(self, model: str, device: str = "cpu") -> None:
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(model).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(model)
        self.device = device

    @torch.no_grad()
    def __call__(self, images: list[Image.Image], texts: list[str]) -> list[float]:
        inputs = self.processor(text=texts, images=images, return_tensors="pt", padding="max_length",
                                truncation=True, max_length=self.processor.tokenizer.model_max_length)
        out = self.model(**inputs.to(self.device))
        img = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
        txt = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
        return [float(v) for v in (100 * (img * txt).sum(-1)).clamp(min=0)]


def png_bytes_sha256(path: str | Path) -> str:
    """SHA-256 of a PNG file's bytes (what the bars compare across engines)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

