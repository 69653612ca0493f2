"""Score a model from the shell.

    python -m animegen_utils.evaluate --model tiny --n 200 --output eval.json
    python -m animegen_utils.evaluate --model /content/anything-v5.safetensors --config /content/sd15 \
        --scorer clip --clip-model /content/clip-vit-base-patch32 --height 512 --width 512

``--out-dir DIR`` keeps the requests' images as a sweep folder (PNGs with their parameters and
``results.parquet``, ``animegen_utils.sweep``): a rerun with the same settings draws nothing it
holds and scores it again (with ``--scorer clip`` too). Without it they go to a temporary folder.

``--scorer auto`` (the default) reads the built-in model's images with its attribute probe
and any other model's with CLIP: the probe knows the toy world's drawings only. A model
trained on the toy world from a folder takes the probe of its picture size:

    python -m animegen_utils.evaluate --model runs/v2/model --scorer probe --probe animegen_utils/models/probe
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import REPORT_KEYS, evaluate_model
from .metrics import DEFAULT_CLIP, ClipScorer, ProbeScorer
from .probe import load_probe, probe_dir_for
from ..published import write_results

SCORERS = ("auto", "probe", "clip")


def format_table(report: dict) -> str:
    rows = [(k.replace("_accuracy", ""), f"{report[k]:.3f}") for k in REPORT_KEYS.values() if k in report]
    rows.append(("diversity", f"{report['diversity']:.3f}"))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from ..pipelines import BUILTIN_MODELS, SCHEDULERS, load_pipeline

    parser = argparse.ArgumentParser(description="Adherence (per attribute) and diversity of a model's images.")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--config", default=None, help="for a .safetensors model: a diffusers folder with its configs")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--scheduler", default="dpm++", choices=list(SCHEDULERS))
    parser.add_argument("--height", type=int, default=None, help="default: the model's native size")
    parser.add_argument("--width", type=int, default=None, help="default: the model's native size")
    parser.add_argument("--scorer", default="auto", choices=SCORERS,
                        help="probe (the built-in model's attribute probe), clip, or auto: probe for 'tiny', clip otherwise")
    parser.add_argument("--probe", type=Path, default=None,
                        help="for --scorer probe: the probe's folder (default: the built-in model's own probe)")
    parser.add_argument("--clip-model", default=DEFAULT_CLIP, help="CLIP for --scorer clip: a Hub id or a local folder")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--diversity-prompts", type=int, default=5)
    parser.add_argument("--diversity-seeds", type=int, default=4)
    parser.add_argument("--output", type=Path, default=None, help="write the report as JSON here")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="keep the requests' images here (a sweep folder: resumable); default: a temporary one")
    args = parser.parse_args(argv)
    kind = args.scorer if args.scorer != "auto" else ("probe" if args.model in BUILTIN_MODELS else "clip")
    if kind == "probe":
        scorer = ProbeScorer(load_probe(args.probe or probe_dir_for(args.model)))
    else:
        scorer = ClipScorer(args.clip_model)
    pipe = load_pipeline(args.model, scheduler=args.scheduler, config=args.config)
    report = evaluate_model(pipe, n=args.n, seed=args.seed, steps=args.steps, guidance=args.guidance,
                            scorer=scorer, batch_size=args.batch_size, diversity_prompts=args.diversity_prompts,
                            diversity_seeds=args.diversity_seeds, height=args.height, width=args.width,
                            progress=True, out_dir=args.out_dir)
    print(f"model={report['model']} scheduler={report['scheduler']} steps={args.steps} "
          f"guidance={args.guidance} n={args.n} size={report['width']}x{report['height']} scorer={report['scorer']}")
    print(format_table(report))
    if args.output:
        write_results(args.output, report)
        print(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
