"""Notebooks find figures/, outputs/ and data/ from any working directory."""

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
