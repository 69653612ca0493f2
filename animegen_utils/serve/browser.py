"""Drive the service's page in a real, headless Chromium (Playwright): tests, screenshots, demos.

>>> from animegen_utils.serve.browser import chromium_path, generate_in_page
>>> from playwright.sync_api import sync_playwright
>>> with sync_playwright() as p:
...     browser = launch_chromium(p)
...     page = browser.new_page()
...     shown = generate_in_page(page, "http://127.0.0.1:8000", emotion="sad", seed=42)
...     page.screenshot(path="figures/05_web_page.png")

Playwright drives the system's Chromium (Debian's ``chromium`` package, ``/usr/bin/chromium``,
or ``$ANIMEGEN_CHROMIUM``): no browser download.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def chromium_path() -> str | None:
    """The system Chromium: ``$ANIMEGEN_CHROMIUM``, ``/usr/bin/chromium``, or one on ``PATH``."""
    for candidate in (os.environ.get("ANIMEGEN_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def launch_chromium(playwright: Any) -> Any:
    """A headless Chromium browser from a running ``sync_playwright()``."""
    path = chromium_path()
    if path is None:
        raise FileNotFoundError("No Chromium found: install Debian's `chromium` package or set ANIMEGEN_CHROMIUM.")
    return playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)


def generate_in_page(page: Any, url: str, emotion: str = "happy", style: str = "casual", seed: int | None = None,
                     steps: int | None = None, timeout_s: float = 180.0, goto: bool = True) -> dict[str, Any]:
    """Open the page (unless ``goto=False``), choose, click Generate and wait until the image has loaded.

    Returns what the page shows: ``{"src", "width", "caption", "history", "response"}`` (natural
    width of the image, the caption text, the number of history entries, the API's JSON answer).
    Raises ``RuntimeError`` with the page's inline error when the service refused.
    """
    ms = timeout_s * 1000
    if goto:
        page.goto(url)
    page.wait_for_selector(f"#emotion option[value='{emotion}']", state="attached", timeout=ms)
    page.select_option("#emotion", emotion)
    page.select_option("#style", style)
    if seed is not None:
        page.fill("#seed", str(seed))
    if steps is not None:
        page.fill("#steps", str(steps))
    with page.expect_response(lambda r: r.url.endswith("/api/generate"), timeout=ms) as answer:
        page.click("#generate")
    response = answer.value
    if not response.ok:
        page.wait_for_selector("#error", state="visible", timeout=ms)
        raise RuntimeError(f"the page shows an error: {page.inner_text('#error')}")
    body = response.json()
    page.wait_for_function(
        "src => { const i = document.getElementById('image');"
        " return i.getAttribute('src') === src && i.complete && i.naturalWidth > 0 }",
        arg=body["image_url"], timeout=ms)
    page.wait_for_selector("#generate:enabled", timeout=ms)
    return {"src": page.get_attribute("#image", "src"),
            "width": page.evaluate("document.getElementById('image').naturalWidth"),
            "caption": page.inner_text("#caption"),
            "history": page.locator("#history li").count(),
            "response": body}


def page_screenshot(url: str, path: str | Path, **choices: Any) -> dict[str, Any]:
    """Generate once in the page (``generate_in_page`` arguments) and save a screenshot to ``path``.

    Works inside Jupyter too: Playwright's sync API refuses a thread with a running asyncio
    loop (a kernel has one), so there it runs on a thread of its own.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _page_screenshot(url, path, **choices)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(_page_screenshot, url, path, **choices).result()


def _page_screenshot(url: str, path: str | Path, **choices: Any) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 760})
            shown = generate_in_page(page, url, **choices)
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path))
            return shown
        finally:
            browser.close()
