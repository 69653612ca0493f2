"""The OpenAPI document tells the truth (issue 28, item 12): Schemathesis against a real server.

Schemathesis reads ``/openapi.json`` and sends what it describes and what it doesn't (boundary
values, wrong types, missing fields, other methods), then checks every answer against the
document: status codes, bodies, headers, and that schema-valid requests are accepted and
invalid ones refused. Deterministic (``--generation-deterministic``), bounded
(``--max-examples``), every check on, no failure allowed; ``tests/schemathesis.toml`` holds the
two allowances an OpenAPI document cannot express. The server is the real app on loopback with
the built-in model, limited to 64 px and a 0.2 s timeout so that hundreds of cases stay cheap.
"""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("schemathesis")
pytest.importorskip("fastapi")

from animegen_utils.serve.app import create_app  # noqa: E402
from animegen_utils.serve.background import ThreadedServer  # noqa: E402
from animegen_utils.serve.core import load_model  # noqa: E402
from animegen_utils.serve.settings import ServeSettings  # noqa: E402
from animegen_utils.serve.storage import StorageSettings  # noqa: E402

CONFIG = Path(__file__).with_name("schemathesis.toml")
MAX_EXAMPLES = 10  # per operation and phase: about 400 cases in all


def test_the_openapi_document_matches_the_service(tmp_path):
    settings = ServeSettings(storage=StorageSettings(root=str(tmp_path / "images")), timeout_s=0.2, max_size=64)
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("st")
    assert st, "the schemathesis CLI (st) is missing: pip install -e '.[dev]'"
    with ThreadedServer(create_app(settings, pipe=load_model("tiny"))) as server:
        run = subprocess.run(
            [st, "--config-file", str(CONFIG), "run", f"{server.url}/openapi.json", "--checks", "all",
             "--generation-deterministic", "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
             "--request-timeout", "20", "--no-color"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    out = run.stdout + run.stderr
    counts = re.search(r"(\d+) generated, (\d+) passed", out)
    assert run.returncode == 0 and counts, out[-6000:]
    generated, passed = map(int, counts.groups())
    print(f"schemathesis: {generated} cases, {passed} passed, 0 failures")
    assert generated == passed >= 200
