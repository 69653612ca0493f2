"""``python -m animegen_utils.fast distill [--flags]``: retrain the built-in model's LCM-LoRA.

Every field of ``DistillConfig`` is a flag (``--max-train-steps 1200 --lora-rank 32 ...``).
Checkpoints go to ``--work-dir`` every ``--checkpointing-steps``; the same command resumes
from the latest one (``--fresh`` starts over). Run ``python -m animegen_utils.fast distill --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys

import torch

from .distill import DistillConfig, distill


def _flag_type(f: dataclasses.Field):
    if isinstance(f.default, bool):
        return lambda s: s.lower() in ("1", "true", "yes")
    if isinstance(f.default, tuple):
        return lambda s: tuple(x.strip() for x in s.split(",") if x.strip())
    return type(f.default)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m animegen_utils.fast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("distill", help="latent consistency distillation of a LoRA (LCM-LoRA)")
    for f in dataclasses.fields(DistillConfig):
        default = ",".join(f.default) if isinstance(f.default, tuple) else f.default
        p.add_argument("--" + f.name.replace("_", "-"), type=_flag_type(f), default=f.default,
                       help=f"default: {default}")
    p.add_argument("--fresh", action="store_true", help="delete checkpoints in --work-dir and start over")
    args = parser.parse_args(argv)
    # OMP_NUM_THREADS caps torch's threads, e.g. 1 to leave a core to other work.
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    cfg = DistillConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DistillConfig)})
    if args.fresh and os.path.isdir(cfg.work_dir):
        shutil.rmtree(cfg.work_dir)
    result = distill(cfg)
    print(f"saved the LCM-LoRA to {result.lora_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
