"""Edge adherence of the built-in ControlNet: edge F1 with and without it, same prompts and seeds.

    python benchmarks/bench_controlnet.py                       # the shipped ControlNet
    python benchmarks/bench_controlnet.py --controlnet runs/controlnet/controlnet.pt   # a training checkpoint

Three sets of controls, each drawn with the same prompts and seeds through the ControlNet pipeline and
through plain txt2img (the baseline):

* ``held_out``: ``--n-sketches`` pencil sketches in random poses (``evaluate.edges.held_out_sketches``,
  seed 100: never seen in training), the set the issue's bar (F1 >= 2x baseline) is judged on;
* ``samples``: the three sketches of ``data/sketches`` (notebook 04);
* ``renders``: canny maps of toy-world renders with unseen seeds (the training distribution, centred).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from animegen_utils import load_pipeline, paths
from animegen_utils.control import canny_map, sketch_to_control
from animegen_utils.evaluate import prompt_for, random_requests
from animegen_utils.control.sketches import SKETCHES
from animegen_utils.evaluate.edges import SKETCH_HAIR, edge_adherence, held_out_sketches
from animegen_utils.pipelines import controlnet_from_unet
from animegen_utils.toyworld import CharacterAttributes, render_character
from PIL import Image

SAMPLES = ("tilted", "big_head", "small_twintails")


def _controlnet(source: str, base):
    """A ControlNet folder/"tiny" as is, or a training checkpoint (``controlnet.pt``) loaded into one."""
    if not source.endswith(".pt"):
        return source
    model = controlnet_from_unet(base.unet, base.vae_scale_factor)
    model.load_state_dict(torch.load(source, weights_only=False)["controlnet"])
    return model.eval()


def control_sets(n_sketches: int, n_renders: int) -> dict[str, tuple[list, list]]:
    held = held_out_sketches(n_sketches, seed=100)
    samples = [sketch_to_control(Image.open(paths.data_dir("sketches") / f"{n}.jpg"), size=64) for n in SAMPLES]
    sample_prompts = []
    for name, r in zip(SAMPLES, random_requests(len(SAMPLES), seed=101)):
        sample_prompts.append(prompt_for({**r, "hairstyle": SKETCH_HAIR[SKETCHES[name][0].hair]}))
    renders, render_prompts = [], []
    for i, r in enumerate(random_requests(n_renders, seed=102)):
        attrs = CharacterAttributes(**{k: r[k] for k in ("emotion", "style", "hair_color", "eye_color", "hairstyle",
                                                          "accessory")})
        renders.append(canny_map(render_character(attrs, 900_000 + i, size=64).image))
        render_prompts.append(prompt_for(r))
    return {"held_out": (held[0], held[1]), "samples": (samples, sample_prompts), "renders": (renders, render_prompts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--controlnet", default="tiny")
    ap.add_argument("--n-sketches", type=int, default=24)
    ap.add_argument("--n-renders", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--scale", type=float, default=1.0, help="controlnet_conditioning_scale")
    ap.add_argument("--output", default="benchmarks/results/controlnet.json")
    args = ap.parse_args()

    txt = load_pipeline("tiny")
    cn = load_pipeline("tiny", task="controlnet", controlnet=_controlnet(args.controlnet, txt))
    seeds = list(range(args.seeds))
    started = time.time()
    result = {"controlnet": args.controlnet, "steps": args.steps, "guidance": args.guidance,
              "controlnet_conditioning_scale": args.scale, "seeds": seeds, "sets": {}}
    for name, (controls, prompts) in control_sets(args.n_sketches, args.n_renders).items():
        r = edge_adherence(cn, txt, controls, prompts, seeds=seeds, steps=args.steps, guidance=args.guidance,
                           controlnet_conditioning_scale=args.scale)
        with_, without = float(r["f1_with"].mean()), float(r["f1_without"].mean())
        result["sets"][name] = {"n_controls": len(controls), "n_images": int(r["f1_with"].size),
                                "f1_with": round(with_, 4), "f1_without": round(without, 4),
                                "ratio": round(with_ / without, 3),
                                "per_control_with": np.round(r["f1_with"].mean(1), 3).tolist(),
                                "per_control_without": np.round(r["f1_without"].mean(1), 3).tolist()}
        print(f"{name:<9} n={r['f1_with'].size:>3}  F1 with {with_:.3f}  without {without:.3f}  ratio {with_ / without:.2f}x",
              flush=True)
    result.update(seconds=round(time.time() - started, 1), torch=torch.__version__, machine=platform.processor() or platform.machine(),
                  threads=torch.get_num_threads())
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
