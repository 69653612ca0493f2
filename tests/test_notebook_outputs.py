"""The committed notebooks read like articles: every figure a notebook saves is also
shown inline, and no output names the machine that ran it (its folders, its
site-packages, a library's warning pointing into them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

#: A saved figure: ``save_figure(fig, "name", ...)``.
SAVED = re.compile(r"save_figure\(\s*(\w+)\s*,\s*[\"']([^\"']+)[\"']")
#: Absolute paths of a machine (POSIX homes and temp dirs, Colab's /content, Windows drives)
#: and library noise that names an install.
MACHINE_PATH = re.compile(r"(?<![\w.])(/home/|/Users/|/root/|/tmp/|/work/|/content/|/opt/|/usr/|[A-Z]:\\\\)"
                          r"|site-packages|dist-packages")


def _cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]


def _output_text(output: dict) -> str:
    if output.get("output_type") == "stream":
        return "".join(output.get("text", ""))
    if output.get("output_type") == "error":
        return "\n".join(output.get("traceback", []))
    data = output.get("data", {})
    return "".join("".join(data[k]) for k in ("text/plain", "text/html", "text/markdown") if k in data)


def saved_but_not_shown(cells: list[dict]) -> list[str]:
    """Names of figures a cell saves without showing an image among its outputs."""
    missing = []
    for cell in cells:
        names = [name for _, name in SAVED.findall("".join(cell["source"]))]
        shown = sum("image/png" in o.get("data", {}) or "image/svg+xml" in o.get("data", {})
                    for o in cell.get("outputs", []))
        if names and shown < len(names):
            missing += names
    return missing


def machine_paths(cells: list[dict]) -> list[str]:
    """Lines of outputs that name a machine path."""
    return [line.strip()[:160] for cell in cells for o in cell.get("outputs", [])
            for line in _output_text(o).splitlines() if MACHINE_PATH.search(line)]


def test_the_checks_find_what_they_look_for():
    hidden = [{"source": ['fig = image_grid(x)\nsave_figure(fig, "03_dataset", directory=d)\n'],
               "outputs": [{"output_type": "stream", "name": "stdout", "text": ["done\n"]}]}]
    shown = [{"source": ['save_figure(fig, "03_dataset")\nfig'],
              "outputs": [{"output_type": "execute_result", "data": {"image/png": "iVBOR", "text/plain": ["<Figure>"]}}]}]
    assert saved_but_not_shown(hidden) == ["03_dataset"]
    assert saved_but_not_shown(shown) == []
    noisy = [{"source": [], "outputs": [
        {"output_type": "stream", "name": "stderr",
         "text": ["/srv/x/.venv/lib/python3.11/site-packages/peft/tuners/tuners_utils.py:331: UserWarning\n"]},
        {"output_type": "execute_result", "data": {"text/plain": ["[PosixPath('/home/ana/animegen/figures/a.png')]"]}},
        {"output_type": "stream", "name": "stdout", "text": ["300 images (../outputs/03/training_data)\n"]}]}]
    assert len(machine_paths(noisy)) == 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_saved_figure_is_shown_inline(path):
    assert saved_but_not_shown(_cells(path)) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_output_names_a_machine_path(path):
    assert machine_paths(_cells(path)) == []
