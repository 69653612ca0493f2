"""LoRA training speed and peak memory on CPU at notebook 03's defaults.

    python benchmarks/bench_lora.py [--steps 40] [--rounds 2] [--output benchmarks/results/lora.json]

Three variants, each run in its own process (so peak RSS is its own), interleaved round by round:

* the plan's LoRA (r=8, alpha=32, to_k/to_v, dropout 0.1) with cached latents (the notebook's default);
* the same without latent caching (the VAE encodes every batch);
* diffusers' default targets (to_q, to_k, to_v, to_out.0), cached.

Read the ratios; absolute numbers depend on the machine and on what else it runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from animegen_utils.published import write_results

VARIANTS = {
    "plan_cached": dict(target_modules=("to_k", "to_v"), cache_latents=True),
    "plan_uncached": dict(target_modules=("to_k", "to_v"), cache_latents=False),
    "default_targets_cached": dict(target_modules=("to_q", "to_k", "to_v", "to_out.0"), cache_latents=True),
}

CHILD = r"""
import json, resource, sys
from animegen_utils.lora import LoraTrainingConfig, train_lora
args = json.loads(sys.argv[1])
r = train_lora(LoraTrainingConfig(**args))
print("RESULT " + json.dumps({"steps_per_s": r.global_step / r.seconds, "train_seconds": r.seconds,
      "cache_seconds": r.cache_seconds, "trainable_parameters": r.trainable_parameters,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_variant(name: str, data_dir: Path, out: Path, steps: int) -> dict:
    cfg = dict(data_dir=str(data_dir), output_dir=str(out / name), max_train_steps=steps, train_batch_size=8,
               rank=8, alpha=32, dropout=0.1, learning_rate=3e-3, snr_gamma=5.0, checkpointing_steps=10_000,
               export_kohya=False, progress=False, **VARIANTS[name])
    cfg["target_modules"] = list(cfg["target_modules"])
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, check=True)
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--per-emotion", type=int, default=60, help="Mika images per emotion (notebook: 60)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/lora.json"))
    args = parser.parse_args(argv)

    from animegen_utils.lora.toydata import make_character_folders

    with tempfile.TemporaryDirectory() as tmp:
        data = make_character_folders(Path(tmp) / "data", per_emotion=args.per_emotion)
        runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name in VARIANTS:
                runs[name].append(run_variant(name, data, Path(tmp), args.steps))
    summary = {}
    for name, rs in runs.items():
        summary[name] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        summary[name]["trainable_parameters"] = rs[0]["trainable_parameters"]  # a count, not a median
    base = summary["plan_cached"]
    ratios = {
        "caching_speedup (cached / uncached steps/s)":
            base["steps_per_s"] / summary["plan_uncached"]["steps_per_s"],
        "default_targets_slowdown (plan / default steps/s)":
            base["steps_per_s"] / summary["default_targets_cached"]["steps_per_s"],
        "default_targets_parameter_ratio":
            summary["default_targets_cached"]["trainable_parameters"] / base["trainable_parameters"],
        "peak_rss_ratio (uncached / cached)": summary["plan_uncached"]["peak_rss_mb"] / base["peak_rss_mb"],
    }
    report = {"steps": args.steps, "rounds": args.rounds, "images": 5 * args.per_emotion, "batch": 8,
              "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
              "variants": summary, "ratios": ratios}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.output, report)
    lines = ["| variant | steps/s | caching s | trainable params | peak RSS MB |", "|---|---|---|---|---|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['steps_per_s']:.2f} | {s['cache_seconds']:.1f} | "
                     f"{int(s['trainable_parameters']):,} | {s['peak_rss_mb']:.0f} |")
    lines += ["", *[f"- {k}: {v:.2f}" for k, v in ratios.items()]]
    args.output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


if __name__ == "__main__":
    main()
