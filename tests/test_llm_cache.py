"""The sqlite prompt cache: hits make no HTTP request; broken files are recovered."""

from __future__ import annotations

import json
import sqlite3

import httpx2
import pytest

from animegen_utils.llm import DEFAULT_ANTHROPIC_MODEL, PromptCache, PromptOptimizer
from animegen_utils.llm.cache import DB_NAME, cache_key, default_cache_dir
from animegen_utils.prompts import CharacterSheet

SHEET = CharacterSheet("silver", "red", "long hair")
GOOD = ["1girl", "solo", "sad", "tears", "silver hair", "long hair", "red eyes", "formal", "black dress"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for var in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ANIMEGEN_CACHE_DIR", str(tmp_path / "env-cache"))


class Server:
    """Answers every request with a valid submit_prompt tool call and counts requests."""

    def __init__(self) -> None:
        self.requests = 0

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests += 1
        return httpx2.Response(200, json={
            "id": "msg", "type": "message", "role": "assistant", "model": DEFAULT_ANTHROPIC_MODEL,
            "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 5},
            "content": [{"type": "tool_use", "id": "t1", "name": "submit_prompt", "input": {
                "positive_tags": GOOD, "negative_tags": ["lowres"], "rationale": "melancholy"}}],
        })


def optimizer(server: Server, cache_dir, **kw) -> PromptOptimizer:
    return PromptOptimizer(backend="anthropic", api_key="sk-ant-test", cache_dir=cache_dir,
                           http_client=httpx2.Client(transport=httpx2.MockTransport(server)), **kw)


def test_hit_makes_no_request_even_in_a_new_optimizer(tmp_path):
    server = Server()
    first = optimizer(server, tmp_path)
    a = first.optimize("sad", "formal", character=SHEET)
    b = first.optimize("sad", "formal", character=SHEET)
    assert server.requests == 1 and a == b
    assert first.cache_stats() == {"hits": 1, "misses": 1, "api_calls": 1}

    second = optimizer(server, tmp_path)  # e.g. after a notebook restart
    assert second.optimize("sad", "formal", character=SHEET) == a
    assert server.requests == 1
    assert second.cache_stats() == {"hits": 1, "misses": 0, "api_calls": 0}
    assert second.usage_summary() == []  # no call, no cost


@pytest.mark.parametrize("change", [
    {"variant": 1}, {"character": CharacterSheet("silver", "red", "long hair", name="Yuki")}, {"style": "casual"},
])
def test_every_key_part_matters(tmp_path, change):
    server = Server()
    opt = optimizer(server, tmp_path)
    args = {"emotion": "sad", "style": "formal", "character": SHEET, "variant": 0}
    opt.optimize(**args)
    opt.optimize(**{**args, **change})
    assert server.requests == 2


def test_model_and_temperature_are_part_of_the_key(tmp_path):
    server = Server()
    optimizer(server, tmp_path).optimize("sad", "formal", SHEET)
    optimizer(server, tmp_path, model="claude-haiku-4-5").optimize("sad", "formal", SHEET)
    optimizer(server, tmp_path, temperature=0.2).optimize("sad", "formal", SHEET)
    assert server.requests == 3
    base = dict(backend="anthropic", model="m", emotion="sad", style="formal", character=None,
                template_version="1", temperature=0.7, variant=0)
    assert cache_key(**base) == cache_key(**base)
    assert cache_key(**base) != cache_key(**{**base, "template_version": "2"})


def test_corrupt_cache_file_is_moved_aside_and_rebuilt(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"\x00garbage, not sqlite\xff" * 100)
    server = Server()
    with pytest.warns(RuntimeWarning, match="moved it to"):
        opt = optimizer(server, tmp_path)
    (aside,) = tmp_path.glob(f"{DB_NAME}.corrupt-*")
    assert aside.read_bytes().startswith(b"\x00garbage")
    opt.optimize("sad", "formal", SHEET)
    assert optimizer(server, tmp_path).optimize("sad", "formal", SHEET).backend == "anthropic"
    assert server.requests == 1  # the rebuilt cache works


def test_other_schema_version_is_moved_aside(tmp_path):
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute("CREATE TABLE prompts (key TEXT, blob BLOB)")
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with pytest.warns(RuntimeWarning, match="schema version 99"):
        cache = PromptCache(tmp_path)
    cache.put("k", {"positive_tags": ["1girl"]})
    assert cache.get("k") == {"positive_tags": ["1girl"]} and len(cache) == 1
    assert len(list(tmp_path.glob("*.corrupt-*"))) == 1


def test_file_corrupted_while_open_is_recovered(tmp_path):
    cache = PromptCache(tmp_path)
    cache.put("k", [1])
    (tmp_path / DB_NAME).write_bytes(b"garbage" * 2000)
    with pytest.warns(RuntimeWarning):
        assert cache.get("k") is None
    cache.put("k", [2])
    assert cache.get("k") == [2]


def test_values_round_trip_and_default_dir(tmp_path, monkeypatch):
    cache = PromptCache(tmp_path)
    value = {"positive_tags": ["a", "b"], "rationale": "ünïcode"}
    cache.put("k", value)
    assert PromptCache(tmp_path).get("k") == value and cache.get("missing") is None
    assert json.loads(json.dumps(value)) == value
    assert default_cache_dir() == tmp_path / "env-cache"
    monkeypatch.delenv("ANIMEGEN_CACHE_DIR")
    assert default_cache_dir().parts[-3:] == (".cache", "animegen", "llm")


def test_use_cache_false_and_offline_open_no_cache(tmp_path):
    server = Server()
    opt = optimizer(server, tmp_path / "c", use_cache=False)
    opt.optimize("sad", "formal", SHEET)
    opt.optimize("sad", "formal", SHEET)
    assert server.requests == 2 and not (tmp_path / "c").exists()
    PromptOptimizer(backend="offline", cache_dir=tmp_path / "off").optimize("sad", "formal")
    assert not (tmp_path / "off").exists()


def test_unusable_cache_dir_warns_and_runs_uncached(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    server = Server()
    with pytest.warns(RuntimeWarning, match="without a cache"):
        opt = optimizer(server, not_a_dir)
    opt.optimize("sad", "formal", SHEET)
    opt.optimize("sad", "formal", SHEET)
    assert server.requests == 2
