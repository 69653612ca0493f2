"""A/B test of manual vs optimized prompts, on random-weight components (and the tiny model when trained)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from animegen_utils import CharacterSheet, build_prompt, load_pipeline
from animegen_utils.abtest import FRACTION_METRICS, ROW_KEYS, ab_test, identity_request
from animegen_utils.llm import PromptOptimizer
from animegen_utils.pipelines import pipeline_info

EMOTIONS = ["happy", "sad"]
STYLES = ["casual"]
SEEDS = [3, 11]


class BrightnessScorer:
    """A real (if crude) scorer: bright images read as happy, casual, blonde; dark ones as sad, formal, black-haired."""

    name = "brightness"

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.calls = 0

    def accuracy(self, images, requested):
        self.calls += 1
        bright = [float(np.asarray(im.convert("L"), dtype=np.float32).mean()) > self.threshold for im in images]
        predicted = {"emotion": ["happy" if b else "sad" for b in bright],
                     "style": ["casual" if b else "formal" for b in bright],
                     "hair_color": ["blonde" if b else "black" for b in bright]}
        return {k: float(np.mean([p == r[k] for p, r in zip(predicted[k], requested)]))
                for k in predicted if all(k in r for r in requested)}


@pytest.fixture(scope="module")
def result(dummy_model_dir):
    pipe = load_pipeline(str(dummy_model_dir))
    return ab_test(pipe, PromptOptimizer(backend="offline", tokenizer=pipe.tokenizer), EMOTIONS, STYLES, SEEDS,
                   variants=3, scorer=BrightnessScorer(threshold=-1.0), steps=2)


def test_a_and_b_are_drawn_on_the_same_seeds(result):
    expected = [(e, s, seed) for e in EMOTIONS for s in STYLES for seed in SEEDS]
    assert result.keys == expected
    assert [g.params["seed"] for g in result.images_a] == [k[2] for k in expected]
    assert [g.params["seed"] for g in result.images_b] == [k[2] for k in expected]
    for ga, gb in zip(result.images_a, result.images_b):
        assert {k: v for k, v in ga.params.items() if k not in ("prompt", "negative")} == \
            {k: v for k, v in gb.params.items() if k not in ("prompt", "negative")}
        assert ga.params["steps"] == 2


def test_arm_a_is_the_manual_prompt_and_arm_b_the_optimizer_variant_0(result):
    for (e, s, _), pa, pb, ga, gb in zip(result.keys, result.prompts_a, result.prompts_b,
                                         result.images_a, result.images_b):
        assert pa == build_prompt(e, s)
        assert ga.params["prompt"] == pa.positive and gb.params["prompt"] == pb.positive
        assert pb.backend == "offline" and pb.emotion == e and pb.style == s
        assert pb == result.variants_b[(e, s)][0]
        assert len(result.variants_b[(e, s)]) == 3
    # Different prompts on the same seed give different pixels.
    a, b = (np.asarray(g.image, dtype=np.int16) for g in (result.images_a[0], result.images_b[0]))
    assert np.abs(a - b).mean() > 0.5


def test_rows_have_the_keys_and_fractions_in_unit_interval(result):
    assert [r["arm"] for r in result.rows] == ["A", "B"]
    for r in result.rows:
        assert tuple(r) == ROW_KEYS
        assert r["n_images"] == len(EMOTIONS) * len(STYLES) * len(SEEDS)
        for m in FRACTION_METRICS:
            if m == "consistency":
                assert r[m] is None  # no character
            else:
                assert isinstance(r[m], float) and 0.0 <= r[m] <= 1.0, (m, r[m])
        assert r["pixel_diversity"] > 0.0  # two seeds, two images
    assert result.row("A")["backend"] == "manual" and result.row("B")["backend"] == "offline"
    assert result.row("A")["mean_jaccard"] == 1.0  # one variant


def test_offline_b_prompts_have_more_distinct_tags_and_vary(result):
    a, b = result.row("A"), result.row("B")
    assert b["distinct_tags"] > a["distinct_tags"]
    assert a["distinct_tags"] == np.mean([len(build_prompt(e, s).tags) for e in EMOTIONS for s in STYLES])
    assert b["mean_jaccard"] < 1.0


def test_to_markdown_has_a_header_and_two_rows(result):
    lines = result.to_markdown().splitlines()
    assert len(lines) == 4
    assert lines[0] == "| " + " | ".join(ROW_KEYS) + " |"
    assert lines[2].startswith("| A | manual | n/a | 4 |") and lines[3].startswith("| B | offline | n/a | 4 |")
    assert result._repr_markdown_() == result.to_markdown()
    short = result.to_markdown(digits=1, columns=["arm", "distinct_tags"]).splitlines()
    assert short[0] == "| arm | distinct_tags |"
    assert float(short[2].split("|")[2]) == round(result.row("A")["distinct_tags"], 1)
    with pytest.raises(ValueError, match="Unknown columns"):
        result.to_markdown(columns=["arm", "vibes"])
    table = result.prompt_table().splitlines()
    assert len(table) == 2 + len(EMOTIONS) * len(STYLES) and "B (offline)" in table[0]


def test_bar_chart_and_paired_grid_are_figures(result):
    import matplotlib.pyplot as plt

    fig = result.bar_chart()
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    grid = result.paired_grid()
    assert isinstance(grid, Figure) and len(grid.axes) == len(EMOTIONS) * len(STYLES) * 2 * len(SEEDS)
    one = result.paired_grid("sad", max_seeds=1)
    assert len(one.axes) == 2
    assert [ax.get_title() for ax in one.axes] == ["A  seed 3", "B  seed 3"]
    assert len(result.paired_grid(0, 1).axes) == 2 * 2 * len(SEEDS)
    with pytest.raises(ValueError, match="neither"):
        result.paired_grid("angry")  # not tested
    plt.close("all")


def test_custom_scorer_plugs_in(dummy_pipe):
    opt = PromptOptimizer(backend="offline")
    always_bright = ab_test(dummy_pipe, opt, ["happy"], ["formal"], [0, 1], variants=2,
                            scorer=BrightnessScorer(threshold=-1.0), steps=2)
    always_dark = ab_test(dummy_pipe, opt, ["happy"], ["formal"], [0, 1], variants=2,
                          scorer=BrightnessScorer(threshold=256.0), steps=2)
    assert always_bright.scorer == "brightness"
    for arm in "AB":
        assert always_bright.row(arm)["emotion_accuracy"] == 1.0
        assert always_dark.row(arm)["emotion_accuracy"] == 0.0
        assert always_bright.row(arm)["style_accuracy"] == 0.0  # "formal" was requested
        assert always_dark.row(arm)["style_accuracy"] == 1.0


def test_consistency_with_a_character_sheet(dummy_pipe):
    sheet = CharacterSheet("black", "blue", "twintails")
    assert identity_request(sheet) == {"hair_color": "black", "eye_color": "blue", "hairstyle": "twintails"}
    scorer = BrightnessScorer(threshold=256.0)  # every image is "dark": black hair
    res = ab_test(dummy_pipe, PromptOptimizer(backend="offline"), ["angry", "neutral"], ["casual"], [5],
                  character=sheet, variants=2, scorer=scorer, steps=2)
    assert scorer.calls == 2  # once per arm
    for arm in "AB":
        row = res.row(arm)
        assert row["consistency"] == 1.0  # hair colour: the only identity attribute this scorer reads
        assert row["pixel_diversity"] is None  # one seed
    assert all("black hair" in p.tags and "twintails" in p.tags for p in res.prompts_a + res.prompts_b)
    res_blonde = ab_test(dummy_pipe, PromptOptimizer(backend="offline"), ["angry"], ["casual"], [5],
                         character=CharacterSheet("blonde", "blue"), variants=1, scorer=scorer, steps=2)
    assert res_blonde.row("A")["consistency"] == 0.0
    assert res_blonde.row("B")["mean_jaccard"] == 1.0  # one variant


def test_bad_arguments(dummy_pipe):
    opt = PromptOptimizer(backend="offline")
    scorer = BrightnessScorer(0.0)
    with pytest.raises(ValueError, match="emotion"):
        ab_test(dummy_pipe, opt, ["smug"], ["casual"], [0], scorer=scorer, steps=2)
    with pytest.raises(ValueError, match="distinct"):
        ab_test(dummy_pipe, opt, ["happy"], ["casual"], [0, 0], scorer=scorer, steps=2)
    with pytest.raises(ValueError, match="variants"):
        ab_test(dummy_pipe, opt, ["happy"], ["casual"], [0], variants=0, scorer=scorer, steps=2)


def test_default_probe_scorer_plumbing(dummy_pipe):
    res = ab_test(dummy_pipe, PromptOptimizer(backend="offline"), ["surprised"], ["school_uniform"], [0, 1],
                  character=CharacterSheet("pink", "green", "short hair"), variants=2, steps=2)
    assert res.scorer == "probe"
    for r in res.rows:
        for m in FRACTION_METRICS:
            assert 0.0 <= r[m] <= 1.0, (m, r[m])


def test_tiny_model_both_arms_follow_the_emotion():
    pipe = load_pipeline("tiny")
    assert pipeline_info(pipe).model == "tiny"
    res = ab_test(pipe, PromptOptimizer(backend="offline", tokenizer=pipe.tokenizer),
                  ["happy", "angry", "sad", "surprised", "neutral"], ["casual"], [0, 1], variants=3, steps=20)
    for arm in "AB":
        assert res.row(arm)["emotion_accuracy"] >= 0.6, res.to_markdown()
    assert res.row("B")["distinct_tags"] > res.row("A")["distinct_tags"]


# -- free-text descriptions ------------------------------------------------------------------------
DESCRIPTIONS = [
    {"id": "x1", "lang": "en", "text": "a cheerful girl in a hoodie, blonde hair",
     "attributes": {"emotion": "happy", "style": "casual", "hair_color": "blonde"}},
    {"id": "x2", "lang": "ja", "text": "泣いている黒髪の少女、ドレス",
     "attributes": {"emotion": "sad", "style": "formal", "hair_color": "black"}},
    {"id": "x3", "lang": "en", "text": "furious, glasses", "attributes": {"emotion": "angry", "accessories": ["glasses"]}},
]


def test_description_ab_test_pairs_seeds_and_scores_the_stated_attributes(dummy_pipe):
    from animegen_utils.abtest import DESCRIPTION_ROW_KEYS, description_ab_test
    from animegen_utils.prompts import naive_prompt

    opt = PromptOptimizer(backend="offline")
    bright = description_ab_test(dummy_pipe, opt, DESCRIPTIONS, seeds=[4, 9], scorer=BrightnessScorer(-1.0), steps=2)
    assert bright.keys == [(d, s) for d in range(3) for s in (4, 9)]
    for (d, s), ga, gb, pa, pb in zip(bright.keys, bright.images_a, bright.images_b, bright.prompts_a,
                                       bright.prompts_b):
        assert ga.params["seed"] == gb.params["seed"] == s
        assert pa == naive_prompt(DESCRIPTIONS[d]["text"]) and ga.params["prompt"] == pa.positive
        assert pb == opt.optimize_description(DESCRIPTIONS[d]["text"]) and gb.params["prompt"] == pb.positive
    assert [tuple(r) for r in bright.rows] == [DESCRIPTION_ROW_KEYS] * 2
    a, b = bright.row("A"), bright.row("B")
    assert (a["backend"], b["backend"]) == ("naive", "offline")
    # The brightness scorer reads emotion, style and hair colour: every image reads as happy,
    # casual, blonde, so exactly the first description's checks pass, in both arms.
    assert a["n_checks"] == b["n_checks"] == 2 * (3 + 3 + 1)
    assert a["adherence"] == b["adherence"] == pytest.approx(6 / 14)
    assert (a["emotion"], a["style"], a["hair_color"], a["accessory"]) == (pytest.approx(1 / 3), 0.5, 0.5, None)
    assert bright.hits_a[0] == {"emotion": True, "style": True, "hair_color": True}
    langs = {r["lang"]: r for r in bright.by_language()}
    assert langs["ja"]["n_images"] == 2 and langs["ja"]["A"] == 0.0 and langs["en"]["B"] == pytest.approx(6 / 8)
    assert "| A | naive |" in bright.to_markdown()
    grid = bright.paired_grid([0, 2], seed=9)
    assert len(grid.axes) == 4 and grid.axes[0].get_xlabel() == "3/3" and grid.axes[2].get_xlabel() == "0/1"
    with pytest.raises(ValueError, match="not drawn"):
        bright.paired_grid(seed=5)
    with pytest.raises(ValueError, match="attributes"):
        description_ab_test(dummy_pipe, opt, [{"text": "happy"}], scorer=BrightnessScorer(0.0), steps=2)
    import matplotlib.pyplot as plt

    plt.close("all")
