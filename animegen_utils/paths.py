"""Where the kit reads and writes: ``figures/``, ``outputs/`` and ``data/``.

Notebooks call these instead of guessing with ``../``, so they write to the same
places whatever the working directory (papermill with or without ``--cwd``,
JupyterLab, VS Code, a script):

>>> from animegen_utils import paths
>>> paths.figures_dir()                 # <project>/figures
>>> paths.outputs_dir("01")             # <project>/outputs/01, created
>>> paths.figures_dir("/tmp/figs")      # an explicit folder always wins

The base folder is, in order:

1. ``$ANIMEGEN_HOME``, when set;
2. the project root: the clone this package was installed from (``pip install -e .``),
   or else the nearest folder above the working directory that holds the project's
   ``pyproject.toml`` and ``animegen_utils/``;
3. otherwise (a plain ``pip install`` outside a clone, as on Colab) the working
   directory itself, which on Colab is ``/content``.

``$ANIMEGEN_FIGURES_DIR`` and ``$ANIMEGEN_OUTPUTS_DIR`` move one folder alone
(every pytest run points them at a temporary folder unless they are set, in the root
``conftest.py``, so re-executing the notebooks leaves the committed figures untouched).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _is_project_root(folder: Path) -> bool:
    pyproject = folder / "pyproject.toml"
    if not (pyproject.is_file() and (folder / "animegen_utils").is_dir()):
        return False
    return 'name = "animegen"' in pyproject.read_text(encoding="utf-8", errors="replace")


def project_root() -> Path | None:
    """The animegen clone in use, or ``None`` when the package runs outside one."""
    if _is_project_root(PACKAGE_DIR.parent):
        return PACKAGE_DIR.parent
    cwd = Path.cwd().resolve()
    return next((folder for folder in (cwd, *cwd.parents) if _is_project_root(folder)), None)


def base_dir() -> Path:
    """``$ANIMEGEN_HOME``, else the project root, else the working directory."""
    home = os.environ.get("ANIMEGEN_HOME")
    if home:
        return Path(home).expanduser().resolve()
    return project_root() or Path.cwd().resolve()


def _folder(name: str, override: str | Path | None, parts: tuple[str, ...], create: bool) -> Path:
    if override is not None:
        folder = Path(override).expanduser()
    else:
        env = os.environ.get(f"ANIMEGEN_{name.upper()}_DIR")
        folder = (Path(env).expanduser() if env else base_dir() / name).joinpath(*parts)
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def figures_dir(override: str | Path | None = None) -> Path:
    """``<base>/figures`` (created), or ``override`` when given."""
    return _folder("figures", override, (), create=True)


def outputs_dir(*parts: str, override: str | Path | None = None) -> Path:
    """``<base>/outputs/<parts...>`` (created), or ``override`` when given."""
    return _folder("outputs", override, parts, create=True)


def data_dir(*parts: str, override: str | Path | None = None) -> Path:
    """``<base>/data/<parts...>``: the project's sample data (not created)."""
    return _folder("data", override, parts, create=False)
