"""animegen_utils: anime character generation with Stable Diffusion 1.5 and diffusers.

>>> from animegen_utils import build_prompt, load_pipeline, generate
>>> pipe = load_pipeline()                      # the built-in offline toy model
>>> [g] = generate(pipe, build_prompt("happy", "school_uniform"), seed=0)
>>> g.image
"""

from __future__ import annotations

import logging as _logging

# transformers warns once, on import, that torchvision is missing and it uses PIL
# image processors instead; that is the intended set-up here (CPU, no torchvision).
_quiet = _logging.getLogger("transformers.utils.import_utils")
_level = _quiet.level
_quiet.setLevel(_logging.ERROR)
try:
    from .pipelines import (  # noqa: E402
        SCHEDULERS,
        TASKS,
        ModelNotFoundError,
        clear_pipeline_cache,
        load_pipeline,
        pipeline_info,
        resolve_device,
        resolve_dtype,
        set_scheduler,
        switch_task,
    )
finally:
    _quiet.setLevel(_level)

from .generation import Generation, generate, read_parameters, reproduce, save_image  # noqa: E402
from .prompts import (  # noqa: E402
    EMOTIONS,
    STYLES,
    CharacterSheet,
    Prompt,
    TokenBudgetError,
    build_prompt,
    check_token_budget,
    fit_token_budget,
)

from .abtest import ABResult, ab_test  # noqa: E402
from . import paths  # noqa: E402

__version__ = "1.0.0"

__all__ = [
    "EMOTIONS", "STYLES", "CharacterSheet", "Prompt", "TokenBudgetError", "build_prompt",
    "check_token_budget", "fit_token_budget", "load_pipeline", "switch_task", "set_scheduler",
    "pipeline_info", "resolve_device", "resolve_dtype", "clear_pipeline_cache", "SCHEDULERS",
    "TASKS", "ModelNotFoundError", "Generation", "generate", "save_image", "read_parameters",
    "reproduce", "ab_test", "ABResult", "paths", "__version__",
]
