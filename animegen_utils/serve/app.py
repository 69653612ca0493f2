"""The HTTP service: ``create_app(settings)`` builds the FastAPI app.

>>> from animegen_utils.serve.app import create_app
>>> from animegen_utils.serve.settings import ServeSettings
>>> app = create_app(ServeSettings(model="tiny"))    # then: uvicorn.run(app, host=..., port=...)

Routes: ``POST /api/generate``, ``GET /images/{id}.png``, ``GET /healthz``, ``GET /config.json``
(what the page needs), ``GET /`` (the page), ``/docs`` (OpenAPI). Generation runs on one worker
thread behind a bounded queue (``GenerationQueue``); a full queue answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable

import swagger_ui_bundle
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from animegen_utils.prompts import EMOTIONS, STYLES

from . import core
from .core import GenerateRequest, GenerationTimeout, RequestError, ServeCore, api_key_id, load_model
from .settings import ServeSettings
from .storage import make_storage

logger = logging.getLogger("animegen_utils.serve")

STATIC_DIR = Path(__file__).parent / "static"
API_KEY_HEADER = "X-API-Key"
IMAGE_NAME_RE = re.compile(r"^([0-9a-f]{32})\.png$")

__all__ = ["create_app", "require_api_key", "ServeSettings", "GenerationQueue", "API_KEY_HEADER"]


class ImageOut(BaseModel):
    id: str
    image_url: str
    seed: int


class GenerateResponse(ImageOut):
    prompt: str
    negative_prompt: str
    params: dict[str, Any]
    images: list[ImageOut]


class GenerationQueue:
    """One worker thread and at most ``size`` admitted jobs (running + waiting).

    ``try_submit`` returns ``None`` instead of queueing past ``size``: the caller answers 503.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._pending = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="animegen-generate")
        self._durations: deque[float] = deque(maxlen=20)

    @property
    def pending(self) -> int:
        return self._pending

    def try_submit(self, fn: Callable[..., Any], *args: Any) -> Future | None:
        with self._lock:
            if self._pending >= self.size:
                return None
            self._pending += 1
        future = self._executor.submit(self._timed, fn, *args)
        future.add_done_callback(self._release)  # also runs when a waiting job is cancelled
        return future

    def _timed(self, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.monotonic()
        try:
            return fn(*args)
        finally:
            self._durations.append(time.monotonic() - start)

    def _release(self, _future: Future) -> None:
        with self._lock:
            self._pending -= 1

    def retry_after_s(self) -> int:
        """A fair guess at when a slot frees up: the recent mean duration times the queue."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 1.0
        return max(1, math.ceil(mean * max(1, self._pending)))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def require_api_key(request: Request) -> str | None:
    """FastAPI dependency guarding ``/api/*``: returns the key's id, or ``None`` when keys are off.

    The key comes in ``X-API-Key`` or ``Authorization: Bearer <key>`` and is compared in
    constant time. Reuse it on other routers: ``Depends(require_api_key)``.
    """
    expected = request.app.state.settings.api_key
    if not expected:
        return None
    given = request.headers.get(API_KEY_HEADER)
    auth = request.headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(401, f"Missing or wrong API key: send it in the {API_KEY_HEADER} header.",
                            headers={"WWW-Authenticate": "Bearer"})
    return api_key_id(given)


class BodyLimitMiddleware:
    """Answers 413 to request bodies over ``max_bytes``, declared or streamed (pure ASGI)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = JSONResponse({"detail": f"Request body larger than {self.max_bytes} bytes."}, 413)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await too_large(scope, receive, send)
        received, started, answered = 0, False, False

        async def limited_receive() -> dict:
            nonlocal received, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and not started:
                    # Answer now and tell the app the client left: the app's own reply is dropped.
                    answered = True
                    await too_large(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if answered:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


def _error(status: int, detail: Any, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


def create_app(settings: ServeSettings, pipe: Any = None) -> FastAPI:
    """The service for ``settings``; ``pipe`` skips loading ``settings.model`` (tests, notebooks).

    The model loads once, when the app starts (uvicorn, or ``with TestClient(app)``).
    Raises ``ValueError`` when the settings would expose an open service (see ``check_access``).
    """
    settings.check_access()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = pipe if pipe is not None else await run_in_threadpool(load_model, settings.model, settings.device)
        app.state.core = ServeCore(loaded, app.state.storage, app.state.records)
        app.state.queue = GenerationQueue(settings.queue_size)
        logger.info("animegen serving %s with %r", app.state.core.model, app.state.storage)
        try:
            yield
        finally:
            app.state.queue.shutdown()
            if app.state.records is not None:
                app.state.records.close()  # hand the database connections back

    # docs_url=None: /docs is served below from a bundled Swagger UI, so it works offline.
    app = FastAPI(title="animegen", version="1.0.0", lifespan=lifespan, docs_url=None,
                  description="Anime character generation with Stable Diffusion 1.5 (animegen_utils).")
    app.state.settings = settings
    app.state.storage = make_storage(settings.storage, base_url="/images/")
    app.state.records = None
    # ---- generation records (issue 14) ------------------------------------------------
    from . import history
    from .records import RecordStore, database_url_for

    # Raises records.SchemaError (naming the upgrade command) on a schema it doesn't know.
    app.state.records = RecordStore(database_url_for(settings))
    app.include_router(history.router, dependencies=[Depends(require_api_key)])
    app.include_router(history.pages)
    # -----------------------------------------------------------------------------------
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/static-docs", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="static-docs")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        # FastAPI's default page loads Swagger UI from a CDN, which is blank offline.
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="animegen API",
                                   swagger_js_url="/static-docs/swagger-ui-bundle.js",
                                   swagger_css_url="/static-docs/swagger-ui.css",
                                   swagger_favicon_url="/static-docs/favicon-32x32.png")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Location and message only: no echo of the client's input, no internals.
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return _error(422, errors)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:8]
        logger.error("error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
        return _error(500, f"Internal error (id {error_id}); the server log has the details.")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, Any]:
        queue: GenerationQueue = request.app.state.queue
        return {"status": "ok", "model": request.app.state.core.model, "storage": settings.storage.kind,
                "queue": {"pending": queue.pending, "size": queue.size}}

    @app.get("/config.json")
    async def config() -> dict[str, Any]:
        """What the web page needs: the choices, the bounds, and whether a key is required."""
        return {"emotions": list(EMOTIONS), "styles": list(STYLES), "auth_required": bool(settings.api_key),
                "limits": {"max_steps": core.MAX_STEPS, "max_guidance": core.MAX_GUIDANCE,
                           "max_batch": core.MAX_BATCH, "max_seed": core.MAX_SEED}}

    @app.post("/api/generate", response_model=GenerateResponse,
              responses={401: {}, 413: {}, 422: {}, 503: {}, 504: {}})
    async def generate_endpoint(req: GenerateRequest, request: Request,
                                key_id: str | None = Depends(require_api_key)) -> Any:
        queue: GenerationQueue = request.app.state.queue
        deadline = time.monotonic() + settings.timeout_s
        future = queue.try_submit(request.app.state.core.generate, req, key_id, deadline)
        if future is None:
            wait = queue.retry_after_s()
            return _error(503, f"The generator is busy ({queue.size} requests in line); retry in {wait} s.",
                          **{"Retry-After": str(wait)})
        try:
            # A little grace beyond the worker's own deadline, so that a job finishing just in
            # time is answered rather than stored unseen.
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=settings.timeout_s + 1.0)
        except (asyncio.TimeoutError, GenerationTimeout):
            return _error(504, f"Generation took longer than {settings.timeout_s:g} s and was stopped.")
        except RequestError as err:
            return _error(422, str(err))

    @app.get("/images/{name}", response_class=Response,
             responses={200: {"content": {"image/png": {}}}, 404: {}})
    async def image(name: str, request: Request) -> Response:
        match = IMAGE_NAME_RE.match(name)
        if match is None:
            raise HTTPException(404, "No such image.")
        try:
            data = await run_in_threadpool(request.app.state.storage.get, f"{match.group(1)}.png")
        except KeyError:
            raise HTTPException(404, "No such image.") from None
        return Response(data, media_type="image/png",
                        headers={"Cache-Control": "public, max-age=31536000, immutable",
                                 "X-Content-Type-Options": "nosniff"})

    return app
