"""Free-text descriptions → requests → prompts: the offline parser, the data set, the sheet, the A/B bars.

The phrasing table below is written separately from data/descriptions.jsonl (different
sentences, words and misspellings), so it checks the lexicon on text it was not tuned on.
"""

from __future__ import annotations

import logging

import pytest

from animegen_utils import CharacterSheet, load_pipeline
from animegen_utils.abtest import description_ab_test, scored_request
from animegen_utils.llm import PromptOptimizer, load_descriptions, parse_accuracy, parse_description
from animegen_utils.llm import lexicon as lx
from animegen_utils.llm.describe import REQUEST_FIELDS, Parsed, request_prompt, validate_request
from animegen_utils.prompts import (
    EMOTION_TAGS,
    EMOTIONS,
    HAIR_COLORS,
    NAIVE_BASE,
    QUALITY_TAGS,
    STYLE_TAGS,
    STYLES,
    naive_prompt,
)

# (text, what must be understood, phrases that must be unresolved, avoid tags)
TABLE = [
    ("an enraged girl with crimson twin-tails", {"emotion": "angry", "hair_color": "red", "hairstyle": "twintails"},
     [], []),
    ("She is weeping. Her eyes are lavender and her hair is ash-grey.",
     {"emotion": "sad", "eye_color": "purple", "hair_color": "silver"}, [], []),
    ("flabbergasted, jet-black bob cut, cobalt eyes, wearing specs",
     {"emotion": "surprised", "hair_color": "black", "hairstyle": "short hair", "eye_color": "blue",
      "accessories": ["glasses"]}, [], []),
    ("impassive girl in a ballgown with a hairbow", {"emotion": "neutral", "style": "formal",
                                                       "accessories": ["hair ribbon"]}, [], []),
    ("hapy girl, casaul clothes, blnde hair", {"emotion": "happy", "style": "casual"}, ["blnde"], []),
    ("a suprized girl in a school unifrom with pruple eyes and glasess",
     {"emotion": "surprised", "style": "school_uniform", "eye_color": "purple", "accessories": ["glasses"]}, [], []),
    ("gleeful, honey-blonde locks, topaz eyes", {"emotion": "happy", "hair_color": "blonde", "eye_color": "yellow"},
     [], []),
    ("a tall girl with long wavy silver hair and striking red eyes",
     {"hairstyle": "long hair", "hair_color": "silver", "eye_color": "red"}, ["tall", "wavy", "striking"], []),
    ("silver long hair, Rose has blue eyes", {"hair_color": "silver", "hairstyle": "long hair", "eye_color": "blue"},
     ["rose"], []),  # a colour word only counts next to its noun
    # negation
    ("not smiling, tshirt", {"style": "casual"}, [], ["happy", "smile"]),
    ("never angry, always cheerful", {"emotion": "happy"}, ["always"], ["angry", "frown"]),
    ("no glasses, short mint hair", {"hair_color": "green", "hairstyle": "short hair"}, [], ["glasses"]),
    ("she isn't wearing a uniform, she's in a hoodie", {"style": "casual"}, [], ["school uniform"]),
    # unknown words: reported, never guessed
    ("a knight in shining armor holding a sword", {}, ["knight in shining armor holding a sword"], []),
    ("white hair, brown eyes, heterochromia", {}, ["white hair", "brown eyes", "heterochromia"], []),
    ("auburn ponytail and a kimono", {}, ["auburn ponytail", "kimono"], []),
    ("red scarf", {}, ["red scarf"], []),  # a colour on clothing is not a hair or eye colour
    ("happy, then furious", {}, ["happy", "furious"], []),  # two emotions: never pick one
    # Japanese
    ("赤髪ショートの驚いた女の子、制服", {"hair_color": "red", "hairstyle": "short hair", "emotion": "surprised",
                               "style": "school_uniform"}, [], []),
    ("水色の瞳、ツインテ、ぷんぷんしている、パーカー", {"eye_color": "blue", "hairstyle": "twintails", "emotion": "angry",
                                      "style": "casual"}, [], []),
    ("眼鏡なし、真顔、ロングスカート", {"emotion": "neutral"}, ["ロングスカート"], ["glasses"]),
]


@pytest.mark.parametrize("text, understood, unresolved, avoid", TABLE, ids=[t[0][:30] for t in TABLE])
def test_parser_table(text, understood, unresolved, avoid):
    parsed = parse_description(text)
    expected = {k: ([] if k == "accessories" else None) for k in REQUEST_FIELDS} | understood
    assert parsed.request == expected
    for phrase in unresolved:
        assert phrase in parsed.unresolved, parsed.unresolved
    assert list(parsed.avoid) == avoid


def test_every_lexicon_entry_parses_to_its_value():
    # Every synonym and misspelling of every emotion, outfit, hairstyle and accessory, alone and
    # in a sentence: no entry is shadowed by another (longest match) or lost.
    for table, field in ((lx.EMOTION_WORDS, "emotion"), (lx.STYLE_WORDS, "style"),
                         (lx.HAIRSTYLE_WORDS, "hairstyle"), (lx.ACCESSORY_WORDS, "accessories")):
        for value, phrases in table.items():
            assert len(phrases) >= 5, (field, value)
            for phrase in phrases:
                for text in (phrase, f"A girl, {phrase}, please."):
                    got = parse_description(text).request[field]
                    assert got == ([value] if field == "accessories" else value), (text, got)
    for word, value in lx.HAIR_COLOR_WORDS.items():
        assert parse_description(f"{word} hair").request["hair_color"] == value, word
    for word, value in lx.EYE_COLOR_WORDS.items():
        assert parse_description(f"{word} eyes").request["eye_color"] == value, word
    # Every kit value is reachable, with at least one misspelling among its words.
    assert set(lx.EMOTION_WORDS) == set(EMOTIONS) and set(lx.STYLE_WORDS) == set(STYLES)
    assert set(lx.HAIR_COLOR_WORDS.values()) == set(HAIR_COLORS)


def test_data_set_parse_accuracy_bar():
    rows = load_descriptions()
    assert len(rows) >= 40 and sum(r["lang"] == "ja" for r in rows) >= 5
    report = parse_accuracy(rows)
    for field, (correct, stated) in report["per_attribute"].items():
        assert stated >= 10, field
        assert correct / stated >= 0.95, (field, report["errors"])
    assert set(report["per_attribute"]) == set(REQUEST_FIELDS)
    assert report["spurious"] == []  # nothing set that a description does not ask for


def test_japanese_descriptions():
    rows = [r for r in load_descriptions() if r["lang"] == "ja"]
    report = parse_accuracy(rows)
    assert report["errors"] == [] and report["spurious"] == []
    p = PromptOptimizer(backend="offline").optimize_description("銀髪ツインテールで赤い瞳、セーラー服を着て怒っている女の子")
    assert p.tags[:6] == ("1girl", "solo", *EMOTION_TAGS["angry"], "silver hair")
    assert {"twintails", "red eyes", *STYLE_TAGS["school_uniform"]} <= set(p.tags)
    negated = parse_description("笑っていない。怒った顔")
    assert negated.request["emotion"] == "angry" and negated.avoid == ("happy", "smile")


def test_optimize_description_offline_prompt():
    opt = PromptOptimizer(backend="offline")
    p = opt.optimize_description("my OC Mika: silver pigtails, ruby eyes, furious, in her sailor uniform, "
                                 "wearing her round glasses")
    assert p.positive == ("1girl, solo, angry, frown, v-shaped eyebrows, silver hair, twintails, red eyes, glasses, "
                          "school uniform, serafuku, sailor collar, " + ", ".join(QUALITY_TAGS))
    assert p.request == {"emotion": "angry", "style": "school_uniform", "hair_color": "silver", "eye_color": "red",
                         "hairstyle": "twintails", "accessories": ["glasses"]}
    assert p.unresolved == ("mika",) and p.conflicts == ()
    assert (p.backend, p.emotion, p.style) == ("offline", "angry", "school_uniform")
    assert p.tags_with_role("identity") == ("silver hair", "twintails", "red eyes", "glasses")
    # Variants add nuance tags, reproducibly; the request is the same.
    v1, v1_again, v2 = (opt.optimize_description("furious, pink hair", variant=v) for v in (1, 1, 2))
    assert v1 == v1_again and v1.request == v2.request and len(v1.tags) > len(opt.optimize_description("furious").tags)
    # Negations go to the negative prompt; nothing unstated is invented.
    n = opt.optimize_description("not smiling, without glasses")
    assert n.emotion is None and n.tags == ("1girl", "solo", *QUALITY_TAGS)
    assert {"smile", "glasses"} <= set(n.negative_tags)
    with pytest.raises(ValueError, match="non-empty"):
        opt.optimize_description("   ")


def test_character_sheet_wins_and_the_conflict_is_reported(caplog):
    sheet = CharacterSheet("pink", "blue", "twintails", accessories=("hair ribbon",))
    opt = PromptOptimizer(backend="offline")
    with caplog.at_level(logging.WARNING, logger="animegen_utils.llm"):
        p = opt.optimize_description("a furious blonde girl with green eyes, twintails, no ribbon, glasses", sheet)
    assert p.request["hair_color"] == "pink" and p.request["eye_color"] == "blue" and p.request["emotion"] == "angry"
    assert p.request["accessories"] == ["hair ribbon", "glasses"]
    assert len(p.conflicts) == 3
    assert "hair_color: the description says 'blonde', the character sheet says 'pink'" in p.conflicts[0]
    assert "eye_color" in p.conflicts[1] and "hair ribbon" in p.conflicts[2]
    assert "blonde hair" not in p.tags and "green eyes" not in p.tags
    # The identity block is the sheet's, byte for byte as optimize() writes it, plus the text's glasses.
    assert p.tags_with_role("identity") == (*sheet.tags(), "glasses")
    assert caplog.text.count("description vs character sheet") == 3
    agreeing = opt.optimize_description("pink twintails, happy", sheet)
    assert agreeing.conflicts == ()


def test_naive_prompt_is_the_v1_baseline():
    p = naive_prompt("silver pigtails,  ruby eyes,\nfurious")
    assert p.positive == f"{NAIVE_BASE}, silver pigtails, ruby eyes, furious"
    assert NAIVE_BASE == "1girl, solo, masterpiece, best quality, detailed eyes, anime style"
    assert p.backend == "naive" and p.request is None
    with pytest.raises(ValueError, match="non-empty"):
        naive_prompt("")


def test_validate_request_enforces_the_enums():
    ok, errors = validate_request({"emotion": "angry", "style": "school uniform", "hair_color": None,
                                   "accessories": ["glasses"], "extra_tags": ["Freckles", "cat_ears"],
                                   "avoid_tags": ["smile"], "unresolved": ["my OC"], "rationale": "ok"})
    assert errors == []
    assert ok.request == {"emotion": "angry", "style": "school_uniform", "hair_color": None, "eye_color": None,
                          "hairstyle": None, "accessories": ["glasses"]}
    assert ok.extra_tags == ("freckles", "cat ears") and ok.unresolved == ("my OC",)
    _, errors = validate_request({"emotion": "smug", "hair_color": "brown", "accessories": ["hat"],
                                  "extra_tags": ["pink hair", "**bold**"]})
    assert len(errors) == 5
    assert errors[0].startswith("emotion 'smug' is not one of: happy, angry")
    assert any("accessories ['hat']" in e for e in errors) and any("hair_color field" in e for e in errors)
    assert validate_request("prose")[1] and validate_request({"extra_tags": "a, b"})[1]


def test_request_prompt_extra_tags_and_budget():
    parsed = Parsed({"emotion": "sad", "style": None, "hair_color": "blue", "eye_color": None, "hairstyle": None,
                     "accessories": []}, ("umbrella?",), ("smile",), ("freckles", "rain"))
    p = request_prompt(parsed, backend="anthropic", model="m", rationale="r")
    assert p.tags[:6] == ("1girl", "solo", "sad", "tears", "frown", "blue hair")
    assert p.tags_with_role("extra") == ("freckles", "rain") and p.negative_tags[-1] == "smile"
    assert (p.backend, p.model, p.rationale, p.unresolved) == ("anthropic", "m", "r", ("umbrella?",))
    many = Parsed(parsed.request, extra_tags=tuple(f"detail{i} word" for i in range(40)))
    trimmed = request_prompt(many)
    assert trimmed.dropped_tags and "blue hair" in trimmed.tags and "sad" in trimmed.tags


def test_scored_request():
    assert scored_request({"emotion": "sad", "accessories": []}) == {"emotion": "sad", "accessory": "none"}
    assert scored_request({"accessories": ["glasses", "hair ribbon"]}) == {}  # the toy world draws one


# Descriptions the image bar is pinned on: English and Japanese, short and long, with
# synonyms, misspellings, negation and details the model cannot draw.
BAR_SUBSET = ["d01", "d04", "d07", "d11", "d12", "d17", "d22", "d24", "d29", "d37", "d41", "d47"]


def test_description_ab_bars_on_the_builtin_model():
    rows = {r["id"]: r for r in load_descriptions()}
    pipe = load_pipeline("tiny")
    res = description_ab_test(pipe, PromptOptimizer(backend="offline", tokenizer=pipe.tokenizer),
                              [rows[i] for i in BAR_SUBSET], seeds=[0], steps=20)
    a, b = res.row("A"), res.row("B")
    assert a["n_checks"] == b["n_checks"] == sum(len(scored_request(rows[i]["attributes"])) for i in BAR_SUBSET)
    assert b["adherence"] >= 0.85, res.to_markdown()
    assert b["adherence"] >= a["adherence"] + 0.20, res.to_markdown()
    assert b["over_budget"] == 0
