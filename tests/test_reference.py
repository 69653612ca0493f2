"""Reference-image adapters (IP-Adapter) per pipeline on a shared UNet (animegen_utils.reference), on the
small random-weight model: loading, isolation in both orders, embeddings reuse, PNG records, inputs, training."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from animegen_utils import ModelNotFoundError, clear_pipeline_cache, generate, load_pipeline
from animegen_utils.generation import read_parameters, reproduce
from animegen_utils.infotext import parse_infotext
from animegen_utils.reference import (load_reference_adapter, reference_adapter, reference_embeds, reference_image,
                                      reference_sha256, save_ip_adapter, set_reference_scale, unload_reference_adapter)
from animegen_utils.reference.state import BUILTIN_IP_ADAPTERS
from animegen_utils.reference.train import (IPAdapterTrainConfig, adapter_loss, adapter_parameters,
                                            attach_trainable, make_pair, new_image_encoder, train)
from animegen_utils.reference.weights import new_ip_processors
from animegen_utils.toyworld import CharacterAttributes, render_character

PROMPT = "1girl, smile"
DRAW = dict(seed=0, steps=2, guidance=5.0, progress=False)
SMALL_ENCODER = dict(encoder_hidden=32, encoder_layers=2, encoder_heads=2, encoder_image_size=32, encoder_patch=8,
                     projection_dim=32)

pytestmark = pytest.mark.usefixtures("fresh_pipeline_cache")


def make_adapter(folder, model_dir, seed):
    """A random plain IP-Adapter for the model in ``model_dir``, in h94's layout, with a small image encoder."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.embeddings import ImageProjection

    unet = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet")
    torch.manual_seed(seed)
    encoder = new_image_encoder(IPAdapterTrainConfig(**SMALL_ENCODER))
    projection = ImageProjection(cross_attention_dim=unet.config.cross_attention_dim, image_embed_dim=32,
                                 num_image_text_embeds=4)
    save_ip_adapter(projection, new_ip_processors(unet, 4), unet, folder, image_encoder=encoder)
    return folder, projection


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, dummy_model_dir):
    root = tmp_path_factory.mktemp("ip-adapters")
    return [make_adapter(root / f"ipa{i}", dummy_model_dir, seed=i) for i in (1, 2)]


@pytest.fixture(scope="module")
def ref():
    return render_character(CharacterAttributes("sad", "formal", "blue", "red", "twintails", "glasses"), seed=3,
                            size=64).image


def pixels(g):
    return np.asarray(g.image, dtype=np.int16)


def draw(pipe, **kw):
    [g] = generate(pipe, PROMPT, **{**DRAW, **kw})
    return g


def test_loads_with_load_pipeline_and_the_unet_stays_plain(dummy_model_dir, adapters, ref):
    folder, projection = adapters[0]
    pipe = load_pipeline(str(dummy_model_dir), ip_adapter=str(folder))
    entry = reference_adapter(pipe)
    assert entry.name == "ip_adapter" and entry.weight_name == "ip_adapter.safetensors"
    # diffusers' loader read back exactly the weights written in h94's layout
    loaded = entry.projection.image_projection_layers[0].state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in projection.state_dict().items())
    assert len(entry.processors) == sum(n.endswith("attn2.processor") for n in pipe.unet.attn_processors)
    # the shared UNet keeps its own processors between calls, also after a call with a reference
    for _ in range(2):
        assert pipe.unet.encoder_hid_proj is None and pipe.unet.config.encoder_hid_dim_type is None
        assert not any("IPAdapter" in type(p).__name__ for p in pipe.unet.attn_processors.values())
        draw(pipe, reference=ref)
    assert getattr(pipe, "image_encoder", None) is None  # the pipeline's components are untouched


@pytest.mark.parametrize("adapter_first", [False, True])
def test_another_pipelines_images_do_not_change(dummy_model_dir, adapters, ref, adapter_first):
    plain_alone = pixels(draw(load_pipeline(str(dummy_model_dir))))  # unshared weights, never saw an adapter
    clear_pipeline_cache()
    pipe, plain = load_pipeline(str(dummy_model_dir)), load_pipeline(str(dummy_model_dir))
    assert pipe.unet is plain.unet
    if adapter_first:
        load_reference_adapter(pipe, adapters[0][0], scale=1.0)
        with_ref = pixels(draw(pipe, reference=ref))
        before = pixels(draw(plain))
    else:
        before = pixels(draw(plain))
        load_reference_adapter(pipe, adapters[0][0], scale=1.0)
        with_ref = pixels(draw(pipe, reference=ref))
    after = pixels(draw(plain))
    assert np.array_equal(before, plain_alone) and np.array_equal(after, plain_alone)
    assert np.abs(with_ref - plain_alone).max() > 10  # the adapter does change its own pipeline's picture
    assert np.array_equal(pixels(draw(pipe)), plain_alone)  # no reference=: the plain model
    with pytest.raises(ValueError, match="load_reference_adapter"):
        draw(plain, reference=ref)


def test_two_pipelines_with_two_adapters_keep_theirs(dummy_model_dir, adapters, ref):
    a, b = load_pipeline(str(dummy_model_dir)), load_pipeline(str(dummy_model_dir))
    load_reference_adapter(a, adapters[0][0], adapter_name="one", scale=1.0)
    first = pixels(draw(a, reference=ref))
    load_reference_adapter(b, adapters[1][0], adapter_name="two", scale=1.0)
    other = pixels(draw(b, reference=ref))
    assert not np.array_equal(first, other)
    assert np.array_equal(pixels(draw(a, reference=ref)), first)
    with pytest.raises(ValueError, match="already used"):
        load_reference_adapter(b, adapters[1][0], adapter_name="one")
    unload_reference_adapter(a)
    assert reference_adapter(a) is None and reference_adapter(b).name == "two"


def test_embeddings_are_computed_once_per_reference(dummy_model_dir, adapters, ref):
    pipe = load_pipeline(str(dummy_model_dir), ip_adapter=str(adapters[0][0]))
    calls = []
    hook = reference_adapter(pipe).image_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        generate(pipe, [PROMPT, "1girl, angry"], seed=[1, 2], steps=2, progress=False, reference=ref)  # a grid
        generate(pipe, PROMPT, seed=[3, 4, 5], steps=2, guidance=1.0, progress=False, reference=ref)  # no CFG
        generate(pipe, PROMPT, seed=0, steps=2, progress=False, reference=ref.copy())  # same pixels, other object
        assert len(calls) == 1  # plain IP-Adapter: the unconditional half is the zero embedding
        generate(pipe, PROMPT, seed=0, steps=2, progress=False, reference=ref.transpose(Image.FLIP_LEFT_RIGHT))
        assert len(calls) == 2
    finally:
        hook.remove()
    [embeds] = reference_embeds(pipe, ref)
    assert embeds.shape == (2, 1, 32)  # unconditional half first, as ip_adapter_image_embeds takes it
    assert torch.equal(embeds[0], torch.zeros_like(embeds[0]))


def test_png_records_the_reference_and_reproduce_checks_it(dummy_model_dir, adapters, ref, tmp_path):
    pipe = load_pipeline(str(dummy_model_dir), ip_adapter=str(adapters[0][0]))
    set_reference_scale(pipe, 0.8)
    g = draw(pipe, reference=ref)
    assert g.params["reference_sha256"] == reference_sha256(ref) and g.params["reference_scale"] == 0.8
    assert g.params["reference_adapter"]["sha256"] == reference_adapter(pipe).sha256
    path = g.save(tmp_path / "ref.png")
    p = read_parameters(path)
    assert p["reference_sha256"] == g.params["reference_sha256"] and p["reference_scale"] == 0.8
    with Image.open(path) as im:
        text = im.info["parameters"]
    assert f"Reference hash: {reference_sha256(ref)}" in text and "Reference scale: 0.8" in text
    a1111 = parse_infotext(text)
    assert a1111["reference_sha256"] == reference_sha256(ref) and a1111["reference_scale"] == 0.8
    assert "Reference hash" not in a1111["unknown"]
    ref.save(tmp_path / "ref_input.png")
    clear_pipeline_cache()
    again = reproduce(path, reference=tmp_path / "ref_input.png")  # loads the recorded adapter itself
    assert again.max_pixel_diff == 0 and again.params["reference_scale"] == 0.8
    with pytest.raises(ValueError, match="pass reference="):
        reproduce(path)
    with pytest.raises(ValueError, match="not the picture"):
        reproduce(path, reference=ref.rotate(90))
    plain = draw(load_pipeline(str(dummy_model_dir))).save(tmp_path / "plain.png")
    with pytest.raises(ValueError, match="without a reference"):
        reproduce(plain, reference=ref)


def test_reference_scale_changes_the_picture_and_is_checked(dummy_model_dir, adapters, ref):
    pipe = load_pipeline(str(dummy_model_dir), ip_adapter=str(adapters[0][0]))
    weak, strong = pixels(draw(pipe, reference=ref, reference_scale=0.2)), pixels(draw(pipe, reference=ref, reference_scale=1.5))
    assert not np.array_equal(weak, strong)
    for bad in (-1, "high", True, 11):
        with pytest.raises(ValueError, match="reference_scale must be"):
            draw(pipe, reference=ref, reference_scale=bad)
    with pytest.raises(ValueError, match="no reference was given"):
        draw(pipe, reference_scale=0.5)
    with pytest.raises(ValueError, match="reference=image"):
        draw(pipe, ip_adapter_image=ref)


def test_any_picture_mode_and_size_is_accepted_and_a_non_image_is_a_clear_error(dummy_model_dir, adapters, ref, tmp_path):
    pipe = load_pipeline(str(dummy_model_dir), ip_adapter=str(adapters[0][0]))
    rgba = ref.convert("RGBA")
    rgba.putalpha(128)
    big = ref.resize((200, 150))
    grey = ref.convert("L")
    ref.save(tmp_path / "ref.jpg")
    drawn = {name: pixels(draw(pipe, reference=picture))
             for name, picture in {"rgba": rgba, "big": big, "grey": grey, "jpeg": tmp_path / "ref.jpg",
                                   "str path": str(tmp_path / "ref.jpg"), "palette": ref.convert("P")}.items()}
    assert np.array_equal(drawn["jpeg"], drawn["str path"])
    assert reference_image(rgba).mode == "RGB" and reference_image(grey).mode == "RGB"
    assert reference_image(Image.new("RGBA", (8, 8), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    (tmp_path / "notes.txt").write_text("not a picture")
    with pytest.raises(ValueError, match="PIL.Image.Image"):
        draw(pipe, reference=tmp_path / "notes.txt")
    with pytest.raises(TypeError, match="PIL.Image.Image"):
        draw(pipe, reference=np.zeros((8, 8, 3)))
    with pytest.raises(FileNotFoundError, match="not found"):
        draw(pipe, reference=tmp_path / "missing.png")


def test_hires_pass_uses_the_reference_too(dummy_model_dir, adapters, ref):
    pipe = load_pipeline(str(dummy_model_dir), ip_adapter=str(adapters[0][0]))
    plain = pixels(draw(pipe, hires_scale=1.5, hires_steps=2))
    with_ref = pixels(draw(pipe, reference=ref, hires_scale=1.5, hires_steps=2))
    assert with_ref.shape == plain.shape and np.abs(with_ref - plain).max() > 10
    assert pipe.unet.encoder_hid_proj is None


def test_builtin_adapter_ships_and_its_absence_says_how_to_train_it(tmp_path, monkeypatch):
    folder = BUILTIN_IP_ADAPTERS["tiny"]
    assert (folder / "ip_adapter.safetensors").is_file() and (folder / "README.md").is_file()
    pipe = load_pipeline(ip_adapter=True)
    assert reference_adapter(pipe).default and reference_adapter(pipe).source == str(folder)
    monkeypatch.setitem(BUILTIN_IP_ADAPTERS, "tiny", tmp_path / "not_trained")
    with pytest.raises(ModelNotFoundError, match="python -m animegen_utils.reference train"):
        load_pipeline(ip_adapter=True)


def test_missing_adapter_folder_is_named(dummy_model_dir, tmp_path):
    with pytest.raises(ModelNotFoundError, match="No IP-Adapter"):
        load_pipeline(str(dummy_model_dir), ip_adapter=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="weight_name"):
        load_reference_adapter(load_pipeline(str(dummy_model_dir)), tmp_path / "empty")


# ------------------------------------------------------------------------------------------ training

def test_training_pairs_share_identity_not_emotion_and_captions_have_no_identity_words():
    import random

    from animegen_utils.prompts import ATTRIBUTES

    rng = random.Random(0)
    cfg = IPAdapterTrainConfig()
    identity_words = {f"{h} hair" for h in ATTRIBUTES["hair_color"]} | {f"{e} eyes" for e in ATTRIBUTES["eye_color"]} \
        | set(ATTRIBUTES["hairstyle"]) | (set(ATTRIBUTES["accessory"]) - {"none"})
    for _ in range(20):
        reference, target, caption, ident = make_pair(rng, cfg, size=32)
        assert reference.size == target.size == (32, 32)
        assert not np.array_equal(np.asarray(reference), np.asarray(target))
        assert not identity_words & set(caption.split(", ")), caption
        assert set(ident) == {"hair_color", "eye_color", "hairstyle", "accessory"}


def test_a_training_step_moves_only_the_adapters_weights(dummy_model_dir):
    from animegen_utils.reference.train import _base, _processor

    cfg = IPAdapterTrainConfig(batch=2, **SMALL_ENCODER)
    pipe = _base(dummy_model_dir)
    encoder = new_image_encoder(cfg).requires_grad_(False).eval()
    frozen = {f"{part}.{k}": v.clone() for part, model in (("unet", pipe.unet), ("vae", pipe.vae),
                                                           ("text", pipe.text_encoder), ("encoder", encoder))
              for k, v in model.state_dict().items()}
    projection, processors = attach_trainable(pipe.unet, cfg)
    params = adapter_parameters(projection, processors)
    start = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-2)
    for step in range(2):
        opt.zero_grad()
        adapter_loss(pipe, encoder, _processor(cfg), step, cfg, size=64).backward()
        opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(start, params))  # every adapter tensor learned
    now = {f"{part}.{k}": v for part, model in (("unet", pipe.unet), ("vae", pipe.vae), ("text", pipe.text_encoder),
                                                ("encoder", encoder)) for k, v in model.state_dict().items()}
    assert all(torch.equal(now[k], v) for k, v in frozen.items())  # the base (and the encoder) did not move
    trainable = {id(p) for p in params}
    others = [p for m in (pipe.unet, pipe.vae, pipe.text_encoder, encoder) for p in m.parameters() if id(p) not in trainable]
    assert all(p.grad is None for p in others)


def test_train_writes_a_loadable_adapter_and_resumes(dummy_model_dir, tmp_path, ref):
    cfg = dict(encoder_steps=2, steps=2, batch=2, encoder_batch=4, checkpoint_every=1, log_every=1, **SMALL_ENCODER)
    out = train(IPAdapterTrainConfig(**cfg), tmp_path / "out", tmp_path / "work", dummy_model_dir, progress=False)
    assert (out / "ip_adapter.safetensors").is_file() and (out / "image_encoder" / "config.json").is_file()
    assert json.loads((out / "config.json").read_text())["default_scale"] == 1.0
    assert "## Training" in (out / "README.md").read_text()  # the model card
    meta = json.loads((out / "training.json").read_text())
    assert meta["config"]["steps"] == 2 and meta["base_model_hash"]
    train(IPAdapterTrainConfig(**{**cfg, "steps": 3}), tmp_path / "out", tmp_path / "work", dummy_model_dir,
          progress=False)
    log = [json.loads(line) for line in (tmp_path / "work" / "train_log.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in log] == [("encoder", 1), ("encoder", 2), ("adapter", 1), ("adapter", 2),
                                                     ("adapter", 3)]  # resumed: nothing ran twice
    pipe = load_pipeline(str(dummy_model_dir), ip_adapter=str(out))
    assert reference_adapter(pipe).default_scale == 1.0
    assert draw(pipe, reference=ref).params["reference_scale"] == 1.0


def test_evaluation_reads_identity_and_emotion_off_the_pictures(dummy_model_dir, adapters):
    from animegen_utils.evaluate.reference import BARS, evaluate_reference, reference_requests

    cases = reference_requests(4, seed=1, size=64)
    assert all(c["reference"].size == (64, 64) for c in cases)
    pipe = load_pipeline(str(dummy_model_dir), ip_adapter=str(adapters[0][0]))
    report = evaluate_reference(pipe, n=2, steps=2, baseline=True)
    assert set(report["identity_kept"]) == {"hair_color", "eye_color", "hairstyle", "accessory"}
    assert all(0 <= v <= 1 for v in [*report["identity_kept"].values(), report["emotion_hit"], report["style_hit"]])
    assert set(report["baseline"]) == {"identity_kept", "emotion_hit", "style_hit"}
    assert report["bars_met"] == (all(report["identity_kept"][k] >= BARS[k] for k in report["identity_kept"])
                                  and report["emotion_hit"] >= BARS["emotion"])
