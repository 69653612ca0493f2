import pytest

from animegen_utils import EMOTIONS, STYLES, CharacterSheet, TokenBudgetError, build_prompt, check_token_budget
from animegen_utils.prompts import EMOTION_TAGS, STYLE_TAGS, fit_token_budget


def test_vocabulary_has_the_promised_values():
    assert {"happy", "angry", "sad", "surprised", "neutral"} <= set(EMOTIONS)
    assert {"casual", "formal", "school_uniform"} <= set(STYLES)


@pytest.mark.parametrize("emotion", EMOTIONS)
@pytest.mark.parametrize("style", STYLES)
def test_build_prompt_contains_emotion_and_style_tags(emotion, style):
    p = build_prompt(emotion, style)
    for tag in EMOTION_TAGS[emotion] + STYLE_TAGS[style]:
        assert tag in p.tags
    assert p.positive.startswith("1girl, solo")
    assert "lowres" in p.negative and "worst quality" in p.negative
    assert p.backend == "manual" and (p.emotion, p.style) == (emotion, style)


def test_unknown_emotion_names_valid_choices():
    with pytest.raises(ValueError) as err:
        build_prompt("smug", "casual")
    for e in EMOTIONS:
        assert e in str(err.value)


def test_unknown_style_names_valid_choices():
    with pytest.raises(ValueError, match="school_uniform"):
        build_prompt("happy", "swimsuit")


def test_free_form_emotion_only_through_extra_tags():
    p = build_prompt("neutral", "casual", extra_tags=["smug", "smirk"])
    assert p.tags_with_role("extra") == ("smug", "smirk")
    with pytest.raises(TypeError):
        build_prompt("neutral", "casual", extra_tags="smug, smirk")


def test_character_identity_is_identical_across_emotions():
    sheet = CharacterSheet("pink", "blue", "twintails", accessories=("hair ribbon",), name="Sakura")
    identity = {build_prompt(e, "formal", character=sheet).tags_with_role("identity") for e in EMOTIONS}
    assert identity == {("pink hair", "twintails", "blue eyes", "hair ribbon")}


def test_character_sheet_rejects_empty_or_multi_tag_values():
    with pytest.raises(ValueError):
        CharacterSheet("", "blue")
    with pytest.raises(ValueError):
        CharacterSheet("pink, blue", "blue")


def test_duplicate_tags_are_removed():
    p = build_prompt("happy", "casual", extra_tags=["smile", "Smile ", "hoodie", "outdoors"])
    assert p.tags.count("smile") == 1 and "Smile" not in p.tags and p.tags.count("hoodie") == 1
    assert "outdoors" in p.tags


def test_token_budget_fits_short_prompt(tokenizer):
    budget = check_token_budget(build_prompt("happy", "casual"), tokenizer)
    assert budget.fits and budget.max_tokens == 77 and 10 < budget.n_tokens <= 77


def test_token_budget_reports_cut_tags_without_truncating(tokenizer):
    extras = [f"extra tag number {i}" for i in range(40)]
    p = build_prompt("sad", "formal", extra_tags=extras)
    budget = check_token_budget(p, tokenizer)
    assert not budget.fits and budget.n_tokens > 77
    assert budget.cut_tags[-1] == p.tags[-1]  # the tail is what CLIP drops
    assert "sad" not in budget.cut_tags
    with pytest.raises(TokenBudgetError, match="would be cut"):
        check_token_budget(p, tokenizer, raise_on_cut=True)
    assert len(p.tags) == len(build_prompt("sad", "formal", extra_tags=extras).tags)  # untouched


def test_fit_token_budget_drops_quality_before_emotion_and_identity(tokenizer):
    sheet = CharacterSheet("silver", "red", "long hair", accessories=("glasses",))
    p = build_prompt("angry", "school_uniform", character=sheet,
                     extra_tags=[f"very long filler tag {i}" for i in range(25)])
    fitted = fit_token_budget(p, tokenizer)
    assert check_token_budget(fitted, tokenizer).fits
    assert set(EMOTION_TAGS["angry"]) <= set(fitted.tags)
    assert set(sheet.tags()) <= set(fitted.tags)
    assert set(fitted.dropped_tags) & {"masterpiece", "best quality"}
