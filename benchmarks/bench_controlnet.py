"""Edge adherence of the built-in ControlNet: edge F1 with and without it, same prompts and seeds.

    python benchmarks/bench_controlnet.py                       # the built-in ControlNet (results/controlnet.json)
    python benchmarks/bench_controlnet.py --controlnet runs/controlnet/controlnet.pt   # a training checkpoint

Three sets of controls, each drawn with the same prompts and seeds through the ControlNet pipeline and
through plain txt2img (the baseline):

* ``held_out``: ``--n-sketches`` pencil sketches in random poses (``evaluate.edges.held_out_sketches``,
  seed 100: never seen in training), the set the issue's bar (F1 >= 2x baseline) is judged on;
* ``samples``: the three sketches of ``data/sketches`` (notebook 04);
* ``renders``: canny maps of toy-world renders with unseen seeds (the training distribution, centred).

For each set it also reports what the probe reads in the pictures (does the prompt's hair colour, eye
colour... survive the control?) and a ceiling: the control's own lines as a picture, before and after the
model's VAE encodes and decodes it (every output is a VAE decode).

Sketches put the character in poses the renderer never draws, and the model's own probe was trained on
the centred layout only. Where the model has a posed probe (``probe_dir_for(model, posed=True)``) the
sketch sets are read with it too (``probe_posed_with``/``_without``), and the held-out set gets the probe's
own ceiling: correctly drawn renders of each prompt, moved into the sketch's pose (``probe_ceiling``).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from animegen_utils import load_pipeline, paths
from animegen_utils.control import canny_map, sketch_to_control
from animegen_utils.evaluate import ProbeScorer, prompt_for, random_requests
from animegen_utils.control.sketches import SKETCHES
from animegen_utils.control.train import INK, image_size_of
from animegen_utils.evaluate.edges import SKETCH_HAIR, edge_adherence, edge_f1, held_out_sketches
from animegen_utils.control.sketches import Pose, random_sketches
from animegen_utils.evaluate.probe import POSED_PROBE_DIRS, load_probe, probe_dir_for
from animegen_utils.pipelines import BUILTIN_MODELS, controlnet_from_unet
from animegen_utils.toyworld import CharacterAttributes, render_character
from animegen_utils.published import write_results
from PIL import Image

SAMPLES = ("tilted", "big_head", "small_twintails")


def _controlnet(source: str, base):
    """A ControlNet folder/"tiny" as is, or a training checkpoint (``controlnet.pt``) loaded into one."""
    if not source.endswith(".pt"):
        return source
    model = controlnet_from_unet(base.unet, base.vae_scale_factor)
    model.load_state_dict(torch.load(source, weights_only=False)["controlnet"])
    return model.eval()


def control_sets(n_sketches: int, n_renders: int, size: int = 64) -> dict[str, tuple[list, list, list]]:
    """Each set as (controls, prompts, the attribute requests behind the prompts), at ``size`` pixels."""
    held = held_out_sketches(n_sketches, seed=100, size=size, with_requests=True)
    samples = [sketch_to_control(Image.open(paths.data_dir("sketches") / f"{n}.jpg"), size=size) for n in SAMPLES]
    sample_requests = [{**r, "hairstyle": SKETCH_HAIR[SKETCHES[name][0].hair]}
                       for name, r in zip(SAMPLES, random_requests(len(SAMPLES), seed=101))]
    render_requests = random_requests(n_renders, seed=102)
    renders = [canny_map(render_character(CharacterAttributes(**r), 900_000 + i, size=size).image)
               for i, r in enumerate(render_requests)]
    return {"held_out": (held[0], held[1], held[3]),
            "samples": (samples, [prompt_for(r) for r in sample_requests], sample_requests),
            "renders": (renders, [prompt_for(r) for r in render_requests], render_requests)}


def vae_ceiling(pipe, controls: list) -> dict[str, float]:
    """What the best possible output could score: the control's own lines inked on skin-coloured
    paper (the ideal picture), and that picture after the model's VAE encodes and decodes it (with
    the pipeline's own image processor). Every pipeline output is a VAE decode, and the ControlNet
    learns to produce latents like the encoder's."""
    ideal, decoded = [], []
    for control in controls:
        lines = np.asarray(control.convert("L")) > 127
        picture = Image.fromarray(np.where(lines[..., None], np.uint8(INK), np.uint8((255, 226, 204))).astype(np.uint8))
        with torch.no_grad():
            latents = pipe.vae.encode(pipe.image_processor.preprocess(picture)).latent_dist.mean
            [back] = pipe.image_processor.postprocess(pipe.vae.decode(latents).sample, output_type="pil")
        ideal.append(edge_f1(control, picture))
        decoded.append(edge_f1(control, back))
    return {"ideal": round(float(np.mean(ideal)), 3), "ideal_through_vae": round(float(np.mean(decoded)), 3)}


def posed_renders(poses: list[Pose], requests: list[dict], size: int, per_pose: int = 4) -> tuple[list, list]:
    """Renders of each request, moved (turned, scaled, shifted) so that the face sits where the
    sketch's pose puts it: what a perfect picture from that sketch looks like to the probe."""
    import cv2

    base = Pose()
    images, asked = [], []
    for i, (pose, request) in enumerate(zip(poses, requests)):
        warp = cv2.getRotationMatrix2D((base.cx * size, base.cy * size), -pose.tilt, pose.head / base.head)
        warp[:, 2] += [(pose.cx - base.cx) * size, (pose.cy - base.cy) * size]
        for k in range(per_pose):
            picture = np.asarray(render_character(CharacterAttributes(**request), 800_000 + per_pose * i + k, size=size).image)
            images.append(Image.fromarray(cv2.warpAffine(picture, warp, (size, size), borderMode=cv2.BORDER_REPLICATE)))
            asked.append(request)
    return images, asked


def probe_hits(probe: ProbeScorer, generations: list[list], requests: list[dict]) -> dict[str, float]:
    """Share of pictures in which the probe reads what the prompt asked for (one row per control)."""
    images = [g.image for row in generations for g in row]
    asked = [r for row, r in zip(generations, requests) for _ in row]
    return {k: round(v, 3) for k, v in probe.accuracy(images, asked).items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=sorted(BUILTIN_MODELS), help="the built-in base model")
    ap.add_argument("--controlnet", default=None, help="a ControlNet folder or checkpoint (default: the model's own)")
    ap.add_argument("--n-sketches", type=int, default=24)
    ap.add_argument("--n-renders", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--scale", type=float, default=1.0, help="controlnet_conditioning_scale")
    ap.add_argument("--guidance-end", type=float, default=1.0, help="control_guidance_end")
    ap.add_argument("--sets", default="held_out,samples,renders", help="comma-separated control sets to run")
    ap.add_argument("--output", default="benchmarks/results/controlnet.json", help="results file")
    args = ap.parse_args()
    output = args.output

    txt = load_pipeline(args.model)
    controlnet = _controlnet(args.controlnet, txt) if args.controlnet else args.model
    cn = load_pipeline(args.model, task="controlnet", controlnet=controlnet)
    size = image_size_of(txt)
    seeds = list(range(args.seeds))
    started = time.time()
    result = {"model": args.model, "controlnet": args.controlnet or args.model, "image_size": size, "steps": args.steps, "guidance": args.guidance,
              "controlnet_conditioning_scale": args.scale, "control_guidance_end": args.guidance_end,
              "seeds": seeds, "sets": {}}
    probe = ProbeScorer(load_probe(probe_dir_for(args.model)))
    posed = ProbeScorer(load_probe(probe_dir_for(args.model, posed=True))) if args.model in POSED_PROBE_DIRS else None
    wanted = args.sets.split(",")
    for name, (controls, prompts, requests) in control_sets(args.n_sketches, args.n_renders, size).items():
        if name not in wanted:
            continue
        r = edge_adherence(cn, txt, controls, prompts, seeds=seeds, steps=args.steps, guidance=args.guidance,
                           controlnet_conditioning_scale=args.scale, control_guidance_end=args.guidance_end)
        with_, without = float(r["f1_with"].mean()), float(r["f1_without"].mean())
        hits_with, hits_without = probe_hits(probe, r["with"], requests), probe_hits(probe, r["without"], requests)
        ceiling = vae_ceiling(txt, controls)
        extra = {}
        if posed is not None and name != "renders":
            extra = {"probe_posed_with": probe_hits(posed, r["with"], requests),
                     "probe_posed_without": probe_hits(posed, r["without"], requests)}
            if name == "held_out":
                poses = [pose for pose, _ in random_sketches(len(controls), seed=100)]  # held_out_sketches' poses
                images, asked = posed_renders(poses, requests, size)
                extra["probe_ceiling"] = {"centred_probe": {k: round(v, 3) for k, v in probe.accuracy(images, asked).items()},
                                          "posed_probe": {k: round(v, 3) for k, v in posed.accuracy(images, asked).items()}}
        result["sets"][name] = {"n_controls": len(controls), "n_images": int(r["f1_with"].size),
                                "f1_with": round(with_, 4), "f1_without": round(without, 4),
                                "ratio": round(with_ / without, 3),
                                "probe_with": hits_with, "probe_without": hits_without,
                                "ceiling": ceiling, **extra,
                                "per_control_with": np.round(r["f1_with"].mean(1), 3).tolist(),
                                "per_control_without": np.round(r["f1_without"].mean(1), 3).tolist()}
        print(f"{name:<9} n={r['f1_with'].size:>3}  F1 with {with_:.3f}  without {without:.3f}  ratio {with_ / without:.2f}x",
              flush=True)
        print(f"{'':<9} ceiling: the control's own lines {ceiling['ideal']:.3f}, through the VAE "
              f"{ceiling['ideal_through_vae']:.3f} (ratio {ceiling['ideal_through_vae'] / without:.2f}x)", flush=True)
        print(f"{'':<9} probe reads the prompt's attributes, with | without ControlNet: "
              + ", ".join(f"{k} {hits_with[k]:.2f} | {hits_without[k]:.2f}" for k in hits_with), flush=True)
        if extra:
            w, wo = extra["probe_posed_with"], extra["probe_posed_without"]
            print(f"{'':<9} posed probe, with | without: " + ", ".join(f"{k} {w[k]:.2f} | {wo[k]:.2f}" for k in w), flush=True)
        if "probe_ceiling" in extra:
            print(f"{'':<9} probe ceiling (renders moved into the sketches' poses): {extra['probe_ceiling']}", flush=True)
    result.update(seconds=round(time.time() - started, 1), torch=torch.__version__, machine=platform.processor() or platform.machine(),
                  threads=torch.get_num_threads())
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_results(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
