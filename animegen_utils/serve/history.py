"""The generation history API and the gallery page.

    GET    /api/generations?limit=20&cursor=...&emotion=happy&style=casual   newest first
    GET    /api/generations/{id}                                            one record
    DELETE /api/generations/{id}                                            the record, then its image
    GET    /gallery                                                         pages through the API

``create_app`` mounts ``router`` behind the same API-key dependency as every other
``/api/*`` route, and ``pages`` (the static gallery) without it:

>>> app.include_router(history.router, dependencies=[Depends(require_api_key)])
>>> app.include_router(history.pages)

The handlers are plain ``def``: FastAPI runs them on its thread pool, so a slow
database never blocks the event loop.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ValidationError

from animegen_utils.prompts import EMOTIONS, STYLES

from .guards import html_page
from .records import ID_RE, KEY_RE, MAX_LIMIT, RecordStore

logger = logging.getLogger("animegen_utils.serve")

STATIC_DIR = Path(__file__).resolve().parent / "static"

router = APIRouter(prefix="/api/generations", tags=["history"])
pages = APIRouter(include_in_schema=False)


class GenerationOut(BaseModel):
    id: str
    created_at: str
    image_url: str
    request: dict[str, Any]
    prompt: str
    negative_prompt: str
    seed: int
    steps: int
    guidance: float
    scheduler: str
    model: str
    duration_s: float
    api_key_id: str | None = None


class PageOut(BaseModel):
    items: list[GenerationOut]
    next_cursor: str | None  # pass back as ?cursor= for the next page; null on the last


def _records(request: Request) -> RecordStore:
    records = request.app.state.records
    if records is None:
        raise HTTPException(503, "This service keeps no generation records.")
    return records


def _out(request: Request, record: dict[str, Any]) -> dict[str, Any] | None:
    """The record as the API shows it, or None (logged) for a damaged row: one bad row must not
    fail a whole page. ``check`` lists such rows among the records without an image."""
    key = record.get("storage_key")
    if not isinstance(key, str) or not KEY_RE.fullmatch(key):
        logger.warning("skipping generation %s: damaged storage_key", str(record.get("id"))[:32])
        return None
    fields = {k: v for k, v in record.items() if k != "storage_key"}
    try:
        return GenerationOut.model_validate(
            {**fields, "image_url": request.app.state.storage.url(key)}).model_dump()
    except (ValidationError, ValueError) as err:
        logger.warning("skipping generation %s: damaged row (%s)", str(record.get("id"))[:32],
                       type(err).__name__)
        return None


@router.get("", response_model=PageOut)
def list_generations(
    request: Request,
    limit: int = Query(20, ge=1, le=MAX_LIMIT),
    cursor: str | None = Query(None, max_length=200),
    emotion: Literal[EMOTIONS] | None = None,  # type: ignore[valid-type]
    style: Literal[STYLES] | None = None,  # type: ignore[valid-type]
) -> dict[str, Any]:
    """Newest first; follow ``next_cursor`` for older ones (400 for a cursor this service didn't make)."""
    try:
        page = _records(request).list(limit=limit, cursor=cursor, emotion=emotion, style=style)
    except ValueError as err:  # only a cursor we didn't make gets here
        raise HTTPException(400, str(err)) from None
    items = [out for out in (_out(request, r) for r in page.items) if out is not None]
    return {"items": items, "next_cursor": page.next_cursor}


def _get(request: Request, id: str) -> dict[str, Any]:
    record = _records(request).get(id) if ID_RE.fullmatch(id) else None
    if record is None:
        raise HTTPException(404, "No such generation.")
    return record


@router.get("/{id}", response_model=GenerationOut)
def get_generation(request: Request, id: str) -> dict[str, Any]:
    """One record. 404 also when its image is gone from storage (``check --fix`` repairs that)."""
    record = _get(request, id)
    out = _out(request, record)
    if out is None:
        raise HTTPException(404, "This generation's record is damaged; `check --fix` removes it.")
    if not request.app.state.storage.exists(record["storage_key"]):
        raise HTTPException(404, "This generation's image was deleted.")
    return out


@router.delete("/{id}", status_code=204)
def delete_generation(request: Request, id: str) -> Response:
    """The record first, then the image: a crash in between leaves an orphan image, never a dangling record."""
    record = _get(request, id)
    _records(request).delete(id)
    if isinstance(record["storage_key"], str) and KEY_RE.fullmatch(record["storage_key"]):
        request.app.state.storage.delete(record["storage_key"])
    return Response(status_code=204)


@pages.get("/gallery", response_class=HTMLResponse)
def gallery() -> HTMLResponse:
    return html_page((STATIC_DIR / "gallery.html").read_text(encoding="utf-8"))
