"""The Lambda handler: the plan's event, API Gateway events, bad events; local folder and S3."""

import base64
import io
import json
import uuid

import httpx
import pytest
from PIL import Image

pytest.importorskip("pydantic")

from animegen_utils.generation import PARAMS_KEY  # noqa: E402
from animegen_utils.serve import lambda_handler as handler_module  # noqa: E402
from animegen_utils.serve.background import free_port  # noqa: E402
from animegen_utils.serve.lambda_handler import lambda_handler  # noqa: E402


def params_of(png: bytes) -> dict:
    with Image.open(io.BytesIO(png)) as im:
        return json.loads(im.info[PARAMS_KEY])


@pytest.fixture()
def local_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ANIMEGEN_STORAGE_DIR", str(tmp_path / "lambda"))
    monkeypatch.delenv("ANIMEGEN_S3_BUCKET", raising=False)
    monkeypatch.setattr(handler_module, "_CORE", None)  # a fresh container
    return tmp_path / "lambda"


def test_plan_event_with_defaults(local_env):
    reply = lambda_handler({"emotion": "sad", "steps": 2}, None)
    assert reply["statusCode"] == 200
    body = reply["body"]  # the plan's shape: a dict
    assert body["image_url"].startswith("file://")
    png = (local_env / f"{body['id']}.png").read_bytes()
    params = params_of(png)
    assert params["seed"] == body["seed"]
    assert "sad" in params["prompt"] and "casual" in params["prompt"]  # style defaulted to casual
    reply = lambda_handler({"steps": 2, "seed": 4}, None)
    assert "happy" in reply["body"]["prompt"] and reply["body"]["seed"] == 4


def test_api_gateway_events(local_env):
    event = {"version": "2.0", "routeKey": "POST /generate", "isBase64Encoded": False,
             "body": json.dumps({"emotion": "angry", "style": "formal", "seed": 11, "steps": 2})}
    reply = lambda_handler(event, None)
    assert reply["statusCode"] == 200 and reply["headers"]["Content-Type"] == "application/json"
    body = json.loads(reply["body"])  # API Gateway needs a string
    assert body["seed"] == 11 and "angry" in body["prompt"] and "formal" in body["prompt"]
    encoded = {"isBase64Encoded": True, "httpMethod": "POST",
               "body": base64.b64encode(json.dumps({"style": "formal", "seed": 11, "steps": 2}).encode()).decode()}
    reply = lambda_handler(encoded, None)
    assert reply["statusCode"] == 200 and json.loads(reply["body"])["seed"] == 11


def test_model_loads_once_per_container(local_env):
    lambda_handler({"steps": 1}, None)
    core = handler_module._CORE
    lambda_handler({"steps": 1}, None)
    assert handler_module._CORE is core and handler_module.get_core().pipe is core.pipe


@pytest.mark.parametrize("event,reason", [
    ({"emotion": "furious"}, "Valid choices: happy, angry, sad, surprised, neutral"),
    ({"style": "bikini"}, "Valid choices: casual, formal, school_uniform"),
    ({"steps": 500}, "steps"),
    ({"body": "{not json"}, "not valid JSON"),
    ({"body": "[1, 2]"}, "JSON object"),
    ({"body": "!!!", "isBase64Encoded": True}, "not valid JSON"),
    ({"body": json.dumps({"emotion": "happy", "drop_table": 1})}, "drop_table"),
    ("just a string", "JSON object"),
    (None, "JSON object"),
])
def test_bad_events_are_400_with_the_reason(local_env, event, reason):
    reply = lambda_handler(event, None)
    assert reply["statusCode"] == 400
    body = reply["body"] if isinstance(reply["body"], dict) else json.loads(reply["body"])
    assert reason in body["error"]
    assert not local_env.exists() or list(local_env.iterdir()) == []


def test_lambda_stores_in_s3_under_output(tmp_path, monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    import boto3

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint, bucket = f"http://127.0.0.1:{port}", f"animegen-{uuid.uuid4().hex[:12]}"
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "ANIMEGEN_S3_BUCKET": bucket,
                     "ANIMEGEN_S3_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setattr(handler_module, "_CORE", None)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket=bucket)
        reply = lambda_handler({"emotion": "neutral", "style": "school_uniform", "seed": 21, "steps": 2}, None)
        assert reply["statusCode"] == 200
        body = reply["body"]
        [obj] = s3.list_objects_v2(Bucket=bucket)["Contents"]
        assert obj["Key"] == f"output/{body['id']}.png"
        assert params_of(httpx.get(body["image_url"], timeout=30).content)["seed"] == 21
    finally:
        server.stop()
