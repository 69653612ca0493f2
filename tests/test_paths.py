"""Notebooks find figures/, outputs/ and data/ from any working directory."""

import os
import subprocess
import sys
from pathlib import Path

from animegen_utils import paths

ROOT = Path(__file__).resolve().parents[1]


def _clear_env(monkeypatch):
    for name in ("ANIMEGEN_HOME", "ANIMEGEN_FIGURES_DIR", "ANIMEGEN_OUTPUTS_DIR", "ANIMEGEN_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_the_project_root_is_found_from_any_working_directory(monkeypatch, tmp_path):
    _clear_env(monkeypatch)
    for cwd in (ROOT, ROOT / "notebooks", tmp_path):
        monkeypatch.chdir(cwd)
        assert paths.project_root() == ROOT  # the clone this package is imported from
        assert paths.figures_dir() == ROOT / "figures"
        assert paths.data_dir("sample") == ROOT / "data" / "sample"


def test_outside_a_clone_the_working_directory_is_the_base(monkeypatch, tmp_path):
    _clear_env(monkeypatch)
    monkeypatch.setattr(paths, "PACKAGE_DIR", tmp_path / "site-packages" / "animegen_utils")
    monkeypatch.chdir(tmp_path)
    assert paths.project_root() is None
    assert paths.outputs_dir("01") == tmp_path.resolve() / "outputs" / "01"
    assert (tmp_path / "outputs" / "01").is_dir()
    # ...unless the working directory is inside a clone, found by walking up.
    monkeypatch.chdir(ROOT / "notebooks")
    assert paths.project_root() == ROOT


def test_overrides_win_in_order(monkeypatch, tmp_path):
    _clear_env(monkeypatch)
    monkeypatch.setenv("ANIMEGEN_HOME", str(tmp_path / "home"))
    assert paths.figures_dir() == tmp_path / "home" / "figures"
    monkeypatch.setenv("ANIMEGEN_FIGURES_DIR", str(tmp_path / "figs"))
    assert paths.figures_dir() == tmp_path / "figs"
    assert paths.figures_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert paths.outputs_dir("02") == tmp_path / "home" / "outputs" / "02"


def test_save_figure_writes_into_the_project_not_the_working_directory(monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    from animegen_utils.viz import save_figure

    _clear_env(monkeypatch)
    monkeypatch.setenv("ANIMEGEN_FIGURES_DIR", str(tmp_path / "figs"))
    monkeypatch.chdir(tmp_path)
    fig = plt.figure(figsize=(1, 1))
    [path] = save_figure(fig, "tiny_test_figure")
    plt.close(fig)
    assert path == tmp_path / "figs" / "tiny_test_figure.png" and path.is_file()


def test_the_test_session_keeps_figures_and_outputs_out_of_the_repository():
    """The root conftest.py points both folders away from committed files for the whole session,
    so the notebooks nbval re-executes (their kernels inherit os.environ) rewrite nothing tracked."""
    for name in ("ANIMEGEN_FIGURES_DIR", "ANIMEGEN_OUTPUTS_DIR"):
        assert os.environ.get(name), f"{name} is not set in the test session"
        folder = Path(os.environ[name]).resolve()
        assert not folder.is_relative_to(ROOT / "figures") and not folder.is_relative_to(ROOT / "outputs"), folder
        if folder.is_relative_to(ROOT):
            tracked = subprocess.run(["git", "ls-files", "--", str(folder)], cwd=ROOT, capture_output=True,
                                     text=True, check=True).stdout
            assert tracked == "", f"{name}={folder} holds tracked files"
    assert paths.figures_dir() == Path(os.environ["ANIMEGEN_FIGURES_DIR"])
    # A child process (as a notebook kernel is) sees the same folder.
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['ANIMEGEN_OUTPUTS_DIR'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert child == os.environ["ANIMEGEN_OUTPUTS_DIR"]
