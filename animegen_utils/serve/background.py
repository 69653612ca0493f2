"""Start the service as a background process and wait until it answers (notebooks, tests, scripts).

>>> from animegen_utils.serve.background import start_server
>>> with start_server("--model", "tiny", "--storage-dir", "/tmp/images") as server:
...     httpx.post(f"{server.url}/api/generate", json={"emotion": "happy", "style": "casual"})

The process is ``python -m animegen_utils.serve`` on 127.0.0.1 and a free port; its log
goes to ``server.log_path``. ``stop()`` (or leaving the ``with``) ends it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class BackgroundServer:
    """A running ``animegen serve`` process."""

    def __init__(self, process: subprocess.Popen, url: str, log_path: Path) -> None:
        self.process, self.url, self.log_path = process, url, log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)

    def __enter__(self) -> "BackgroundServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(*args: str, port: int | None = None, env: dict[str, str] | None = None,
                 startup_timeout: float = 180.0) -> BackgroundServer:
    """Run ``python -m animegen_utils.serve --host 127.0.0.1 --port PORT *args`` until ``/healthz`` answers.

    Raises ``RuntimeError`` with the end of the server's log if it exits or does not answer in time.
    """
    port = port or free_port()
    log_path = Path(tempfile.mkstemp(prefix="animegen-serve-", suffix=".log")[1])
    cmd = [sys.executable, "-m", "animegen_utils.serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    server = BackgroundServer(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"animegen serve exited with {process.returncode}:\n{server.log()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"animegen serve did not answer within {startup_timeout:g} s:\n{server.log()[-3000:]}")


class ThreadedServer:
    """Serve an app object with uvicorn on a thread of this process (tests, notebooks).

    >>> with ThreadedServer(create_app(settings)) as server:
    ...     httpx.get(f"{server.url}/healthz")
    """

    def __init__(self, app, port: int | None = None, startup_timeout: float = 180.0) -> None:
        import uvicorn

        from .connections import uvicorn_config

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The service's own connection guard when the app carries its settings (create_app's do).
        settings = getattr(getattr(app, "state", None), "settings", None)
        if settings is not None:
            config = uvicorn_config(app, settings, host="127.0.0.1", port=self.port, log_level="warning",
                                    lifespan="on")
        else:
            config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.startup_timeout = startup_timeout
        self._thread = None

    def start(self) -> "ThreadedServer":
        import threading

        self._thread = threading.Thread(target=self.server.run, name="animegen-uvicorn", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the threaded server did not start")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> "ThreadedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
