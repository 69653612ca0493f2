"""Few-step generation on the built-in model: every kit sampler at several step counts, plus LCM.

    python benchmarks/bench_fast.py adherence --n 200            # probe adherence per point (cached per point)
    python benchmarks/bench_fast.py speed --repeats 12           # s/image at batch 1, all points in one run
    python benchmarks/bench_fast.py report                       # fast.md, the Pareto figure, the bars
    python benchmarks/bench_fast.py adherence --points v2        # the bar points only (the shipped results)

Adherence: the evaluation's random requests on seeds from 1,000,000 on (never used by any training),
read back by the attribute probe; images depend only on their seeds, so they are drawn in batches.
Speed: batch 1, every point drawn round-robin in the same process, median per point; the ratios are
what to read (absolute seconds depend on the machine and on what else it is doing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from animegen_utils.evaluate import ProbeScorer
from animegen_utils.fast.frontier import (BAR_ATTRIBUTES, BARS, SamplerPoint, mean_adherence, measure_adherence,
                                          measure_speed, meets_bars, pareto_front, plot_map)

RESULTS = Path("benchmarks/results")
BASELINE, DEFAULT = SamplerPoint("pndm", 50, 7.5), SamplerPoint("dpm++", 20, 7.5)

# Every kit sampler where it starts to work (8 steps) and DPM++/UniPC below that; DPM++-20 is the
# reference and PNDM-50 the speed baseline. More points cost CPU hours at n=200 on 2 cores.
STEPS = {"dpm++": (4, 6, 8, 12, 20), "dpm++_karras": (6, 8), "unipc": (4, 6, 8),
         "euler_a": (8,), "euler": (8,), "ddim": (8,), "pndm": (12, 50)}
LCM_POINTS = [SamplerPoint("lcm", s, 1.0) for s in (1, 2, 4, 8)] + [SamplerPoint("lcm", 4, 1.5),
                                                                     SamplerPoint("lcm", 4, 2.0)]
BASE_POINTS = [SamplerPoint(name, s, 7.5) for name, steps in STEPS.items() for s in steps]
# The points the bars are about, for a second, longer speed run.
KEY_POINTS = [BASELINE, DEFAULT, SamplerPoint("ddim", 8, 7.5), SamplerPoint("dpm++", 4, 7.5)] + [
    SamplerPoint("lcm", s, 1.0) for s in (1, 2, 4)]


# Version 2's bar points: DPM++-20 (the reference) and LCM at 1, 2 and 4 steps.
V2_POINTS = [DEFAULT] + [SamplerPoint("lcm", s, 1.0) for s in (1, 2, 4)]


def _points(which: str) -> list[SamplerPoint]:
    return {"base": BASE_POINTS, "lcm": LCM_POINTS, "all": BASE_POINTS + LCM_POINTS, "key": KEY_POINTS,
            "v2": V2_POINTS}[which]


def _key(p: SamplerPoint) -> str:
    return f"{p.scheduler}|{p.steps}|{p.guidance:g}"


def _point(key: str) -> SamplerPoint:
    name, steps, guidance = key.split("|")
    return SamplerPoint(name, int(steps), float(guidance))


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _save(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    tmp.replace(path)


def adherence(args) -> None:
    path = args.results / "fast_adherence.json"
    scorer = ProbeScorer.for_model(args.model)
    done = _load(path)
    for p in _points(args.points):
        key = f"{_key(p)}|n{args.n}"
        if key in done and not args.force:
            continue
        started = time.perf_counter()
        acc = measure_adherence(p, n=args.n, batch_size=16, model=args.model, scorer=scorer)
        # Merge into the file as it is now: other runs of this script may be adding points too.
        done = {**_load(path), key: {**acc, "seconds": round(time.perf_counter() - started, 1)}}
        _save(done, path)  # after every point: nothing lost if interrupted
        print(p.label, {k: round(v, 3) for k, v in acc.items()}, flush=True)


def speed(args) -> None:
    points = _points(args.points)
    seconds = measure_speed(points, repeats=args.repeats)
    out = {"repeats": args.repeats, "machine": platform.processor() or platform.machine(),
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "s_per_image": {_key(p): s for p, s in seconds.items()}}
    name = "fast_speed" if args.points == "all" else f"fast_speed_{args.points}"
    _save(out, args.results / f"{name}{args.tag}.json")
    base = seconds[BASELINE]
    for p in points:
        print(f"{p.label:28s} {seconds[p]:.4f} s  {base / seconds[p]:.2f}x", flush=True)


def report(args) -> None:
    acc_all = _load(args.results / "fast_adherence.json")
    sp = _load(args.results / "fast_speed.json")
    speed_of = {_point(k): v for k, v in sp["s_per_image"].items()}
    acc = {}
    for k, v in acc_all.items():
        key, n = k.rsplit("|n", 1)
        if int(n) == args.n:
            acc[_point(key)] = v
    timed = [p for p in _points("all") if p in speed_of]
    points = [p for p in timed if p in acc]  # adherence measured too
    base, ref = speed_of[BASELINE], acc[DEFAULT]
    lines = [f"# Few-step generation on the built-in model (`python benchmarks/bench_fast.py`)", "",
             f"Adherence: probe accuracy on {args.n} random requests per point, seeds 1,000,000+ (unseen). "
             f"Speed: median s/image at batch 1 over {sp['repeats']} round-robin rounds in one run "
             f"({sp['threads']} torch threads, {sp['machine']}, 2 cores). Speed-up is against PNDM-50 at CFG 7.5.", "",
             "| sampler | steps | CFG | UNet evals | s / image | speed-up | emotion | style | hair | eyes | mean | bars | within 0.03 of DPM++-20 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(timed, key=lambda q: speed_of[q]):
        if p not in acc:
            lines.append(f"| {p.scheduler} | {p.steps} | {p.guidance:g} | {p.unet_evals} | {speed_of[p]:.4f} | "
                         f"{base / speed_of[p]:.1f}x | " + " | ".join("–" for _ in range(7)) + " |")
            continue
        a = acc[p]
        lines.append(f"| {p.scheduler} | {p.steps} | {p.guidance:g} | {p.unet_evals} | {speed_of[p]:.4f} | "
                     f"{base / speed_of[p]:.1f}x | " + " | ".join(f"{a[k]:.3f}" for k in BAR_ATTRIBUTES)
                     + f" | {mean_adherence(a):.3f} | {'yes' if meets_bars(a) else 'no'} | "
                     f"{'yes' if meets_bars(a, ref) else 'no'} |")
    front = pareto_front(points, speed_of, acc)
    lines += ["", "Pareto front (mean adherence): " + ", ".join(p.label for p in front), ""]
    ok = [p for p in points if meets_bars(acc[p], ref)]
    fastest = min(ok, key=lambda p: speed_of[p]) if ok else None
    lcm_ok = [p for p in ok if p.scheduler == "lcm"]
    lines += ["## Bars", "",
              f"Bars: emotion, style >= {BARS['emotion']}, hair >= {BARS['hair_color']}, eyes >= {BARS['eye_color']}, "
              "each within 0.03 of DPM++-20; LCM at its recommended setting >= 8x faster than PNDM-50.", ""]
    if fastest is not None:
        lines.append(f"- Fastest point meeting the adherence bars: **{fastest.label}**, "
                     f"{speed_of[fastest]:.4f} s/image, {base / speed_of[fastest]:.1f}x PNDM-50.")
    non_lcm = [p for p in ok if p.scheduler != "lcm"]
    if non_lcm:
        best = min(non_lcm, key=lambda p: speed_of[p])
        lines.append(f"- Fastest non-distilled point meeting them: {best.label}, {base / speed_of[best]:.1f}x.")
    if lcm_ok:
        best = min(lcm_ok, key=lambda p: speed_of[p])
        lines.append(f"- Fastest LCM point meeting them: {best.label}, {base / speed_of[best]:.1f}x.")
    else:
        lines.append("- No LCM point meets every adherence bar (see the table for the frontier).")
    for key_path in sorted(args.results.glob("fast_speed_key*.json")):  # longer runs over the key points
        key = _load(key_path)
        ks = {_point(k): v for k, v in key["s_per_image"].items()}
        kb = ks[BASELINE]
        lines += ["", f"## Speed run `{key_path.name}`: the key points only, {key['repeats']} round-robin rounds, "
                      f"{key['threads']} torch thread(s)", "",
                  "| point | s / image | speed-up vs PNDM-50 |", "|---|---|---|"]
        lines += [f"| {p.label} | {ks[p]:.4f} | {kb / ks[p]:.2f}x |" for p in sorted(ks, key=ks.get)]
    (args.results / "fast.md").write_text("\n".join(lines) + "\n")
    fig = plot_map(points, speed_of, acc)
    fig.savefig(args.results / "fast_map.png", dpi=110)
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=("adherence", "speed", "report"))
    parser.add_argument("--points", choices=("base", "lcm", "all", "key", "v2"), default="all")
    parser.add_argument("--model", default="tiny", choices=("tiny",), help="the built-in model (adherence phase)")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--force", action="store_true", help="re-measure points already in the results")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--tag", default="", help="suffix of the speed results file, e.g. _1thread")
    args = parser.parse_args(argv)
    {"adherence": adherence, "speed": speed, "report": report}[args.phase](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
