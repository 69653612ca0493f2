"""The real SD1.5 reference path: h94's plus-face layout (``models/ip-adapter-plus-face_sd15.safetensors``
and ``models/image_encoder``, a ViT-H/14-shaped CLIP vision encoder) on SD1.5's architecture, offline.

The adapter's weights are random but plus-face-shaped (a 4-layer Resampler from 1280-wide ViT-H hidden
states to 16 tokens of 768, decoupled cross-attention on all 16 SD1.5 cross-attention layers); the
encoder keeps ViT-H/14's widths (1280 hidden, 1024 projection, 16 heads, 14-px patches at 224) with 2 of
its 32 layers, so the test stays cheap. 64 px, 2 steps."""

import numpy as np
import pytest
import torch

from animegen_utils import ModelNotFoundError, generate, load_pipeline
from animegen_utils.reference import (SD15_IP_ADAPTER, default_reference_adapter, reference_adapter,
                                      reference_embeds, save_ip_adapter)
from animegen_utils.reference.weights import new_ip_processors
from animegen_utils.toyworld import CharacterAttributes, render_character

WEIGHT = "ip-adapter-plus-face_sd15.safetensors"
VIT_H = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=16, image_size=224, patch_size=14,
             projection_dim=1024, num_hidden_layers=2, hidden_act="gelu", layer_norm_eps=1e-5)
DRAW = dict(seed=0, steps=2, height=64, width=64, guidance=5.0, progress=False)


@pytest.fixture(scope="module")
def plus_face_repo(tmp_path_factory, sd15_model_dir):
    """A local folder laid out like h94/IP-Adapter: models/<plus-face weights> and models/image_encoder."""
    from diffusers import UNet2DConditionModel
    from diffusers.models.embeddings import IPAdapterPlusImageProjection
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    root = tmp_path_factory.mktemp("h94-ip-adapter")
    unet = UNet2DConditionModel.from_pretrained(sd15_model_dir, subfolder="unet")
    torch.manual_seed(0)
    projection = IPAdapterPlusImageProjection(embed_dims=1280, output_dims=768, hidden_dims=768, heads=12,
                                              num_queries=16)
    processors = new_ip_processors(unet, num_tokens=16, init_from_unet=False)
    save_ip_adapter(projection, processors, unet, root / "models", weight_name=WEIGHT,
                    image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_H)))
    expected = {"projection": projection.state_dict(), "processors": {n: p.state_dict() for n, p in processors.items()}}
    del unet
    return root, expected


@pytest.fixture(scope="module")
def ref():
    return render_character(CharacterAttributes("happy", "casual", "pink", "green"), seed=1, size=128).image


def test_plus_face_builds_the_right_components(sd15_model_dir, plus_face_repo, fresh_pipeline_cache):
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    root, expected = plus_face_repo
    pipe = load_pipeline(str(sd15_model_dir), ip_adapter={"source": str(root), "subfolder": "models",
                                                          "weight_name": WEIGHT})
    entry = reference_adapter(pipe)
    assert entry.name == "ip-adapter-plus-face_sd15" and entry.image_encoder_folder == "image_encoder"
    [layer] = entry.projection.image_projection_layers
    assert isinstance(layer, IPAdapterPlusImageProjection) and layer.latents.shape == (1, 16, 768)
    # h94's names went through diffusers' own converter and came back as the tensors written
    state = layer.state_dict()
    assert state.keys() == expected["projection"].keys()
    assert all(torch.equal(state[k], v) for k, v in expected["projection"].items())
    assert len(entry.processors) == 16  # SD1.5's cross-attention layers
    for name, proc in entry.processors.items():
        assert isinstance(proc, IPAdapterAttnProcessor2_0) and list(proc.num_tokens) == [16]
        assert all(torch.equal(proc.state_dict()[k], v) for k, v in expected["processors"][name].items())
    enc = entry.image_encoder
    assert type(enc).__name__ == "CLIPVisionModelWithProjection"
    assert (enc.config.hidden_size, enc.config.projection_dim, enc.config.patch_size) == (1280, 1024, 14)
    assert entry.feature_extractor.crop_size == {"height": 224, "width": 224}
    assert pipe.unet.encoder_hid_proj is None  # kept aside until a call with reference= draws


def test_plus_face_draws_only_for_its_pipeline(sd15_model_dir, plus_face_repo, ref, fresh_pipeline_cache):
    root, _ = plus_face_repo
    plain = load_pipeline(str(sd15_model_dir))
    before = np.asarray(generate(plain, "1girl", **DRAW)[0].image, dtype=np.int16)
    pipe = load_pipeline(str(sd15_model_dir), ip_adapter={"source": str(root), "weight_name": WEIGHT,
                                                          "subfolder": "models", "scale": 1.0})
    assert pipe.unet is plain.unet
    [embeds] = reference_embeds(pipe, ref.convert("RGBA"))
    assert embeds.shape == (2, 1, 257, 1280)  # penultimate ViT-H hidden states: 16x16 patches + CLS
    [g] = generate(pipe, "1girl", reference=ref, **DRAW)
    assert g.params["reference_adapter"]["weight_name"] == WEIGHT and g.params["reference_scale"] == 1.0
    after = np.asarray(generate(plain, "1girl", **DRAW)[0].image, dtype=np.int16)
    assert np.array_equal(before, after)


def test_sd15_default_is_h94_plus_face_and_offline_says_how_to_get_it(sd15_model_dir, fresh_pipeline_cache):
    assert default_reference_adapter(str(sd15_model_dir)) == SD15_IP_ADAPTER
    assert SD15_IP_ADAPTER["weight_name"] == WEIGHT and SD15_IP_ADAPTER["subfolder"] == "models"
    with pytest.raises(ModelNotFoundError, match="hf download h94/IP-Adapter"):
        load_pipeline(str(sd15_model_dir), ip_adapter=True)
