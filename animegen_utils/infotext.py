"""Reading other tools' PNGs: A1111/Forge infotext and ComfyUI's plain KSampler graph.

>>> from animegen_utils import read_parameters, reproduce
>>> p = read_parameters("00012-1234.png")     # written by A1111, Forge or ComfyUI
>>> p["source"], p["scheduler"], p["unknown"]
('a1111', 'dpm++_karras', {'ENSD': '31337'})
>>> g = reproduce("00012-1234.png", pipe=load_pipeline("anything-v5.safetensors"))

``parse_infotext`` reads the ``parameters`` text A1111 and Forge write (prompt
lines, ``Negative prompt:`` lines, then one ``Key: value, ...`` line);
``parse_comfyui`` reads ComfyUI's ``prompt`` (API) or ``workflow`` (UI) JSON when
it is one KSampler fed by CLIPTextEncode, EmptyLatentImage and a checkpoint
(optionally through LoraLoader / CLIPSetLastLayer). Both return the kit's
parameter names (``prompt``, ``negative``, ``seed``, ``steps``, ``guidance``,
``scheduler``, ``width``, ``height``, ``clip_skip``, ``hires_*``, ``strength``),
plus ``source``, ``loras`` (name, weight), ``info`` (recorded fields that do not
change the picture, e.g. ``Model hash``) and ``unknown`` (fields the kit does not
use, with their values: nothing is dropped silently).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .weighting import split_lora_tags

# A1111 sampler labels (and their pre-1.9 "... Karras" forms) -> the kit's scheduler names.
A1111_SAMPLERS: dict[str, str] = {
    "DPM++ 2M": "dpm++", "DPM++ 2M Karras": "dpm++_karras", "Euler a": "euler_a", "Euler": "euler",
    "DDIM": "ddim", "PLMS": "pndm", "UniPC": "unipc", "LCM": "lcm",
}
# ComfyUI sampler_name -> the kit's scheduler (with scheduler "karras": the Karras variant where one exists).
COMFY_SAMPLERS: dict[str, str] = {
    "dpmpp_2m": "dpm++", "euler_ancestral": "euler_a", "euler": "euler", "ddim": "ddim", "uni_pc": "unipc",
    "uni_pc_bh2": "unipc", "lcm": "lcm",
}
KARRAS = {"dpm++": "dpm++_karras"}
# Fields recorded for the record: they name things but do not change how the picture is drawn.
INFO_FIELDS = ("Model hash", "Version", "Lora hashes", "TI hashes", "Hashes", "VAE hash", "Schedule max sigma",
               "Schedule min sigma", "Discard penultimate sigma", "Module 1", "Module 2", "Module 3")
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def _number(field: str, value: str, kind: type = float) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"infotext field {field}: {value!r} is not a {kind.__name__}") from None


def _sampler(label: str, schedule: str | None, unknown: dict[str, str]) -> str | None:
    """The kit's scheduler for an A1111 sampler (+ 'Schedule type'); None (and noted in ``unknown``) if none fits."""
    name = A1111_SAMPLERS.get(label)
    if name is None:
        unknown["Sampler"] = label
        return None
    if schedule in (None, "Automatic") or (schedule == "Karras" and name.endswith("_karras")):
        return name
    if schedule == "Karras" and name in KARRAS:
        return KARRAS[name]
    unknown["Schedule type"] = schedule
    return name


def parse_infotext(text: str) -> dict[str, Any]:
    """Read A1111/Forge infotext into the kit's parameter names.

    >>> p = parse_infotext("1girl, (smile:1.2)\\nNegative prompt: lowres\\nSteps: 20, Sampler: DPM++ 2M, "
    ...                    "Schedule type: Karras, CFG scale: 7, Seed: 5, Size: 512x768, Model: anything-v5, ENSD: 31337")
    >>> p["scheduler"], p["width"], p["height"], p["unknown"]
    ('dpm++_karras', 512, 768, {'ENSD': '31337'})
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("infotext is empty")
    lines = text.strip().split("\n")
    fields: dict[str, str] = {}
    last = lines[-1]
    if len(_PARAM.findall(last)) >= 3:
        for key, value in _PARAM.findall(last):
            value = value.strip()
            if value.startswith('"') and value.endswith('"'):
                value = json.loads(value)
            fields[key.strip()] = value
        lines = lines[:-1]
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].lstrip()
        (negative_lines if in_negative else prompt_lines).append(line)
    prompt, negative = "\n".join(prompt_lines), "\n".join(negative_lines)
    version = fields.get("Version", "")
    out: dict[str, Any] = {"source": "forge" if re.match(r"^f\d", version) else "a1111",
                           "prompt": prompt, "negative": negative, "loras": split_lora_tags(prompt)[1],
                           "clip_skip": None}  # A1111 writes Clip skip only when it is not 1
    unknown: dict[str, str] = {}
    info: dict[str, str] = {}
    hires = "Hires upscale" in fields
    for key, value in fields.items():
        if key == "Steps":
            out["steps"] = _number(key, value, int)
        elif key == "Sampler":
            out["scheduler"] = _sampler(value, fields.get("Schedule type"), unknown)
        elif key == "Schedule type":
            continue  # read with Sampler
        elif key == "CFG scale":
            out["guidance"] = _number(key, value)
        elif key == "Seed":
            out["seed"] = _number(key, value, int)
        elif key == "Size":
            m = _SIZE.match(value)
            if m is None:
                raise ValueError(f"infotext field Size: {value!r} is not WIDTHxHEIGHT")
            out["width"], out["height"] = int(m.group(1)), int(m.group(2))
        elif key == "Model":
            out["model"] = value
        elif key == "Model hash":
            out["model_hash"] = info[key] = value  # also informational: it names no setting
        elif key == "Clip skip":
            skip = _number(key, value, int)
            out["clip_skip"] = skip - 1 if skip > 1 else None  # A1111 counts the last layer as 1
        elif key == "Denoising strength":
            out["hires_strength" if hires else "strength"] = _number(key, value)
        elif key == "Hires upscale":
            out["hires_scale"] = _number(key, value)
        elif key == "Hires steps":
            out["hires_steps"] = _number(key, value, int) or None
        elif key == "Hires upscaler":
            out["hires_upscaler"] = {"Latent": "latent", "Lanczos": "lanczos"}.get(value, value)
        elif key == "Reference hash":
            out["reference_sha256"] = value  # the kit's: SHA-256 of the reference picture's pixels
        elif key == "Reference scale":
            out["reference_scale"] = _number(key, value)
        elif key == "Reference adapter":
            info[key] = value
        elif key == "Emphasis" and value in ("None", "Original"):
            out["weighting"] = value == "Original"  # A1111 writes it only when not "Original"
        elif key in INFO_FIELDS:
            info[key] = value
        else:
            unknown[key] = value
    if hires:
        out.setdefault("hires_upscaler", "latent")  # A1111's default upscaler
        out.setdefault("hires_strength", 0.7)       # and denoising strength, when not written
    out["info"], out["unknown"] = info, unknown
    return out


# ---------------------------------------------------------------- ComfyUI

# UI-format widgets, in ComfyUI's order, for the node types a plain KSampler graph uses.
_WIDGETS: dict[str, tuple[str, ...]] = {
    "KSampler": ("seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "CLIPTextEncode": ("text",),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "CheckpointLoaderSimple": ("ckpt_name",),
    "CLIPSetLastLayer": ("stop_at_clip_layer",),
    "LoraLoader": ("lora_name", "strength_model", "strength_clip"),
}


def workflow_to_api(workflow: dict) -> dict[str, dict]:
    """ComfyUI's UI ``workflow`` JSON as its API ``prompt`` form ({id: {class_type, inputs}}), for known nodes."""
    links = {link[0]: (str(link[1]), link[2]) for link in workflow.get("links", [])}
    graph: dict[str, dict] = {}
    for node in workflow.get("nodes", []):
        inputs: dict[str, Any] = {}
        names = _WIDGETS.get(node.get("type"), ())
        for name, value in zip(names, node.get("widgets_values") or []):
            inputs[name] = value
        for slot in node.get("inputs", []):
            if slot.get("link") is not None and slot["link"] in links:
                inputs[slot["name"]] = list(links[slot["link"]])
        graph[str(node["id"])] = {"class_type": node.get("type"), "inputs": inputs}
    return graph


def parse_comfyui(graph: dict | str) -> dict[str, Any]:
    """Read a ComfyUI graph (API ``prompt`` or UI ``workflow`` JSON) with one plain KSampler.

    Raises ``ValueError`` naming what is not a plain KSampler txt2img graph.
    """
    if isinstance(graph, str):
        graph = json.loads(graph)
    if "nodes" in graph and "links" in graph:
        graph = workflow_to_api(graph)
    samplers = [k for k, n in graph.items() if isinstance(n, dict) and n.get("class_type") == "KSampler"]
    if len(samplers) != 1:
        other = sorted({n.get("class_type") for n in graph.values() if isinstance(n, dict)
                        and "Sampler" in str(n.get("class_type"))})
        raise ValueError(f"ComfyUI graph has {len(samplers)} KSampler nodes (sampler nodes: {other or 'none'}); "
                         "the kit reads graphs with exactly one plain KSampler")
    unknown: dict[str, Any] = {}

    def node(link: Any, role: str) -> dict:
        if not (isinstance(link, list) and str(link[0]) in graph):
            raise ValueError(f"ComfyUI KSampler input {role!r} is not linked to a node")
        return graph[str(link[0])]

    def text_of(link: Any, role: str) -> tuple[str, dict]:
        n = node(link, role)
        if n.get("class_type") != "CLIPTextEncode" or not isinstance(n["inputs"].get("text"), str):
            raise ValueError(f"ComfyUI {role} prompt comes from {n.get('class_type')}, not a CLIPTextEncode "
                             "with its text written in; the kit reads only that")
        return n["inputs"]["text"], n

    ks = graph[samplers[0]]["inputs"]
    out: dict[str, Any] = {"source": "comfyui", "info": {}}
    out["prompt"], pos_node = text_of(ks.get("positive"), "positive")
    out["negative"], _ = text_of(ks.get("negative"), "negative")
    out["seed"], out["steps"], out["guidance"] = int(ks["seed"]), int(ks["steps"]), float(ks["cfg"])
    name = COMFY_SAMPLERS.get(ks.get("sampler_name"))
    if name is None:
        unknown["sampler_name"] = ks.get("sampler_name")
    elif ks.get("scheduler") == "karras" and name in KARRAS:
        name = KARRAS[name]
    elif ks.get("scheduler") not in ("normal", None):
        unknown["scheduler"] = ks.get("scheduler")
    out["scheduler"] = name
    if float(ks.get("denoise", 1.0)) != 1.0:
        unknown["denoise"] = ks["denoise"]
    latent = node(ks.get("latent_image"), "latent_image")
    if latent.get("class_type") != "EmptyLatentImage":
        raise ValueError(f"ComfyUI latent_image comes from {latent.get('class_type')}; the kit reads txt2img "
                         "graphs (EmptyLatentImage)")
    out["width"], out["height"] = int(latent["inputs"]["width"]), int(latent["inputs"]["height"])
    if int(latent["inputs"].get("batch_size", 1)) != 1:
        out["info"]["batch_size"] = int(latent["inputs"]["batch_size"])
    # Walk the model and clip chains back to the checkpoint: LoRAs and CLIPSetLastLayer on the way.
    loras: list[tuple[str, float]] = []
    out["clip_skip"] = None
    current = node(ks.get("model"), "model")
    while current.get("class_type") == "LoraLoader":
        i = current["inputs"]
        loras.append((re.sub(r"\.(safetensors|pt|ckpt)$", "", str(i["lora_name"])), float(i["strength_model"])))
        if float(i.get("strength_clip", i["strength_model"])) != float(i["strength_model"]):
            unknown[f"{i['lora_name']} strength_clip"] = i["strength_clip"]
        current = node(i.get("model"), "model")
    if current.get("class_type") != "CheckpointLoaderSimple":
        raise ValueError(f"ComfyUI model comes from {current.get('class_type')}; the kit reads "
                         "CheckpointLoaderSimple, optionally through LoraLoader")
    out["model"] = str(current["inputs"]["ckpt_name"])
    clip = node(pos_node["inputs"].get("clip"), "clip")
    while clip.get("class_type") in ("CLIPSetLastLayer", "LoraLoader"):
        if clip["class_type"] == "CLIPSetLastLayer":
            skip = -int(clip["inputs"]["stop_at_clip_layer"])  # -2 is A1111's "Clip skip: 2"
            out["clip_skip"] = skip - 1 if skip > 1 else None
        clip = node(clip["inputs"].get("clip"), "clip")
    out["loras"] = loras
    out["unknown"] = unknown
    return out


def read_foreign_parameters(info: dict[str, Any], path: str) -> dict[str, Any]:
    """Parameters from another tool's PNG text chunks (``Image.info``): A1111/Forge first, then ComfyUI."""
    if isinstance(info.get("prompt"), str) or isinstance(info.get("workflow"), str):
        for key in ("prompt", "workflow"):
            if isinstance(info.get(key), str):
                try:
                    data = json.loads(info[key])
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}: ComfyUI {key!r} chunk is not JSON ({err})") from None
                if isinstance(data, dict) and ("nodes" in data or any(
                        isinstance(v, dict) and "class_type" in v for v in data.values())):
                    return parse_comfyui(data)
    if isinstance(info.get("parameters"), str):
        return parse_infotext(info["parameters"])
    raise ValueError(f"{path} has no generation parameters: no animegen, A1111/Forge 'parameters' or ComfyUI "
                     "'prompt'/'workflow' text chunk")


def generate_kwargs(p: dict[str, Any], scheduler: str | None = None) -> dict[str, Any]:
    """``generate`` arguments for parameters read from another tool (``source`` set).

    ``scheduler`` overrides the file's sampler (needed when the kit has no match for
    it). ComfyUI's LoraLoader nodes become ``<lora:name:w>`` tags, A1111's way of
    saying the same. Raises ``ValueError`` naming a missing field or sampler.
    """
    from .pipelines import SCHEDULERS

    missing = [k for k in ("prompt", "seed", "steps", "guidance", "width", "height") if k not in p]
    if missing:
        raise ValueError(f"The {p.get('source')} parameters lack {', '.join(missing)}; cannot draw the picture again")
    name = scheduler or p.get("scheduler")
    if name is None:
        said = p["unknown"].get("Sampler") or p["unknown"].get("sampler_name")
        raise ValueError(f"The kit has no scheduler for {p['source']} sampler {said!r}; pass scheduler= one of "
                         f"{', '.join(SCHEDULERS)}")
    prompt = p["prompt"]
    if p["source"] == "comfyui":
        prompt += "".join(f" <lora:{n}:{w}>" for n, w in p.get("loras", []))
    kwargs: dict[str, Any] = dict(prompt=prompt, negative=p.get("negative", ""), seed=p["seed"], steps=p["steps"],
                                  guidance=p["guidance"], width=p["width"], height=p["height"],
                                  clip_skip=p.get("clip_skip"), weighting=p.get("weighting", True),
                                  scheduler=name)
    if "hires_scale" in p:
        kwargs.update(hires_scale=p["hires_scale"], hires_strength=p["hires_strength"],
                      hires_steps=p.get("hires_steps"), hires_upscaler=p["hires_upscaler"])
    return kwargs
