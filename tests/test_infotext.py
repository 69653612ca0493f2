"""Reading other tools' PNGs: A1111 and Forge infotext, ComfyUI's KSampler graph, LoRA tags."""

import json
import re

import pytest
from PIL import Image, PngImagePlugin

from animegen_utils import generate, load_pipeline, read_parameters, reproduce
from animegen_utils.infotext import generate_kwargs, parse_comfyui, parse_infotext, workflow_to_api
from animegen_utils.lora_tags import LoraNotFoundError, find_lora

# Written field by field in the formats A1111 (modules/processing.py create_infotext: prompt, then
# "Negative prompt: ..." when there is one, then "Key: value" pairs joined by ", ", values with commas quoted)
# and Forge (the same writer; its Version starts with "f") put in a PNG's "parameters" chunk.
SAMPLES = {
    "a1111_1.10_hires": (
        "masterpiece, best quality, 1girl, solo, (smile:1.2), <lora:mika_v2:0.8>\n"
        "Negative prompt: (worst quality:1.4), lowres, bad anatomy\n"
        "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, Size: 512x768, "
        "Model hash: 7f96a1a9ca, Model: anything-v5, Denoising strength: 0.45, Clip skip: 2, Hires upscale: 2, "
        "Hires steps: 15, Hires upscaler: Latent, Lora hashes: \"mika_v2: 0a1b2c3d4e5f\", Version: v1.10.1"),
    "a1111_1.5_old_sampler": (
        "1girl, school uniform, classroom\n"
        "Negative prompt: lowres\n"
        "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 42, Size: 512x512, Model hash: e3b0c44298, "
        "Model: counterfeitV30, ENSD: 31337, Version: v1.5.1"),
    "a1111_euler_a_no_negative": (
        "1girl, (angry:1.3), casual, hoodie\n"
        "Steps: 30, Sampler: Euler a, Schedule type: Automatic, CFG scale: 6, Seed: 7, Size: 640x448, "
        "Model: anything-v5, Variation seed: 99, Variation seed strength: 0.3, Version: v1.9.4"),
    "a1111_upscaler_model": (
        "1girl, formal, black dress\nmultiline second line\n"
        "Negative prompt: lowres\nbad hands\n"
        "Steps: 20, Sampler: UniPC, Schedule type: Automatic, CFG scale: 7, Seed: 3, Size: 512x512, "
        "Model: meinamix, Denoising strength: 0.3, Hires upscale: 1.5, Hires upscaler: 4x-UltraSharp, "
        "Face restoration: CodeFormer, Version: v1.10.1"),
    "forge_karras": (
        "score_9, 1girl, (surprised:1.1)\n"
        "Negative prompt: worst quality\n"
        "Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5, Seed: 2468, Size: 832x1216, "
        "Model hash: 9b8f6c1d2e, Model: animagine, Clip skip: 2, RNG: CPU, Module 1: sdxl_vae, "
        "Version: f2.0.1v1.10.1-previous-669-gdfdcbab6"),
    "forge_unknown_sampler": (
        "1girl, sad, tears\n"
        "Negative prompt: lowres\n"
        "Steps: 20, Sampler: DPM++ SDE, Schedule type: Beta, CFG scale: 7, Seed: 11, Size: 512x512, "
        "Model: anything-v5, Beta schedule alpha: 0.6, Beta schedule beta: 0.6, "
        "Version: f1.0.2v1.10.1-previous-313-g7ab2d4e2"),
}


def test_a1111_hires_sample():
    p = parse_infotext(SAMPLES["a1111_1.10_hires"])
    assert p["source"] == "a1111"
    assert p["prompt"] == "masterpiece, best quality, 1girl, solo, (smile:1.2), <lora:mika_v2:0.8>"
    assert p["negative"] == "(worst quality:1.4), lowres, bad anatomy"
    assert (p["steps"], p["scheduler"], p["guidance"], p["seed"]) == (28, "dpm++_karras", 7.0, 1234567890)
    assert (p["width"], p["height"], p["model"], p["clip_skip"]) == (512, 768, "anything-v5", 1)
    assert (p["hires_scale"], p["hires_steps"], p["hires_upscaler"], p["hires_strength"]) == (2.0, 15, "latent", 0.45)
    assert "strength" not in p and p["loras"] == [("mika_v2", 0.8)]
    assert p["info"] == {"Model hash": "7f96a1a9ca", "Lora hashes": "mika_v2: 0a1b2c3d4e5f", "Version": "v1.10.1"}
    assert p["unknown"] == {}


def test_a1111_old_karras_sampler_and_ensd_reported():
    p = parse_infotext(SAMPLES["a1111_1.5_old_sampler"])
    assert p["scheduler"] == "dpm++_karras" and p["guidance"] == 7.5 and p["clip_skip"] is None
    assert p["unknown"] == {"ENSD": "31337"}  # eta noise seed delta: not something the kit does


def test_a1111_without_negative_prompt_and_variation_seed():
    p = parse_infotext(SAMPLES["a1111_euler_a_no_negative"])
    assert p["prompt"] == "1girl, (angry:1.3), casual, hoodie" and p["negative"] == ""
    assert p["scheduler"] == "euler_a" and (p["width"], p["height"]) == (640, 448)
    assert p["unknown"] == {"Variation seed": "99", "Variation seed strength": "0.3"}


def test_a1111_multiline_prompts_and_upscaler_model():
    p = parse_infotext(SAMPLES["a1111_upscaler_model"])
    assert p["prompt"] == "1girl, formal, black dress\nmultiline second line"
    assert p["negative"] == "lowres\nbad hands"
    assert p["scheduler"] == "unipc" and p["hires_upscaler"] == "4x-UltraSharp" and p["hires_scale"] == 1.5
    assert p["hires_strength"] == 0.3 and "hires_steps" not in p  # not written: the first pass's steps
    assert p["unknown"] == {"Face restoration": "CodeFormer"}


def test_forge_sample():
    p = parse_infotext(SAMPLES["forge_karras"])
    assert p["source"] == "forge" and p["scheduler"] == "dpm++_karras" and p["clip_skip"] == 1
    assert (p["width"], p["height"], p["guidance"], p["seed"]) == (832, 1216, 5.0, 2468)
    assert p["unknown"] == {"RNG": "CPU"} and p["info"]["Module 1"] == "sdxl_vae"


def test_forge_unknown_sampler_is_reported_and_reproduce_asks_for_a_scheduler():
    p = parse_infotext(SAMPLES["forge_unknown_sampler"])
    assert p["scheduler"] is None
    assert p["unknown"] == {"Sampler": "DPM++ SDE", "Beta schedule alpha": "0.6", "Beta schedule beta": "0.6"}
    with pytest.raises(ValueError, match="no scheduler for forge sampler 'DPM\\+\\+ SDE'; pass scheduler="):
        generate_kwargs(p)
    assert generate_kwargs(p, scheduler="dpm++")["scheduler"] == "dpm++"


def test_every_sample_keeps_every_field():
    """Nothing dropped silently: every key of the parameters line is a kit parameter, info or unknown."""
    used = {"Steps": "steps", "Sampler": "scheduler", "CFG scale": "guidance", "Seed": "seed", "Size": "width",
            "Model": "model", "Clip skip": "clip_skip", "Hires upscale": "hires_scale", "Hires steps": "hires_steps",
            "Hires upscaler": "hires_upscaler", "Denoising strength": "hires_strength"}
    for name, text in SAMPLES.items():
        p = parse_infotext(text)
        keys = re.findall(r"(?:^|, )([A-Z][\w \-/]+): ", text.splitlines()[-1])
        assert len(keys) >= 6, name
        for key in keys:
            if key == "Schedule type" and "Schedule type" not in p["unknown"]:
                continue  # folded into scheduler
            assert (key in p["info"] or key in p["unknown"] or used.get(key) in p), (name, key)


def test_bad_infotext_values_raise():
    with pytest.raises(ValueError, match="Steps: 'twenty' is not a int"):
        parse_infotext("1girl\nSteps: twenty, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64")
    with pytest.raises(ValueError, match="Size: '64' is not WIDTHxHEIGHT"):
        parse_infotext("1girl\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64")


# ComfyUI's default txt2img graph with a LoRA and CLIPSetLastLayer, in its API ("prompt" chunk) form.
COMFY = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 8566257, "steps": 20, "cfg": 8.0, "sampler_name": "dpmpp_2m",
                                               "scheduler": "karras", "denoise": 1.0, "model": ["10", 0],
                                               "positive": ["6", 0], "negative": ["7", 0],
                                               "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "anything-v5.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 768, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "1girl, (smile:1.2)", "clip": ["11", 0]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "lowres, bad hands", "clip": ["11", 0]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    "10": {"class_type": "LoraLoader", "inputs": {"lora_name": "mika_v2.safetensors", "strength_model": 0.8,
                                                  "strength_clip": 0.8, "model": ["4", 0], "clip": ["4", 1]}},
    "11": {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": -2, "clip": ["10", 1]}},
}


def test_comfyui_api_graph():
    p = parse_comfyui(COMFY)
    assert p["source"] == "comfyui" and p["prompt"] == "1girl, (smile:1.2)" and p["negative"] == "lowres, bad hands"
    assert (p["seed"], p["steps"], p["guidance"], p["scheduler"]) == (8566257, 20, 8.0, "dpm++_karras")
    assert (p["width"], p["height"], p["clip_skip"], p["model"]) == (512, 768, 1, "anything-v5.safetensors")
    assert p["loras"] == [("mika_v2", 0.8)] and p["unknown"] == {}
    assert generate_kwargs(p)["prompt"] == "1girl, (smile:1.2) <lora:mika_v2:0.8>"


def test_comfyui_ui_workflow_reads_the_same():
    """The UI form ('workflow' chunk): widgets_values in ComfyUI's order, links as [id, from, slot, to, slot, type]."""
    links, nodes, link_id = [], [], 0
    for node_id, node in COMFY.items():
        inputs = []
        for name, value in node["inputs"].items():
            if isinstance(value, list):
                link_id += 1
                links.append([link_id, int(value[0]), value[1], int(node_id), len(inputs), "X"])
                inputs.append({"name": name, "link": link_id})
        order = {"KSampler": ["seed", None, "steps", "cfg", "sampler_name", "scheduler", "denoise"],
                 "CLIPTextEncode": ["text"], "EmptyLatentImage": ["width", "height", "batch_size"],
                 "CheckpointLoaderSimple": ["ckpt_name"], "CLIPSetLastLayer": ["stop_at_clip_layer"],
                 "LoraLoader": ["lora_name", "strength_model", "strength_clip"]}.get(node["class_type"], [])
        widgets = ["randomize" if k is None else node["inputs"][k] for k in order]
        nodes.append({"id": int(node_id), "type": node["class_type"], "inputs": inputs, "widgets_values": widgets})
    workflow = {"nodes": nodes, "links": links}
    assert workflow_to_api(workflow)["3"]["inputs"]["positive"] == ["6", 0]
    assert parse_comfyui(workflow) == parse_comfyui(COMFY)


def test_comfyui_graph_that_is_not_plain_raises():
    graph = json.loads(json.dumps(COMFY))
    graph["3"]["class_type"] = "KSamplerAdvanced"
    with pytest.raises(ValueError, match=r"0 KSampler nodes \(sampler nodes: \['KSamplerAdvanced'\]\)"):
        parse_comfyui(graph)
    graph = json.loads(json.dumps(COMFY))
    graph["5"] = {"class_type": "VAEEncode", "inputs": {}}
    with pytest.raises(ValueError, match="latent_image comes from VAEEncode"):
        parse_comfyui(graph)


def _png(path, **chunks):
    info = PngImagePlugin.PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    Image.new("RGB", (64, 64), "white").save(path, pnginfo=info)
    return path


@pytest.fixture(scope="module")
def tiny():
    return load_pipeline()


def test_read_parameters_and_reproduce_an_a1111_png(tiny, tmp_path):
    text = ("1girl, solo, (angry:1.2), casual, hoodie\nNegative prompt: lowres\n"
            "Steps: 3, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 77, Size: 128x128, "
            "Model hash: abc, Model: tiny, ENSD: 31337, Version: v1.10.1")
    path = _png(tmp_path / "a1111.png", parameters=text)
    p = read_parameters(path)
    assert p["source"] == "a1111" and p["scheduler"] == "euler_a" and p["unknown"] == {"ENSD": "31337"}
    with pytest.raises(ValueError, match="pass pipe=load_pipeline"):
        reproduce(path)
    with pytest.warns(UserWarning, match="does not use these a1111 fields: ENSD: 31337"):
        g = reproduce(path, pipe=tiny)
    assert (g.params["scheduler"], g.params["steps"], g.params["seed"], g.params["guidance"]) == ("euler_a", 3, 77, 7.0)
    assert g.params["prompt"] == "1girl, solo, (angry:1.2), casual, hoodie" and g.params["negative"] == "lowres"
    assert g.max_pixel_diff is None and g.image.size == (128, 128)
    assert tiny.animegen_info.scheduler == "dpm++"  # the caller's pipeline keeps its own sampler
    [same] = generate(load_pipeline(scheduler="euler_a"), "1girl, solo, (angry:1.2), casual, hoodie", seed=77,
                      steps=3, guidance=7.0, negative="lowres", progress=False)
    assert same.image.tobytes() == g.image.tobytes()


def test_read_parameters_of_a_comfyui_png(tmp_path):
    path = _png(tmp_path / "comfy.png", prompt=json.dumps(COMFY), workflow=json.dumps({"nodes": [], "links": []}))
    assert read_parameters(path) == parse_comfyui(COMFY)


def test_kit_png_still_reads_back_exactly(tiny, tmp_path):
    [g] = generate(tiny, "1girl, smile", seed=2, steps=1, progress=False)
    path = g.save(tmp_path / "kit.png")
    assert read_parameters(path) == g.params and "source" not in g.params
    assert reproduce(path, pipe=tiny).max_pixel_diff == 0


def test_a_png_of_weights_since_replaced_says_the_model_changed(tiny, tmp_path):
    from animegen_utils.generation import save_image

    [g] = generate(tiny, "1girl, smile", seed=2, steps=1, progress=False)
    assert g.params["model_hash"] == tiny.animegen_info.model_hash and len(g.params["model_hash"]) == 10
    assert f"Model hash: {g.params['model_hash']}, Model: tiny" in Image.open(g.save(tmp_path / "now.png")).info["parameters"]
    assert reproduce(tmp_path / "now.png", pipe=tiny).model_changed is False
    # The same picture as recorded by the weights 'tiny' had before a retraining.
    old = save_image(g.image, tmp_path / "old.png", {**g.params, "model_hash": "0123456789"})
    with pytest.warns(UserWarning, match="weights 0123456789; the loaded 'tiny' has weights .* model has changed"):
        again = reproduce(old, pipe=tiny)
    assert again.model_changed is True and again.max_pixel_diff == 0
    before_hashes = {k: v for k, v in g.params.items() if k != "model_hash"}  # PNGs from before the hash was kept
    assert reproduce(save_image(g.image, tmp_path / "older.png", before_hashes), pipe=tiny).model_changed is None


def test_png_without_parameters_says_so(tmp_path):
    with pytest.raises(ValueError, match="no generation parameters"):
        read_parameters(_png(tmp_path / "plain.png"))


def test_lora_tag_without_lora_dirs_or_file_names_the_lora(tiny, tmp_path):
    with pytest.raises(LoraNotFoundError, match="asks for LoRA 'mika_v2'.*no lora_dirs= was given"):
        generate(tiny, "1girl, <lora:mika_v2:0.8>", seed=0, steps=1, progress=False)
    with pytest.raises(LoraNotFoundError, match="LoRA 'mika_v2' not found: looked for mika_v2.safetensors"):
        generate(tiny, "1girl, <lora:mika_v2:0.8>", seed=0, steps=1, progress=False, lora_dirs=[tmp_path])
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mika_v2.safetensors").write_bytes(b"")
    assert find_lora("mika_v2", tmp_path) == tmp_path / "sub" / "mika_v2.safetensors"


def test_lora_tag_loads_the_lora_for_one_call(tmp_path, fresh_pipeline_cache):
    """A real LoRA file (random weights, diffusers keys) named in the prompt changes the picture, then goes away."""
    import torch
    from peft import LoraConfig, get_peft_model_state_dict
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    from animegen_utils.lora import active_adapters

    pipe = load_pipeline()
    unet = pipe.unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_k", "to_q", "to_v", "to_out.0"],
                                init_lora_weights=False), adapter_name="tmp")
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name="tmp"))
    unet.delete_adapters("tmp")
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=state, weight_name="mika.safetensors")

    [plain] = generate(pipe, "1girl, smile", seed=1, steps=2, progress=False)
    # The tag is removed before encoding, so the text CLIP sees is the same as the plain prompt's.
    [tagged] = generate(pipe, "1girl, <lora:mika:1.0>smile", seed=1, steps=2, progress=False, lora_dirs=[tmp_path])
    assert tagged.params["prompt"] == "1girl, <lora:mika:1.0>smile"
    assert tagged.image.tobytes() != plain.image.tobytes()
    assert active_adapters(pipe) == {}  # gone after the call
    [again] = generate(pipe, "1girl, smile", seed=1, steps=2, progress=False)
    assert again.image.tobytes() == plain.image.tobytes()
