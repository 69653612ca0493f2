"""Few-step generation: the kit's LCM-LoRA, its distillation, and the steps-vs-adherence map.

>>> from animegen_utils import load_pipeline, generate, build_prompt
>>> pipe = load_pipeline("tiny", scheduler="lcm")       # LCMScheduler + the built-in LCM-LoRA
>>> [g] = generate(pipe, build_prompt("happy", "casual"), seed=0)   # 4 steps, guidance 1.0

Retrain the adapter: ``python -m animegen_utils.fast distill`` (see ``distill.py``).
"""

from __future__ import annotations

from .distill import LCM_TARGET_MODULES, TINY_LCM_LORA_DIR, DistillConfig, distill

__all__ = ["DistillConfig", "distill", "TINY_LCM_LORA_DIR", "LCM_TARGET_MODULES"]
