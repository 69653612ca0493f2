"""Command line: ``python -m animegen_utils.sweep run SPEC --out DIR`` (also under ``accelerate launch``).

    python -m animegen_utils.sweep run sweep.yaml --out outputs/sweep
    python -m animegen_utils.sweep expand sweep.yaml            # the manifest, one JSON row per line
    python -m animegen_utils.sweep run sweep.yaml --out DIR --engine ray --address 127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import json
import sys

from .engines import ENGINES, run
from .manifest import expand
from .spec import SweepSpecError
from .store import SweepFolderError, SweepLockedError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m animegen_utils.sweep", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="draw and score the rows of SPEC not yet done in --out")
    r.add_argument("spec", help="a .yaml, .toml or .json sweep spec")
    r.add_argument("--out", required=True, help="the results folder (images/, table/, results.parquet)")
    r.add_argument("--engine", default="auto", choices=ENGINES,
                   help="auto: accelerate under `accelerate launch`, else one process")
    r.add_argument("--address", default=None, help="Ray cluster address (engine ray); default: a local cluster")
    r.add_argument("--workers", type=int, default=None, help="Ray actors (default: one per GPU, else per CPU)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    e = sub.add_parser("expand", help="print the manifest: one JSON row per line")
    e.add_argument("spec")
    args = parser.parse_args(argv)
    if getattr(args, "no_progress", False):
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()  # "Loading pipeline components" too
    try:
        if args.command == "expand":
            for row in expand(args.spec):
                print(json.dumps({"id": row.id, "position": row.position, "batch": row.batch, **row.params}))
            return 0
        s = run(args.spec, args.out, engine=args.engine, address=args.address, workers=args.workers,
                progress=not args.no_progress)
    except (SweepSpecError, SweepLockedError, SweepFolderError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if s.engine != "accelerate" or _is_main():
        print(f"{s.out_dir}: {s.drawn} drawn, {s.done_before} already done, {s.total} in the sweep "
              f"({s.engine}, {s.workers} worker(s), {s.seconds:.1f} s)")
    return 0


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    sys.exit(main())
