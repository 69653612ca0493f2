"""The probe and the evaluation command. Floors sit well below the bars in the
model card, so a broken model or probe fails while float noise does not."""

import json
import random

import pytest

from animegen_utils import load_pipeline
from animegen_utils.evaluate import ATTRIBUTES, evaluate_model, load_probe, probe_accuracy
from animegen_utils.evaluate.__main__ import main as evaluate_main
from animegen_utils.evaluate.probe import _render_batch


@pytest.fixture(scope="module")
def probe():
    return load_probe()


def test_probe_reads_fresh_renders(probe):
    images, labels = _render_batch(150, random.Random("test-probe-fresh"), size=probe.image_size)
    acc = probe_accuracy(probe, images, labels)
    assert set(acc) == set(ATTRIBUTES)
    assert min(acc.values()) >= 0.9, acc


def test_probe_separates_every_value_of_every_attribute(probe):
    from animegen_utils.toyworld import CharacterAttributes, render_character

    base = CharacterAttributes("neutral", "casual", "black", "blue", "short hair", "none")
    for attr, values in ATTRIBUTES.items():
        for value in values:
            picture = (render_character(base.replace(**{attr: value}), seed, size=probe.image_size).image
                       for seed in range(3))
            hits = sum(probe.predict([image])[attr][0] == value for image in picture)
            assert hits >= 2, (attr, value)


def test_pose_warp_moves_every_picture_and_keeps_its_size():
    import torch

    from animegen_utils.evaluate.probe import random_pose_warp

    import numpy as np

    images, _ = _render_batch(8, random.Random("test-pose-warp"), size=64)
    x = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float() / 127.5 - 1
    moved = random_pose_warp(x, torch.Generator().manual_seed(0), prob=1.0)
    assert moved.shape == x.shape
    assert all((moved[i] - x[i]).abs().mean() > 0.02 for i in range(len(images)))
    assert torch.equal(random_pose_warp(x, torch.Generator().manual_seed(0), prob=0.0), x)


def test_the_posed_probe_reads_characters_the_centred_probe_misses():
    from animegen_utils.evaluate import ProbeScorer

    from animegen_utils.evaluate.probe import pose_warped_images

    images, labels = _render_batch(120, random.Random("test-posed-probe"), size=128)
    moved = pose_warped_images(images, seed=3)
    requested = [{k: labels[k][i] for k in labels} for i in range(len(images))]
    centred = ProbeScorer.for_model("tiny").accuracy(moved, requested)
    posed_read = ProbeScorer.for_model("tiny", posed=True).accuracy(moved, requested)
    assert min(posed_read.values()) >= 0.9, posed_read
    assert posed_read["eye_color"] > centred["eye_color"]
    assert ProbeScorer.for_model("tiny").probe.image_size == 128
    assert ProbeScorer.for_model("some/hub-model").probe.image_size == load_probe().image_size
    with pytest.raises(ValueError, match="posed probes: tiny"):
        ProbeScorer.for_model("some/hub-model", posed=True)


def test_evaluation_command_on_the_builtin_model(tmp_path):
    out = tmp_path / "eval.json"
    report = evaluate_main(["--model", "tiny", "--n", "30", "--steps", "15", "--output", str(out)])
    saved = json.loads(out.read_text())
    for key in ("emotion_accuracy", "style_accuracy", "hair_accuracy", "eye_accuracy", "diversity"):
        assert key in saved
    made = saved.pop("provenance")
    assert saved == json.loads(json.dumps(report))
    assert made["command"].startswith("python ") and made["git_revision"] and made["threads"] >= 1
    assert report["emotion_accuracy"] >= 0.6 and report["style_accuracy"] >= 0.6
    assert report["hair_accuracy"] >= 0.5 and report["eye_accuracy"] >= 0.35
    assert report["diversity"] > 0.03  # same prompt, different seeds: different characters


def test_random_weights_fail_the_floor(dummy_pipe):
    report = evaluate_model(dummy_pipe, n=15, steps=4, diversity_prompts=1, diversity_seeds=2)
    assert report["emotion_accuracy"] < 0.6 or report["style_accuracy"] < 0.6


def test_evaluation_command_keeps_its_images_in_out_dir_and_resumes(tmp_path, capsys):
    from animegen_utils.sweep import load_results

    argv = ["--model", "tiny", "--n", "4", "--steps", "2", "--batch-size", "2", "--diversity-prompts", "1",
            "--diversity-seeds", "2", "--out-dir", str(tmp_path / "eval")]
    first = evaluate_main(argv)
    table = load_results(tmp_path / "eval")
    assert table.num_rows == 4 and (tmp_path / "eval" / "results.parquet").is_file()
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "eval" / "images").iterdir()}
    again = evaluate_main(argv)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "eval" / "images").iterdir()} == mtimes  # nothing redrawn
    assert {k: v for k, v in again.items() if k.endswith("_accuracy")} == \
        {k: v for k, v in first.items() if k.endswith("_accuracy")}
