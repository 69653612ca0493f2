"""Figures for notebooks and blog posts: labelled image grids, saved at print dpi.

>>> fig = image_grid([g.image for g in gens], rows=5, cols=3,
...                  row_labels=EMOTIONS, col_labels=STYLES, title="emotion x style")
>>> save_figure(fig, "01_emotion_style_grid")          # figures/01_emotion_style_grid.png

A notebook that calls ``figure_source("01_baseline_inference", seed=seed, steps=steps)`` once
stamps every PNG it saves afterwards with the notebook, the git revision and those parameters
(``figure_source_of(path)`` reads them back), so a figure in a blog post says what drew it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from . import paths

BLOG_DPI = 200
#: The PNG text chunk that holds a figure's source (see ``figure_source``).
SOURCE_KEY = "animegen:source"
_source: dict[str, Any] = {}


def figure_source(notebook: str, **parameters: Any) -> None:
    """Stamp the PNGs ``save_figure`` writes from now on with what drew them.

    >>> figure_source("01_baseline_inference", seed=0, steps=20)
    >>> save_figure(fig, "01_emotion_style_grid")
    >>> figure_source_of("figures/01_emotion_style_grid.png")["parameters"]
    {'seed': 0, 'steps': 20}

    Parameters must be JSON values (numbers, strings, lists, dicts); the git revision is
    read once, here.
    """
    from .published import git_revision

    source = {"notebook": notebook, "git_revision": git_revision(), "parameters": parameters}
    try:
        json.dumps(source)
    except TypeError as err:
        raise TypeError(f"figure_source parameters must be JSON values: {err}") from err
    _source.clear()
    _source.update(source)


def figure_source_of(path: str | Path) -> dict[str, Any] | None:
    """The source a PNG figure was stamped with (None for an unstamped one)."""
    with Image.open(path) as image:
        text = image.info.get(SOURCE_KEY)
    return json.loads(text) if text else None


def _to_pil(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if hasattr(image, "image"):  # a Generation
        return image.image
    return Image.fromarray(np.asarray(image))


def image_grid(
    images: Sequence,
    rows: int | None = None,
    cols: int | None = None,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    cell_inches: float = 1.6,
    captions: Sequence[str] | None = None,
) -> Figure:
    """A matplotlib grid of images, filled row by row, with optional labels.

    ``images`` may be PIL images, arrays or ``Generation`` objects. Pixel art is
    shown with nearest-neighbour scaling so 64x64 images stay crisp.
    """
    images = [_to_pil(im) for im in images]
    if not images:
        raise ValueError("image_grid needs at least one image")
    if rows is None and cols is None:
        cols = math.ceil(math.sqrt(len(images)))
    if rows is None:
        rows = math.ceil(len(images) / cols)
    if cols is None:
        cols = math.ceil(len(images) / rows)
    if len(images) > rows * cols:
        raise ValueError(f"{len(images)} images do not fit a {rows}x{cols} grid")
    for name, labels, n in (("row_labels", row_labels, rows), ("col_labels", col_labels, cols)):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{name} has {len(labels)} entries for {n} {name[:3]}s")

    fig, axes = plt.subplots(rows, cols, figsize=(cols * cell_inches, rows * cell_inches + (0.4 if title else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if i < len(images):
            ax.imshow(images[i], interpolation="nearest")
            if captions is not None and i < len(captions):
                ax.set_xlabel(captions[i], fontsize=7)
    if col_labels is not None:
        for ax, label in zip(axes[0], col_labels):
            ax.set_title(str(label).replace("_", " "), fontsize=10)
    if row_labels is not None:
        for ax, label in zip(axes[:, 0], row_labels):
            ax.set_ylabel(str(label).replace("_", " "), fontsize=10)
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    # Detach from pyplot: the notebook shows the returned figure once (not again
    # at the end of the cell), and long sweeps don't pile up open figures.
    plt.close(fig)
    return fig


def save_figure(fig: Figure, name: str, formats: Sequence[str] = ("png",), directory: str | Path | None = None,
                dpi: int = BLOG_DPI) -> list[Path]:
    """Save ``fig`` as ``<directory>/<name>.<fmt>`` for each format; returns the paths.

    ``directory`` defaults to ``$ANIMEGEN_FIGURES_DIR``, else the project's ``figures/``
    (``animegen_utils.paths.figures_dir``), whatever the working directory.
    """
    if Path(name).suffix:
        raise ValueError(f"Give the name without an extension ({Path(name).stem!r}); use formats=(...) instead")
    out_dir = paths.figures_dir(directory)
    written = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        # Fixed metadata so the same figure from the same revision gives the same bytes (clean git diffs).
        metadata = {"Software": None} if fmt == "png" else ({"CreationDate": None} if fmt == "pdf" else None)
        if fmt == "png" and _source:
            metadata[SOURCE_KEY] = json.dumps(_source, sort_keys=True)
        fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata=metadata)
        written.append(path)
    return written


def image_stats(images: Sequence) -> dict[str, float]:
    """Deterministic summary numbers of a set of images (for notebooks and nbval).

    Mean and std of all pixels (0-255), rounded to one decimal so float noise
    between CPUs does not change the printed value while a broken model does.
    """
    arrays = [np.asarray(_to_pil(im), dtype=np.float64) for im in images]
    stacked = np.stack(arrays)
    return {
        "n": len(arrays),
        "mean": round(float(stacked.mean()), 1),
        "std": round(float(stacked.std()), 1),
    }
