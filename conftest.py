"""Session-wide settings for every pytest run in the project: ``tests/`` and nbval's ``notebooks/``.

Tests never rewrite committed files. nbval re-executes the notebooks, which save their figures
and outputs where ``animegen_utils.paths`` says: the project's ``figures/`` and ``outputs/``
unless ``$ANIMEGEN_FIGURES_DIR`` / ``$ANIMEGEN_OUTPUTS_DIR`` say otherwise. So both point at a
temporary folder for the session, unless already set (``make test`` sets its own). They are set
in ``pytest_configure``, before collection, because each notebook runs in a kernel subprocess
that inherits ``os.environ`` when it starts.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

FOLDERS = {"ANIMEGEN_FIGURES_DIR": "figures", "ANIMEGEN_OUTPUTS_DIR": "outputs"}
_scratch = pytest.StashKey[str]()
_previous = pytest.StashKey[dict]()


def pytest_configure(config: pytest.Config) -> None:
    unset = [name for name in FOLDERS if not os.environ.get(name)]
    if not unset:
        return
    scratch = tempfile.mkdtemp(prefix="animegen-pytest-")
    config.stash[_scratch] = scratch
    config.stash[_previous] = {name: os.environ.get(name) for name in unset}
    for name in unset:
        os.environ[name] = os.path.join(scratch, FOLDERS[name])


def pytest_unconfigure(config: pytest.Config) -> None:
    # Restore the environment too: pytest can run in-process (pytester, an IDE's runner).
    for name, value in config.stash.get(_previous, {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if _scratch in config.stash:
        shutil.rmtree(config.stash[_scratch], ignore_errors=True)
