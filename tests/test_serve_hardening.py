"""The service under attack (issue 28): each hole found, answered as it should be.

Hosts (DNS rebinding), strict request types, bounded error messages, id patterns, 405s, security
headers, tampered cursors, damaged rows, the Lambda handler's malformed events, corrupt
databases, ``/healthz`` on broken storage, ``check`` and temp files, the memory guard's 503
(issue 20, item 8), the API key kept off argv, and serve's model flags (issue 20, item 4).
The built-in model, 1-2 steps; a real server where the test says so.
"""

import base64
import hashlib
import io
import json
import logging
import os
import re
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from animegen_utils.generation import PARAMS_KEY  # noqa: E402
from animegen_utils.prompts import EMOTIONS, STYLES  # noqa: E402
from animegen_utils.serve import lambda_handler as handler_module  # noqa: E402
from animegen_utils.serve.__main__ import cli  # noqa: E402
from animegen_utils.serve.app import create_app  # noqa: E402
from animegen_utils.serve.background import start_server  # noqa: E402
from animegen_utils.serve.core import image_key, load_model  # noqa: E402
from animegen_utils.serve.lambda_handler import lambda_handler  # noqa: E402
from animegen_utils.serve.records import CorruptDatabaseError, RecordStore, check, encode_cursor  # noqa: E402
from animegen_utils.serve.settings import ServeSettings  # noqa: E402
from animegen_utils.serve.storage import LocalStorage, StorageSettings, check_key  # noqa: E402

STEPS = 1
OK = {"emotion": "happy", "style": "casual", "steps": STEPS, "seed": 1}


@pytest.fixture(scope="module")
def pipe():
    return load_model("tiny")


def make_app(tmp_path, pipe, **settings):
    return create_app(ServeSettings(storage=StorageSettings(root=str(tmp_path / "images")), **settings), pipe=pipe)


@pytest.fixture()
def app(tmp_path, pipe):
    return make_app(tmp_path, pipe)


@pytest.fixture()
def client(app):
    with TestClient(app, base_url="http://localhost") as c:
        yield c


def png_params(data: bytes) -> dict:
    with Image.open(io.BytesIO(data)) as im:
        return json.loads(im.info[PARAMS_KEY])


# ---- 1. Host allow-list ------------------------------------------------------------------

@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example",
                                  "127.0.0.1.nip.io", "x" * 5000])
def test_a_foreign_host_is_refused_before_anything_runs(client, app, host):
    for method, path, body in [("POST", "/api/generate", OK), ("GET", "/api/generations", None),
                               ("DELETE", f"/api/generations/{'0' * 32}", None), ("GET", "/", None)]:
        r = client.request(method, path, json=body, headers={"host": host})
        assert r.status_code == 400, (method, path, r.status_code)
        assert "--allowed-hosts" in r.json()["detail"] and len(r.text) < 600
    assert app.state.storage.keys() == []


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"])
def test_loopback_names_are_served(client, host):
    assert client.get("/healthz", headers={"host": host}).status_code == 200


def test_allowed_hosts_from_settings_and_environment(tmp_path, pipe, monkeypatch):
    with TestClient(make_app(tmp_path, pipe, allowed_hosts=("gen.example", "*.lan.example")),
                    base_url="http://gen.example") as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/healthz", headers={"host": "a.lan.example:443"}).status_code == 200
        assert c.get("/healthz", headers={"host": "evil.example"}).status_code == 400
    monkeypatch.setenv("ANIMEGEN_ALLOWED_HOSTS", "proxy.example, other.example")
    assert set(ServeSettings.from_env().hosts()) >= {"proxy.example", "other.example", "localhost"}
    # A public bind answers only the names it is given (plus loopback's): 0.0.0.0 is no name.
    public = ServeSettings(host="0.0.0.0", insecure=True)
    assert "0.0.0.0" not in public.hosts() and "*" not in public.hosts()
    assert "10.1.2.3" in ServeSettings(host="10.1.2.3", insecure=True).hosts()


# ---- 9 and 10. strict types; the choices named however emotion or style is wrong -----------

@pytest.mark.parametrize("extra", [
    {"seed": True}, {"steps": "5"}, {"optimize_prompt": "yes"}, {"optimize_prompt": 1}, {"guidance": "7.5"},
    {"batch": 1.5}, {"size": "64"}, {"seed": "7"},
    {"character": {"hair_color": "pink", "eye_color": "blue", "accessories": "glasses"}},
    {"character": {"hair_color": " pink", "eye_color": "blue"}},
])
def test_wrong_types_are_refused_not_converted(client, app, extra):
    r = client.post("/api/generate", json={**OK, **extra})
    assert r.status_code == 422, (extra, r.text)
    assert app.state.storage.keys() == []


def test_integral_json_numbers_are_integers(client):
    """JSON Schema's "integer" includes 2.0, so the service does too (and only those)."""
    r = client.post("/api/generate", json={**OK, "steps": 1.0, "seed": 3.0})
    assert r.status_code == 200 and r.json()["seed"] == 3


@pytest.mark.parametrize("field,choices", [("emotion", EMOTIONS), ("style", STYLES)])
@pytest.mark.parametrize("value", ["missing", 3, None, ["happy"], {"a": 1}, "furious"])
def test_a_wrong_or_missing_choice_names_the_valid_ones(client, field, choices, value):
    body = {k: v for k, v in OK.items() if k != field}
    if value != "missing":
        body[field] = value
    r = client.post("/api/generate", json=body)
    assert r.status_code == 422
    [err] = [e for e in r.json()["detail"] if e["loc"] == ["body", field]]
    assert f"Valid choices: {', '.join(choices)}." in err["msg"]
    # Lambda: API Gateway's string body; and the plan's event (whose defaults fill a missing field).
    events = [{**body, field: 3}] if value == "missing" else [{"body": json.dumps(body)}, body]
    for event in events:
        reply = lambda_handler(event)
        error = json.loads(reply["body"])["error"] if "headers" in reply else reply["body"]["error"]
        assert reply["statusCode"] == 400 and f"Valid choices: {', '.join(choices)}" in error


# ---- 6. bounded messages: never more than a short prefix of the input ---------------------

def test_validation_errors_do_not_echo_the_input(client):
    big = "q" * 15_000
    r = client.post("/api/generate", json={**OK, "emotion": big})
    assert r.status_code == 422 and len(r.content) < 600 and "q" * 60 not in r.text
    r = client.get("/api/generations", params={"emotion": "q" * 5000})
    assert r.status_code == 422 and len(r.content) < 600 and "q" * 60 not in r.text
    r = client.post("/api/generate", json={**OK, "character": {"hair_color": "q" * 5000, "eye_color": "blue"}})
    assert r.status_code == 422 and len(r.content) < 600


def test_lambda_errors_do_not_echo_the_input(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMEGEN_STORAGE_DIR", str(tmp_path / "lambda"))
    monkeypatch.setattr(handler_module, "_CORE", None)
    for event in [{"emotion": "q" * 6_000_000}, {"body": json.dumps({"style": "q" * 100_000})},
                  {"body": json.dumps({f"k{i}": i for i in range(2000)})}, {"body": "{" + "q" * 100_000}]:
        reply = lambda_handler(event)
        assert reply["statusCode"] == 400
        assert len(json.dumps(reply)) < 2000 and "q" * 60 not in json.dumps(reply)


# ---- 4. the Lambda handler answers 400 for any malformed body ------------------------------

@pytest.mark.parametrize("body", ["[" * 3000 + "]" * 3000, '{"seed": ' + "9" * 5000 + "}",
                                  '{"emotion": "happy", "character": ' + '{"a": ' * 3000 + "1" + "}" * 3001])
def test_lambda_answers_400_to_pathological_json(tmp_path, monkeypatch, body):
    monkeypatch.setenv("ANIMEGEN_STORAGE_DIR", str(tmp_path / "lambda"))
    monkeypatch.setattr(handler_module, "_CORE", None)
    for event in [{"body": body}, {"body": base64.b64encode(body.encode()).decode(), "isBase64Encoded": True}]:
        reply = lambda_handler(event)
        assert reply["statusCode"] == 400, reply
        assert "JSON" in json.loads(reply["body"])["error"]
    deep: dict = {}
    for _ in range(3000):
        deep = {"a": deep}
    assert lambda_handler({"character": deep})["statusCode"] == 400


def test_http_answers_400_to_pathological_json(client):
    for body in ["[" * 3000 + "]" * 3000, '{"seed": ' + "9" * 5000 + "}"]:
        r = client.post("/api/generate", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and "Traceback" not in r.text


# ---- 11. id patterns match whole strings ---------------------------------------------------

def test_a_trailing_newline_is_not_an_id(client, app):
    body = client.post("/api/generate", json=OK).json()
    image_id = body["id"]
    assert client.get(f"/images/{image_id}.png").status_code == 200
    assert client.get(f"/images/{image_id}.png%0A").status_code == 404
    assert client.get(f"/api/generations/{image_id}%0A").status_code == 404
    assert app.state.records.get(image_id + "\n") is None
    for bad in (image_id + "\n", image_id + ".png\n"):
        with pytest.raises(ValueError):
            image_key(bad)
        with pytest.raises(ValueError):
            check_key(bad + ".png" if not bad.endswith("\n") else bad)


# ---- 12 (part). a 405 names every method of the path ---------------------------------------

def test_405_allow_names_every_method(client):
    r = client.post(f"/api/generations/{'0' * 32}")
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "DELETE"}
    r = client.put("/api/generate", json=OK)
    assert r.status_code == 405 and "POST" in r.headers["allow"]


# ---- security headers on pages --------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/gallery", "/docs"])
def test_pages_carry_security_headers(client, path):
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    # Exactly this page's inline blocks are allowed, by hash.
    for kind, block in re.findall(r"<(script|style)>(.*?)</\1>", r.text, re.S):
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp.split(f"{kind}-src", 1)[1].split(";")[0]
    assert "'unsafe-inline'" not in csp


# ---- 5. tampered cursors --------------------------------------------------------------------

@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                   "1900-01-01T00:00:00+00:00", "0001-01-01T00:00:00+00:00"])
def test_a_tampered_cursor_is_400_not_500(client, stamp, caplog):
    cursor = base64.urlsafe_b64encode(f"{stamp}|{'a' * 32}".encode()).decode().rstrip("=")
    with caplog.at_level(logging.ERROR):
        r = client.get("/api/generations", params={"cursor": cursor})
    assert r.status_code == 400 and r.json()["detail"] == "invalid cursor"
    assert "Traceback" not in caplog.text


# ---- one damaged row ------------------------------------------------------------------------

def test_a_row_with_a_bad_storage_key_is_skipped_and_logged(client, app, caplog):
    good = client.post("/api/generate", json=OK).json()
    record = app.state.records.get(good["id"])
    bad_id = "b" * 32
    app.state.records.add({**record, "id": bad_id, "storage_key": "../../etc/passwd"})
    with caplog.at_level(logging.WARNING):
        r = client.get("/api/generations")
    assert r.status_code == 200 and [i["id"] for i in r.json()["items"]] == [good["id"]]
    assert bad_id in caplog.text
    assert client.get(f"/api/generations/{bad_id}").status_code == 404
    assert bad_id in check(app.state.storage, app.state.records).records_without_image


# ---- 7. corrupt databases -------------------------------------------------------------------

def _fill(url: str, n: int) -> None:
    store = RecordStore(url)
    for i in range(n):
        store.add({"id": f"{i:032x}", "created_at": "2026-01-01T00:00:00+00:00", "request": {"pad": "p" * 400},
                   "prompt": "x" * 400, "negative_prompt": "", "seed": i, "steps": 1, "guidance": 1.0,
                   "scheduler": "dpm++", "model": "tiny", "storage_key": f"{i:032x}.png", "duration_s": 0.1})
    store.close()


def test_a_garbage_database_file_is_refused_in_one_line(tmp_path, capsys):
    db = tmp_path / "garbage.sqlite3"
    db.write_bytes(os.urandom(64 * 1024))
    argv = ["--port", "9", "--storage-dir", str(tmp_path / "images"), "--database-url", f"sqlite:///{db}"]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(db) in err and "check" in err
    assert cli(["check", *argv[2:]]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_database_with_corrupted_pages_is_refused_at_start(tmp_path, capsys):
    db = tmp_path / "records.sqlite3"
    url = f"sqlite:///{db}"
    _fill(url, 120)
    data = bytearray(db.read_bytes())
    assert len(data) > 20 * 4096
    data[8 * 4096:14 * 4096] = os.urandom(6 * 4096)  # six pages of the table's rows
    db.write_bytes(bytes(data))
    with pytest.raises(CorruptDatabaseError, match="malformed|integrity check"):
        RecordStore(url)
    assert cli(["--port", "9", "--storage-dir", str(tmp_path / "images"), "--database-url", url]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(db) in err and "check" in err


# ---- 7 (part). /healthz reports storage and database health ---------------------------------

def test_healthz_is_ok_on_a_healthy_service(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["reasons"] == []


def test_healthz_says_degraded_when_storage_is_not_a_folder(tmp_path, pipe):
    (tmp_path / "images").write_text("a file where the image folder should be")
    with TestClient(make_app(tmp_path, pipe), base_url="http://localhost") as c:
        health = c.get("/healthz").json()
    assert health["status"] == "degraded" and not health["storage_ok"]
    assert any("not a folder" in r for r in health["reasons"])


def test_healthz_says_degraded_when_storage_is_nearly_full(tmp_path, pipe):
    with TestClient(make_app(tmp_path, pipe, min_free_bytes=2**62), base_url="http://localhost") as c:
        health = c.get("/healthz").json()
    assert health["status"] == "degraded" and any("free" in r for r in health["reasons"])


def test_healthz_says_degraded_when_the_database_fails(tmp_path, pipe):
    app = make_app(tmp_path, pipe)
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        with app.state.records.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE generations")
        assert c.get("/api/generations").status_code == 500
        time.sleep(2.1)  # past the health cache (health.CACHE_S): a fresh probe
        health = c.get("/healthz").json()
    assert health["status"] == "degraded" and not health["database_ok"]
    assert any(r.startswith("database:") for r in health["reasons"])


@pytest.fixture()
def small_mount(tmp_path):
    """A 2 MiB tmpfs at tmp_path/images, remountable read-only (needs the right to mount)."""
    import subprocess

    root = tmp_path / "images"
    root.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()[:100]}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)


def test_healthz_says_degraded_on_read_only_and_full_storage(tmp_path, pipe, small_mount):
    import subprocess

    app = make_app(tmp_path, pipe, min_free_bytes=512 * 1024)
    with TestClient(app, base_url="http://localhost", raise_server_exceptions=False) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        (small_mount / "filler").write_bytes(b"\0" * (1800 * 1024))
        time.sleep(2.1)  # past the health cache
        health = c.get("/healthz").json()
        assert health["status"] == "degraded" and any("free" in r for r in health["reasons"])
        (small_mount / "filler").unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
        time.sleep(2.1)
        health = c.get("/healthz").json()
        assert health["status"] == "degraded" and any("not writable" in r for r in health["reasons"])
        assert c.post("/api/generate", json=OK).status_code == 500  # and the failure is reported too
        health = c.get("/healthz").json()
        assert any("failed a request" in r for r in health["reasons"])


# ---- 8. check sees crash leftovers ----------------------------------------------------------

def test_check_lists_and_fixes_old_temp_files_only(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    RecordStore(f"sqlite:///{tmp_path / 'images.sqlite3'}").close()  # the service's database, as after a start
    old, fresh = images / ".tmp-ab12cd34", images / ".tmp-zz99yy88"
    old.write_bytes(b"half a png")
    fresh.write_bytes(b"being written")
    os.utime(old, (time.time() - 120, time.time() - 120))
    assert LocalStorage(images).temp_files() == [old.name]
    argv = ["check", "--storage-dir", str(images)]
    assert cli(argv) == 1
    assert f"temp {old.name}" in capsys.readouterr().out
    assert cli([*argv, "--fix"]) == 0
    assert not old.exists() and fresh.exists()


# ---- issue 20, item 8: a memory refusal is a 503 with the guard's words ----------------------

def test_a_memory_guard_refusal_is_503_with_its_message(tmp_path, dummy_pipe):
    from diffusers.models.attention_processor import AttnProcessor

    # A UNet with attention on its finest level (as SD1.5 has; the built-in model's is on the coarse
    # levels only) and the classic attention processor, which keeps tokens^2 scores (as on MPS):
    # 768 px x 4 needs about 40 GiB.
    saved = dummy_pipe.unet.attn_processors
    dummy_pipe.unet.set_attn_processor(AttnProcessor())
    try:
        with TestClient(make_app(tmp_path, dummy_pipe), base_url="http://localhost") as client:
            r = client.post("/api/generate", json={**OK, "size": 768, "batch": 4})
    finally:
        dummy_pipe.unet.set_attn_processor(saved)
    assert r.status_code == 503, r.text
    assert "GiB" in r.json()["detail"] and "free" in r.json()["detail"]


# ---- the API key off argv; serve's model flags (issue 20, item 4) ------------------------------

def test_api_key_on_argv_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli(["--api-key", "a-secret-key-123", "--storage-dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--api-key-file" in capsys.readouterr().err


def test_serve_a_single_file_with_config_scheduler_clip_skip_and_key_file(tmp_path, pipe):
    from animegen_utils.export import save_single_file
    from animegen_utils.pipelines import TINY_MODEL_DIR

    checkpoint = save_single_file(pipe, tmp_path / "tiny.safetensors")
    key = "key-from-a-file-0123"
    (tmp_path / "key.txt").write_text(key + "\n")
    args = ["--model", str(checkpoint), "--config", str(TINY_MODEL_DIR), "--scheduler", "euler",
            "--clip-skip", "1", "--no-safety-checker", "--api-key-file", str(tmp_path / "key.txt"),
            "--allowed-hosts", "gen.example", "--storage-dir", str(tmp_path / "images")]
    with start_server(*args) as server:
        assert key not in Path(f"/proc/{server.process.pid}/cmdline").read_text()
        with httpx.Client(base_url=server.url, timeout=120) as http:
            assert http.post("/api/generate", json=OK).status_code == 401
            r = http.post("/api/generate", json=OK, headers={"X-API-Key": key, "Host": "gen.example"})
            assert r.status_code == 200, r.text
            assert r.json()["params"]["scheduler"] == "euler" and r.json()["params"]["model"] == str(checkpoint)
            params = png_params(http.get(r.json()["image_url"]).content)
            assert params["clip_skip"] == 1 and params["scheduler"] == "euler"
            assert http.get("/healthz", headers={"Host": "evil.example"}).status_code == 400
