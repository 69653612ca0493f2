import matplotlib
import pytest
from PIL import Image

from animegen_utils.viz import image_grid, image_stats, save_figure
from animegen_utils.widgets import generator_ui

matplotlib.use("Agg")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_generate_button_shows_an_image(dummy_pipe):
    ui = generator_ui(dummy_pipe)
    ui.emotion.value, ui.style.value, ui.seed.value, ui.steps.value = "sad", "formal", 3, 2
    assert ui.image.value == b""
    ui.click()
    assert bytes(ui.image.value).startswith(PNG_MAGIC)
    assert "sad" in ui.status.value and "seed 3" in ui.status.value
    assert ui.last.params["seed"] == 3 and ui.last.params["steps"] == 2
    assert not ui.button.disabled


def test_errors_show_in_the_widget_instead_of_raising(dummy_pipe):
    ui = generator_ui(dummy_pipe)
    ui.steps.value = 1
    ui.seed.value = 2**70  # no torch.Generator takes this seed
    ui.click()
    assert "Error" in ui.status.value and "color:#b00020" in ui.status.value
    assert ui.image.value == b"" and not ui.button.disabled


def test_image_grid_layout_and_labels():
    images = [Image.new("RGB", (8, 8), (i * 20, 0, 0)) for i in range(6)]
    fig = image_grid(images, rows=2, cols=3, row_labels=["a", "b"], col_labels=["x", "y", "z"], title="t")
    assert len(fig.axes) == 6
    assert fig.axes[0].get_title() == "x" and fig.axes[0].get_ylabel() == "a"
    with pytest.raises(ValueError, match="row_labels"):
        image_grid(images, rows=2, cols=3, row_labels=["only one"])
    with pytest.raises(ValueError, match="do not fit"):
        image_grid(images, rows=1, cols=2)


def test_save_figure_writes_each_format(tmp_path):
    fig = image_grid([Image.new("RGB", (8, 8))], rows=1, cols=1)
    paths = save_figure(fig, "grid", formats=("png", "pdf"), directory=tmp_path)
    assert [p.name for p in paths] == ["grid.png", "grid.pdf"]
    assert paths[0].read_bytes().startswith(PNG_MAGIC) and paths[1].read_bytes().startswith(b"%PDF")
    with pytest.raises(ValueError, match="without an extension"):
        save_figure(fig, "grid.png", directory=tmp_path)


def test_image_stats_sees_pixels():
    dark = image_stats([Image.new("RGB", (4, 4), (0, 0, 0))] * 2)
    light = image_stats([Image.new("RGB", (4, 4), (200, 200, 200))] * 2)
    assert (dark["mean"], light["mean"], dark["n"]) == (0.0, 200.0, 2)


def test_a_figure_records_the_notebook_revision_and_parameters_that_drew_it(tmp_path, monkeypatch):
    import animegen_utils.viz as viz

    monkeypatch.setattr(viz, "_source", {})  # keep the stamp out of other tests' figures
    fig = image_grid([Image.new("RGB", (8, 8), "red")])
    [plain] = save_figure(fig, "plain", directory=tmp_path)
    assert viz.figure_source_of(plain) is None

    viz.figure_source("01_baseline_inference", seed=3, steps=20, emotions=["happy", "sad"])
    [stamped] = save_figure(fig, "stamped", directory=tmp_path)
    source = viz.figure_source_of(stamped)
    assert source["notebook"] == "01_baseline_inference"
    assert source["parameters"] == {"seed": 3, "steps": 20, "emotions": ["happy", "sad"]}
    assert source["git_revision"] not in ("", None)
    with pytest.raises(TypeError, match="JSON values"):
        viz.figure_source("01", pipe=object())
