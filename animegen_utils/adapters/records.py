"""What an image records about the adapters it was drawn with, and loading them back.

>>> generation_record(pipe)          # what generate() writes into every image's parameters
{'adapters': [{'name': 'mika', 'source': '/content/outputs/03/lora', ...}], 'lcm_lora': {...}}
>>> load_recorded_adapters(pipe, params["adapters"]); check_recorded_adapters(pipe, params["adapters"])
"""

from __future__ import annotations

import warnings
from typing import Any

from ..errors import ModelNotFoundError
from .state import _registry, active_adapters, adapter_sha256, load_lora

#: The adapter name of a model's default LCM-LoRA (the kit's own for a built-in model, the public one for SD1.5).
LCM_ADAPTER = "lcm"

__all__ = ["adapter_records", "generation_record", "load_recorded_adapters", "check_recorded_adapters", "LCM_ADAPTER"]


def adapter_records(pipe) -> list[dict[str, Any]]:
    """What ``generate`` records about this pipeline's adapters: name, source (folder, file or Hub
    id), weight file name, scale and the weights' SHA-256, in load order.

    >>> adapter_records(pipe)
    [{'name': 'mika', 'source': '/content/outputs/03/lora', 'weight_name': None, 'scale': 0.8, 'sha256': '...'}]
    """
    registry = _registry(pipe) if getattr(pipe, "unet", None) is not None else {}
    lcm = _lcm_adapter(pipe)
    records = []
    for name, scale in active_adapters(pipe).items():
        entry = registry.get(name)
        if entry is not None and name != lcm:  # the LCM-LoRA goes with the sampler: see generation_record
            records.append({"name": name, "source": entry.path_or_id, "weight_name": entry.weight_name,
                            "scale": scale, "sha256": entry.sha256})
    return records


def _lcm_adapter(pipe) -> str | None:
    # load_pipeline(scheduler="lcm") records the LCM-LoRA's source and adapter name on the pipeline
    return getattr(pipe, "animegen_lcm_adapter", None) if getattr(pipe, "animegen_lcm_lora", None) else None


def generation_record(pipe) -> dict[str, Any]:
    """What ``generate`` puts in every image's parameters about LoRAs: ``adapters`` (see
    ``adapter_records``) and ``lcm_lora`` (source and hash), each only when there is one."""
    record: dict[str, Any] = {}
    adapters = adapter_records(pipe)
    if adapters:
        record["adapters"] = adapters
    lcm = _lcm_adapter(pipe)
    if lcm is not None:
        # "default": the model's own (the kit's for "tiny", the public one for SD1.5), found again
        # by name on another machine, wherever the package is installed there.
        record["lcm_lora"] = {"source": pipe.animegen_lcm_lora, "sha256": adapter_sha256(pipe, lcm),
                              "default": lcm == LCM_ADAPTER}
    return record


def load_recorded_adapters(pipe, records: list[dict[str, Any]]) -> None:
    """Load the adapters an image's parameters record (``params["adapters"]``) into ``pipe``.

    Raises ``ModelNotFoundError`` naming the first one that cannot be loaded
    (``check_recorded_adapters`` then compares the weights' hashes).
    """
    for rec in records:
        kwargs = {"weight_name": rec["weight_name"]} if rec.get("weight_name") else {}
        where = f"{rec['source']}/{rec['weight_name']}" if rec.get("weight_name") else rec["source"]
        try:
            load_lora(pipe, rec["source"], adapter_name=rec["name"], scale=rec["scale"], **kwargs)
        except (OSError, ValueError) as err:
            raise ModelNotFoundError(
                f"The image was drawn with LoRA {rec['name']!r} (scale {rec['scale']}, sha256 {rec['sha256'][:12]}) "
                f"from {where}, which cannot be loaded here: {type(err).__name__}: {err}. Put it back there, or "
                "load it yourself and pass pipe=.") from err


def check_recorded_adapters(pipe, records: list[dict[str, Any]], lcm_lora: dict[str, Any] | None = None) -> None:
    """Warn where ``pipe``'s adapters (and LCM-LoRA) differ from the ones an image records."""
    have = {r["name"]: r for r in adapter_records(pipe)}
    problems = []
    for rec in records:
        mine = have.pop(rec["name"], None)
        if mine is None:
            problems.append(f"LoRA {rec['name']!r} from {rec['source']} is not loaded")
        elif mine["sha256"] != rec["sha256"]:
            problems.append(f"LoRA {rec['name']!r} has other weights (sha256 {mine['sha256'][:12]}, "
                            f"the image's {rec['sha256'][:12]})")
        elif mine["scale"] != rec["scale"]:
            problems.append(f"LoRA {rec['name']!r} is at scale {mine['scale']}, the image's at {rec['scale']}")
    problems += [f"LoRA {name!r} is loaded but the image was drawn without it" for name in have]
    if lcm_lora:
        lcm = _lcm_adapter(pipe)
        sha = adapter_sha256(pipe, lcm) if lcm is not None else None
        if sha != lcm_lora.get("sha256"):
            problems.append(f"the LCM-LoRA differs from the image's {lcm_lora['source']} "
                            f"(sha256 {str(sha)[:12]}, the image's {str(lcm_lora.get('sha256'))[:12]})")
    if problems:
        warnings.warn("The pipeline is not the one the image was drawn with: " + "; ".join(problems) + ".",
                      stacklevel=3)
