"""Tests for animegen_utils.evaluate.consistency (notebook 07's measurements)."""

import pytest
from PIL import Image

from animegen_utils.evaluate import ProbeScorer
from animegen_utils.evaluate.consistency import (IDENTITY, emotion_hit, face_crop, face_similarity, files_size,
                                                 identity_kept, identity_of, mean_face_similarity, rank_ways)
from animegen_utils.lora import toydata
from animegen_utils.toyworld.render import CharacterAttributes, render_character


def _mika(seed, emotion="neutral"):
    return render_character(CharacterAttributes(emotion=emotion, style="casual", **toydata.ATTRS), seed,
                            size=128, look=toydata.LOOK).image


def _other(seed, emotion="neutral"):
    return render_character(CharacterAttributes(emotion, "formal", "black", "red", "long hair", "glasses"), seed,
                            size=128).image


def test_face_similarity_is_one_with_itself_and_lower_for_another_character():
    a = _mika(0)
    assert face_similarity(a, a) == pytest.approx(1.0)
    assert face_similarity(a, a.resize((256, 256))) > 0.95   # size hardly matters
    for seed in range(3):   # same drawing seed: her in another mood is closer than another character
        assert face_similarity(_mika(seed), _mika(seed, "happy")) > face_similarity(_mika(seed), _other(seed)) + 0.05
    her = mean_face_similarity([_mika(s) for s in range(1, 7)], a)
    assert her > mean_face_similarity([_other(s) for s in range(1, 7)], a) + 0.05
    assert face_similarity(a, Image.new("RGB", (128, 128), "black")) < 0.5
    assert face_crop(a).shape == (64, 64, 3)


def test_mean_face_similarity():
    a = _mika(0)
    assert mean_face_similarity([a, a], a) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        mean_face_similarity([], a)


def test_identity_kept_counts_probe_readings_on_renders():
    scorer = ProbeScorer()
    mika = identity_of(scorer.predict([_mika(0)]))
    assert set(mika) == set(IDENTITY)
    images = [_mika(s) for s in range(1, 4)] + [_other(0)]
    kept = identity_kept(scorer.predict(images), mika)
    assert kept["hairstyle"] == pytest.approx(0.75)       # three of four are her; the other has long hair
    assert kept["all"] == pytest.approx(0.75)
    assert identity_kept(scorer.predict([_other(1)]), mika)["all"] == 0.0


def test_identity_kept_and_emotion_hit_by_hand():
    readings = {"hair_color": ["red", "red", "blue"], "eye_color": ["blue", "red", "blue"],
                "hairstyle": ["bob"] * 3, "accessory": ["none"] * 3, "emotion": ["happy", "sad", "sad"]}
    ident = {"hair_color": "red", "eye_color": "blue", "hairstyle": "bob", "accessory": "none"}
    kept = identity_kept(readings, ident)
    assert kept["hair_color"] == pytest.approx(2 / 3) and kept["eye_color"] == pytest.approx(2 / 3)
    assert kept["all"] == pytest.approx(1 / 3)
    assert identity_of(readings)["hair_color"] == "red"
    assert emotion_hit(readings, ["happy", "happy", "sad"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        emotion_hit(readings, ["happy"])


def test_rank_ways_and_files_size(tmp_path):
    ranked = rank_ways({"a": {"x": 0.5}, "b": {"x": 0.9}, "c": {"x": 0.5}}, "x")
    assert ranked == [(1, "b", 0.9), (2, "a", 0.5), (2, "c", 0.5)]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "w.bin").write_bytes(b"x" * 10)
    (tmp_path / "f.png").write_bytes(b"y" * 5)
    assert files_size([tmp_path / "d", tmp_path / "f.png"]) == (2, 15)
    assert files_size([]) == (0, 0)
