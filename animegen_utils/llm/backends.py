"""LLM backends: Anthropic (forced tool use) and OpenAI-compatible (JSON mode or a forced function).

Both speak the same small protocol so ``PromptOptimizer`` never sees an SDK type:
``ask(text, tool=None, system=...) -> Completion`` and ``repair(previous, feedback) -> Completion``
(the repair reuses the request's tool and system prompt).
SDK errors are translated into ``LLMAuthError`` (fix your key) and
``LLMUnavailableError`` (the SDK's own retries are exhausted).

>>> backend = AnthropicBackend(api_key="sk-ant-...")            # doctest: +SKIP
>>> c = backend.ask(request_text("happy", "casual", None, 0))   # doctest: +SKIP
>>> c.data["positive_tags"], c.input_tokens                     # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from animegen_utils.prompts import EMOTION_TAGS, STYLE_TAGS, CharacterSheet

from .offline import EMOTION_VOCAB

# Claude Haiku 5.5: the current Haiku (not in the SDK's deprecation table; a test checks).
# Both jobs here, picking 15-30 tags and mapping a description onto a closed schema, are
# short extraction/classification tasks, Haiku's intended use; at $0.10 / $0.50 per million
# input / output tokens a prompt (~700 in, ~150 out) costs about $0.0001, 20x less than
# Sonnet 5.5 ($2 / $10). Quality is bounded by the enums, the validator, one repair and the
# offline fallback; pass model="claude-sonnet-5-5" where nuance is worth the price.
DEFAULT_ANTHROPIC_MODEL = "claude-haiku-5-5"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
# Bump when SYSTEM_PROMPT / request_text / the tool change: it is part of the cache key.
TEMPLATE_VERSION = "1"

_ANTHROPIC_KEY_HELP = (
    "Set it with `export ANTHROPIC_API_KEY=sk-ant-...` (in Colab: add a secret named "
    "ANTHROPIC_API_KEY in the key-icon Secrets panel, then "
    "`os.environ['ANTHROPIC_API_KEY'] = google.colab.userdata.get('ANTHROPIC_API_KEY')`), "
    "pass api_key=..., or use backend='offline' / backend='auto'."
)
_OPENAI_KEY_HELP = (
    "Set it with `export OPENAI_API_KEY=sk-...` (Colab: a secret named OPENAI_API_KEY), pass "
    "api_key=..., pass base_url=... for a local OpenAI-compatible server, or use backend='offline'."
)


class LLMError(RuntimeError):
    """Base class of the LLM optimizer's errors."""


class LLMAuthError(LLMError):
    """No API key, or the API rejected it (401/403). Never retried, never hidden by a fallback."""


class LLMUnavailableError(LLMError):
    """The API failed after the SDK's retries (429, 5xx, 529, timeouts, other 4xx)."""


SYSTEM_PROMPT = (
    "You write Stable Diffusion prompts for anime character portraits, as Danbooru tags.\n"
    "Rules: every tag is lowercase, 1 to 4 words, no sentences, no markdown, no weights or "
    "emphasis brackets. Give 15 to 30 positive tags, most important first: subject, emotion, "
    "character identity, outfit, framing, quality. The whole positive prompt must fit in 77 "
    "CLIP tokens. Negative tags list what to avoid (artifacts, wrong expression). "
    "The rationale is one short sentence."
)

SUBMIT_TOOL: dict[str, Any] = {
    "name": "submit_prompt",
    "description": "Submit the finished prompt as Danbooru tags.",
    "input_schema": {
        "type": "object",
        "properties": {
            "positive_tags": {"type": "array", "items": {"type": "string"}},
            "negative_tags": {"type": "array", "items": {"type": "string"}},
            "rationale": {"type": "string"},
        },
        "required": ["positive_tags", "negative_tags", "rationale"],
    },
}


def request_text(emotion: str, style: str, character: CharacterSheet | None, variant: int) -> str:
    """The user message for one (emotion, style, character, variant)."""
    lines = [
        f"Emotion: {emotion}. Outfit style: {style.replace('_', ' ')}.",
        f"Required tags: 1girl, solo, {EMOTION_TAGS[emotion][0]}, {STYLE_TAGS[style][0]}.",
        f"Emotion vocabulary you may draw on: {', '.join(EMOTION_VOCAB[emotion])}.",
    ]
    if character is not None:
        lines.append(
            "Character identity tags; include every one exactly as written and no other hair "
            f"colour, eye colour or hairstyle: {', '.join(character.tags())}."
        )
    if variant:
        lines.append(f"This is variation #{variant}: choose a different nuance, pose or framing "
                     "than the most obvious prompt.")
    return "\n".join(lines)


def repair_text(errors: list[str]) -> str:
    return ("Your answer was rejected by the validator:\n- " + "\n- ".join(errors)
            + "\nSubmit a corrected prompt that fixes every problem.")


@dataclass
class Completion:
    """One answer: parsed ``data`` (None if unparseable), token usage and the conversation."""

    data: Any
    raw: str
    input_tokens: int
    output_tokens: int
    messages: list[dict] = field(default_factory=list)  # ends with the assistant turn
    tool_use_id: str | None = None
    tool: dict | None = None    # the forced tool of the request, reused by the repair
    system: str = ""


def _parse_json(text: str) -> Any:
    # A JSON object, possibly inside a ``` fence; anything else is "unparseable".
    m = re.search(r"\{.*\}", text, re.S)
    try:
        return json.loads(m.group(0)) if m else None
    except json.JSONDecodeError:
        return None


class AnthropicBackend:
    """Claude through the official SDK; structured output via a forced ``submit_prompt`` tool."""

    name = "anthropic"

    def __init__(self, model: str | None = None, *, api_key: str | None = None, base_url: str | None = None,
                 max_retries: int = 2, timeout: float = 60.0, temperature: float = 0.7,
                 max_tokens: int = 1024, client: Any = None, http_client: Any = None) -> None:
        import anthropic

        self._sdk = anthropic
        self.model = model or DEFAULT_ANTHROPIC_MODEL
        self.temperature, self.max_tokens = temperature, max_tokens  # temperature: see _send
        if client is None:
            api_key = api_key or os.environ.get("ANTHROPIC_API_KEY")
            if not api_key:
                raise LLMAuthError("No Anthropic API key found. " + _ANTHROPIC_KEY_HELP)
            # The SDK retries 408/409/429/5xx/529 and timeouts itself, honouring retry-after;
            # base_url=None lets it read ANTHROPIC_BASE_URL.
            client = anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=max_retries,
                                         timeout=timeout, http_client=http_client)
        self.client = client

    def ask(self, text: str, tool: dict | None = None, system: str = SYSTEM_PROMPT) -> Completion:
        """One forced call of ``tool`` (default ``SUBMIT_TOOL``) with ``system`` and the user ``text``."""
        return self._send([{"role": "user", "content": text}], tool or SUBMIT_TOOL, system)

    def repair(self, previous: Completion, feedback: str) -> Completion:
        # After a tool_use the next user turn must answer it with a tool_result.
        if previous.tool_use_id:
            turn = [{"type": "tool_result", "tool_use_id": previous.tool_use_id, "is_error": True,
                     "content": feedback}]
        else:
            turn = feedback
        return self._send(previous.messages + [{"role": "user", "content": turn}],
                          previous.tool or SUBMIT_TOOL, previous.system or SYSTEM_PROMPT)

    def _send(self, messages: list[dict], tool: dict, system: str) -> Completion:
        sdk = self._sdk
        try:
            # No temperature: anthropic 2.x's messages.create (API version 2026-10-21) has no
            # sampling parameters at all; variants differ through the request text instead.
            # Thinking is off: current models think by default, and a forced tool_choice
            # does not combine with thinking. (Models that cannot turn it off, Opus 5.5 and
            # Fable 5.1, answer 400 here: the optimizer then falls back to offline.)
            response = self.client.messages.create(
                model=self.model, max_tokens=self.max_tokens, system=system, messages=messages, tools=[tool],
                tool_choice={"type": "tool", "name": tool["name"]}, thinking={"type": "disabled"},
            )
        except (sdk.AuthenticationError, sdk.PermissionDeniedError) as err:
            raise LLMAuthError(f"Anthropic rejected the API key ({err.status_code}). "
                               + _ANTHROPIC_KEY_HELP) from err
        except sdk.APIError as err:  # status errors, connection errors and timeouts
            raise LLMUnavailableError(f"Anthropic API failed: {err}") from err
        blocks: list[dict] = []
        data, raw, tool_id = None, "", None
        for block in response.content:  # by type: a reply may start with other blocks
            if block.type == "tool_use" and block.name == tool["name"]:
                data, raw, tool_id = block.input, json.dumps(block.input), block.id
                blocks.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
            elif block.type == "text":
                raw += block.text
                blocks.append({"type": "text", "text": block.text})
        if data is None and raw:
            data = _parse_json(raw)
        usage = response.usage
        return Completion(data, raw, usage.input_tokens, usage.output_tokens,
                          messages + [{"role": "assistant", "content": blocks or "(empty)"}], tool_id, tool, system)


class OpenAIBackend:
    """OpenAI or any OpenAI-compatible server (Ollama, vLLM, LM Studio) via ``base_url``, JSON mode.

    >>> OpenAIBackend("llama3.1", base_url="http://localhost:11434/v1")  # doctest: +SKIP
    """

    name = "openai"

    def __init__(self, model: str | None = None, *, api_key: str | None = None, base_url: str | None = None,
                 max_retries: int = 2, timeout: float = 60.0, temperature: float = 0.7,
                 client: Any = None, http_client: Any = None) -> None:
        try:
            import openai
        except ImportError as err:  # optional extra
            raise ImportError("The openai backend needs the openai package: pip install animegen[openai]") from err
        self._sdk = openai
        self.model = model or DEFAULT_OPENAI_MODEL
        self.temperature = temperature
        if client is None:
            base_url = base_url or os.environ.get("OPENAI_BASE_URL")
            api_key = api_key or os.environ.get("OPENAI_API_KEY")
            if not api_key:
                if not base_url:
                    raise LLMAuthError("No OpenAI API key found. " + _OPENAI_KEY_HELP)
                api_key = "not-needed"  # local servers ignore it, the SDK insists on one
            kwargs: dict[str, Any] = {"base_url": base_url} if base_url else {}
            client = openai.OpenAI(api_key=api_key, max_retries=max_retries, timeout=timeout,
                                   http_client=http_client, **kwargs)
        self.client = client

    def ask(self, text: str, tool: dict | None = None, system: str = SYSTEM_PROMPT) -> Completion:
        """JSON mode by default; with ``tool``, a forced function call whose parameters are its schema."""
        if tool is None:
            system = system + (
                '\nAnswer with one JSON object only: {"positive_tags": [...], "negative_tags": [...], '
                '"rationale": "..."}'
            )
        return self._send([{"role": "system", "content": system}, {"role": "user", "content": text}], tool)

    def repair(self, previous: Completion, feedback: str) -> Completion:
        if previous.tool_use_id:  # a tool call is answered by a tool message
            turn = {"role": "tool", "tool_call_id": previous.tool_use_id, "content": feedback}
        else:
            turn = {"role": "user", "content": feedback}
        return self._send(previous.messages + [turn], previous.tool)

    def _send(self, messages: list[dict], tool: dict | None = None) -> Completion:
        sdk = self._sdk
        if tool is None:
            mode: dict[str, Any] = {"response_format": {"type": "json_object"}}
        else:
            mode = {"tools": [{"type": "function", "function": {
                        "name": tool["name"], "description": tool["description"], "parameters": tool["input_schema"]}}],
                    "tool_choice": {"type": "function", "function": {"name": tool["name"]}}}
        try:
            # No max_tokens: newer OpenAI models only accept max_completion_tokens and
            # many local servers only the former; the answer is short either way.
            response = self.client.chat.completions.create(
                model=self.model, messages=messages, temperature=self.temperature, **mode,
            )
        except (sdk.AuthenticationError, sdk.PermissionDeniedError) as err:
            raise LLMAuthError(f"The OpenAI API rejected the key ({err.status_code}). "
                               + _OPENAI_KEY_HELP) from err
        except sdk.APIError as err:
            raise LLMUnavailableError(f"OpenAI API failed: {err}") from err
        message = response.choices[0].message if response.choices else None
        raw = (message.content or "") if message is not None else ""
        calls = [c for c in (getattr(message, "tool_calls", None) or []) if getattr(c, "type", "") == "function"]
        usage = response.usage
        n_in, n_out = getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0
        if tool is not None and calls:
            call = calls[0]
            arguments = call.function.arguments or ""
            try:
                data = json.loads(arguments)
            except json.JSONDecodeError:
                data = None
            turn = {"role": "assistant", "content": raw or None, "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": arguments}}]}
            return Completion(data, arguments, n_in, n_out, messages + [turn], call.id, tool)
        return Completion(_parse_json(raw), raw, n_in, n_out, messages + [{"role": "assistant", "content": raw}],
                          None, tool)
