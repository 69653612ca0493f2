"""The plan's web UI, inside Jupyter: pick emotion and style, press Generate.

>>> from animegen_utils.widgets import generator_ui
>>> generator_ui(pipe)          # last expression of a cell: the UI shows up
"""

from __future__ import annotations

import html
import io

import ipywidgets as widgets

from .generation import generate
from .prompts import EMOTIONS, STYLES, CharacterSheet, build_prompt


class GeneratorUI(widgets.VBox):
    """Dropdowns, seed, steps, a Generate button and the image.

    Errors (a bad seed, an out-of-memory, a broken pipeline) are shown in the UI
    instead of raised, so a notebook session never dies from a click.
    """

    def __init__(self, pipe, character: CharacterSheet | None = None, image_width: int = 256,
                 height: int | None = None, width: int | None = None) -> None:
        self.pipe = pipe
        self.character = character
        self.height, self.width = height, width  # None: the model's native size (512 for SD1.5)
        self.emotion = widgets.Dropdown(options=list(EMOTIONS), value="happy", description="Emotion")
        self.style = widgets.Dropdown(options=list(STYLES), value="casual", description="Style")
        self.seed = widgets.IntText(value=0, description="Seed")
        self.steps = widgets.IntSlider(value=20, min=1, max=100, description="Steps")
        self.guidance = widgets.FloatSlider(value=7.5, min=1.0, max=15.0, step=0.5, description="Guidance")
        self.button = widgets.Button(description="Generate", button_style="primary", icon="magic")
        self.image = widgets.Image(format="png", width=image_width)
        self.status = widgets.HTML(value="")
        self.last = None
        self.button.on_click(self._on_click)
        super().__init__([
            widgets.HBox([self.emotion, self.style]),
            widgets.HBox([self.seed, self.steps, self.guidance]),
            self.button, self.status, self.image,
        ])

    def _on_click(self, _button=None) -> None:
        self.button.disabled = True
        self.status.value = "<i>generating…</i>"
        try:
            prompt = build_prompt(self.emotion.value, self.style.value, character=self.character)
            [self.last] = generate(self.pipe, prompt, seed=self.seed.value, steps=self.steps.value,
                                   guidance=self.guidance.value, height=self.height, width=self.width,
                                   progress=False)
            buf = io.BytesIO()
            # Upscale small images (an integer factor, to at least 256 px) with nearest neighbour so they
            # stay crisp in the page.
            img = self.last.image
            if img.width < 256:
                factor = -(-256 // img.width)
                img = img.resize((img.width * factor, img.height * factor), resample=0)
            img.save(buf, format="PNG")
            self.image.value = buf.getvalue()
            self.status.value = f"<code>{html.escape(prompt.positive)}</code> · seed {self.seed.value}"
        except Exception as err:  # shown to the user in the UI, by design
            self.status.value = f"<span style='color:#b00020'><b>{type(err).__name__}</b>: {html.escape(str(err))}</span>"
        finally:
            self.button.disabled = False

    def click(self) -> None:
        """Press Generate from code (tests, scripted demos)."""
        self.button.click()


def generator_ui(pipe, character: CharacterSheet | None = None, height: int | None = None,
                 width: int | None = None) -> GeneratorUI:
    """Build the generator UI for ``pipe``, drawing at ``height`` x ``width`` (default: the model's
    native size; e.g. 256 on a CPU with an SD1.5 model)."""
    return GeneratorUI(pipe, character=character, height=height, width=width)
