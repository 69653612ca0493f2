"""PromptOptimizer through the real anthropic/openai SDKs; only HTTP is mocked.

Every mocked error response carries ``retry-after-ms: 1`` so the SDK's retries
are real but take milliseconds.
"""

from __future__ import annotations

import json
import logging

import anthropic
import httpx2
import pytest

from animegen_utils.llm import (
    DEFAULT_ANTHROPIC_MODEL,
    LLMAuthError,
    LLMOutputError,
    LLMUnavailableError,
    PromptOptimizer,
    estimate_cost,
    normalize_tag,
    offline_generate,
    to_markdown,
    validate_output,
)
from animegen_utils.llm.offline import EMOTION_VOCAB
from animegen_utils.llm.validate import assign_role
from animegen_utils.prompts import (
    EMOTION_TAGS,
    EMOTIONS,
    QUALITY_TAGS,
    ROLE_PRIORITY,
    STYLE_TAGS,
    CharacterSheet,
    Prompt,
    TokenBudgetError,
    check_token_budget,
    fit_token_budget,
)

SHEET = CharacterSheet("pink", "blue", "twintails", accessories=("hair ribbon",))
GOOD = ["1girl", "solo", "happy", "smile", "pink hair", "twintails", "blue eyes", "hair ribbon",
        "school uniform", "serafuku", "upper body", "masterpiece", "best quality"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL",
                "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ANIMEGEN_CACHE_DIR", str(tmp_path / "cache"))


class Server:
    """A scripted HTTP server: hands out ``responses`` in order and records request bodies."""

    def __init__(self, *responses: httpx2.Response) -> None:
        self.responses = list(responses)
        self.bodies: list[dict] = []
        self.urls: list[str] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.bodies.append(json.loads(request.content))
        self.urls.append(str(request.url))
        return self.responses.pop(0)


def tool_reply(positive, negative=("lowres",), rationale="bright and clear", usage=(120, 40)):
    return httpx2.Response(200, json={
        "id": "msg_1", "type": "message", "role": "assistant", "model": DEFAULT_ANTHROPIC_MODEL,
        "stop_reason": "tool_use",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "submit_prompt", "input": {
            "positive_tags": list(positive), "negative_tags": list(negative), "rationale": rationale}}],
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    })


def error_reply(status: int, kind: str) -> httpx2.Response:
    return httpx2.Response(status, headers={"retry-after-ms": "1"},
                           json={"type": "error", "error": {"type": kind, "message": kind}})


def claude(server: Server, tmp_path, **kw) -> PromptOptimizer:
    kw.setdefault("max_retries", 2)
    return PromptOptimizer(backend="anthropic", api_key="sk-ant-test", cache_dir=tmp_path / "c",
                           http_client=httpx2.Client(transport=httpx2.MockTransport(server)), **kw)


# -- anthropic ---------------------------------------------------------------------------------
def test_tool_use_request_and_result(tmp_path):
    server = Server(tool_reply(GOOD))
    prompt = claude(server, tmp_path).optimize("happy", "school_uniform", character=SHEET)

    (body,) = server.bodies
    assert body["model"] == DEFAULT_ANTHROPIC_MODEL and body["max_tokens"] == 1024
    assert "Danbooru" in body["system"]
    assert body["messages"][0]["role"] == "user"
    assert "happy" in body["messages"][0]["content"] and "pink hair, twintails" in body["messages"][0]["content"]
    (tool,) = body["tools"]
    assert tool["name"] == "submit_prompt"
    assert set(tool["input_schema"]["properties"]) == {"positive_tags", "negative_tags", "rationale"}
    assert body["tool_choice"] == {"type": "tool", "name": "submit_prompt"}

    assert (prompt.backend, prompt.model, prompt.rationale) == ("anthropic", DEFAULT_ANTHROPIC_MODEL, "bright and clear")
    assert prompt.tags_with_role("identity") == SHEET.tags()
    assert prompt.tags_with_role("emotion") == ("happy", "smile")
    assert prompt.negative_tags == ("lowres",)


def test_malformed_output_gets_one_repair_request(tmp_path):
    bad = ["1girl", "happy", "**Here is your prompt:**", "blonde hair"]  # markdown, no identity
    server = Server(tool_reply(bad), tool_reply(GOOD))
    prompt = claude(server, tmp_path).optimize("happy", "school_uniform", character=SHEET)

    assert len(server.bodies) == 2
    repair = server.bodies[1]["messages"]
    assert [m["role"] for m in repair] == ["user", "assistant", "user"]
    assert repair[1]["content"][0]["type"] == "tool_use"
    (result,) = repair[2]["content"]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_1" and result["is_error"]
    assert "prose or markdown" in result["content"] and "pink hair" in result["content"]
    assert prompt.backend == "anthropic" and "blonde hair" not in prompt.tags


def test_still_invalid_after_repair_falls_back_to_offline(tmp_path, caplog):
    server = Server(tool_reply(["1girl", "smile"]), tool_reply([]), tool_reply(GOOD))
    opt = claude(server, tmp_path)
    with caplog.at_level(logging.WARNING, logger="animegen_utils.llm"):
        prompt = opt.optimize("happy", "casual", character=SHEET)
    assert len(server.bodies) == 2
    assert prompt.backend == "offline" and prompt.rationale.startswith("offline fallback")
    assert "still invalid" in caplog.text
    assert opt.cache_stats() == {"hits": 0, "misses": 1, "api_calls": 2}
    # The fallback was not cached: asking again goes back to the API (and now succeeds).
    assert opt.optimize("happy", "casual", character=SHEET).backend == "anthropic"


def test_still_invalid_raises_without_fallback(tmp_path):
    server = Server(tool_reply(["# Prompt\nsmile"]), tool_reply(["1girl"]))
    with pytest.raises(LLMOutputError, match="emotion tag 'happy' is missing"):
        claude(server, tmp_path, fallback=None).optimize("happy", "casual")


def test_text_json_answer_is_parsed(tmp_path):
    text = "```json\n" + json.dumps({"positive_tags": GOOD, "negative_tags": [], "rationale": "ok"}) + "\n```"
    server = Server(httpx2.Response(200, json={
        "id": "m", "type": "message", "role": "assistant", "model": "x", "stop_reason": "end_turn",
        "content": [{"type": "text", "text": text}], "usage": {"input_tokens": 1, "output_tokens": 1}}))
    assert claude(server, tmp_path).optimize("happy", "casual", character=SHEET).backend == "anthropic"


def test_overloaded_529_then_success(tmp_path):
    server = Server(error_reply(529, "overloaded_error"), tool_reply(GOOD))
    opt = claude(server, tmp_path)
    assert opt.optimize("happy", "casual", character=SHEET).backend == "anthropic"
    assert len(server.bodies) == 2  # one SDK retry
    assert opt.cache_stats()["api_calls"] == 1


def test_rate_limit_exhausted_falls_back_or_raises(tmp_path):
    server = Server(*[error_reply(429, "rate_limit_error") for _ in range(3)])
    prompt = claude(server, tmp_path, max_retries=2).optimize("sad", "formal")
    assert len(server.bodies) == 3 and prompt.backend == "offline"

    server = Server(*[error_reply(429, "rate_limit_error") for _ in range(2)])
    with pytest.raises(LLMUnavailableError) as info:
        claude(server, tmp_path, max_retries=1, fallback=None, use_cache=False).optimize("sad", "formal")
    assert isinstance(info.value.__cause__, anthropic.RateLimitError)
    assert len(server.bodies) == 2


def test_401_raises_clear_auth_error_even_with_fallback(tmp_path):
    server = Server(error_reply(401, "authentication_error"))
    with pytest.raises(LLMAuthError, match="export ANTHROPIC_API_KEY"):
        claude(server, tmp_path).optimize("happy", "casual")
    assert len(server.bodies) == 1  # 401 is not retried


def test_missing_key(tmp_path, caplog):
    with pytest.raises(LLMAuthError, match="export ANTHROPIC_API_KEY=.*Colab"):
        PromptOptimizer(backend="anthropic", cache_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="animegen_utils.llm"):
        opt = PromptOptimizer(cache_dir=tmp_path)  # auto, no key
    assert opt.backend == "offline" and "offline" in caplog.text
    assert opt.optimize("angry", "casual").backend == "offline"


def test_auto_uses_anthropic_when_key_is_set(monkeypatch, tmp_path):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://gateway.local/anthropic")
    server = Server(tool_reply(GOOD))
    opt = PromptOptimizer(cache_dir=tmp_path, http_client=httpx2.Client(transport=httpx2.MockTransport(server)))
    assert opt.backend == "anthropic"
    assert opt.optimize("happy", "casual", SHEET).backend == "anthropic"
    assert server.urls == ["http://gateway.local/anthropic/v1/messages"]


def test_unknown_emotion_or_style_names_choices(tmp_path):
    opt = PromptOptimizer(backend="offline")
    with pytest.raises(ValueError, match="happy, angry, sad"):
        opt.optimize("smug", "casual")
    with pytest.raises(ValueError, match="school_uniform"):
        opt.optimize("happy", "swimsuit")


def test_usage_and_cost(tmp_path):
    server = Server(tool_reply(GOOD, usage=(1000, 200)))
    opt = claude(server, tmp_path)
    opt.optimize("happy", "casual", character=SHEET)
    (row,) = opt.usage_summary()
    assert row["calls"] == 1 and (row["input_tokens"], row["output_tokens"]) == (1000, 200)
    assert row["cost_usd"] == pytest.approx(estimate_cost(DEFAULT_ANTHROPIC_MODEL, 1000, 200))
    assert row["cost_usd"] > 0
    assert estimate_cost("llama3.1:8b", 10, 10) is None
    table = to_markdown(opt.usage_summary() + [{**row, "model": "local", "cost_usd": None}])
    assert table.splitlines()[0].startswith("| backend | model |") and "n/a" in table


# -- openai-compatible ---------------------------------------------------------------------------
def chat_reply(content: str) -> httpx2.Response:
    return httpx2.Response(200, json={
        "id": "c1", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 80, "total_tokens": 380}})


def test_openai_compatible_local_server(tmp_path):
    # The installed openai SDK is built on httpx2 too (not httpx), so httpx2.MockTransport.
    answer = json.dumps({"positive_tags": GOOD, "negative_tags": ["lowres"], "rationale": "r"})
    server = Server(chat_reply("not json at all"), chat_reply(answer))
    opt = PromptOptimizer(backend="openai", model="gpt-4o-mini", base_url="http://localhost:11434/v1",
                          cache_dir=tmp_path, http_client=httpx2.Client(transport=httpx2.MockTransport(server)))
    prompt = opt.optimize("happy", "school_uniform", character=SHEET)
    assert server.urls[0] == "http://localhost:11434/v1/chat/completions"
    first, repair = server.bodies
    assert first["response_format"] == {"type": "json_object"} and first["model"] == "gpt-4o-mini"
    assert [m["role"] for m in first["messages"]] == ["system", "user"] and "JSON" in first["messages"][0]["content"]
    assert repair["messages"][-2] == {"role": "assistant", "content": "not json at all"}
    assert "not a JSON object" in repair["messages"][-1]["content"]
    assert (prompt.backend, prompt.model) == ("openai", "gpt-4o-mini")
    assert prompt.tags_with_role("identity") == SHEET.tags()
    assert opt.usage_summary()[0]["cost_usd"] == pytest.approx(2 * estimate_cost("gpt-4o-mini", 300, 80))


def test_openai_401_and_missing_key(tmp_path):
    server = Server(httpx2.Response(401, json={"error": {"message": "bad key", "type": "invalid_request_error"}}))
    opt = PromptOptimizer(backend="openai", api_key="sk-bad", cache_dir=tmp_path,
                          http_client=httpx2.Client(transport=httpx2.MockTransport(server)))
    with pytest.raises(LLMAuthError, match="OPENAI_API_KEY"):
        opt.optimize("happy", "casual")
    with pytest.raises(LLMAuthError, match="export OPENAI_API_KEY"):
        PromptOptimizer(backend="openai", cache_dir=tmp_path)


# -- offline, validation, consistency -----------------------------------------------------------
def test_offline_is_deterministic_per_variant():
    a = [PromptOptimizer(backend="offline").optimize("happy", "casual", SHEET, variant=v) for v in range(4)]
    b = [PromptOptimizer(backend="offline").optimize("happy", "casual", SHEET, variant=v) for v in range(4)]
    assert a == b
    assert len({p.positive for p in a}) == 4
    for p in a:
        assert EMOTION_TAGS["happy"][0] in p.tags and set(STYLE_TAGS["casual"]) <= set(p.tags)
    assert offline_generate("sad", "formal", None, 3) == offline_generate("sad", "formal", None, 3)


def test_identity_tags_identical_for_every_emotion(tmp_path):
    opt = PromptOptimizer(backend="offline")
    blocks = {opt.optimize(e, "formal", SHEET, variant=2).tags_with_role("identity") for e in EMOTIONS}
    assert blocks == {SHEET.tags()}
    # An LLM answer with shuffled, underscored identity tags and a conflicting colour is normalized.
    shuffled = ["Blue_Eyes", "1girl", "happy", "hair ribbon", "Twintails", "PINK HAIR", "blonde hair", "casual"]
    server = Server(tool_reply(shuffled))
    prompt = claude(server, tmp_path).optimize("happy", "casual", SHEET)
    assert prompt.tags[:7] == ("1girl", "solo", "happy", *SHEET.tags())
    assert "blonde hair" not in prompt.tags


@pytest.mark.parametrize("tag", ["a sentence. like this", "**bold**", "`code`", "two\nlines",
                                 "# heading", "one two three four five six seven"])
def test_validation_rejects_prose_and_markdown(tag):
    *_, errors = validate_output({"positive_tags": ["happy", tag]}, "happy", None)
    assert errors


def test_validation_normalizes_and_dedupes():
    pos, neg, why, errors = validate_output(
        {"positive_tags": " 1girl , Happy, happy, Long_Hair", "negative_tags": ["LowRes"], "rationale": "x\ny"},
        "happy", None)
    assert (pos, neg, why, errors) == (["1girl", "happy", "long hair"], ["lowres"], "x y", [])
    assert validate_output(None, "happy", None)[3] and validate_output({"positive_tags": []}, "happy", None)[3]
    assert normalize_tag(" Sailor_Collar ") == "sailor collar"


# -- token budget ----------------------------------------------------------------------------------
def clip_tokenizer(tmp_path, whole_words=()):
    """A real transformers.CLIPTokenizer built offline: characters, plus merges that make
    each of ``whole_words`` one token (like CLIP's BPE for common words)."""
    from transformers import CLIPTokenizer

    chars = [chr(c) for c in range(33, 127)]
    tokens = chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    for word in whole_words:  # left-to-right merge chain: s m -> sm, sm i -> smi, ...
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merge = f"{pieces[0]} {pieces[1]}"
            if merge not in merges:
                merges.append(merge)
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            tokens.append(pieces[0])
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens + ["<|startoftext|>", "<|endoftext|>"]))}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("".join(line + "\n" for line in ["#version: 0.2", *merges]))
    return CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=77)


def test_token_budget_drops_quality_first_and_keeps_emotion_and_identity(tmp_path):
    # Subject, emotion and identity words are single tokens; style and quality words are
    # spelled out letter by letter, so the prompt is far over 77 tokens and must be trimmed.
    words = {w for t in ("1girl", "solo", *EMOTION_VOCAB["happy"], *SHEET.tags()) for w in t.split()}
    tok = clip_tokenizer(tmp_path, sorted(words | {"girl"}))
    assert tok.tokenize("twintails") == ["twintails</w>"]
    prompt = PromptOptimizer(backend="offline", tokenizer=tok).optimize("happy", "school_uniform", SHEET)
    assert check_token_budget(prompt, tok).fits
    assert set(QUALITY_TAGS[:2]) <= set(prompt.dropped_tags)
    assert prompt.tags[:4] == ("1girl", "solo", "happy", "smile")
    assert prompt.tags_with_role("identity") == SHEET.tags()
    rank = {r: i for i, r in enumerate(ROLE_PRIORITY)}
    worst_kept = max(rank[r] for r in prompt.roles)
    best_dropped = min(rank[assign_role(t, SHEET.tags())] for t in prompt.dropped_tags)
    assert worst_kept <= best_dropped  # nothing dropped while a lower-priority tag survived
    # Without a tokenizer the documented estimate is used: still trimmed to 77.
    assert len(PromptOptimizer(backend="offline").optimize("happy", "casual", SHEET).tags) > 5


def test_fit_token_budget_never_returns_an_empty_prompt(tmp_path):
    tok = clip_tokenizer(tmp_path)
    huge = Prompt(tags=("x" * 100, "y" * 100), roles=("extra", "extra"))
    with pytest.raises(TokenBudgetError, match="77"):
        fit_token_budget(huge, tok)


# -- free-text descriptions ------------------------------------------------------------------------
MIKA = "my OC Mika: silver pigtails, ruby eyes, furious, in her sailor uniform, wearing her round glasses"
MIKA_ANSWER = {"emotion": "angry", "style": "school_uniform", "hair_color": "silver", "eye_color": "red",
               "hairstyle": "twintails", "accessories": ["glasses"], "extra_tags": ["round eyewear"],
               "avoid_tags": [], "unresolved": ["my OC Mika"], "rationale": "furious is angry, pigtails are twintails"}


def describe_reply(answer: dict, usage=(300, 90), block_id="toolu_d1"):
    return httpx2.Response(200, json={
        "id": "msg_d", "type": "message", "role": "assistant", "model": DEFAULT_ANTHROPIC_MODEL,
        "stop_reason": "tool_use",
        "content": [{"type": "tool_use", "id": block_id, "name": "submit_request", "input": answer}],
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1]},
    })


def test_describe_request_carries_the_tool_schema_with_vocabulary_enums(tmp_path):
    from animegen_utils.llm.describe import DESCRIBE_SYSTEM_PROMPT
    from animegen_utils.prompts import EYE_COLORS, HAIR_COLORS, HAIRSTYLES, STYLES

    server = Server(describe_reply(MIKA_ANSWER))
    prompt = claude(server, tmp_path).optimize_description(MIKA)

    (body,) = server.bodies
    assert body["model"] == DEFAULT_ANTHROPIC_MODEL and body["system"] == DESCRIBE_SYSTEM_PROMPT
    assert body["messages"] == [{"role": "user", "content": "Character description:\n" + MIKA}]
    (tool,) = body["tools"]
    assert tool["name"] == "submit_request"
    assert body["tool_choice"] == {"type": "tool", "name": "submit_request"}
    assert body["thinking"] == {"type": "disabled"}  # a forced tool does not combine with thinking
    props = tool["input_schema"]["properties"]
    assert props["emotion"]["enum"] == list(EMOTIONS) and props["style"]["enum"] == list(STYLES)
    assert props["hair_color"]["enum"] == list(HAIR_COLORS) and props["eye_color"]["enum"] == list(EYE_COLORS)
    assert props["hairstyle"]["enum"] == list(HAIRSTYLES)
    assert props["accessories"]["items"]["enum"] == ["hair ribbon", "glasses"]
    assert props["extra_tags"] == {"type": "array", "items": {"type": "string"}}  # free tags

    assert (prompt.backend, prompt.model) == ("anthropic", DEFAULT_ANTHROPIC_MODEL)
    assert prompt.request == {k: MIKA_ANSWER[k] for k in ("emotion", "style", "hair_color", "eye_color",
                                                           "hairstyle", "accessories")}
    assert prompt.unresolved == ("my OC Mika",) and prompt.rationale == MIKA_ANSWER["rationale"]
    assert prompt.tags[:5] == ("1girl", "solo", "angry", "frown", "v-shaped eyebrows")
    assert "round eyewear" in prompt.tags_with_role("extra")


def test_describe_answer_outside_the_enums_is_repaired(tmp_path):
    bad = {**MIKA_ANSWER, "emotion": "livid", "hair_color": "platinum"}
    server = Server(describe_reply(bad), describe_reply(MIKA_ANSWER, block_id="toolu_d2"))
    opt = claude(server, tmp_path)
    prompt = opt.optimize_description(MIKA)
    assert len(server.bodies) == 2
    repair = server.bodies[1]
    assert repair["tools"] == server.bodies[0]["tools"] and repair["tool_choice"]["name"] == "submit_request"
    assert [m["role"] for m in repair["messages"]] == ["user", "assistant", "user"]
    (result,) = repair["messages"][2]["content"]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_d1" and result["is_error"]
    assert "emotion 'livid' is not one of: happy, angry" in result["content"]
    assert "hair_color 'platinum'" in result["content"]
    assert prompt.backend == "anthropic" and prompt.request["emotion"] == "angry"
    assert opt.cache_stats() == {"hits": 0, "misses": 1, "api_calls": 2}


def test_describe_still_invalid_falls_back_to_the_offline_parser(tmp_path, caplog):
    bad = {**MIKA_ANSWER, "style": "kimono"}
    server = Server(describe_reply(bad), describe_reply({"emotion": 3}), describe_reply(MIKA_ANSWER))
    opt = claude(server, tmp_path)
    with caplog.at_level(logging.WARNING, logger="animegen_utils.llm"):
        prompt = opt.optimize_description(MIKA)
    assert len(server.bodies) == 2 and "still invalid" in caplog.text
    assert prompt.backend == "offline" and prompt.rationale.startswith("offline fallback (anthropic output invalid)")
    assert prompt.request["hair_color"] == "silver" and prompt.unresolved == ("mika",)  # the lexicon parser's
    with pytest.raises(LLMOutputError, match="style 'kimono'"):
        claude(Server(describe_reply(bad), describe_reply(bad)), tmp_path, fallback=None,
               use_cache=False).optimize_description(MIKA)


def test_describe_cache_is_keyed_on_the_text(tmp_path):
    server = Server(describe_reply(MIKA_ANSWER))
    first = claude(server, tmp_path).optimize_description(MIKA)
    assert len(server.bodies) == 1
    # A new optimizer (a restarted notebook) on the same cache: zero requests, for any
    # variant or character sheet, and for the same text with other whitespace.
    silent = Server()
    opt = claude(silent, tmp_path)
    again = opt.optimize_description(MIKA)
    assert again == first
    sheet = CharacterSheet("pink", "blue", "twintails")
    with_sheet = opt.optimize_description("  " + MIKA.replace(", ", ",  "), character=sheet, variant=2)
    assert silent.bodies == [] and opt.cache_stats() == {"hits": 2, "misses": 0, "api_calls": 0}
    assert with_sheet.request["hair_color"] == "pink" and with_sheet.conflicts
    assert opt.usage_summary() == []
    # Another text is another key.
    other = Server(describe_reply({**MIKA_ANSWER, "emotion": "sad"}))
    assert claude(other, tmp_path).optimize_description(MIKA + " (crying)").request["emotion"] == "sad"
    assert len(other.bodies) == 1


def test_describe_with_openai_forces_the_function(tmp_path):
    call = {"id": "call_1", "type": "function",
            "function": {"name": "submit_request", "arguments": json.dumps(MIKA_ANSWER)}}
    bad_call = {**call, "function": {"name": "submit_request", "arguments": "{not json"}}

    def reply(tool_call):
        return httpx2.Response(200, json={
            "id": "c1", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": None, "tool_calls": [tool_call]}}],
            "usage": {"prompt_tokens": 200, "completion_tokens": 60, "total_tokens": 260}})

    server = Server(reply(bad_call), reply(call))
    opt = PromptOptimizer(backend="openai", api_key="sk-test", cache_dir=tmp_path,
                          http_client=httpx2.Client(transport=httpx2.MockTransport(server)))
    prompt = opt.optimize_description(MIKA)
    first, repair = server.bodies
    (tool,) = first["tools"]
    assert tool["type"] == "function" and tool["function"]["name"] == "submit_request"
    assert tool["function"]["parameters"]["properties"]["emotion"]["enum"] == list(EMOTIONS)
    assert first["tool_choice"] == {"type": "function", "function": {"name": "submit_request"}}
    assert "response_format" not in first
    assert repair["messages"][-2]["tool_calls"][0]["id"] == "call_1"
    assert repair["messages"][-1]["role"] == "tool" and repair["messages"][-1]["tool_call_id"] == "call_1"
    assert prompt.backend == "openai" and prompt.request["emotion"] == "angry"


def test_default_claude_model_is_current():
    # The SDK ships a table of deprecated models (it warns when one is used); the default
    # must not be in it, and must be a model id the installed SDK knows.
    import typing

    from anthropic._data.deprecated_models import DEPRECATED_MODELS
    from anthropic.types.model_param import ModelParam

    known = {a for arg in typing.get_args(ModelParam) for a in typing.get_args(arg)}
    assert DEPRECATED_MODELS, "the SDK's deprecation table moved or is empty: update this test"
    assert DEFAULT_ANTHROPIC_MODEL not in DEPRECATED_MODELS, DEPRECATED_MODELS[DEFAULT_ANTHROPIC_MODEL]
    assert DEFAULT_ANTHROPIC_MODEL in known
    assert estimate_cost(DEFAULT_ANTHROPIC_MODEL, 1000, 100) is not None  # priced, so cost tables work
