"""The HTTP service: validation, images, access, the queue, and a loopback load test.

Everything runs the built-in model with 2 denoising steps; the live-server tests use a real
uvicorn on 127.0.0.1.
"""

import io
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from animegen_utils.generation import PARAMS_KEY  # noqa: E402
from animegen_utils.prompts import EMOTION_TAGS, EMOTIONS, STYLES  # noqa: E402
from animegen_utils.serve.__main__ import cli  # noqa: E402
from animegen_utils.serve.app import create_app  # noqa: E402
from animegen_utils.serve.background import ThreadedServer  # noqa: E402
from animegen_utils.serve.core import load_model  # noqa: E402
from animegen_utils.serve.settings import ServeSettings  # noqa: E402
from animegen_utils.serve.storage import StorageSettings  # noqa: E402

STEPS = 2
KEY = "test-key-0123456789"


@pytest.fixture(scope="module")
def pipe():
    return load_model("tiny")


def make_app(tmp_path, pipe, **settings):
    return create_app(ServeSettings(storage=StorageSettings(root=str(tmp_path / "images")), **settings), pipe=pipe)


@pytest.fixture()
def client(tmp_path, pipe):
    with TestClient(make_app(tmp_path, pipe), base_url="http://localhost") as c:
        yield c


def png_params(data: bytes) -> dict:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return json.loads(im.info[PARAMS_KEY])


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def test_generate_returns_a_stored_png_with_its_parameters(client, tmp_path):
    r = client.post("/api/generate", json={"emotion": "sad", "style": "formal", "seed": 7, "steps": STEPS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) >= {"id", "image_url", "seed", "prompt", "negative_prompt", "params"}
    assert body["seed"] == 7 and body["image_url"] == f"/images/{body['id']}.png"
    assert "sad" in body["prompt"] and "formal" in body["prompt"] and "lowres" in body["negative_prompt"]
    assert body["params"]["steps"] == STEPS and body["params"]["model"] == "tiny"
    img = client.get(body["image_url"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    params = png_params(img.content)
    assert params["seed"] == 7 and params["prompt"] == body["prompt"] and params["steps"] == STEPS
    assert (tmp_path / "images" / f"{body['id']}.png").read_bytes() == img.content
    # Same seed, same pixels; a new id all the same.
    again = client.post("/api/generate", json={"emotion": "sad", "style": "formal", "seed": 7, "steps": STEPS}).json()
    assert again["id"] != body["id"]
    assert np.array_equal(pixels(client.get(again["image_url"]).content), pixels(img.content))


def test_seed_is_picked_and_returned_when_absent(client):
    body = client.post("/api/generate", json={"emotion": "happy", "style": "casual", "steps": STEPS}).json()
    assert isinstance(body["seed"], int) and 0 <= body["seed"] < 2**32
    assert png_params(client.get(body["image_url"]).content)["seed"] == body["seed"]


def test_batch_gives_consecutive_seeds_each_stored(client):
    body = client.post("/api/generate", json={"emotion": "angry", "style": "casual", "seed": 100,
                                              "steps": STEPS, "batch": 2}).json()
    assert [im["seed"] for im in body["images"]] == [100, 101]
    assert body["id"] == body["images"][0]["id"]
    for im in body["images"]:
        assert png_params(client.get(im["image_url"]).content)["seed"] == im["seed"]


def test_character_and_offline_prompt_optimizer(client, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    char = {"hair_color": "pink", "eye_color": "blue", "hairstyle": "twintails"}
    body = client.post("/api/generate", json={"emotion": "happy", "style": "school_uniform", "seed": 1,
                                              "steps": STEPS, "character": char}).json()
    assert "pink hair" in body["prompt"] and "twintails" in body["prompt"]
    assert body["params"]["prompt_backend"] == "manual"
    opt = client.post("/api/generate", json={"emotion": "happy", "style": "casual", "seed": 1,
                                             "steps": STEPS, "optimize_prompt": True}).json()
    assert opt["params"]["prompt_backend"] == "offline"


@pytest.mark.parametrize("field,value,choices", [("emotion", "furious", EMOTIONS), ("style", "bikini", STYLES)])
def test_unknown_choice_is_422_naming_the_valid_ones(client, field, value, choices):
    body = {"emotion": "happy", "style": "casual", field: value}
    r = client.post("/api/generate", json=body)
    assert r.status_code == 422
    [err] = r.json()["detail"]
    assert err["loc"] == ["body", field]
    assert f"Valid choices: {', '.join(choices)}" in err["msg"]


@pytest.mark.parametrize("extra", [
    {"steps": 0}, {"steps": 51}, {"steps": "many"}, {"guidance": -1}, {"guidance": 21}, {"size": 65},
    {"size": 4096}, {"batch": 0}, {"batch": 5}, {"seed": -1}, {"seed": 2**40}, {"seed": 1.5},
    {"unknown": 1}, {"character": {"hair_color": "pink, nsfw", "eye_color": "blue"}},
    {"character": {"hair_color": "p" * 41, "eye_color": "blue"}},
    {"character": {"hair_color": "pink", "eye_color": "blue", "accessories": ["glasses"] * 5}},
    {"emotion": 3}, {"emotion": None},
])
def test_bad_inputs_are_422(client, extra):
    r = client.post("/api/generate", json={"emotion": "happy", "style": "casual", **extra})
    assert r.status_code == 422, (extra, r.text)
    assert r.json()["detail"]


def test_missing_fields_and_malformed_bodies_never_500(client):
    assert client.post("/api/generate", json={"style": "casual"}).status_code == 422
    for content, ctype in [(b'{"emotion": "happy", ', "application/json"), (b"\xff\xfe", "application/json"),
                           (b"[1, 2]", "application/json"), (b"emotion=happy", "application/x-www-form-urlencoded"),
                           (b"", "application/json"), (b"null", "application/json")]:
        r = client.post("/api/generate", content=content, headers={"content-type": ctype})
        assert r.status_code in (400, 422), (content, r.status_code, r.text)
        assert "Traceback" not in r.text


def test_oversized_body_is_413(client):
    big = json.dumps({"emotion": "happy", "style": "casual", "pad": "x" * 20_000})
    r = client.post("/api/generate", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_healthz_docs_config_and_page(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"] == "tiny" and health["storage"] == "local"
    docs = client.get("/docs")
    assert docs.status_code == 200
    # Swagger UI comes from the service itself, not a CDN, so the page works offline.
    assert "cdn." not in docs.text and "/static-docs/swagger-ui-bundle.js" in docs.text
    assert client.get("/static-docs/swagger-ui-bundle.js").status_code == 200
    assert "/api/generate" in client.get("/openapi.json").json()["paths"]
    config = client.get("/config.json").json()
    assert config["emotions"] == list(EMOTIONS) and config["styles"] == list(STYLES)
    assert config["auth_required"] is False
    page = client.get("/")
    assert page.status_code == 200 and 'id="generate"' in page.text
    assert client.get("/static/app.js").status_code == 200


def test_images_serves_only_stored_ids(client, tmp_path):
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "images" / "planted.png").write_bytes(b"not ours")
    for path in ["/images/planted.png", f"/images/{'0' * 32}.png", "/images/" + "A" * 32 + ".png",
                 "/images/" + "a" * 31 + ".png", "/images/x.png"]:
        assert client.get(path).status_code == 404, path


def test_unexpected_errors_answer_500_without_internals(tmp_path, pipe):
    (tmp_path / "images").write_text("a file where the image folder should be")
    app = make_app(tmp_path, pipe)
    with TestClient(app, raise_server_exceptions=False, base_url="http://localhost") as c:
        r = c.post("/api/generate", json={"emotion": "happy", "style": "casual", "steps": STEPS})
    assert r.status_code == 500
    assert "Internal error" in r.json()["detail"]
    assert "Traceback" not in r.text and "File \"" not in r.text and str(tmp_path) not in r.text


def test_per_request_timeout_stores_nothing(tmp_path, pipe):
    app = make_app(tmp_path, pipe, timeout_s=0.05)
    with TestClient(app, base_url="http://localhost") as c:
        r = c.post("/api/generate", json={"emotion": "happy", "style": "casual", "steps": 50})
        assert r.status_code == 504 and "longer than" in r.json()["detail"]
        app.state.queue.shutdown()  # waits for the stopped worker
        assert app.state.storage.keys() == []


def test_full_queue_answers_503_with_retry_after(tmp_path, pipe):
    app = make_app(tmp_path, pipe, queue_size=1)
    with TestClient(app, base_url="http://localhost") as c:
        release = threading.Event()
        busy = app.state.queue.try_submit(release.wait, 60)  # the one slot is taken
        try:
            r = c.post("/api/generate", json={"emotion": "happy", "style": "casual", "steps": STEPS})
            assert r.status_code == 503
            assert int(r.headers["Retry-After"]) >= 1
        finally:
            release.set()
        busy.result(timeout=60)
        assert c.post("/api/generate", json={"emotion": "happy", "style": "casual", "steps": STEPS}).status_code == 200


def test_api_key_required_when_set(tmp_path, pipe):
    with TestClient(make_app(tmp_path, pipe, api_key=KEY), base_url="http://localhost") as c:
        body = {"emotion": "happy", "style": "casual", "steps": STEPS, "seed": 3}
        assert c.post("/api/generate", json=body).status_code == 401
        assert c.post("/api/generate", json=body, headers={"X-API-Key": KEY + "x"}).status_code == 401
        assert c.post("/api/generate", json=body, headers={"X-API-Key": ""}).status_code == 401
        ok = c.post("/api/generate", json=body, headers={"X-API-Key": KEY})
        assert ok.status_code == 200
        assert c.post("/api/generate", json=body, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        # Image URLs are unguessable capabilities (an <img> cannot send headers); health is public.
        assert c.get(ok.json()["image_url"]).status_code == 200
        assert c.get("/healthz").status_code == 200
        assert c.get("/config.json").json()["auth_required"] is True


def test_refuses_to_start_beyond_loopback_without_a_key(tmp_path, pipe, capsys, monkeypatch):
    monkeypatch.delenv("ANIMEGEN_API_KEY", raising=False)
    with pytest.raises(ValueError, match="--api-key"):
        make_app(tmp_path, pipe, host="0.0.0.0")
    assert cli(["--host", "0.0.0.0", "--port", "9", "--storage-dir", str(tmp_path)]) == 2
    assert "Refusing to serve on 0.0.0.0" in capsys.readouterr().err
    assert cli(["serve", "--host", "10.1.2.3", "--port", "9", "--storage-dir", str(tmp_path)]) == 2  # `animegen serve`
    assert "Refusing to serve on 10.1.2.3" in capsys.readouterr().err
    make_app(tmp_path, pipe, host="0.0.0.0", insecure=True)
    make_app(tmp_path, pipe, host="0.0.0.0", api_key=KEY)
    make_app(tmp_path, pipe, host="::1")


# -- a real server on loopback ---------------------------------------------------------------

@pytest.fixture()
def live(tmp_path, pipe):
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    with ThreadedServer(make_app(tmp_path, pipe, queue_size=4)) as server:
        yield server


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """A GET sent byte for byte, so no client normalises the path first."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.parametrize("path", [
    "/images/../secret.txt", "/images/../../../../etc/passwd", "/images/..%2fsecret.txt",
    "/images/%2e%2e%2fsecret.txt", "/images/%2E%2E/secret.txt", "/images/..%5csecret.txt",
    "/images/%252e%252e%252fsecret.txt", "/images/....//secret.txt", "/images/%00.png",
    "/images//etc/passwd", "/images/" + "0" * 32 + ".png/../../secret.txt",
])
def test_path_traversal_is_404(live, path):
    status, data = raw_get(live.url, path)
    assert status in (400, 404), (path, status)
    assert b"TOP SECRET" not in data and b"root:" not in data


def test_streamed_oversized_body_is_413(live):
    def chunks():
        yield b'{"emotion": "happy", "style": "casual", "pad": "'
        for _ in range(40):
            yield b"x" * 1024
        yield b'"}'

    r = httpx.post(f"{live.url}/api/generate", content=chunks(), headers={"content-type": "application/json"},
                   timeout=60)
    assert r.status_code == 413


def test_load_20_concurrent_clients(live, tmp_path):
    """Every answer is 200 or 503; every 200 is stored, decodes, and carries its own seed."""
    n_clients, per_client = 20, 3

    def client_run(c: int) -> list[tuple[int, dict, httpx.Headers]]:
        out = []
        with httpx.Client(base_url=live.url, timeout=120) as http:
            for i in range(per_client):
                seed = 1000 * c + i
                r = http.post("/api/generate", json={"emotion": EMOTIONS[c % 5], "style": "casual",
                                                     "seed": seed, "steps": STEPS})
                out.append((r.status_code, r.json() | {"asked_seed": seed}, r.headers))
        return out

    with ThreadPoolExecutor(n_clients) as pool:
        results = [x for batch in pool.map(client_run, range(n_clients)) for x in batch]
    assert len(results) == n_clients * per_client
    statuses = [s for s, _, _ in results]
    assert set(statuses) <= {200, 503}, statuses
    ok = [body for s, body, _ in results if s == 200]
    assert ok, "no request got through"
    assert all(int(h["Retry-After"]) >= 1 for s, _, h in results if s == 503)
    assert len({b["id"] for b in ok}) == len(ok)
    with httpx.Client(base_url=live.url, timeout=60) as http:
        for body in ok:
            img = http.get(body["image_url"])
            assert img.status_code == 200
            assert body["seed"] == body["asked_seed"] == png_params(img.content)["seed"]
            assert EMOTION_TAGS[EMOTIONS[body["asked_seed"] // 1000 % 5]][0] in body["prompt"]
    assert sorted(p.name for p in (tmp_path / "images").glob("*.png")) == sorted(f"{b['id']}.png" for b in ok)


def test_client_burst_and_latency_table(live):
    from animegen_utils.serve.client import burst, fetch_image, latency_table

    requests = [{"emotion": e, "style": "casual", "seed": 50 + i, "steps": STEPS} for i, e in enumerate(EMOTIONS[:3])]
    calls = burst(live.url, requests)
    assert [c.status for c in calls] == [200, 200, 200]  # 3 fit the queue of 4
    for c in calls:
        image, params = fetch_image(live.url, c.body["image_url"])
        assert image.size == (128, 128) and params["seed"] == c.request["seed"] == c.body["seed"]
    table = latency_table(calls).splitlines()
    assert len(table) == 2 + 3 + 2 and table[2].startswith("| 0 | happy | 50 | 200 |")
