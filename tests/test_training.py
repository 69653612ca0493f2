"""A smoke run of the real training code: a few steps on a few images, then resume."""

import json

import numpy as np

from animegen_utils import generate, load_pipeline
from animegen_utils.toyworld.train import TrainConfig, train


def test_training_smoke_run_saves_a_loadable_pipeline_and_resumes(tmp_path):
    out, work = tmp_path / "model", tmp_path / "work"
    cfg = TrainConfig(n_images=24, vae_steps=3, vae_batch=4, decoder_steps=2, unet_steps=4, batch=4, warmup=1,
                      checkpoint_every=2, log_every=1)
    train(cfg, out=out, work=work, progress=False)

    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (out / sub).is_dir()
    assert (out / "tokenizer" / "vocab.json").exists() and (out / "tokenizer" / "merges.txt").exists()
    assert list((out / "unet").glob("*.safetensors"))
    meta = json.loads((out / "training.json").read_text())
    assert meta["config"]["unet_steps"] == 4 and meta["git_revision"]
    assert (out / "loss_curves.png").exists()

    pipe = load_pipeline(str(out))
    [g] = generate(pipe, "1girl, smile", seed=0, steps=2, progress=False)
    assert np.asarray(g.image).shape == (64, 64, 3)

    # Resume: a longer run continues from the step-4 checkpoint instead of restarting.
    train(TrainConfig(**{**cfg.__dict__, "unet_steps": 6}), out=out, work=work, progress=False)
    unet_steps = [r["step"] for r in map(json.loads, (work / "train_log.jsonl").read_text().splitlines())
                  if r["stage"] == "unet"]
    assert unet_steps == [1, 2, 3, 4, 5, 6]


def test_training_is_reproducible(tmp_path):
    cfg = TrainConfig(n_images=16, vae_steps=2, vae_batch=4, decoder_steps=2, unet_steps=2, batch=4, warmup=1,
                      log_every=1)
    runs = []
    for run in ("a", "b"):
        train(cfg, out=tmp_path / run / "model", work=tmp_path / run / "work", progress=False)
        log = (tmp_path / run / "work" / "train_log.jsonl").read_text().splitlines()
        runs.append([(r["stage"], r["step"], r["loss"]) for r in map(json.loads, log)])
    assert len(runs[0]) == 6 and runs[0] == runs[1]
