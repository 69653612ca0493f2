"""python -m animegen_utils.evaluate --model tiny --n 200 --output eval.json"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import REPORT_KEYS, evaluate_model


def format_table(report: dict) -> str:
    rows = [(k.replace("_accuracy", ""), f"{report[k]:.3f}") for k in REPORT_KEYS.values() if k in report]
    rows.append(("diversity", f"{report['diversity']:.3f}"))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from ..pipelines import load_pipeline

    parser = argparse.ArgumentParser(description="Probe accuracy and diversity of a model's images.")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--scheduler", default="dpm++")
    parser.add_argument("--output", type=Path, default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    pipe = load_pipeline(args.model, scheduler=args.scheduler)
    report = evaluate_model(pipe, n=args.n, seed=args.seed, steps=args.steps, guidance=args.guidance,
                            progress=True)
    print(f"model={report['model']} scheduler={report['scheduler']} steps={args.steps} "
          f"guidance={args.guidance} n={args.n}")
    print(format_table(report))
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
