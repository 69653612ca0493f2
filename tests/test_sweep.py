"""animegen_utils.sweep on one process: spec errors before drawing, the manifest, resuming, the lock.

The engines (accelerate ranks, Ray actors, a killed rank) are in test_sweep_engines.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from animegen_utils.sweep import (SweepFolderError, SweepLockedError, SweepSpecError, batches, expand,
                                  load_results, load_spec, run)
from animegen_utils.sweep.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"axes": {"emotion": ["happy", "sad"], "style": ["casual", "formal"], "seed": [0, 1, 2]},
         "fixed": {"steps": 2}, "scorers": ["probe"], "batch_size": 4}


@pytest.mark.parametrize("spec, words", [
    ({"axes": {"emotoin": ["happy"], "style": ["casual"]}},
     ["Unknown sweep parameter 'emotoin'", "Valid choices:", "emotion", "scheduler", "seed"]),
    ({"axes": {"emotion": ["happy"], "style": ["casual"], "steps": [0, 2]}},
     ["steps=0", "an integer >= 1"]),
    ({"axes": {"emotion": ["happy"], "style": ["casual"]}, "fixed": {"guidance": -1}},
     ["guidance=-1", "a number >= 0"]),
    ({"axes": {"emotion": ["joyful"], "style": ["casual"]}},
     ["emotion='joyful'", "happy, angry, sad, surprised, neutral"]),
    ({"axes": {"emotion": ["happy"], "style": ["casual"], "scheduler": ["dpm", "euler"]}},
     ["scheduler='dpm'", "dpm++, dpm++_karras, euler_a"]),
    ({"axes": {"emotion": ["happy"], "style": []}}, ["axis 'style' is empty"]),
    ({"axes": {"emotion": ["happy"], "style": ["casual"], "seed": {"start": 0, "count": 0}}},
     ["axis 'seed' is empty"]),
    ({"axes": {"emotion": ["happy"], "style": ["casual"], "seed": [2**32]}}, ["seed=4294967296", "[0, 4294967296)"]),
    ({"axes": {"emotion": ["happy"], "style": ["casual"], "width": [60]}}, ["width=60", "a multiple of 8"]),
    ({"axes": {"emotion": ["happy"], "style": ["casual"]}, "scorers": ["fid"]},
     ["Unknown scorer 'fid'", "probe, clip"]),
    ({"axes": {"emotion": ["happy"], "style": ["casual"]}, "batch": 4},
     ["Unknown sweep spec key(s) batch", "batch_size"]),
    ({"axes": {"emotion": ["happy"]}}, ["needs a prompt"]),
    ({"axes": {"seed": [1, 1]}, "fixed": {"prompt": "1girl"}}, ["axis 'seed' repeats 1"]),
])
def test_a_bad_spec_is_refused_before_anything_is_drawn(tmp_path, spec, words):
    assert_refused_before_drawing(tmp_path, spec, words)


def assert_refused_before_drawing(tmp_path, spec, words):
    out = tmp_path / "out"
    with pytest.raises(SweepSpecError) as err:
        run(spec, out, progress=False)
    for w in words:
        assert w in str(err.value)
    assert not out.exists()  # refused before the folder, a pipeline or an image


def test_cli_names_the_error_and_draws_nothing(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("axes:\n  emotion: [happy]\n  style: [casual]\n  stpes: [2]\n")
    assert main(["run", str(spec), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Unknown sweep parameter 'stpes'" in err and "steps" in err
    assert not (tmp_path / "out").exists()


def test_yaml_toml_and_dict_give_the_same_manifest(tmp_path):
    (tmp_path / "s.yaml").write_text("axes:\n  emotion: [happy, sad]\n  style: [casual]\n"
                                     "  seed: {start: 5, count: 3}\nfixed: {steps: 2, guidance: 7}\nbatch_size: 2\n")
    (tmp_path / "s.toml").write_text("batch_size = 2\n[axes]\nemotion = ['happy', 'sad']\nstyle = ['casual']\n"
                                     "seed = {start = 5, count = 3}\n[fixed]\nsteps = 2\nguidance = 7.0\n")
    as_dict = {"axes": {"emotion": ["happy", "sad"], "style": ["casual"], "seed": [5, 6, 7]},
               "fixed": {"steps": 2, "guidance": 7.0}, "batch_size": 2}
    ids = [[r.id for r in expand(s)] for s in (tmp_path / "s.yaml", tmp_path / "s.toml", as_dict)]
    assert ids[0] == ids[1] == ids[2] and len(set(ids[0])) == 6
    rows = expand(as_dict)
    assert [(r.params["emotion"], r.params["seed"]) for r in rows][:4] == [("happy", 5), ("happy", 6), ("happy", 7),
                                                                          ("sad", 5)]
    assert rows[0].params["scheduler"] == "dpm++" and rows[0].params["guidance"] == 7.0


def test_row_ids_follow_the_parameters_and_batches_share_a_setting():
    base = expand({"axes": {"emotion": ["happy", "sad"], "style": ["casual"], "steps": [2, 3], "seed": [0, 1, 2]},
                   "batch_size": 2})
    again = expand({"axes": {"seed": [0, 1, 2], "steps": [2, 3], "style": ["casual"], "emotion": ["happy", "sad"]},
                    "batch_size": 2})
    assert {r.id for r in base} == {r.id for r in again}  # the id is the parameters, not the order
    other = expand({"axes": {"emotion": ["happy", "sad"], "style": ["casual"], "steps": [2, 4], "seed": [0, 1, 2]},
                    "batch_size": 2})
    assert len({r.id for r in base} & {r.id for r in other}) == 6  # the steps=2 rows are the same images
    for b in batches(base):
        assert 1 <= len(b.rows) <= 2
        assert len({r.params["steps"] for r in b.rows}) == 1  # one generate call per batch: one setting


def test_run_resumes_and_writes_every_row_once(tmp_path):
    out = tmp_path / "out"
    first = run(SMALL, out, progress=False)
    assert (first.drawn, first.done_before, first.total) == (12, 0, 12)
    table = load_results(out)
    assert table.num_rows == 12 and sorted(table.column("id").to_pylist()) == sorted(r.id for r in expand(SMALL))
    assert pq.read_table(out / "results.parquet").num_rows == 12
    rows = table.to_pylist()
    png = out / rows[0]["file"]
    from animegen_utils import read_parameters

    params = read_parameters(png)  # the kit's own PNG record, with the row id
    assert params["sweep_row"] == rows[0]["id"] and params["seed"] == rows[0]["seed"] and params["steps"] == 2
    assert {r["probe_emotion_ok"] for r in rows} <= {True, False} and all(r["probe_emotion"] for r in rows)
    assert sum(r["probe_emotion_ok"] for r in rows) >= 6  # the probe reads most 2-step emotions right

    # A lost batch (its part and one PNG deleted, as after a kill) is drawn again, with the same bytes.
    victim = rows[5]
    before = (out / victim["file"]).read_bytes()
    (out / "table" / f"part-{victim['batch']}.parquet").unlink()
    (out / victim["file"]).unlink()
    again = run(SMALL, out, progress=False)
    assert (again.drawn, again.done_before) == (4, 8)
    assert (out / victim["file"]).read_bytes() == before
    assert load_results(out).num_rows == 12

    # A grown axis draws only the new rows.
    bigger = {**SMALL, "axes": {**SMALL["axes"], "seed": [0, 1, 2, 3]}}
    grown = run(bigger, out, progress=False)
    assert (grown.drawn, grown.done_before, grown.total) == (4, 12, 16)
    assert load_results(out).num_rows == 16


def test_a_folder_keeps_the_settings_it_was_started_with(tmp_path):
    out = tmp_path / "out"
    run({**SMALL, "axes": {**SMALL["axes"], "seed": [0]}}, out, progress=False)
    with pytest.raises(SweepFolderError, match="batch_size was 4, now 2"):
        run({**SMALL, "batch_size": 2}, out, progress=False)


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({**SMALL, "fixed": {"steps": 4}}))
    out = tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "animegen_utils.sweep", "run", str(spec), "--out", str(out),
                              "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = out / ".sweep.lock"
        deadline = time.time() + 120
        while not (lock.is_file() and f"pid {first.pid} " in lock.read_text()):
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.05)
        with pytest.raises(SweepLockedError, match=f"Another sweep is running on .*pid {first.pid}"):
            run(spec, out, progress=False)
        assert main(["run", str(spec), "--out", str(out), "--no-progress"]) == 2
    finally:
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert "12 drawn" in stdout
    assert load_results(out).num_rows == 12  # the first run's table, whole
    assert run(spec, out, progress=False).drawn == 0  # and the folder is free again


def test_load_spec_reads_relative_paths_from_the_spec_folder(tmp_path):
    (tmp_path / "in.png").write_bytes(b"")
    (tmp_path / "s.yaml").write_text("axes: {strength: [0.3, 0.6]}\nfixed: {task: img2img, image: in.png, "
                                     "prompt: 1girl}\n")
    spec = load_spec(tmp_path / "s.yaml")
    assert spec.base_dir == str(tmp_path)
    (tmp_path / "s.yaml").write_text("axes: {strength: [0.3, 1.5]}\nfixed: {task: img2img, image: in.png, "
                                     "prompt: 1girl}\n")
    with pytest.raises(SweepSpecError, match=r"strength=1.5 .* a number in \[0, 1\]"):
        load_spec(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text("axes: {strength: [0.3]}\nfixed: {task: img2img, image: missing.png, "
                                     "prompt: 1girl}\n")
    with pytest.raises(SweepSpecError, match="image file not found: 'missing.png'"):
        load_spec(tmp_path / "s.yaml")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, tokenizer):
    """A small random CLIP with a processor, saved like a downloaded one (offline scoring)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    path = tmp_path_factory.mktemp("clip")
    torch.manual_seed(0)
    config = CLIPConfig(text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77),
                        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                           num_attention_heads=2, image_size=32, patch_size=8), projection_dim=16)
    CLIPModel(config).save_pretrained(path)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def test_clip_score_is_the_cosine_of_the_image_and_its_prompt(clip_dir, tmp_path):
    import torch
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    spec = {"axes": {"emotion": ["happy", "angry"], "style": ["casual"], "seed": [0, 1]}, "fixed": {"steps": 2},
            "scorers": ["clip"], "clip_model": str(clip_dir), "batch_size": 2}
    run(spec, tmp_path / "out", progress=False)
    rows = load_results(tmp_path / "out").to_pylist()
    model, processor = CLIPModel.from_pretrained(clip_dir).eval(), CLIPProcessor.from_pretrained(clip_dir)
    for r in rows:  # one image at a time, from the PNG on disk
        with Image.open(tmp_path / "out" / r["file"]) as im:
            pixels = processor(images=im.convert("RGB"), return_tensors="pt").pixel_values
        ids = processor.tokenizer([r["prompt_text"]], padding="max_length", truncation=True,
                                  return_tensors="pt").input_ids
        with torch.no_grad():  # CLIP's definition: pooled outputs through the projections
            img = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
            txt = model.text_projection(model.text_model(input_ids=ids).pooler_output)
        expected = max(0.0, 100 * torch.nn.functional.cosine_similarity(img, txt).item())
        assert r["clip_score"] == pytest.approx(expected, abs=1e-3)
    with pytest.raises(SweepSpecError, match="scorer 'clip' needs clip_model"):
        load_spec({**spec, "clip_model": None})


# --- Explicit rows, and the evaluation's grid through the sweep (issue 25) ---------------------------------

ROWS = [{"emotion": "happy", "style": "casual", "seed": 5}, {"emotion": "sad", "style": "formal", "seed": 9}]


def test_rows_expand_to_one_row_each_with_ids_hashed_from_their_parameters():
    from animegen_utils.sweep import row_id

    rows = expand({"rows": ROWS, "fixed": {"steps": 2}, "batch_size": 2})
    resolved = [{"model": "tiny", "scheduler": "dpm++", "task": "txt2img", "steps": 2, "guidance": 7.5, **r}
                for r in ROWS]
    assert [r.params for r in rows] == resolved
    assert [r.id for r in rows] == [row_id(p) for p in resolved]
    assert len({r.batch for r in rows}) == 1  # one setting, batch of 2
    # A row is the same image as the axes' combination with the same parameters.
    as_axes = expand({"axes": {"emotion": ["happy"], "style": ["casual"], "seed": [5]}, "fixed": {"steps": 2}})
    assert as_axes[0].id == rows[0].id
    # Crossed with axes: every row for every axis value, the axes slowest.
    crossed = expand({"rows": ROWS, "axes": {"steps": [2, 3]}, "batch_size": 8})
    assert [(r.params["steps"], r.params["seed"]) for r in crossed] == [(2, 5), (2, 9), (3, 5), (3, 9)]
    assert crossed[0].id == rows[0].id and crossed[1].id == rows[1].id
    assert len({r.batch for r in crossed}) == 2  # a batch per steps value
    assert load_spec(load_spec({"rows": ROWS})).rows == ROWS  # a SweepSpec reads back as itself


@pytest.mark.parametrize("spec, words", [
    ({"rows": [{"emotion": "happy", "style": "casual", "sed": 1}]},
     ["Unknown sweep parameter 'sed' in rows[0]", "Valid choices:", "seed"]),
    ({"rows": [*ROWS, {"emotion": "joyful", "style": "casual"}]},
     ["rows[2]: emotion='joyful'", "happy, angry, sad, surprised, neutral"]),
    ({"rows": [{"prompt": "1girl", "seed": -3}]}, ["rows[0]: seed=-3", "[0, 4294967296)"]),
    ({"rows": [{"prompt": "1girl", "steps": 0}]}, ["rows[0]: steps=0", "an integer >= 1"]),
    ({"rows": []}, ["rows is empty"]),
    ({"rows": [{}]}, ["rows[0] must be a non-empty dict"]),
    ({"rows": {"prompt": "1girl"}}, ["rows must be a list of parameter dicts"]),
    ({"rows": [ROWS[0], dict(ROWS[0])]}, ["rows[1] repeats rows[0]"]),
    ({"rows": ROWS, "axes": {"seed": [0, 1]}}, ["rows[0]: seed given both in a row and as an axis or fixed"]),
    ({"rows": [{"prompt": "1girl"}, {"prompt": "1girl", "steps": 20}]}, ["manifest rows 0 and 1 are the same image"]),
    ({"rows": [{"emotion": "happy", "style": "casual", "hair_color": "pink"}]}, ["needs both hair_color and eye_color"]),
    ({"rows": [{"emotion": "happy"}]}, ["needs a prompt"]),
])
def test_a_bad_row_is_refused_before_anything_is_drawn(tmp_path, spec, words):
    assert_refused_before_drawing(tmp_path, spec, words)


@pytest.fixture(scope="module")
def tiny_pipe():
    from animegen_utils import load_pipeline

    return load_pipeline("tiny")


def test_evaluate_through_the_sweep_is_plain_generate_and_the_probe(tiny_pipe, tmp_path):
    import numpy as np
    from PIL import Image

    from animegen_utils import generate
    from animegen_utils.evaluate import (EVAL_SEED_BASE, ProbeScorer, evaluate_model, prompt_for,
                                         random_requests)
    from animegen_utils.fast.frontier import SamplerPoint, measure_adherence

    n, steps, batch = 5, 2, 2  # batches of 2, 2, 1: the last one is smaller, as in generate
    requests = random_requests(n, seed=3)
    gens = generate(tiny_pipe, [prompt_for(r) for r in requests], seed=EVAL_SEED_BASE + 3 * n, steps=steps,
                    guidance=7.5, batch_size=batch, progress=False)
    expected = ProbeScorer().accuracy([g.image for g in gens], requests)

    out = tmp_path / "eval"
    report = evaluate_model(tiny_pipe, n=n, seed=3, steps=steps, batch_size=batch, diversity_prompts=1,
                            diversity_seeds=2, out_dir=out)
    got = {k.replace("_accuracy", ""): v for k, v in report.items() if k.endswith("_accuracy")}
    assert got == {"emotion": expected["emotion"], "style": expected["style"], "hair": expected["hair_color"],
                   "eye": expected["eye_color"], "hairstyle": expected["hairstyle"],
                   "accessory": expected["accessory"]}
    assert (report["width"], report["height"]) == gens[0].image.size
    table = load_results(out).to_pylist()
    assert [r["seed"] for r in table] == [EVAL_SEED_BASE + 3 * n + i for i in range(n)]
    assert [{k: r[k] for k in requests[0]} for r in table] == requests
    for r, g in zip(table, gens):  # the same pixels, not just the same scores
        with Image.open(out / r["file"]) as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(g.image))
    # The steps-vs-adherence map measures through the same function: the same numbers.
    assert measure_adherence(SamplerPoint("dpm++", steps, 7.5), n=n, seed=3, batch_size=batch,
                             pipe=tiny_pipe) == expected


def test_evaluation_resumes_on_its_folder_and_refuses_other_batches(tiny_pipe, tmp_path):
    from animegen_utils.evaluate import score_requests

    out = tmp_path / "eval"
    first = score_requests(tiny_pipe, n=3, steps=2, batch_size=2, out_dir=out)
    assert (first.drawn, first.total) == (3, 3)
    pngs = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    again = score_requests(tiny_pipe, n=3, steps=2, batch_size=2, out_dir=out)
    assert again.drawn == 0 and again.accuracy == first.accuracy
    assert again.seconds_per_image == first.seconds_per_image  # read from the table, not timed again
    assert {p.name: p.read_bytes() for p in (out / "images").iterdir()} == pngs
    # n=4 would batch request 2 with request 3; the folder drew it alone: refused, nothing drawn.
    with pytest.raises(SweepFolderError, match="drawn in other batches"):
        score_requests(tiny_pipe, n=4, steps=2, batch_size=2, out_dir=out)
    assert len(list((out / "images").iterdir())) == 3


def test_accuracy_by_groups_in_manifest_order_and_skips_rows_without_a_reading():
    import pyarrow as pa

    from animegen_utils.sweep import accuracy_by

    table = pa.table({"scheduler": ["lcm", "lcm", "dpm++", "lcm"], "steps": [4, 4, 20, 2],
                      "probe_emotion_ok": [True, False, True, True],
                      "probe_hair_color_ok": [True, None, False, None]})
    groups = accuracy_by(table, ["scheduler", "steps"], attributes=("emotion", "hair_color"))
    assert groups == [{"scheduler": "lcm", "steps": 4, "n": 2, "emotion": 0.5, "hair_color": 1.0},
                      {"scheduler": "dpm++", "steps": 20, "n": 1, "emotion": 1.0, "hair_color": 0.0},
                      {"scheduler": "lcm", "steps": 2, "n": 1, "emotion": 1.0, "hair_color": None}]
    with pytest.raises(SweepFolderError, match="probe_style_ok.*scorers: \\[probe\\]"):
        accuracy_by(table, ["scheduler"], attributes=("style",))
