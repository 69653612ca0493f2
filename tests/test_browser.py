"""Real-browser tests in Debian's headless Chromium, driven by Playwright.

1. The service's page, served by ``python -m animegen_utils.serve`` on loopback: pick an
   emotion, click Generate, see the image load; its screenshot goes to figures/05_web_page.png.
2. The kit's ipywidgets UI inside a real JupyterLab on loopback: run the notebook, click the
   widget's Generate button, see an image appear.
"""

import os
import secrets
import subprocess
import sys
import time

import httpx
import nbformat
import pytest

pytest.importorskip("playwright")
from playwright.sync_api import sync_playwright  # noqa: E402

from animegen_utils import paths  # noqa: E402
from animegen_utils.serve.background import free_port, start_server  # noqa: E402
from animegen_utils.serve.browser import chromium_path, generate_in_page, launch_chromium  # noqa: E402

if chromium_path() is None:  # .ci/run installs Debian's chromium; without it these cannot run
    pytest.fail("No Chromium: install Debian's `chromium` package (listed in .ci/apt-packages.txt)",
                pytrace=False)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = launch_chromium(p)
        try:
            yield b
        finally:
            b.close()


WATCH_BUSY = """() => { window.__busy = false; const b = document.getElementById('generate');
    new MutationObserver(() => { if (b.disabled) window.__busy = true; }).observe(b, {attributes: true}); }"""


def test_service_page_generates_in_a_real_browser(browser, tmp_path):
    images = tmp_path / "images"
    with start_server("--model", "tiny", "--storage-dir", str(images)) as server:
        page = browser.new_page(viewport={"width": 900, "height": 760})
        page.set_default_timeout(180_000)  # a busy shared CPU is slow, never wrong
        page.goto(server.url)
        page.wait_for_selector("#emotion option[value='sad']", state="attached")
        assert page.locator("#emotion option").all_inner_texts() == ["happy", "angry", "sad", "surprised", "neutral"]
        # A bad seed: the server's 422 shows inline and nothing is stored.
        with pytest.raises(RuntimeError, match="greater than or equal to 0"):
            generate_in_page(page, server.url, seed=-1, goto=False)
        assert page.locator("#error").is_visible()
        assert not images.exists() or list(images.iterdir()) == []

        page.evaluate(WATCH_BUSY)
        shown = generate_in_page(page, server.url, emotion="sad", style="formal", seed=42, steps=4, goto=False)
        assert page.evaluate("window.__busy") is True  # the button was disabled while generating
        assert page.locator("#error").is_hidden()  # the earlier error is cleared
        assert shown["width"] == 128 and shown["history"] == 1
        assert "seed 42" in shown["caption"] and "sad" in shown["caption"]
        assert shown["src"] == f"/images/{shown['response']['id']}.png"
        assert (images / f"{shown['response']['id']}.png").is_file()

        again = generate_in_page(page, server.url, emotion="happy", style="casual", seed=7, steps=12,
                                 goto=False)
        assert again["history"] == 2 and "seed 7" in again["caption"]
        assert page.is_enabled("#generate")
        assert sorted(p.name for p in images.glob("*.png")) == sorted(
            f"{r['response']['id']}.png" for r in (shown, again))
        page.screenshot(path=str(paths.figures_dir() / "05_web_page.png"))


NOTEBOOK_CELLS = [
    "from animegen_utils import load_pipeline\nfrom animegen_utils.widgets import generator_ui",
    "ui = generator_ui(load_pipeline())\nui.steps.value = 4\nui",
]


def test_widget_ui_in_a_real_jupyterlab(browser, tmp_path):
    root = tmp_path / "lab"
    root.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in NOTEBOOK_CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "ui.ipynb")
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings")}
    log = open(tmp_path / "jupyterlab.log", "wb")
    lab = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--LabApp.extension_manager=readonly", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None", "--LabApp.check_for_updates_class="
         "jupyterlab.NeverCheckForUpdate"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert lab.poll() is None, (tmp_path / "jupyterlab.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/api/status", headers={"Authorization": f"token {token}"}, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "JupyterLab did not start"
            time.sleep(0.5)
        assert httpx.get(f"{base}/api/status", timeout=5).status_code == 403  # token auth is on

        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(f"{base}/lab/tree/ui.ipynb?token={token}")
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                               "&& window.jupyterapp.shell.currentWidget.sessionContext", timeout=120_000)
        page.evaluate("""async () => {
            const app = window.jupyterapp, panel = app.shell.currentWidget;
            await panel.sessionContext.ready;
            await app.commands.execute('notebook:run-all-cells');
        }""")
        button = page.locator(".jupyter-widgets button", has_text="Generate")
        button.wait_for(state="visible", timeout=180_000)
        image = page.locator("img.widget-image")
        assert image.evaluate("i => i.naturalWidth") == 0  # nothing yet
        button.click()
        page.wait_for_function("() => { const i = document.querySelector('img.widget-image');"
                               " return i && i.complete && i.naturalWidth > 0 }", timeout=180_000)
        assert image.evaluate("i => i.naturalWidth") == 256  # 128 px, shown 2x
        status = page.locator(".widget-html", has_text="seed 0")
        status.wait_for(state="visible", timeout=30_000)
        assert "happy" in status.inner_text()
    finally:
        lab.terminate()
        try:
            lab.wait(20)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait(20)
        log.close()
