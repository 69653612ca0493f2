"""``python -m animegen_utils.fast distill [--flags]``: retrain the built-in model's LCM-LoRA.

Every field of ``DistillConfig`` is a flag (``--max-train-steps 1200 --lora-rank 32 ...``).
Checkpoints go to ``--work-dir`` every ``--checkpointing-steps``; the same command resumes
from the latest one (``--fresh`` starts over). Run ``python -m animegen_utils.fast distill --help``.
"""

from __future__ import annotations

import argparse
import shutil
import sys

from ..cli import add_config_flags, config_from_args, use_threads_from_env
from .distill import DistillConfig, distill, distill_dirs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m animegen_utils.fast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("distill", help="latent consistency distillation of a LoRA (LCM-LoRA)")
    add_config_flags(p, DistillConfig)
    p.add_argument("--fresh", action="store_true", help="delete checkpoints in --work-dir and start over")
    args = parser.parse_args(argv)
    use_threads_from_env()
    cfg = config_from_args(args, DistillConfig)
    work, _ = distill_dirs(cfg)
    if args.fresh and work.is_dir():
        shutil.rmtree(work)
    result = distill(cfg)
    print(f"saved the LCM-LoRA to {result.lora_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
