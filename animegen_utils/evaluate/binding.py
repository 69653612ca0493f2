"""Colour binding: does "red hair, green eyes" give red hair and green eyes, or do the words swap?

A text encoder that does not keep each colour with its noun lets the eye colour's
word leak into the hair (or the reverse). This measures exactly that, on requests
whose hair and eye colours differ, and tabulates where every colour went.

    python -m animegen_utils.evaluate.binding --model tiny --n 300 --output binding.json

>>> requests = binding_requests(4, seed=0)
>>> all(r["hair_color"] != r["eye_color"] for r in requests)
True
>>> report = binding_report(requests, predicted={"hair_color": [r["eye_color"] for r in requests],
...                                              "eye_color": [r["eye_color"] for r in requests]})
>>> report["swap_rate"] > 0
True
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from ..published import write_results
from .probe import ATTRIBUTES, load_probe, probe_dir_for

HAIR, EYES = "hair_color", "eye_color"
#: Colour words that name both a hair and an eye colour: only these can swap.
SHARED_COLOURS: tuple[str, ...] = tuple(c for c in ATTRIBUTES[HAIR] if c in ATTRIBUTES[EYES])
#: Seeds from here on are never used by training or by the adherence evaluation.
BINDING_SEED_BASE = 3_000_000


def binding_requests(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` random requests whose hair and eye colours differ and can swap.

    Every request's hair colour or eye colour word also names a colour of the
    other attribute, so a swap is always possible (and detectable).
    """
    rng = random.Random(f"binding-requests:{seed}")
    requests: list[dict[str, str]] = []
    while len(requests) < n:
        request = {k: rng.choice(v) for k, v in ATTRIBUTES.items()}
        hair, eyes = request[HAIR], request[EYES]
        if hair != eyes and (hair in SHARED_COLOURS or eyes in SHARED_COLOURS):
            requests.append(request)
    return requests


def binding_report(requests: Sequence[dict[str, str]], predicted: dict[str, Sequence[str]]) -> dict[str, Any]:
    """Swap counts and the requested-to-drawn confusion of both colour attributes.

    An image counts as a swap when its hair shows the eye colour's word or its
    eyes show the hair colour's word (where that word is a colour of the other
    attribute). ``swap_rate`` is swaps over all requests.
    """
    if len(requests) != len(predicted[HAIR]) or len(requests) != len(predicted[EYES]):
        raise ValueError(f"{len(requests)} requests but {len(predicted[HAIR])} hair and "
                         f"{len(predicted[EYES])} eye predictions")
    hair_took_eyes = eyes_took_hair = swaps = 0
    confusion = {HAIR: Counter(), EYES: Counter()}
    for request, hair, eyes in zip(requests, predicted[HAIR], predicted[EYES]):
        leaked_into_hair = hair != request[HAIR] and hair == request[EYES]
        leaked_into_eyes = eyes != request[EYES] and eyes == request[HAIR]
        hair_took_eyes += leaked_into_hair
        eyes_took_hair += leaked_into_eyes
        swaps += leaked_into_hair or leaked_into_eyes
        confusion[HAIR][(request[HAIR], hair)] += 1
        confusion[EYES][(request[EYES], eyes)] += 1
    n = len(requests)
    return {
        "n": n,
        "swap_rate": swaps / n if n else 0.0,
        "hair_took_eye_colour": hair_took_eyes,
        "eyes_took_hair_colour": eyes_took_hair,
        "hair_accuracy": sum(c for (r, p), c in confusion[HAIR].items() if r == p) / n if n else 0.0,
        "eye_accuracy": sum(c for (r, p), c in confusion[EYES].items() if r == p) / n if n else 0.0,
        # "requested -> drawn": count, errors only, largest first
        "errors": {k: {f"{r} -> {p}": c for (r, p), c in conf.most_common() if r != p}
                   for k, conf in confusion.items()},
    }


def measure_binding(pipe, n: int = 300, seed: int = 0, steps: int = 20, guidance: float = 7.5,
                    batch_size: int = 16, probe=None, progress: bool = False) -> dict[str, Any]:
    """Draw ``n`` binding requests with the kit's manual prompt and read them with the probe."""
    from ..generation import generate
    from . import prompt_for
    from .metrics import ProbeScorer

    requests = binding_requests(n, seed)
    gens = generate(pipe, [prompt_for(r) for r in requests], seed=BINDING_SEED_BASE + seed * n,
                    steps=steps, guidance=guidance, batch_size=batch_size, progress=progress)
    predicted = ProbeScorer(probe).predict([g.image for g in gens])
    report = binding_report(requests, predicted)
    report.update(seed=seed, steps=steps, guidance=guidance)
    return report


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from ..pipelines import load_pipeline, pipeline_info

    parser = argparse.ArgumentParser(description="Colour binding: how often hair and eye colour words swap.")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--probe", type=Path, default=None,
                        help="the probe's folder (default: the built-in model's own probe)")
    parser.add_argument("--output", type=Path, default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    probe = load_probe(args.probe or probe_dir_for(args.model))
    pipe = load_pipeline(args.model)
    report = measure_binding(pipe, n=args.n, seed=args.seed, steps=args.steps, guidance=args.guidance,
                             probe=probe, progress=True)
    report["model"] = pipeline_info(pipe).model
    print(f"swap rate {report['swap_rate']:.3f} on {report['n']} requests "
          f"(hair took the eye colour {report['hair_took_eye_colour']}, "
          f"eyes took the hair colour {report['eyes_took_hair_colour']})")
    for key, errors in report["errors"].items():
        print(f"{key} errors: " + (", ".join(f"{k} {v}" for k, v in list(errors.items())[:8]) or "none"))
    if args.output:
        write_results(args.output, report)
        print(f"wrote {args.output}")
    return report


if __name__ == "__main__":
    main()
