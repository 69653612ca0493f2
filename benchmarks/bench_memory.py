"""The memory guard against measured peaks, on SD1.5's architecture (random weights, CPU, fp32).

    OMP_NUM_THREADS=1 python benchmarks/bench_memory.py [--sizes 256 512] [--output benchmarks/results/memory_sd15.json]
    python benchmarks/bench_memory.py --measured benchmarks/results/memory_sd15.json   # estimates only, again

For each size it runs one UNet step as ``generate`` does with classifier-free guidance
(batch 2: conditional and unconditional rows) and one VAE decode of one image, under
``torch.profiler`` with ``profile_memory=True``, and takes the peak of the running sum of
the allocations and frees made during the call: the activations, not the weights. That
is the quantity ``animegen_utils.memory.estimate_memory`` estimates (``unet_bytes`` with
guidance on and batch 1, ``vae_bytes`` for batch 1). The peak RSS growth of the process
(``VmHWM`` after ``clear_refs``) is recorded beside it as a cross-check.

The weights are random (SD1.5's published configs, as in tests/conftest.py): activation
sizes depend on the architecture and the size, not on the weights' values. The UNet uses
the attention processor diffusers picks (``AttnProcessor2_0``: fused SDPA).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from animegen_utils.memory import estimate_memory  # noqa: E402
from tests.conftest import SD15_UNET, SD15_VAE  # noqa: E402  (SD1.5's published configs)


def _vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure_peak(fn) -> dict[str, int]:
    """Peak bytes allocated (and not yet freed) while ``fn()`` runs, and the RSS high-water growth."""
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    rss_before = _vm_kib("VmRSS")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    del out
    # Every op carries the bytes it allocated itself, net of what it freed (its children's are theirs);
    # "[memory]" events are frees and allocations outside any op. In time order, the running sum of
    # both is the live-bytes timeline.
    events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events())
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return {"profiler_peak_bytes": int(peak), "rss_growth_bytes": int((_vm_kib("VmHWM") - rss_before) * 1024)}


def build(seed: int = 0):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    vae = AutoencoderKL(**SD15_VAE).eval()
    return SimpleNamespace(unet=unet, vae=vae, vae_scale_factor=2 ** (len(vae.config.block_out_channels) - 1))


def estimates(pipe, sizes) -> dict[int, dict[str, int]]:
    out = {}
    for size in sizes:
        e = estimate_memory(pipe, batch=1, height=size, width=size, guidance=7.5)
        out[size] = {"unet_bytes": e.unet_bytes, "vae_bytes": e.vae_bytes}
    return out


@torch.no_grad()
def measure(pipe, sizes) -> dict[int, dict[str, dict[str, int]]]:
    results = {}
    for size in sizes:
        latent = size // pipe.vae_scale_factor
        sample = torch.randn(2, 4, latent, latent)
        text = torch.randn(2, 77, SD15_UNET["cross_attention_dim"])
        unet = measure_peak(lambda: pipe.unet(sample, 999, encoder_hidden_states=text).sample)
        vae = measure_peak(lambda: pipe.vae.decode(sample[:1]).sample)
        results[size] = {"unet": unet, "vae": vae}
        print(f"{size}px measured: unet {unet}, vae {vae}", flush=True)
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--measured", type=Path, default=None,
                        help="reuse the measurements in this results file; only recompute the estimates")
    parser.add_argument("--label", default="estimate", help="key under which this run's estimates are stored")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/memory_sd15.json"))
    args = parser.parse_args(argv)
    pipe = build()
    if args.measured:
        report = json.loads(args.measured.read_text())
        measured = {int(k): v for k, v in report["measured"].items()}
        sizes = sorted(measured)
    else:
        sizes = args.sizes
        measured = measure(pipe, sizes)
        report = {"what": "SD1.5 architecture, random weights, CPU fp32, batch 1 with guidance (UNet rows 2)",
                  "torch": torch.__version__, "machine": platform.machine(),
                  "attention_processor": type(next(m.processor for m in pipe.unet.modules()
                                                   if hasattr(m, "processor"))).__name__,
                  "measured": measured}
    report[args.label] = estimates(pipe, sizes)
    for size in sizes:
        m, e = measured[size], report[args.label][size]
        print(f"{size}px {args.label}: unet {e['unet_bytes'] / 2**20:.0f} MiB vs measured "
              f"{m['unet']['profiler_peak_bytes'] / 2**20:.0f} MiB; vae {e['vae_bytes'] / 2**20:.0f} MiB vs "
              f"measured {m['vae']['profiler_peak_bytes'] / 2**20:.0f} MiB")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1, default=str))
    return report


if __name__ == "__main__":
    main()
