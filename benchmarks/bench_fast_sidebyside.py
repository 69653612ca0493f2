"""The kit against plain diffusers on the same weights, side by side in one process (issue 22).

    python benchmarks/bench_fast_sidebyside.py --repeats 20

Batch 1, every arm drawn round-robin in the same process (median per arm), so the ratios hold on any
machine even if the absolute seconds do not:

* ``kit pndm-50`` (CFG 7.5): the speed baseline;
* ``kit dpm++-20`` (CFG 7.5) and ``direct dpm++-20``: the same pipeline object called directly with the
  prompt and negative prompt ``generate`` passes it (the kit's overhead per image);
* ``kit lcm-4`` (CFG 1, ``load_pipeline(model, scheduler="lcm")``: its LCM-LoRA fused while it draws) and
  ``diffusers lcm-4``: a fresh ``StableDiffusionPipeline`` of the same folder with ``LCMScheduler``,
  ``load_lora_weights`` and ``fuse_lora``, as diffusers documents it;
* ``kit lcm-4 unfused``: the kit with ``set_fusing(pipe, False)``: what peft's unfused layers cost;
* the cost of one adapter switch: unfuse (copy the original weights back) and fuse again.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from animegen_utils import generate, load_pipeline
from animegen_utils.adapters import activate_adapters, fused_adapters, set_fusing
from animegen_utils.evaluate import prompt_for, random_requests
from animegen_utils.pipelines import BUILTIN_MODELS, default_lcm_lora
from animegen_utils.published import write_results


def diffusers_lcm_pipeline(model_dir: Path, lcm_lora: str):
    from diffusers import LCMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.load_lora_weights(lcm_lora)
    pipe.fuse_lora()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", choices=sorted(BUILTIN_MODELS))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--output", type=Path, default=Path("benchmarks/results/fast_sidebyside.json"))
    args = ap.parse_args()

    [request] = random_requests(1, seed=7)
    prompt = prompt_for(request)
    pndm, dpm = load_pipeline(args.model, scheduler="pndm"), load_pipeline(args.model, scheduler="dpm++")
    lcm = load_pipeline(args.model, scheduler="lcm")
    lcm_unfused = load_pipeline(args.model, scheduler="lcm")
    set_fusing(lcm_unfused, False)
    plain = diffusers_lcm_pipeline(BUILTIN_MODELS[args.model], default_lcm_lora(args.model))
    text, negative = prompt.positive, prompt.negative or None  # what generate passes the pipeline

    def kit(pipe, steps, guidance):
        return pipe, lambda seed: generate(pipe, prompt, seed=seed, steps=steps, guidance=guidance, batch_size=1,
                                           progress=False)

    def direct(seed):  # dpm's own pipeline, called as diffusers users call it
        return dpm(prompt=text, negative_prompt=negative, num_inference_steps=20, guidance_scale=7.5,
                   generator=torch.Generator("cpu").manual_seed(seed))

    def diffusers_lcm(seed):
        return plain(prompt=text, num_inference_steps=4, guidance_scale=1.0,
                     generator=torch.Generator("cpu").manual_seed(seed))

    # (pipeline whose adapters are switched in before the clock starts, draw): a switch between
    # pipelines sharing weights is timed on its own below, not inside an image.
    arms = {"kit pndm-50": kit(pndm, 50, 7.5), "kit dpm++-20": kit(dpm, 20, 7.5), "direct dpm++-20": (dpm, direct),
            "kit lcm-4": kit(lcm, 4, 1.0), "diffusers lcm-4 (fuse_lora)": (None, diffusers_lcm),
            "kit lcm-4 unfused": kit(lcm_unfused, 4, 1.0), "kit lcm-2": kit(lcm, 2, 1.0), "kit lcm-1": kit(lcm, 1, 1.0)}
    times: dict[str, list[float]] = {name: [] for name in arms}
    switch_fuse, switch_unfuse = [], []
    for r in range(1 + args.repeats):
        for name, (pipe, draw) in arms.items():
            if pipe is not None:
                activate_adapters(pipe)
            started = time.perf_counter()
            draw(1_000_000 + r)
            if r:
                times[name].append(time.perf_counter() - started)
        # One adapter switch each way, timed on its own: plain weights -> LCM fused -> plain.
        activate_adapters(dpm)
        started = time.perf_counter()
        activate_adapters(lcm)
        switch_fuse.append(time.perf_counter() - started)
        assert fused_adapters(lcm), "the LCM pipeline's adapter should be fused"
        started = time.perf_counter()
        activate_adapters(dpm)
        switch_unfuse.append(time.perf_counter() - started)
    s = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "model": args.model, "repeats": args.repeats, "batch": 1, "prompt": text,
        "s_per_image": {k: round(v, 5) for k, v in s.items()},
        "ratios": {
            "kit_lcm4_over_diffusers_fused_lcm4": round(s["kit lcm-4"] / s["diffusers lcm-4 (fuse_lora)"], 3),
            "kit_dpm20_over_direct_dpm20": round(s["kit dpm++-20"] / s["direct dpm++-20"], 3),
            "pndm50_over_kit_lcm4": round(s["kit pndm-50"] / s["kit lcm-4"], 2),
            "pndm50_over_diffusers_lcm4": round(s["kit pndm-50"] / s["diffusers lcm-4 (fuse_lora)"], 2),
            "pndm50_over_kit_lcm1": round(s["kit pndm-50"] / s["kit lcm-1"], 2),
            "pndm50_over_kit_lcm2": round(s["kit pndm-50"] / s["kit lcm-2"], 2),
            "unfused_over_fused_kit_lcm4": round(s["kit lcm-4 unfused"] / s["kit lcm-4"], 3),
        },
        "switch_seconds": {"fuse": round(statistics.median(switch_fuse), 5),
                           "unfuse": round(statistics.median(switch_unfuse), 5)},
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    write_results(args.output, result)
    for name in arms:
        print(f"{name:<30} {s[name]:.4f} s  ({s['kit pndm-50'] / s[name]:.1f}x PNDM-50)")
    print(result["ratios"], result["switch_seconds"])
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
