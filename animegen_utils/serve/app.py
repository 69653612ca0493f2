"""The HTTP service: ``create_app(settings)`` builds the FastAPI app.

>>> from animegen_utils.serve.app import create_app
>>> from animegen_utils.serve.settings import ServeSettings
>>> app = create_app(ServeSettings(model="tiny"))    # then: uvicorn.run(app, host=..., port=...)

Routes: ``POST /api/generate``, ``GET /images/{id}.png``, ``GET /healthz``, ``GET /config.json``
(what the page needs), ``GET /`` (the page), ``/docs`` (OpenAPI). Generation runs on one worker
thread behind a bounded queue (``GenerationQueue``); a full queue answers 503 with ``Retry-After``.

In front of the routes (``guards``): the ``Host`` allow-list (DNS rebinding), the body limit and
security headers; below them, in the HTTP server, the connection guard (``connections``).
Every error body is ``{"detail": ...}``: a list of ``{loc, msg, type}`` for 422 (FastAPI's
shape, also for requests the schema admits but the service can't serve), a string otherwise.
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
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from animegen_utils.memory import MemoryEstimateError
from animegen_utils.prompts import EMOTIONS, STYLES

from . import core
from .core import (GenerateRequest, GenerationTimeout, RequestError, ServeCore, api_key_id, bounded,
                   describe_errors, load_model)
from .guards import BodyLimitMiddleware, HostAllowListMiddleware, SecurityHeadersMiddleware, html_page
from .health import Health
from .settings import ServeSettings
from .storage import make_storage

logger = logging.getLogger("animegen_utils.serve")

STATIC_DIR = Path(__file__).parent / "static"
API_KEY_HEADER = "X-API-Key"
IMAGE_NAME_RE = re.compile(r"([0-9a-f]{32})\.png")  # fullmatch: "$" lets "<id>.png\n" through
HEALTH_WAIT_S = 1.0  # /healthz answers within this even when a probe hangs

__all__ = ["create_app", "require_api_key", "ServeSettings", "GenerationQueue", "API_KEY_HEADER",
           "BodyLimitMiddleware"]


class ImageOut(BaseModel):
    id: str
    image_url: str
    seed: int


class GenerateResponse(ImageOut):
    prompt: str
    negative_prompt: str
    params: dict[str, Any]
    images: list[ImageOut]


class ErrorOut(BaseModel):
    """Every error but 422: ``{"detail": "what went wrong and what to do"}``."""

    detail: str


class ValidationErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    """422: what FastAPI answers, with bounded messages that never echo the input."""

    detail: list[ValidationErrorItem]


class GenerationQueue:
    """One worker thread and at most ``size`` admitted jobs (running + waiting).

    ``try_submit`` returns ``None`` instead of queueing past ``size``: the caller answers 503.
    ``retry_after_s`` says when the running job will be done, from the seconds per work unit
    of finished jobs (``cost``: steps x images x latent pixels) and bounded by its deadline.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._pending = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="animegen-generate")
        self._rates: deque[float] = deque(maxlen=20)  # seconds per cost unit of finished jobs
        self._running: tuple[float, float, float | None] | None = None  # (started, cost, deadline)

    @property
    def pending(self) -> int:
        return self._pending

    def try_submit(self, fn: Callable[..., Any], *args: Any, cost: float = 1.0,
                   deadline: float | None = None) -> Future | None:
        """Run ``fn(*args)`` on the worker; ``deadline`` (``time.monotonic()``) bounds the estimate."""
        with self._lock:
            if self._pending >= self.size:
                return None
            self._pending += 1
        future = self._executor.submit(self._timed, fn, args, cost, deadline)
        future.add_done_callback(self._release)  # also runs when a waiting job is cancelled
        return future

    def _timed(self, fn: Callable[..., Any], args: tuple, cost: float, deadline: float | None) -> Any:
        start = time.monotonic()
        self._running = (start, cost, deadline)
        try:
            result = fn(*args)
            self._rates.append((time.monotonic() - start) / max(cost, 1e-9))
            return result
        finally:
            self._running = None

    def _release(self, _future: Future) -> None:
        with self._lock:
            self._pending -= 1

    def retry_after_s(self) -> int:
        """Whole seconds until the running job should be done (a slot frees then), at least 1."""
        running, now = self._running, time.monotonic()
        if running is None:
            return 1
        started, cost, deadline = running
        left = deadline - now if deadline is not None else math.inf
        if self._rates:
            rate = sorted(self._rates)[len(self._rates) // 2]  # the median: one odd job doesn't swing it
            left = min(left, started + rate * cost - now)
        if math.isinf(left):
            left = 1.0
        return max(1, math.ceil(left))

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


def _error(status: int, detail: Any, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 404, 405, 413, 503, 504)}
ERRORS[422] = {"model": ValidationErrorOut}


def _allow(request: Request, fallback: str) -> str:
    """Every method the OpenAPI document gives this path (Starlette's 405 names one route's only);
    ``fallback`` (Starlette's own) for paths the document leaves out, like the pages."""
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        # "/api/generations/{id}" -> "/api/generations/[^/]+"
        pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part)
                          for part in re.split(r"(\{[^/]+?\})", template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in operations}
    if "GET" in methods:
        methods.add("HEAD")  # Starlette answers HEAD wherever it answers GET
    return ", ".join(sorted(methods)) if methods else fallback


def create_app(settings: ServeSettings, pipe: Any = None) -> FastAPI:
    """The service for ``settings``; ``pipe`` skips loading ``settings.model`` (tests, notebooks).

    The model loads once, when the app starts (uvicorn, or ``with TestClient(app, base_url=
    "http://localhost")``: the ``Host`` allow-list refuses TestClient's default ``testserver``).
    Raises ``ValueError`` when the settings would expose an open service (see ``check_access``),
    and ``records.SchemaError`` (``CorruptDatabaseError`` too) for a database it can't use.
    """
    settings.check_access()
    max_size = settings.max_size or core.MAX_SIZE
    if not core.MIN_SIZE <= max_size <= core.MAX_SIZE or max_size % core.SIZE_MULTIPLE:
        raise ValueError(f"max_size must be a multiple of {core.SIZE_MULTIPLE} from {core.MIN_SIZE} to "
                         f"{core.MAX_SIZE}, got {max_size}")

    def load() -> Any:
        return load_model(settings.model, settings.device, settings.scheduler, config=settings.config,
                          clip_skip=settings.clip_skip, safety_checker=settings.safety_checker)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = pipe if pipe is not None else await run_in_threadpool(load)
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
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # This instance's size limit, so the document says what it serves.
        if app.openapi_schema is None:
            size = base_openapi()["components"]["schemas"]["GenerateRequest"]["properties"]["size"]
            for option in size.get("anyOf", [size]):
                if option.get("type") == "integer":
                    option["maximum"] = max_size
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.storage = make_storage(settings.storage, base_url="/images/")
    app.state.records = None
    # ---- generation records (issue 14) ------------------------------------------------
    from . import history
    from .records import RecordStore, database_url_for

    # Raises records.SchemaError (naming the upgrade command) on a schema it doesn't know.
    app.state.records = RecordStore(database_url_for(settings))
    app.include_router(history.router, dependencies=[Depends(require_api_key)],
                       responses={k: v for k, v in ERRORS.items() if k in (400, 401, 404, 405, 422, 503)})
    app.include_router(history.pages)
    # -----------------------------------------------------------------------------------
    app.state.health = Health(app.state.storage, app.state.records, settings.min_free_bytes)
    # Outermost last: the Host check runs first, before any body is read.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(HostAllowListMiddleware, hosts=settings.hosts())
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/static-docs", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="static-docs")
    index_html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        # FastAPI's default page loads Swagger UI from a CDN, which is blank offline.
        page = get_swagger_ui_html(openapi_url=app.openapi_url, title="animegen API",
                                   swagger_js_url="/static-docs/swagger-ui-bundle.js",
                                   swagger_css_url="/static-docs/swagger-ui.css",
                                   swagger_favicon_url="/static-docs/favicon-32x32.png")
        return html_page(page.body.decode())

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Location and a bounded message only: no echo of the client's input, no internals.
        return _error(422, describe_errors(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allow(request, headers.get("Allow", ""))
        detail = exc.detail if isinstance(exc.detail, (str, list)) else str(exc.detail)
        return _error(exc.status_code, bounded(detail) if isinstance(detail, str) else detail, **headers)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:8]
        logger.error("error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
        if isinstance(exc, SQLAlchemyError):
            request.app.state.health.failed("database", exc)
        elif isinstance(exc, OSError):
            request.app.state.health.failed("storage", exc)
        return _error(500, f"Internal error (id {error_id}); the server log has the details.")

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return html_page(index_html)

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, Any]:
        """``status`` "ok", or "degraded" with ``reasons`` (storage, database); always 200 while serving."""
        queue: GenerationQueue = request.app.state.queue
        health: Health = request.app.state.health
        try:
            report = await asyncio.wait_for(run_in_threadpool(health.report), HEALTH_WAIT_S)
        except asyncio.TimeoutError:
            report = {"status": "degraded", "reasons": [f"health probes did not answer within {HEALTH_WAIT_S:g} s"],
                      "storage_ok": False, "database_ok": False}
        return {**report, "model": request.app.state.core.model, "storage": settings.storage.kind,
                "queue": {"pending": queue.pending, "size": queue.size}}

    @app.get("/config.json")
    async def config() -> dict[str, Any]:
        """What the web page needs: the choices, the bounds, and whether a key is required."""
        return {"emotions": list(EMOTIONS), "styles": list(STYLES), "auth_required": bool(settings.api_key),
                "limits": {"max_steps": core.MAX_STEPS, "max_guidance": core.MAX_GUIDANCE, "max_size": max_size,
                           "max_batch": core.MAX_BATCH, "max_seed": core.MAX_SEED}}

    @app.post("/api/generate", response_model=GenerateResponse,
              responses={k: v for k, v in ERRORS.items() if k != 404})
    async def generate_endpoint(req: GenerateRequest, request: Request,
                                key_id: str | None = Depends(require_api_key)) -> Any:
        """Generate ``batch`` images. 400: a body that is not JSON; 422: a request outside the schema,
        or one it admits that can't be served (a prompt too long, seed + batch past the limit);
        503: the queue is full (``Retry-After``) or the device lacks the memory; 504: past ``--timeout``."""
        if req.size is not None and req.size > max_size:
            return _error(422, [{"loc": ["body", "size"], "msg": f"Input should be less than or equal to {max_size}",
                                 "type": "less_than_equal"}])
        queue: GenerationQueue = request.app.state.queue
        deadline = time.monotonic() + settings.timeout_s
        future = queue.try_submit(request.app.state.core.generate, req, key_id, deadline,
                                  cost=req.cost(), deadline=deadline)
        if future is None:
            wait = queue.retry_after_s()
            return _error(503, f"The generator is busy ({queue.size} requests in line); retry in {wait} s.",
                          **{"Retry-After": str(wait)})
        try:
            # A little grace beyond the worker's own deadline, so that a job finishing just in
            # time is answered rather than stored unseen.
            grace = min(1.0, settings.timeout_s / 2)
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=settings.timeout_s + grace)
        except (asyncio.TimeoutError, GenerationTimeout):
            return _error(504, f"Generation took longer than {settings.timeout_s:g} s and was stopped.")
        except RequestError as err:
            return _error(422, [{"loc": ["body"], "msg": bounded(str(err)), "type": "value_error"}])
        except MemoryEstimateError as err:
            # The memory guard's own words: a smaller size or batch fits; not a server fault.
            return _error(503, bounded(str(err), 600))

    @app.get("/images/{name}", response_class=Response,
             responses={200: {"content": {"image/png": {}}}, 404: ERRORS[404]})
    async def image(name: str, request: Request) -> Response:
        match = IMAGE_NAME_RE.fullmatch(name)
        if match is None:
            raise HTTPException(404, "No such image.")
        try:
            data = await run_in_threadpool(request.app.state.storage.get, f"{match.group(1)}.png")
        except KeyError:
            raise HTTPException(404, "No such image.") from None
        return Response(data, media_type="image/png",
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})

    return app
