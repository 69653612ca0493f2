"""LLM prompt optimization: Claude / OpenAI-compatible / offline, validated, cached, budgeted.

Claude if ANTHROPIC_API_KEY is set, else the offline expander:

>>> from animegen_utils.llm import PromptOptimizer, to_markdown
>>> opt = PromptOptimizer(tokenizer=pipe.tokenizer)         # doctest: +SKIP
>>> prompt = opt.optimize("sad", "formal", variant=1)       # doctest: +SKIP
>>> prompt.backend, prompt.positive                         # doctest: +SKIP
('offline', '1girl, solo, sad, tears, teary eyes, ...')
>>> print(to_markdown(opt.usage_summary()))                 # doctest: +SKIP

Modules: ``optimizer`` (PromptOptimizer), ``backends`` (SDK wrappers and the prompt
template), ``offline`` (rule-based expander), ``validate`` (output checks, roles,
token budget), ``cache`` (sqlite cache), ``usage`` (tokens and cost).
"""

from .backends import (
    DEFAULT_ANTHROPIC_MODEL,
    DEFAULT_OPENAI_MODEL,
    TEMPLATE_VERSION,
    AnthropicBackend,
    LLMAuthError,
    LLMError,
    LLMUnavailableError,
    OpenAIBackend,
)
from .cache import PromptCache, default_cache_dir
from .offline import offline_generate
from .optimizer import BACKENDS, LLMOutputError, PromptOptimizer
from .usage import PRICES_PER_MTOK, UsageTracker, estimate_cost, to_markdown
from .validate import EstimateTokenizer, normalize_tag, validate_output

__all__ = [
    "BACKENDS",
    "DEFAULT_ANTHROPIC_MODEL",
    "DEFAULT_OPENAI_MODEL",
    "TEMPLATE_VERSION",
    "PRICES_PER_MTOK",
    "AnthropicBackend",
    "OpenAIBackend",
    "EstimateTokenizer",
    "LLMAuthError",
    "LLMError",
    "LLMOutputError",
    "LLMUnavailableError",
    "PromptCache",
    "PromptOptimizer",
    "UsageTracker",
    "default_cache_dir",
    "estimate_cost",
    "normalize_tag",
    "offline_generate",
    "to_markdown",
    "validate_output",
]
