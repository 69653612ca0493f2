"""AWS Lambda entry point: ``animegen_utils.serve.lambda_handler.lambda_handler``.

Accepts the plan's event and API Gateway proxy events (v1 and v2, JSON body)::

    {"emotion": "sad", "style": "formal"}                       # the plan's event (defaults happy / casual)
    {"body": "{\\"emotion\\": \\"sad\\"}", "isBase64Encoded": false, ...}   # API Gateway

and answers ``{"statusCode": 200, "body": {...image_url...}}`` (API Gateway gets the body as a
JSON string, as it requires), or 400 with the reason. Configuration, from the environment:

- ``ANIMEGEN_MODEL`` (default ``tiny``), ``ANIMEGEN_DEVICE`` (default ``auto``);
- ``ANIMEGEN_S3_BUCKET``, ``ANIMEGEN_S3_PREFIX`` (``output/``), ``ANIMEGEN_S3_ENDPOINT_URL``:
  images go to ``s3://bucket/output/<uuid>.png`` and ``image_url`` is a presigned URL;
  without a bucket, images go to ``ANIMEGEN_STORAGE_DIR`` (default ``/tmp/animegen``);
- ``ANIMEGEN_DATABASE_URL`` (e.g. ``postgresql+psycopg://user:pw@host/animegen``): each image also
  gets a generation record, as in the service. The database must already be migrated
  (``python -m animegen_utils.serve db upgrade --database-url ...`` at deploy time).

The model, the storage client and the database engine are created on the first event and kept
in module globals, so a warm container reuses them: one load and one database connection per
container, not per call (``records.LAMBDA_ENGINE_OPTIONS`` says how that connection is kept).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from typing import Any

from pydantic import ValidationError

from animegen_utils.memory import MemoryEstimateError

from .core import GenerateRequest, RequestError, ServeCore, bounded, describe_errors, load_model
from .storage import StorageSettings, make_storage

logger = logging.getLogger("animegen_utils.serve.lambda")

DEFAULTS = {"emotion": "happy", "style": "casual"}

_CORE: ServeCore | None = None


def get_core() -> ServeCore:
    """The container's ``ServeCore``, built on first use from the environment."""
    global _CORE
    if _CORE is None:
        env = os.environ
        storage = make_storage(StorageSettings(
            root=env.get("ANIMEGEN_STORAGE_DIR", "/tmp/animegen"), s3_bucket=env.get("ANIMEGEN_S3_BUCKET") or None,
            s3_prefix=env.get("ANIMEGEN_S3_PREFIX", "output/"), s3_endpoint_url=env.get("ANIMEGEN_S3_ENDPOINT_URL")))
        pipe = load_model(env.get("ANIMEGEN_MODEL", "tiny"), device=env.get("ANIMEGEN_DEVICE", "auto"))
        # ---- generation records (issue 14): one connection per container, see LAMBDA_ENGINE_OPTIONS ----
        records = None
        if env.get("ANIMEGEN_DATABASE_URL"):
            from .records import LAMBDA_ENGINE_OPTIONS, RecordStore

            records = RecordStore(env["ANIMEGEN_DATABASE_URL"], create=False, engine_options=LAMBDA_ENGINE_OPTIONS)
        _CORE = ServeCore(pipe, storage, records=records)
    return _CORE


class BadEvent(ValueError):
    pass


def parse_event(event: Any) -> tuple[dict, bool]:
    """The request fields of an event, and whether it came through API Gateway."""
    if not isinstance(event, dict):
        raise BadEvent(f"event must be a JSON object, got {type(event).__name__}")
    if "body" not in event:
        return {**DEFAULTS, **event}, False
    body = event["body"]
    if body is None or body == "":
        return dict(DEFAULTS), True
    if isinstance(body, str):
        try:
            if event.get("isBase64Encoded"):
                body = base64.b64decode(body, validate=True).decode("utf-8")
            body = json.loads(body)
        except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise BadEvent(f"body is not valid JSON: {bounded(str(err), 120)}") from None
        except RecursionError:  # nested thousands deep
            raise BadEvent("body is not valid JSON: nested too deeply") from None
        except ValueError as err:  # e.g. an integer of more digits than Python converts
            raise BadEvent(f"body is not valid JSON: {bounded(str(err), 120)}") from None
    if not isinstance(body, dict):
        raise BadEvent(f"body must be a JSON object, got {type(body).__name__}")
    return {**DEFAULTS, **body}, True


def _reply(status: int, body: dict, api_gateway: bool) -> dict:
    if api_gateway:
        return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}
    return {"statusCode": status, "body": body}


MAX_REASONS = 10  # a body with a thousand bad fields gets ten reasons, not a megabyte


def lambda_handler(event: Any, context: Any = None) -> dict:
    """Generate one image for the event and store it; 400 with the reason for a bad event.

    Reasons are bounded (a short prefix of the input at most), and any malformed event is a 400:
    nothing a caller sends makes the handler raise.
    """
    api_gateway = isinstance(event, dict) and "body" in event
    try:
        fields, api_gateway = parse_event(event)
        req = GenerateRequest.model_validate(fields)
    except BadEvent as err:
        return _reply(400, {"error": bounded(str(err))}, api_gateway)
    except ValidationError as err:
        described = describe_errors(err.errors())
        reasons = [f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in described[:MAX_REASONS]]
        if len(described) > MAX_REASONS:
            reasons.append(f"and {len(described) - MAX_REASONS} more")
        return _reply(400, {"error": "; ".join(reasons)}, api_gateway)
    except RecursionError:  # a plan-shaped event nested thousands deep
        return _reply(400, {"error": "event is nested too deeply"}, api_gateway)
    try:
        result = get_core().generate(req)
    except RequestError as err:
        return _reply(400, {"error": bounded(str(err))}, api_gateway)
    except MemoryEstimateError as err:
        return _reply(503, {"error": bounded(str(err), 600)}, api_gateway)
    except Exception:
        logger.exception("generation failed")  # to CloudWatch; the caller gets no internals
        return _reply(500, {"error": "internal error"}, api_gateway)
    return _reply(200, result, api_gateway)
