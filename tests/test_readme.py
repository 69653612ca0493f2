"""The README's shell commands work as printed, in a fresh copy of the project.

Every ```bash block in README.md is preceded by a marker comment:

    <!-- readme-test: offline -->                  run here, line by line, in a copy of the project
    <!-- readme-test: offline-service -->          a server: started in the background, then the
                                                   blocks after it run against it (its --port)
    <!-- readme-test: needs-gpu -->                not run (no GPU here)
    <!-- readme-test: needs-gpu-and-network -->    not run (no GPU, no Hub here)

Offline commands run as printed, except the few listed in CHEAP_VARIANTS, which run a
smaller version of themselves (fewer training steps, one notebook instead of all). The
copy has a `.venv` that reuses this environment's installed packages, so the README's
`pip install` lines run for real but download nothing big. Afterwards, nothing may have
been written outside the copy.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = re.compile(r"<!-- readme-test: ([a-z-]+) -->\s*\n```(?:bash|sh|shell)\n(.*?)```", re.S)
FENCE = re.compile(r"^```(?:bash|sh|shell|console)\n", re.M)
KINDS = {"offline", "offline-service", "needs-gpu", "needs-gpu-and-network"}

SMALL_01 = "-p steps 4 -p guidance_samples 2 -y '{sweep_seeds: [0, 1], guidance_values: [7.5]}'"

# Printed command -> what this test runs instead (None: not run here, with the reason in a comment).
CHEAP_VARIANTS: dict[str, str | None] = {
    # CI itself runs `make test` (.ci/run); running it here would run this test inside itself.
    "make test": None,
    # `make test` runs the quick reproduce (tests/test_reproduce_quick.py); the full one takes
    # most of an hour and reproduce-train hours: neither belongs in CI.
    "make reproduce": None,
    "make reproduce REPRODUCE=quick": None,
    "make reproduce-train": None,
    # Notebook 01 with fewer steps and samples: the same cells, files and folders, a tenth of the time.
    "make demo": f"make demo NOTEBOOKS=notebooks/01_baseline_inference.ipynb PAPERMILL_ARGS=\"{SMALL_01}\"",
    "papermill --cwd notebooks notebooks/01_baseline_inference.ipynb outputs/01_baseline_inference.ipynb -p model tiny":
        "papermill --cwd notebooks notebooks/01_baseline_inference.ipynb outputs/01_baseline_inference.ipynb "
        f"-p model tiny {SMALL_01}",
    # The whole suite is `make test` (CI); here one test file proves the command line works.
    "pytest tests notebooks --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg":
        "pytest tests/test_prompts.py --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg -p no:cacheprovider",
    "python -m animegen_utils.toyworld.train":
        "python -m animegen_utils.toyworld.train --n-images 64 --vae-steps 2 --decoder-steps 2 --unet-steps 2 "
        "--text-steps 2 --text-batch 4 --batch 8 --vae-batch 8 --warmup 1 --checkpoint-every 1 --no-progress",
    "python -m animegen_utils.lora train --data data/sample/training_data --output outputs/03/lora "
    "--max-train-steps 500":
        "python -m animegen_utils.lora train --data data/sample/training_data --output outputs/03/lora "
        "--max-train-steps 2 --validation-inference-steps 2 --no-progress",
    "python -m animegen_utils.evaluate --model tiny --n 200 --output eval.json":
        "python -m animegen_utils.evaluate --model tiny --n 4 --steps 2 --output eval.json",
}


def readme_blocks() -> list[tuple[str, list[str]]]:
    text = README.read_text(encoding="utf-8")
    blocks = [(kind, commands(body)) for kind, body in MARKER.findall(text)]
    assert len(blocks) == len(FENCE.findall(text)), \
        "every ```bash block in README.md needs a '<!-- readme-test: offline | needs-gpu-and-network -->' line above it"
    return blocks


def commands(body: str) -> list[str]:
    """Shell lines of a block: continuations joined, trailing comments dropped."""
    joined = re.sub(r"\\\n\s*", "", body)
    lines = [re.sub(r"\s+#\s.*$", "", line).strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_every_bash_block_is_marked_and_offline_ones_are_known():
    blocks = readme_blocks()
    assert {kind for kind, _ in blocks} <= KINDS
    offline = [c for kind, cmds in blocks if kind == "offline" for c in cmds]
    assert "make test" in offline and any(c.startswith("papermill --cwd notebooks") for c in offline)
    stale = set(CHEAP_VARIANTS) - set(offline)
    assert not stale, f"CHEAP_VARIANTS names commands the README no longer has: {stale}"


def _copy_project(dest: Path) -> None:
    """Tracked and untracked-but-not-ignored files: what a fresh clone of this tree would hold."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _seed_venv(clone: Path) -> None:
    """A .venv whose Python also sees this environment's packages (read-only, through a .pth
    file), with the same console scripts (papermill, pytest...) pointing at its own Python."""
    venv = clone / ".venv"
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True)  # noqa: SLF001
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "zz_reuse_test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    here = Path(sys.executable).parent
    for script in here.iterdir():
        target = venv / "bin" / script.name
        if target.exists() or not script.is_file():
            continue
        with open(script, "rb") as f:
            first = f.readline()
        if first.startswith(b"#!") and first.rstrip().endswith(b"python") and str(here).encode() in first:
            target.write_bytes(b"#!" + str(venv / "bin" / "python").encode() + b"\n" + script.read_bytes()[len(first):])
            target.chmod(0o755)


@pytest.mark.skipif(shutil.which("python3.11") is None, reason="the README's commands name python3.11")
def test_offline_readme_commands_run_as_printed_in_a_fresh_copy(tmp_path):
    parent = tmp_path / "parent"
    clone = parent / "animegen"
    clone.mkdir(parents=True)
    _copy_project(clone)
    _seed_venv(clone)
    script = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for kind, cmds in readme_blocks():
        for cmd in cmds:
            variant = CHEAP_VARIANTS.get(cmd, cmd)
            if kind == "offline" and variant is not None:
                script += [f"echo {shlex.quote('+ ' + variant)}", variant]
            elif kind == "offline-service":
                port = re.search(r"--port (\d+)", cmd).group(1)
                script += [f"echo {shlex.quote('+ ' + cmd + ' &')}", f"{cmd} > service-{port}.log 2>&1 &",
                           f"for _ in $(seq 300); do curl -sf http://127.0.0.1:{port}/healthz >/dev/null && break; "
                           "sleep 1; done"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "ANIMEGEN_", "PYTHON"))}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT)))
    started = time.time()
    done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=1500)
    assert done.returncode == 0, f"README commands failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert (clone / "outputs" / "01_baseline_inference.ipynb").is_file()
    assert (clone / "figures" / "01_emotion_style_grid.png").stat().st_mtime >= started  # written now, in the clone
    assert (clone / "outputs" / "01" / "happy_casual.png").is_file()
    assert (clone / "happy.png").read_bytes()[:4] == b"\x89PNG"  # fetched from the service the README starts
    assert sorted(p.name for p in parent.iterdir()) == ["animegen"], "something was written outside the clone"
