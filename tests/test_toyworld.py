"""Tests for the procedurally drawn toy world (render, captions, dataset)."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest

from animegen_utils.prompts import (
    EMOTION_TAGS,
    EMOTIONS,
    STYLE_TAGS,
    SUBJECT_TAGS,
)
from animegen_utils.toyworld import (
    ATTRIBUTE_CHOICES,
    CharacterAttributes,
    caption_for,
    caption_tags,
    iter_samples,
    load_dataset,
    make_dataset,
    render_character,
)

BASE = CharacterAttributes("neutral", "casual", "black", "blue", "long hair", "none")

# Where each attribute is drawn, as (u0, v0, u1, v1) fractions of the image
# (generous enough to cover the ±4 % position / ±6 % scale jitter).
REGIONS = {
    "emotion": (0.28, 0.30, 0.72, 0.70),
    "style": (0.10, 0.80, 0.90, 1.00),
    "hair_color": (0.20, 0.05, 0.80, 0.30),
    "eye_color": (0.30, 0.40, 0.70, 0.55),
    "hairstyle": (0.00, 0.30, 0.30, 1.00),
    "accessory": (0.20, 0.00, 0.80, 0.60),
}
# Minimum mean absolute difference (0..255 scale, per channel) inside the region.
MIN_REGION_DIFF = 3.0


def _pixels(attrs: CharacterAttributes, seed: int, size: int = 64) -> np.ndarray:
    return np.asarray(render_character(attrs, seed, size=size).image, dtype=np.float32)


def _region_diff(a: np.ndarray, b: np.ndarray, region) -> float:
    h, w = a.shape[:2]
    u0, v0, u1, v1 = region
    sl = (slice(int(v0 * h), int(round(v1 * h))), slice(int(u0 * w), int(round(u1 * w))))
    return float(np.abs(a[sl] - b[sl]).mean())


# --------------------------------------------------------------------------- attributes


def test_attributes_validate_and_roundtrip():
    with pytest.raises(ValueError, match="Valid choices"):
        CharacterAttributes("smug", "casual", "black", "blue")
    with pytest.raises(ValueError, match="glasses"):
        CharacterAttributes("happy", "casual", "black", "blue", "long hair", "hat")
    rng = random.Random(0)
    seen = {name: set() for name in ATTRIBUTE_CHOICES}
    for _ in range(300):
        attrs = CharacterAttributes.random(rng)
        assert CharacterAttributes.from_dict(attrs.to_dict()) == attrs
        for name in ATTRIBUTE_CHOICES:
            seen[name].add(getattr(attrs, name))
    assert {k: set(v) for k, v in ATTRIBUTE_CHOICES.items()} == seen


# --------------------------------------------------------------------------- render


def test_render_shape_and_determinism():
    r1 = render_character(BASE, seed=5)
    r2 = render_character(BASE, seed=5)
    assert r1.image.mode == "RGB" and r1.image.size == (64, 64)
    assert r1.attributes == BASE
    assert r1.image.tobytes() == r2.image.tobytes()
    assert r1.variation == r2.variation
    assert {"dx", "dy", "scale", "bg_top"} <= set(r1.variation)
    r3 = render_character(BASE, seed=6)
    assert r1.image.tobytes() != r3.image.tobytes()
    assert render_character(BASE, seed=5, size=32).image.size == (32, 32)


def test_render_does_not_use_global_rng():
    random.seed(1)
    np.random.seed(1)
    a = render_character(BASE, seed=9).image.tobytes()
    random.seed(2)
    np.random.seed(2)
    assert render_character(BASE, seed=9).image.tobytes() == a


@pytest.mark.parametrize("name", list(ATTRIBUTE_CHOICES))
@pytest.mark.parametrize(
    "base",
    [BASE, CharacterAttributes("happy", "formal", "silver", "yellow", "twintails", "glasses")],
    ids=["base0", "base1"],
)
def test_every_attribute_value_draws_differently(name, base):
    """Changing one attribute (same seed) changes the pixels where it is drawn."""
    region = REGIONS[name]
    for seed in (0, 1):
        images = {v: _pixels(base.replace(**{name: v}), seed) for v in ATTRIBUTE_CHOICES[name]}
        for a, b in itertools.combinations(ATTRIBUTE_CHOICES[name], 2):
            diff = _region_diff(images[a], images[b], region)
            assert diff > MIN_REGION_DIFF, (name, a, b, seed, diff)


def test_region_diff_can_fail():
    """The same attributes and seed give a zero difference (the check is not vacuous)."""
    a = _pixels(BASE, 3)
    assert _region_diff(a, _pixels(BASE, 3), REGIONS["emotion"]) == 0.0


# --------------------------------------------------------------------------- captions


def test_caption_contains_required_tags():
    rng = random.Random(0)
    for _ in range(200):
        attrs = CharacterAttributes.random(rng)
        tags = caption_for(attrs, rng).split(", ")
        assert len(tags) == len(set(tags))
        for t in SUBJECT_TAGS:
            assert t in tags
        emo = EMOTION_TAGS[attrs.emotion]
        assert emo[0] in tags
        if len(emo) > 1:
            assert any(t in tags for t in emo[1:])
        assert STYLE_TAGS[attrs.style][0] in tags
        assert f"{attrs.hair_color} hair" in tags
        assert f"{attrs.eye_color} eyes" in tags
        assert attrs.hairstyle in tags
        if attrs.accessory == "none":
            assert "none" not in tags
        else:
            assert attrs.accessory in tags


def test_caption_unshuffled_order_and_determinism():
    attrs = CharacterAttributes("sad", "formal", "silver", "red", "long hair", "glasses")
    plain = caption_for(attrs, random.Random(0), shuffle=False, extras=False)
    assert plain.split(", ")[:3] == ["1girl", "solo", "sad"]
    assert caption_for(attrs, random.Random(4)) == caption_for(attrs, random.Random(4))


def test_caption_tags_cover_all_captions():
    vocab = set(caption_tags())
    assert list(caption_tags()) == sorted(vocab)
    rng = random.Random(1)
    produced = set()
    for _ in range(200):
        produced.update(caption_for(CharacterAttributes.random(rng), rng).split(", "))
    assert produced <= vocab
    assert "masterpiece" in produced or "looking at viewer" in produced or len(produced) > 40


# --------------------------------------------------------------------------- dataset


def test_iter_samples_balanced_and_deterministic():
    a = list(iter_samples(10, seed=3))
    b = list(iter_samples(10, seed=3))
    assert [r.attributes.emotion for r, _, _ in a] == [EMOTIONS[i % 5] for i in range(10)]
    assert [(c, s) for _, c, s in a] == [(c, s) for _, c, s in b]
    assert all(ra.image.tobytes() == rb.image.tobytes() for (ra, _, _), (rb, _, _) in zip(a, b))
    # start= resumes the same sequence
    tail = list(iter_samples(3, seed=3, start=7))
    assert [(c, s) for _, c, s in tail] == [(c, s) for _, c, s in a[7:]]


def test_make_dataset_layout_and_determinism(tmp_path):
    root = make_dataset(tmp_path / "a", n=10, seed=0, progress=False)
    assert root == tmp_path / "a" / "training_data"
    lines = (root / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 10
    fields = {"file_name", "text", "emotion", "style", "hair_color", "eye_color",
              "hairstyle", "accessory", "seed"}
    counts = {e: 0 for e in EMOTIONS}
    for i, line in enumerate(lines):
        rec = json.loads(line)
        assert set(rec) == fields
        assert rec["file_name"] == f"{rec['emotion']}_anime/{i:06d}.png"
        png = root / rec["file_name"]
        assert png.exists()
        assert png.with_suffix(".txt").read_text().strip() == rec["text"]
        assert EMOTION_TAGS[rec["emotion"]][0] in rec["text"].split(", ")
        counts[rec["emotion"]] += 1
        # the stored seed re-renders the stored image
        attrs = CharacterAttributes.from_dict(rec)
        from PIL import Image

        with Image.open(png) as im:
            assert im.size == (64, 64)
            assert im.convert("RGB").tobytes() == render_character(attrs, rec["seed"]).image.tobytes()
    assert set(counts.values()) == {2}

    loaded = load_dataset(tmp_path / "a")
    assert len(loaded) == 10 and loaded[0]["file_name"] == json.loads(lines[0])["file_name"]
    assert load_dataset(root)[3]["path"].endswith(json.loads(lines[3])["file_name"])

    root2 = make_dataset(tmp_path / "b", n=10, seed=0, progress=False)
    files1 = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    files2 = sorted(p.relative_to(root2) for p in root2.rglob("*") if p.is_file())
    assert files1 == files2
    for rel in files1:
        assert (root / rel).read_bytes() == (root2 / rel).read_bytes(), rel
