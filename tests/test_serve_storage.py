"""Image storage: the local folder and S3 (a real moto S3 server on loopback), one interface."""

import io
import json
import uuid

import httpx
import pytest
from PIL import Image

pytest.importorskip("boto3")

from animegen_utils.generation import PARAMS_KEY  # noqa: E402
from animegen_utils.serve.background import free_port  # noqa: E402
from animegen_utils.serve.core import GenerateRequest, ServeCore, image_key, load_model, new_image_id, save_generation  # noqa: E402
from animegen_utils.serve.storage import LocalStorage, S3Storage, Storage, check_key  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n-not-really"


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 in server mode, on 127.0.0.1, for this module."""
    moto_server = pytest.importorskip("moto.server")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture()
def aws_env(monkeypatch):
    # Fake credentials for the local server; never a real account.
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture()
def bucket(s3_server, aws_env, request):
    import boto3

    name = f"animegen-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "images")
    s3_server = request.getfixturevalue("s3_server")
    return S3Storage(request.getfixturevalue("bucket"), endpoint_url=s3_server, region_name="us-east-1")


def test_storage_interface(store):
    assert isinstance(store, Storage)
    key = image_key(new_image_id())
    assert not store.exists(key) and store.keys() == []
    with pytest.raises(KeyError):
        store.get(key)
    store.put(key, PNG)
    assert store.exists(key) and store.get(key) == PNG and store.keys() == [key]
    assert store.keys(key[:4]) == [key] and store.keys("zz") == []
    url = store.url(key)
    if isinstance(store, S3Storage):
        assert "X-Amz-Signature" in url
        got = httpx.get(url, timeout=30)  # a presigned URL works without credentials
        assert got.status_code == 200 and got.content == PNG
    else:
        assert url.startswith("file://") and url.endswith(key)
    store.delete(key)
    assert not store.exists(key) and store.keys() == []
    store.delete(key)  # deleting what is gone is fine


@pytest.mark.parametrize("key", ["../x.png", "a/b.png", "", ".hidden.png", "..", "x\\y.png", "é.png", "a" * 200])
def test_keys_that_are_not_plain_names_are_refused(key, tmp_path):
    with pytest.raises(ValueError):
        check_key(key)
    with pytest.raises(ValueError):
        LocalStorage(tmp_path).put(key, PNG)


def test_local_put_is_atomic(tmp_path):
    store = LocalStorage(tmp_path / "images")
    key = image_key(new_image_id())
    store.put(key, PNG)
    with pytest.raises(TypeError):
        store.put(key, object())  # the write fails half-way: the old file stays whole
    assert store.get(key) == PNG
    assert [p.name for p in (tmp_path / "images").iterdir()] == [key]  # no temp file left
    with pytest.raises(TypeError):
        store.put(image_key(new_image_id()), object())
    assert store.keys() == [key]


def test_s3_objects_live_under_output_prefix(bucket, s3_server):
    import boto3

    store = S3Storage(bucket, endpoint_url=s3_server, region_name="us-east-1")
    key = image_key(new_image_id())
    store.put(key, PNG)
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    [obj] = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert obj["Key"] == f"output/{key}"
    assert s3.head_object(Bucket=bucket, Key=obj["Key"])["ContentType"] == "image/png"
    with pytest.raises(ValueError, match="end with '/'"):
        S3Storage(bucket, prefix="output", endpoint_url=s3_server)


class ListRecords:
    """The records interface (issue 14's RecordStore.add), kept in a list."""

    def __init__(self, fail: bool = False) -> None:
        self.rows, self.fail = [], fail

    def add(self, record: dict) -> None:
        if self.fail:
            raise RuntimeError("database unavailable")
        self.rows.append(record)


def test_save_generation_writes_image_then_record_and_cleans_up(store):
    image_id = new_image_id()
    records = ListRecords()
    save_generation(store, records, image_id, PNG, {"id": image_id})
    assert store.get(f"{image_id}.png") == PNG and records.rows == [{"id": image_id}]

    failing_id = new_image_id()
    with pytest.raises(RuntimeError, match="database unavailable"):
        save_generation(store, ListRecords(fail=True), failing_id, PNG, {"id": failing_id})
    assert not store.exists(f"{failing_id}.png")
    with pytest.raises(ValueError):
        save_generation(store, None, "../../etc/passwd", PNG, {})


def test_core_on_s3_stores_records_and_presigned_urls(bucket, s3_server):
    store = S3Storage(bucket, endpoint_url=s3_server, region_name="us-east-1")
    records = ListRecords()
    core = ServeCore(load_model("tiny"), store, records)
    out = core.generate(GenerateRequest(emotion="surprised", style="formal", seed=5, steps=2), api_key_id="abc123")
    png = httpx.get(out["image_url"], timeout=30).content
    with Image.open(io.BytesIO(png)) as im:
        assert json.loads(im.info[PARAMS_KEY])["seed"] == 5
    [rec] = records.rows
    assert rec["id"] == out["id"] and rec["storage_key"] == f"{out['id']}.png" and rec["seed"] == 5
    assert rec["api_key_id"] == "abc123" and rec["request"]["emotion"] == "surprised"
    assert rec["prompt"] == out["prompt"] and rec["model"] == "tiny" and rec["scheduler"] == "dpm++"
    assert rec["created_at"].endswith("+00:00") and rec["duration_s"] > 0
    assert set(rec) == {"id", "created_at", "request", "prompt", "negative_prompt", "seed", "steps", "guidance",
                        "scheduler", "model", "storage_key", "duration_s", "api_key_id"}


def test_service_on_s3(bucket, s3_server, tmp_path):
    from fastapi.testclient import TestClient

    from animegen_utils.serve.app import create_app
    from animegen_utils.serve.settings import ServeSettings
    from animegen_utils.serve.storage import StorageSettings

    settings = ServeSettings(storage=StorageSettings(s3_bucket=bucket, s3_endpoint_url=s3_server,
                                                     s3_region="us-east-1"))
    with TestClient(create_app(settings, pipe=load_model("tiny")), base_url="http://localhost") as c:
        assert c.get("/healthz").json()["storage"] == "s3"
        body = c.post("/api/generate", json={"emotion": "happy", "style": "casual", "seed": 9, "steps": 2}).json()
        assert body["image_url"].startswith(f"{s3_server}/{bucket}/output/{body['id']}.png?")
        direct = httpx.get(body["image_url"], timeout=30).content
        assert c.get(f"/images/{body['id']}.png").content == direct
