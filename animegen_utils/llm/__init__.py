"""LLM prompt optimization: Claude / OpenAI-compatible / offline, validated, cached, budgeted.

Claude if ANTHROPIC_API_KEY is set, else the offline expander:

>>> from animegen_utils.llm import PromptOptimizer, to_markdown
>>> opt = PromptOptimizer(tokenizer=pipe.tokenizer)         # doctest: +SKIP
>>> prompt = opt.optimize("sad", "formal", variant=1)       # doctest: +SKIP
>>> prompt.backend, prompt.positive                         # doctest: +SKIP
('offline', '1girl, solo, sad, tears, teary eyes, ...')
>>> print(to_markdown(opt.usage_summary()))                 # doctest: +SKIP

Free-text descriptions (English or Japanese) become prompts too:

>>> p = opt.optimize_description("my OC Mika: silver pigtails, ruby eyes, furious")  # doctest: +SKIP
>>> p.request, p.unresolved                                 # doctest: +SKIP

Modules: ``optimizer`` (PromptOptimizer), ``backends`` (SDK wrappers and the prompt
template), ``describe`` (description → request: tool schema, validation, character sheet, tags),
``parser`` and ``lexicon`` (the offline description parser and its words), ``offline``
(rule-based expander), ``validate`` (output checks, roles, token budget), ``cache`` (sqlite
cache), ``usage`` (tokens and cost).
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
from .describe import DESCRIBE_TOOL, REQUEST_FIELDS, Parsed, load_descriptions, parse_accuracy, parse_description
from .offline import offline_generate
from .optimizer import BACKENDS, LLMOutputError, PromptOptimizer
from .usage import PRICES_PER_MTOK, UsageTracker, estimate_cost, to_markdown
from .validate import EstimateTokenizer, normalize_tag, validate_output

__all__ = [
    "BACKENDS",
    "DESCRIBE_TOOL",
    "REQUEST_FIELDS",
    "Parsed",
    "load_descriptions",
    "parse_accuracy",
    "parse_description",
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
