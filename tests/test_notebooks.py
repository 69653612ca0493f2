"""Notebooks run headless through papermill with overridden parameters.

(nbval re-runs them with their defaults and compares the checked cells; see the Makefile.)
"""

from pathlib import Path

import nbformat
import papermill as pm
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

SMALL_RUNS = {
    "03_lora_training.ipynb": dict(
        n_per_emotion=4, max_train_steps=3, train_batch_size=4, validation_steps=2, eval_seeds_per_emotion=1,
        steps=3, scales=[0.0, 1.0], outputs_dir="{tmp}/outputs",
    ),
    "01_baseline_inference.ipynb": dict(
        steps=6, emotions=["happy", "sad"], styles=["casual", "formal"], sweep_seeds=[0, 1],
        guidance_values=[1.0, 7.5], guidance_samples=2, outputs_dir="{tmp}/outputs",
    ),
    "02_llm_prompt_optimization.ipynb": dict(
        steps=4, emotions=["happy", "sad"], styles=["casual"], seeds=[0, 1], variants=2,
        cache_dir="{tmp}/cache", description_limit=4,
    ),
    "04_img2img_controlnet.ipynb": dict(
        steps=4, strengths=[0.0, 0.5, 1.0], n_sources=2, targets_per_source=1, sketches=["tilted"],
        n_renders=1, n_held_out=1, seeds=[0], scales=[0.0, 1.0], outputs_dir="{tmp}/outputs",
    ),
    "05_serving.ipynb": dict(steps=2, burst_size=2, screenshot=False, outputs_dir="{tmp}/outputs"),
    "06_fast_sampling.ipynb": dict(
        n=4, timing_repeats=1, cache_repeats=1, map_steps={"pndm": [12], "dpm++": [4], "lcm": [2, 4]},
        compare_seeds=[0, 1], outputs_dir="{tmp}/outputs",
    ),
    "07_consistent_characters.ipynb": dict(
        seeds_per_emotion=1, steps=3, sweep_scales=[0.0, 1.0], sweep_seeds_per_emotion=1, train_steps=3,
        train_per_emotion=2, outputs_dir="{tmp}/outputs",
    ),
}


def test_every_notebook_starts_with_a_parameters_cell():
    for path in sorted(NOTEBOOKS.glob("[0-9]*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert "parameters" in first_code.metadata.get("tags", []), path.name
        assert any("colab.research.google.com" in c.source for c in nb.cells if c.cell_type == "markdown"), path.name


@pytest.mark.parametrize("name", sorted(SMALL_RUNS))
def test_notebook_runs_headless_with_parameters(name, tmp_path):
    params = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in SMALL_RUNS[name].items()}
    params.update(model="tiny", figures_dir=str(tmp_path / "figures"))
    out = tmp_path / name
    pm.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=params, cwd=str(NOTEBOOKS),
                        progress_bar=False, kernel_name="python3")
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "steps = " in injected[0].source
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    figures = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert figures, "the notebook saved no figures"
