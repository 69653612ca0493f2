"""``PromptOptimizer``: emotion × style (× character) → an LLM-refined ``Prompt``.

>>> from animegen_utils.prompts import CharacterSheet
>>> opt = PromptOptimizer(backend="offline")   # default "auto": Claude if ANTHROPIC_API_KEY is set
>>> sheet = CharacterSheet("pink", "blue", "twintails")
>>> p = opt.optimize("happy", "school_uniform", character=sheet, variant=1)
>>> p.backend, p.tags_with_role("identity")
('offline', ('pink hair', 'twintails', 'blue eyes'))
>>> claude = PromptOptimizer(tokenizer=pipe.tokenizer)          # doctest: +SKIP
>>> claude.optimize("happy", "school_uniform", character=sheet) # doctest: +SKIP
>>> claude.cache_stats()                                        # doctest: +SKIP
{'hits': 0, 'misses': 1, 'api_calls': 1}

Every answer is validated (``validate.validate_output``); an invalid one gets one
repair request quoting the problems, then the offline backend takes over (a
logged warning), so garbage never reaches the pipeline. Auth problems always
raise ``LLMAuthError``; other API failures fall back to offline unless
``fallback=None``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import warnings
from typing import Any, Literal

from animegen_utils.prompts import EMOTION_TAGS, EMOTIONS, STYLES, CharacterSheet, Prompt, check_choice

from .backends import (
    AnthropicBackend,
    LLMAuthError,
    LLMError,
    LLMUnavailableError,
    OpenAIBackend,
    TEMPLATE_VERSION,
    repair_text,
    request_text,
)
from .cache import PromptCache, cache_key, description_cache_key
from .describe import (
    DESCRIBE_SYSTEM_PROMPT,
    DESCRIBE_TEMPLATE_VERSION,
    DESCRIBE_TOOL,
    Parsed,
    describe_request_text,
    parse_description,
    request_prompt,
    validate_request,
)
from .offline import offline_generate
from .usage import UsageTracker
from .validate import assemble_prompt, normalize_tag, validate_output

logger = logging.getLogger("animegen_utils.llm")

BACKENDS = ("auto", "anthropic", "openai", "offline")


class LLMOutputError(LLMError):
    """The LLM's answer was still invalid after the repair request (only with ``fallback=None``)."""


class PromptOptimizer:
    """Writes prompts with an LLM (or the offline expander), validated, cached and budgeted.

    Args:
        backend: ``"auto"`` (anthropic when a key is given or ``ANTHROPIC_API_KEY`` is set,
            otherwise offline), ``"anthropic"``, ``"openai"`` (also local OpenAI-compatible
            servers via ``base_url``) or ``"offline"``.
        model: the LLM; defaults to ``DEFAULT_ANTHROPIC_MODEL`` / ``DEFAULT_OPENAI_MODEL``.
        cache_dir: sqlite cache folder (default ``$ANIMEGEN_CACHE_DIR`` or ``~/.cache/animegen/llm``).
        temperature, max_retries, timeout: passed to the SDK; the SDK retries
            408/409/429/5xx/529 and timeouts with backoff, honouring ``retry-after``.
        fallback: ``"offline"`` (default) or ``None`` to raise when the API fails.
        tokenizer: the pipeline's tokenizer (``pipe.tokenizer``) for an exact 77-token budget;
            None uses ``validate.EstimateTokenizer``, an estimate.
        base_url, api_key: connection settings (``ANTHROPIC_BASE_URL`` / ``OPENAI_BASE_URL`` are
            honoured when ``base_url`` is None).
        http_client: an ``httpx2.Client`` for the SDK (both installed SDKs are built on httpx2),
            e.g. ``httpx2.Client(transport=httpx2.MockTransport(handler))`` in tests.
        client: a ready ``anthropic.Anthropic`` / ``openai.OpenAI``, used as is (its own
            retries and timeout apply).
        use_cache: set False to always call the API.
    """

    def __init__(
        self,
        backend: Literal["auto", "anthropic", "openai", "offline"] = "auto",
        model: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        temperature: float = 0.7,
        max_retries: int = 2,
        timeout: float = 60.0,
        fallback: Literal["offline"] | None = "offline",
        tokenizer: Any = None,
        base_url: str | None = None,
        api_key: str | None = None,
        client: Any = None,
        http_client: Any = None,
        use_cache: bool = True,
    ) -> None:
        check_choice("backend", backend, BACKENDS)
        if fallback not in ("offline", None):
            raise ValueError(f"fallback must be 'offline' or None, got {fallback!r}")
        if backend == "auto":
            if client is not None:
                backend = "openai" if type(client).__module__.startswith("openai") else "anthropic"
            else:
                backend = "anthropic" if (api_key or os.environ.get("ANTHROPIC_API_KEY")) else "offline"
            logger.info("PromptOptimizer(backend='auto') chose the %s backend%s", backend,
                        "" if backend != "offline" else " (no ANTHROPIC_API_KEY)")
        self.backend = backend
        self.temperature, self.fallback, self.tokenizer = temperature, fallback, tokenizer
        conn = dict(api_key=api_key, base_url=base_url, max_retries=max_retries, timeout=timeout,
                    temperature=temperature, client=client, http_client=http_client)
        self._llm: AnthropicBackend | OpenAIBackend | None = (
            AnthropicBackend(model, **conn) if backend == "anthropic"
            else OpenAIBackend(model, **conn) if backend == "openai" else None
        )
        self.model = self._llm.model if self._llm else None
        # Offline prompts cost nothing to recompute, so only LLM backends open a cache.
        self._cache: PromptCache | None = None
        if self._llm is not None and use_cache:
            try:
                self._cache = PromptCache(cache_dir)
            except (OSError, sqlite3.Error) as err:  # read-only disk, locked-out folder, ...
                warnings.warn(f"LLM prompt cache unavailable ({err}); running without a cache.",
                              RuntimeWarning, stacklevel=2)
        self._stats = {"hits": 0, "misses": 0, "api_calls": 0}
        self.usage = UsageTracker()

    # -- public API -------------------------------------------------------------------------
    def optimize(self, emotion: str, style: str, character: CharacterSheet | None = None,
                 variant: int = 0) -> Prompt:
        """One prompt; ``variant`` picks a different (but reproducible) prompt for the same inputs."""
        check_choice("emotion", emotion, EMOTIONS)
        check_choice("style", style, STYLES)
        if self._llm is None:
            return self._offline(emotion, style, character, variant)
        key = cache_key(backend=self.backend, model=self.model, emotion=emotion, style=style,
                        character=character, template_version=TEMPLATE_VERSION,
                        temperature=self.temperature, variant=variant)
        answer = self._cache.get(key) if self._cache is not None else None
        if answer is not None:
            self._stats["hits"] += 1
        else:
            self._stats["misses"] += 1
            try:
                answer, errors = self._ask(emotion, style, character, variant)
            except LLMAuthError:
                raise  # a wrong key is for the user to fix, never hidden by a fallback
            except LLMUnavailableError as err:
                if self.fallback is None:
                    raise
                logger.warning("%s backend failed after retries (%s); using the offline backend",
                               self.backend, err)
                return self._offline(emotion, style, character, variant, why=f"{self.backend} failed")
            if answer is None:
                if self.fallback is None:
                    raise LLMOutputError(f"{self.backend} answer invalid after one repair: {'; '.join(errors)}")
                logger.warning("%s answer still invalid after one repair (%s); using the offline backend",
                               self.backend, "; ".join(errors))
                return self._offline(emotion, style, character, variant, why=f"{self.backend} output invalid")
            if self._cache is not None:
                self._cache.put(key, answer)
        return self._finish(answer, emotion, style, character, self.backend, self.model)

    def optimize_description(self, text: str, character: CharacterSheet | None = None,
                             variant: int = 0) -> Prompt:
        """A free-text description (English, Japanese, ...) → a validated, budgeted ``Prompt``.

        ``prompt.request`` is what was understood (``describe.REQUEST_FIELDS``),
        ``prompt.unresolved`` the phrases that map to nothing, ``prompt.conflicts`` where
        ``character`` overrode the text (the sheet always wins; each conflict is also
        logged as a warning). The LLM backends fill the ``describe.DESCRIBE_TOOL`` schema;
        the offline backend (and the fallback) is the lexicon parser
        ``describe.parse_description``. The cache is keyed on the text alone.

        >>> p = PromptOptimizer(backend="offline").optimize_description("furious, silver pigtails")
        >>> p.request["emotion"], p.tags[:3]
        ('angry', ('1girl', 'solo', 'angry'))
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"description must be a non-empty string, got {text!r}")
        if self._llm is None:
            return self._described(parse_description(text), character, variant, "offline", None)
        key = description_cache_key(backend=self.backend, model=self.model, text=text,
                                    template_version=DESCRIBE_TEMPLATE_VERSION)
        cached = self._cache.get(key) if self._cache is not None else None
        if cached is not None:
            self._stats["hits"] += 1
            return self._described(Parsed.from_dict(cached), character, variant, self.backend, self.model)
        self._stats["misses"] += 1
        try:
            completion = self._call(self._llm.ask, describe_request_text(text), DESCRIBE_TOOL, DESCRIBE_SYSTEM_PROMPT)
            parsed, errors = validate_request(completion.data)
            if errors:
                logger.info("%s answer invalid (%s); sending one repair request", self.backend, "; ".join(errors))
                completion = self._call(self._llm.repair, completion, repair_text(errors))
                parsed, errors = validate_request(completion.data)
        except LLMAuthError:
            raise
        except LLMUnavailableError as err:
            if self.fallback is None:
                raise
            logger.warning("%s backend failed after retries (%s); using the offline parser", self.backend, err)
            return self._described(parse_description(text), character, variant, "offline", None,
                                   why=f"{self.backend} failed")
        if parsed is None:
            if self.fallback is None:
                raise LLMOutputError(f"{self.backend} answer invalid after one repair: {'; '.join(errors)}")
            logger.warning("%s answer still invalid after one repair (%s); using the offline parser",
                           self.backend, "; ".join(errors))
            return self._described(parse_description(text), character, variant, "offline", None,
                                   why=f"{self.backend} output invalid")
        if self._cache is not None:
            self._cache.put(key, parsed.to_dict())
        return self._described(parsed, character, variant, self.backend, self.model)

    def cache_stats(self) -> dict[str, int]:
        """``{"hits", "misses", "api_calls"}`` for this optimizer (a repair is an extra api call)."""
        return dict(self._stats)

    def usage_summary(self) -> list[dict]:
        """Tokens and estimated USD cost per backend/model; render with ``to_markdown``."""
        return self.usage.summary()

    # -- internals --------------------------------------------------------------------------
    def _ask(self, emotion: str, style: str, character: CharacterSheet | None,
             variant: int) -> tuple[dict | None, list[str]]:
        """Ask, validate, repair once. Returns (validated answer or None, errors)."""
        completion = self._call(self._llm.ask, request_text(emotion, style, character, variant))
        positive, negative, rationale, errors = validate_output(completion.data, emotion, character)
        if errors:
            logger.info("%s answer invalid (%s); sending one repair request", self.backend, "; ".join(errors))
            completion = self._call(self._llm.repair, completion, repair_text(errors))
            positive, negative, rationale, errors = validate_output(completion.data, emotion, character)
            if errors:
                return None, errors
        return {"positive_tags": positive, "negative_tags": negative, "rationale": rationale}, []

    def _call(self, method, *args):
        self._stats["api_calls"] += 1
        completion = method(*args)
        self.usage.record(self.backend, self.model, completion.input_tokens, completion.output_tokens)
        return completion

    def _offline(self, emotion: str, style: str, character: CharacterSheet | None, variant: int,
                 why: str | None = None) -> Prompt:
        answer = offline_generate(emotion, style, character, variant)
        if why:
            answer["rationale"] = f"offline fallback ({why}): {answer['rationale']}"
        return self._finish(answer, emotion, style, character, "offline", None)

    def _described(self, parsed: Parsed, character: CharacterSheet | None, variant: int, backend: str,
                   model: str | None, why: str | None = None) -> Prompt:
        rationale = parsed.rationale or None
        if why:
            rationale = f"offline fallback ({why}): {parsed.rationale}"
        prompt = request_prompt(parsed, character, variant=variant, tokenizer=self.tokenizer, backend=backend,
                                model=model, rationale=rationale)
        for conflict in prompt.conflicts:
            logger.warning("description vs character sheet: %s", conflict)
        lost = set(prompt.tags_with_role("identity")) & set(prompt.dropped_tags)
        if lost:
            logger.warning("token budget forced dropping essential tags: %s", ", ".join(sorted(lost)))
        return prompt

    def _finish(self, answer: dict, emotion: str, style: str, character: CharacterSheet | None,
                backend: str, model: str | None) -> Prompt:
        prompt = assemble_prompt(
            answer["positive_tags"], answer["negative_tags"], emotion=emotion, style=style,
            character=character, tokenizer=self.tokenizer, backend=backend, model=model,
            rationale=answer.get("rationale"),
        )
        essential = {EMOTION_TAGS[emotion][0], *(normalize_tag(t) for t in (character.tags() if character else ()))}
        lost = essential & set(prompt.dropped_tags)
        if lost:
            logger.warning("token budget forced dropping essential tags: %s", ", ".join(sorted(lost)))
        return prompt
