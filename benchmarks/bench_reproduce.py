"""How exactly does an image come back? Batch shape, CPU kernels and thread counts, measured.

    python benchmarks/bench_reproduce.py [--output benchmarks/results/reproduce.json]

Notebook 01's emotion × style grid (15 prompts, one seed, batches of 8) is drawn in a
child process for each CPU configuration (native kernels, AVX2, the portable
default kernels; 1 and 2 threads). In each, every image is drawn again two ways:

- alone, in a batch of 1 (what ``reproduce`` did before it recorded the batch shape);
- by ``reproduce`` from its PNG, which redraws it in a batch of its original shape
  (for the first and last image of each batch, to keep the run short).

Across configurations, the same image is compared with the native 2-thread one. All
differences are the largest per-channel difference in 0-255 levels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from animegen_utils.published import write_results

CONFIGS = [
    {"ATEN_CPU_CAPABILITY": "", "OMP_NUM_THREADS": "2"},
    {"ATEN_CPU_CAPABILITY": "", "OMP_NUM_THREADS": "1"},
    {"ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "2"},
    {"ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1"},
    {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "2"},
    {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"},
]
REPRODUCED = (0, 7, 8, 14)  # first and last of the batch of 8, first and last of the batch of 7


def draw(out_dir: Path) -> dict:
    """In this process: the grid, each image alone, each image through reproduce()."""
    from animegen_utils import EMOTIONS, STYLES, build_prompt, generate, load_pipeline, reproduce

    pipe = load_pipeline()
    prompts = [build_prompt(e, s) for e in EMOTIONS for s in STYLES]
    grid = generate(pipe, prompts, seed=[0] * len(prompts), steps=20, guidance=7.5, progress=False)
    alone_diff, alone_pixels, reproduce_diff = [], [], []
    for i, g in enumerate(grid):
        [alone] = generate(pipe, prompts[i], seed=0, steps=20, guidance=7.5, progress=False)
        delta = np.abs(np.asarray(alone.image, dtype=np.int16) - np.asarray(g.image, dtype=np.int16))
        alone_diff.append(int(delta.max()))
        alone_pixels.append(int((delta.max(axis=-1) > 0).sum()))
        if i in REPRODUCED:
            reproduce_diff.append(reproduce(g.save(out_dir / f"{i}.png"), pipe=pipe).max_pixel_diff)
    np.save(out_dir / "grid.npy", np.stack([np.asarray(g.image) for g in grid]))
    import torch

    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            "batch1_max_diff": max(alone_diff), "batch1_images_differing": sum(d > 0 for d in alone_diff),
            "batch1_pixels_differing": sum(alone_pixels), "reproduce_max_diff": max(reproduce_diff)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "reproduce.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(draw(args.child)))
        return
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i, config in enumerate(CONFIGS):
            work = Path(tmp) / str(i)
            work.mkdir()
            env = {**os.environ, **{k: v for k, v in config.items() if v}}
            if not config["ATEN_CPU_CAPABILITY"]:
                env.pop("ATEN_CPU_CAPABILITY", None)
            done = subprocess.run([sys.executable, __file__, "--child", str(work)], env=env, check=True,
                                  capture_output=True, text=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            grid = np.load(work / "grid.npy").astype(np.int16)
            reference = grid if reference is None else reference
            row["vs_native_2_threads_max_diff"] = int(np.abs(grid - reference).max())
            rows.append(row)
            print(row, flush=True)
    result = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
              "images": 15, "rows": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.output, result)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
