"""Does an image follow its control edges, and did img2img change the emotion but keep the character?

>>> from animegen_utils.evaluate.edges import edge_f1
>>> edge_f1(control, g.image)          # 1.0: every edge where the control drew one
0.62
>>> img2img_scores(probe, images, target_emotion="happy", source_identity=source_attrs)
{'emotion_hit': 0.9, 'hair_kept': 1.0, 'eyes_kept': 0.95, 'hairstyle_kept': 1.0, 'identity_kept': 0.95}

Edge F1 is the BSDS-style boundary score with a tolerance: a predicted edge pixel
counts as correct if a control edge lies within ``tolerance`` pixels of it
(Euclidean distance; precision), a control edge pixel counts as found if an output
edge lies within ``tolerance`` pixels (recall). The output's edges are its ``canny_map`` (automatic
thresholds), as the control was made.
"""

from __future__ import annotations

from typing import Sequence, Union

import cv2
import numpy as np
from PIL import Image

from ..control.preprocess import canny_edges

IDENTITY = ("hair_color", "eye_color", "hairstyle")


def _edges_of(image: Union[Image.Image, np.ndarray], is_edge_map: bool) -> np.ndarray:
    if isinstance(image, np.ndarray) and image.dtype == bool:
        return image
    if is_edge_map:
        arr = np.asarray(image.convert("L") if isinstance(image, Image.Image) else image)
        if arr.ndim == 3:
            arr = arr.max(axis=2)
        return arr > 127
    return canny_edges(image)


def edge_precision_recall(control: Union[Image.Image, np.ndarray], output: Union[Image.Image, np.ndarray],
                          tolerance: int = 1, output_is_edge_map: bool = False) -> tuple[float, float]:
    """(precision, recall) of ``output``'s canny edges against the ``control`` edge map.

    ``control`` is a white-on-black edge map (``canny_map``/``sketch_to_control``) or a
    boolean array; ``output`` a generated picture (its canny edges are taken), or an
    edge map with ``output_is_edge_map=True``. Sizes must match.
    """
    if not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance must be an int >= 0, got {tolerance!r}")
    ctrl = _edges_of(control, is_edge_map=True)
    out = _edges_of(output, is_edge_map=output_is_edge_map)
    if ctrl.shape != out.shape:
        raise ValueError(f"control and output sizes differ: {ctrl.shape[::-1]} vs {out.shape[::-1]}; "
                         "resize the control to the output size first")
    # Euclidean distance <= tolerance (BSDS-style matching): a cross for 1 pixel, not a 3x3 square,
    # whose diagonal reach would count 1.4-pixel misses as hits.
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
    near_ctrl = cv2.dilate(ctrl.astype(np.uint8), kernel) > 0
    near_out = cv2.dilate(out.astype(np.uint8), kernel) > 0
    precision = float((out & near_ctrl).sum() / out.sum()) if out.any() else 0.0
    recall = float((ctrl & near_out).sum() / ctrl.sum()) if ctrl.any() else 0.0
    return precision, recall


def edge_f1(control: Union[Image.Image, np.ndarray], output: Union[Image.Image, np.ndarray],
            tolerance: int = 1, output_is_edge_map: bool = False) -> float:
    """Harmonic mean of edge precision and recall (0 when either side has no edges)."""
    p, r = edge_precision_recall(control, output, tolerance, output_is_edge_map)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def img2img_scores(probe, images: Sequence[Image.Image], target_emotions: Sequence[str] | str,
                   source_identity: Sequence[dict] | dict) -> dict[str, float]:
    """The rates img2img is judged by: target emotion seen, and identity kept.

    ``probe`` is a ``ProbeScorer`` (or anything with ``predict(images) -> {attr: [..]}``).
    ``source_identity`` holds each source's ``hair_color``, ``eye_color``, ``hairstyle``
    (what the probe read off the source, or its known attributes). ``identity_kept`` counts
    images that kept all three. Sources that also give ``style``/``accessory`` add
    ``outfit_kept``/``accessory_kept``: what the prompt left to the picture.
    """
    n = len(images)
    if n == 0:
        raise ValueError("images is empty")
    targets = [target_emotions] * n if isinstance(target_emotions, str) else list(target_emotions)
    sources = [source_identity] * n if isinstance(source_identity, dict) else list(source_identity)
    if len(targets) != n or len(sources) != n:
        raise ValueError(f"Got {n} images, {len(targets)} target emotions and {len(sources)} sources")
    pred = probe.predict(list(images))
    kept = {a: [pred[a][i] == sources[i][a] for i in range(n)] for a in IDENTITY}
    scores = {
        "emotion_hit": float(np.mean([pred["emotion"][i] == targets[i] for i in range(n)])),
        "hair_kept": float(np.mean(kept["hair_color"])),
        "eyes_kept": float(np.mean(kept["eye_color"])),
        "hairstyle_kept": float(np.mean(kept["hairstyle"])),
        "identity_kept": float(np.mean([all(kept[a][i] for a in IDENTITY) for i in range(n)])),
    }
    # Attributes the prompt may not mention (outfit, accessory): kept only if the source carried them.
    for attr, key in (("style", "outfit_kept"), ("accessory", "accessory_kept")):
        if all(attr in src for src in sources):
            scores[key] = float(np.mean([pred[attr][i] == sources[i][attr] for i in range(n)]))
    return scores


def edge_adherence(cn_pipe, base_pipe, controls: Sequence[Image.Image], prompts: Sequence, seeds: Sequence[int],
                   steps: int = 20, guidance: float = 7.5, progress: bool = False, **controlnet_kwargs) -> dict:
    """Edge F1 of ControlNet outputs and of plain txt2img outputs, same prompts and seeds.

    One row per control image (with its prompt), one column per seed. Extra keyword
    arguments go to the ControlNet pipeline (``controlnet_conditioning_scale=``,
    ``control_guidance_end=``, ``guess_mode=``...). ``base_pipe=None`` skips the baseline.

    >>> r = edge_adherence(cn, txt, [control], [prompt], seeds=[0, 1, 2, 3])
    >>> r["f1_with"].mean() / r["f1_without"].mean()
    """
    from ..generation import generate

    if len(controls) != len(prompts):
        raise ValueError(f"Got {len(controls)} controls but {len(prompts)} prompts")
    seeds = list(seeds)
    out: dict = {"with": [], "without": [], "f1_with": np.zeros((len(controls), len(seeds))),
                 "f1_without": np.zeros((len(controls), len(seeds)))}
    for i, (control, prompt) in enumerate(zip(controls, prompts)):
        gens = generate(cn_pipe, prompt, seed=seeds, steps=steps, guidance=guidance, image=control,
                        progress=progress, **controlnet_kwargs)
        out["with"].append(gens)
        out["f1_with"][i] = [edge_f1(control, g.image) for g in gens]
        if base_pipe is not None:
            base = generate(base_pipe, prompt, seed=seeds, steps=steps, guidance=guidance, progress=progress)
            out["without"].append(base)
            out["f1_without"][i] = [edge_f1(control, g.image) for g in base]
    return out


SKETCH_HAIR = {"long": "long hair", "short": "short hair", "twintails": "twintails"}


def held_out_sketches(n: int, seed: int = 100, size: int = 64, with_requests: bool = False) -> tuple:
    """A held-out edge-adherence set: ``n`` pencil sketches in random poses
    (``control.sketches.random_sketches``, other sizes, places and tilts than the renderer's),
    their controls at ``size`` (``sketch_to_control``), and a random prompt for each whose
    hairstyle matches the drawing. Returns ``(controls, prompts, photos)``, and the attribute
    requests behind the prompts as a fourth item with ``with_requests=True`` (for the probe).

    >>> controls, prompts, photos = held_out_sketches(16)
    >>> r = edge_adherence(cn, txt, controls, prompts, seeds=[0, 1, 2, 3])
    """
    from ..control.preprocess import sketch_to_control
    from ..control.sketches import random_sketches
    from . import prompt_for, random_requests

    drawn = random_sketches(n, seed=seed)
    requests = random_requests(n, seed=seed)
    for (pose, _photo), request in zip(drawn, requests):
        request["hairstyle"] = SKETCH_HAIR[pose.hair]
    controls = [sketch_to_control(photo, size=size) for _pose, photo in drawn]
    result = (controls, [prompt_for(r) for r in requests], [photo for _pose, photo in drawn])
    return result + (requests,) if with_requests else result
