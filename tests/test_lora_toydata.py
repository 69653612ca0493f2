"""Notebook 03's new character: the renderer's custom look, the dataset folders, the pixel detector."""

import random

import numpy as np

from animegen_utils.lora import load_image_dataset
from animegen_utils.lora import toydata
from animegen_utils.toyworld.render import CharacterAttributes, CustomLook, render_character


def test_custom_look_changes_only_what_it_draws():
    attrs = CharacterAttributes("happy", "casual", "blue", "yellow", "twintails")
    plain = np.asarray(render_character(attrs, 5).image)
    assert np.array_equal(plain, np.asarray(render_character(attrs, 5, look=None).image))
    assert np.array_equal(plain, np.asarray(render_character(attrs, 5, look=CustomLook()).image))
    mika = np.asarray(render_character(attrs, 5, look=toydata.LOOK).image)
    changed = np.abs(mika.astype(int) - plain).max(axis=2) > 0
    assert 0.05 < changed.mean() < 0.6                    # hair and clip, not the whole picture
    assert not changed[48:, 24:40].any()                  # the hoodie and neck are untouched


def test_character_folders_in_the_plans_layout(tmp_path):
    root = toydata.make_character_folders(tmp_path / "data", per_emotion=3, emotions=("happy", "sad"))
    ds = load_image_dataset(root, resolution=64, verbose=False)
    assert ds.layout == "folders" and len(ds) == 6
    assert sorted({r.group for r in ds.records}) == ["happy_anime", "sad_anime"]
    for r in ds.records:
        tags = r.caption.split(", ")
        assert tags[0] == toydata.TRIGGER and ("happy" in tags or "sad" in tags)
        assert not any(t.endswith(" hair") or t.endswith(" eyes") for t in tags)   # the trigger carries the look


def test_detector_separates_her_from_the_base_world():
    rng = random.Random(0)
    mika = [render_character(CharacterAttributes(e, rng.choice(toydata.STYLES), **toydata.ATTRS), 100 + i,
                             look=toydata.LOOK).image for i, e in enumerate(["happy", "sad", "angry", "surprised",
                                                                             "neutral"] * 6)]
    base = [render_character(CharacterAttributes.random(rng), i).image for i in range(300)]
    assert all(toydata.shows_character(im) for im in mika)
    assert not any(toydata.shows_character(im) for im in base)   # every base hair colour, 300 renders
