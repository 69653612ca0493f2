"""DeepCache: reuse the UNet's deep features between denoising steps, per ``generate`` call.

DeepCache (Ma, Fang and Wang, "DeepCache: Accelerating Diffusion Models for Free", CVPR 2024,
arXiv:2312.00858) is training-free: the high-level features of a UNet change little from one
denoising step to the next, so every ``interval`` steps the UNet runs in full and caches them,
and on the steps in between only the shallow skip branch ``branch`` is recomputed (branch 0:
the first convolution and the last up-block layer; deeper branches recompute more and drift
less). The kit uses the authors' package (``pip install deepcache``, import name ``DeepCache``;
in the ``fast`` extra) and its ``DeepCacheSDHelper``, which wraps the ``forward`` of the UNet's
blocks, resnets and attentions with cached versions. It works on diffusers' UNet2DConditionModel
(SD1.x and the built-in model), which diffusers' own cache hooks do not cover (they are for
transformer models).

>>> from animegen_utils import generate, load_pipeline
>>> pipe = load_pipeline("tiny")                                       # DPM++ 2M, 20 steps
>>> [g] = generate(pipe, "1girl, happy", seed=0, deepcache=3)          # full UNet every 3rd step
>>> g.params["deepcache"]
{'interval': 3, 'branch': 0}
>>> [g] = generate(pipe, "1girl, happy", seed=0, deepcache={"interval": 2, "branch": 1})

What the kit adds to the package's helper:

* **per call, never leaking.** Pipelines of one model share one UNet, so a cache switched on
  with ``helper.enable()`` would change every pipeline's images. ``generate`` wraps each of its
  pipeline calls in ``unet_cache(pipe, config)``, which wraps the UNet, draws, and unwraps it in
  a ``finally`` (also after an error), putting every module's ``forward`` back as it was (the
  helper's own ``disable`` leaves bound methods behind as attributes): afterwards the UNet draws
  exactly (bit for bit) what it drew before.
* **steps counted, not looked up.** The helper finds the step by looking the timestep up in the
  pipeline's scheduler, which fails for a scheduler whose timesteps repeat one (PLMS does) and ties
  the UNet to one pipeline's scheduler. Here the step is the number of UNet calls since the wrap
  (one per step: diffusers batches the guided and unguided halves into one call).
* **branches that exist.** The helper numbers branches ``block * 3 + layer``, SD1.5's three layers
  per up block. ``branch`` here counts the UNet's own skip branches from the shallowest: the same
  numbers on SD1.5 (0..11), 0..7 on the built-in model (4 blocks of 2 up layers), where the
  helper's ``3k + 2`` would recompute a layer whose output nobody reads.

Measured on the built-in model: ``benchmarks/bench_fast_cache.py`` (speed side by side, probe
adherence at n=200), quoted in notebook 06. The cache is off unless asked for.
"""

from __future__ import annotations

import numbers
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

#: The key in a generation's params, and what ``generate(..., deepcache=...)`` takes.
PARAMS_KEY = "deepcache"
_ACTIVE = "_animegen_deepcache"  # on a UNet: set while a call has it wrapped
_KEYS = ("interval", "branch")
INSTALL_HINT = "pip install deepcache (or the kit's extra: pip install 'animegen[fast]')"


@dataclass(frozen=True)
class DeepCacheConfig:
    """``interval``: the UNet runs in full on every ``interval``-th step (1: every step, no saving);
    ``branch``: the skip branch recomputed on the steps between (0 = shallowest, cheapest)."""

    interval: int = 3
    branch: int = 0

    def record(self) -> dict[str, int]:
        """What an image's params record: ``{"interval": 3, "branch": 0}``."""
        return {"interval": self.interval, "branch": self.branch}


def layers_per_branch_block(unet: Any) -> int:
    """Up-block layers per block (SD1.5: 3, the built-in model: 2): one skip branch each."""
    return len(unet.up_blocks[-1].resnets)


def skip_branches(unet: Any) -> int:
    """How many skip branches ``unet`` has: ``branch`` takes 0 to this minus one.

    >>> skip_branches(load_pipeline("tiny").unet)
    8
    """
    _check_unet(unet)
    return len(unet.down_blocks) * layers_per_branch_block(unet)


def helper_branch_id(unet: Any, branch: int) -> int:
    """The ``cache_branch_id`` of ``DeepCacheSDHelper`` for the kit's ``branch`` (equal on SD1.5)."""
    per_block = layers_per_branch_block(unet)
    return (branch // per_block) * 3 + branch % per_block


def _check_unet(unet: Any) -> None:
    if not all(hasattr(unet, k) for k in ("down_blocks", "mid_block", "up_blocks")) or unet.mid_block is None:
        raise TypeError(f"DeepCache needs a UNet with down, mid and up blocks (diffusers' UNet2DConditionModel); "
                        f"this pipeline's denoiser is a {type(unet).__name__}")


def _int(name: str, value: Any, low: int, high: int | None, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (
            high is not None and value > high):
        raise ValueError(f"deepcache {name} must be {what}; got {value!r}")
    return int(value)


def deepcache_config(pipe: Any, value: Any) -> DeepCacheConfig | None:
    """``generate``'s ``deepcache=`` checked against ``pipe``'s UNet: None (or False) is off; an int
    is the interval (branch 0); a dict or ``DeepCacheConfig`` gives ``interval`` and ``branch``.

    Raises ``ValueError`` naming the valid choices, and ``ImportError`` saying how to install
    the package when it is missing.

    >>> deepcache_config(pipe, 3)
    DeepCacheConfig(interval=3, branch=0)
    >>> deepcache_config(pipe, {"interval": 2, "branch": 9})
    Traceback (most recent call last):
    ValueError: deepcache branch must be an integer from 0 to 7 for this UNet (4 blocks x 2 layers, ...); got 9
    """
    if value is None or value is False:
        return None
    if isinstance(value, DeepCacheConfig):
        fields = value.record()
    elif isinstance(value, Mapping):
        unknown = sorted(set(value) - set(_KEYS))
        if unknown:
            raise ValueError(f"deepcache got unknown keys {unknown}; valid keys: {', '.join(_KEYS)}")
        fields = {**DeepCacheConfig().record(), **value}
    elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
        fields = {"interval": value, "branch": 0}
    else:
        raise TypeError(f"deepcache must be None, an interval (int >= 1), a dict with keys {', '.join(_KEYS)} "
                        f"or a DeepCacheConfig; got {type(value).__name__} {value!r}")
    unet = pipe.unet
    n = skip_branches(unet)
    interval = _int("interval", fields["interval"], 1, None,
                    "an integer >= 1 (the UNet runs in full every interval-th step; 1 caches nothing)")
    branch = _int("branch", fields["branch"], 0, n - 1,
                  f"an integer from 0 to {n - 1} for this UNet ({len(unet.down_blocks)} blocks x "
                  f"{layers_per_branch_block(unet)} layers, 0 = the shallowest skip branch)")
    _helper_class()  # the package must be there before anything runs
    return DeepCacheConfig(interval, branch)


def _helper_class() -> type:
    try:
        from DeepCache import DeepCacheSDHelper
    except ImportError as err:
        raise ImportError(f"generate(..., deepcache=...) needs the DeepCache package: {INSTALL_HINT}") from err

    class CountingHelper(DeepCacheSDHelper):
        """``DeepCacheSDHelper`` with the step counted from the UNet's calls (see the module's notes)."""

        def wrap_unet_forward(self) -> None:
            self.function_dict["unet_forward"] = original = self.pipe.unet.forward
            self.calls = 0

            def wrapped_forward(*args, **kwargs):
                self.cur_timestep = self.calls
                self.calls += 1
                return original(*args, **kwargs)

            self.pipe.unet.forward = wrapped_forward

    return CountingHelper


def is_cached(unet: Any) -> bool:
    """Whether a ``unet_cache`` call has ``unet`` wrapped right now."""
    return getattr(unet, _ACTIVE, None) is not None


@contextmanager
def unet_cache(pipe: Any, config: DeepCacheConfig | None) -> Iterator[None]:
    """DeepCache on ``pipe``'s UNet for the duration of the ``with`` block (nothing for None).

    >>> with unet_cache(pipe, DeepCacheConfig(interval=3)):
    ...     images = pipe("1girl", num_inference_steps=20).images
    >>> is_cached(pipe.unet)
    False

    The UNet is shared by every pipeline of the model: do not draw with another pipeline of it
    inside the block (a second ``unet_cache`` on the same UNet raises ``RuntimeError``).
    """
    if config is None:
        yield
        return
    unet = pipe.unet
    if is_cached(unet):
        raise RuntimeError("DeepCache is already switched on for this UNet by another call; pipelines of one "
                           "model share their UNet, so draw with them one at a time")
    modules = list(unet.modules())
    # Forwards already set on instances (accelerate's offload hooks, for one) are put back as they were.
    saved = {id(m): m.__dict__["forward"] for m in modules if "forward" in m.__dict__}
    helper = _helper_class()(pipe=pipe)
    helper.set_params(cache_interval=config.interval, cache_branch_id=helper_branch_id(unet, config.branch),
                      skip_mode="uniform")
    object.__setattr__(unet, _ACTIVE, config)
    try:
        helper.enable()
        yield
    finally:
        # The helper's disable() would leave bound methods behind as attributes; this restores
        # every module exactly, also after an error halfway through enable().
        for m in modules:
            if id(m) in saved:
                m.__dict__["forward"] = saved[id(m)]
            else:
                m.__dict__.pop("forward", None)
        helper.reset_states()
        object.__setattr__(unet, _ACTIVE, None)

__all__ = ["DeepCacheConfig", "deepcache_config", "unet_cache", "is_cached", "skip_branches", "helper_branch_id",
           "PARAMS_KEY", "INSTALL_HINT"]
