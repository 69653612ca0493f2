"""A1111 prompt weighting: the parser on A1111's examples and Civitai-style prompts, the embedding maths,
long prompts in 75-token chunks, and what generate does with them on the built-in model."""

import doctest
import math
import warnings

import numpy as np
import pytest
import torch

import animegen_utils.weighting as weighting
from animegen_utils import check_token_budget, generate, load_pipeline
from animegen_utils.weighting import (
    PromptSyntaxError,
    encode_prompt_pair,
    encode_weighted,
    parse_weights,
    prompt_warnings,
    split_lora_tags,
    tokenize_chunks,
)

B = ("BREAK", -1.0)

# A1111's own documented examples (modules/prompt_parser.py, parse_prompt_attention's doctest), as published.
A1111_EXAMPLES = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
      (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]),
]

# Prompts in the way Civitai model pages write them, with the weights A1111's rules give (computed by hand:
# nested brackets multiply inner first, [] divides by 1.1, neighbouring equal weights merge).
W11, W121, W1331, D11, D121 = 1.1, 1.1 * 1.1, 1.1 * 1.1 * 1.1, 1 / 1.1, 1 / 1.1 / 1.1
CIVITAI = [
    ("(masterpiece:1.2), (best quality:1.2), 1girl, solo",
     [("masterpiece", 1.2), (", ", 1.0), ("best quality", 1.2), (", 1girl, solo", 1.0)]),
    ("((masterpiece)), ((best quality)), 1girl", [("masterpiece", W121), (", ", 1.0), ("best quality", W121),
                                                  (", 1girl", 1.0)]),
    ("1girl, (((smile))), [blurry]", [("1girl, ", 1.0), ("smile", W1331), (", ", 1.0), ("blurry", D11)]),
    ("[[lowres]], bad anatomy", [("lowres", D121), (", bad anatomy", 1.0)]),
    ("(silver hair:1.3), (red eyes:0.8), twintails", [("silver hair", 1.3), (", ", 1.0), ("red eyes", 0.8),
                                                      (", twintails", 1.0)]),
    ("((school uniform:1.2)), serafuku", [("school uniform", 1.2 * 1.1), (", serafuku", 1.0)]),
    ("(1girl, (smile:1.4), blush)", [("1girl, ", 1.1), ("smile", 1.4 * 1.1), (", blush", 1.1)]),
    ("(angry:1.4), happy", [("angry", 1.4), (", happy", 1.0)]),
    ("(happy:.5)", [("happy", 0.5)]),
    ("(happy:-1)", [("happy", -1.0)]),
    ("(happy:1.)", [("happy", 1.0)]),
    ("kasumi \\(blue archive\\), halo", [("kasumi (blue archive), halo", 1.0)]),
    ("(kasumi \\(blue archive\\):1.2), halo", [("kasumi (blue archive)", 1.2), (", halo", 1.0)]),
    ("1girl, smile BREAK school uniform, classroom", [("1girl, smile", 1.0), B, ("school uniform, classroom", 1.0)]),
    ("(1girl:1.1) BREAK (classroom:1.1)", [("1girl", 1.1), ("", 1.0), B, ("", 1.0), ("classroom", 1.1)]),
    ("1girl, breaking, BREAKFAST", [("1girl, breaking, BREAKFAST", 1.0)]),  # BREAK only as a word of its own
    ("少女, (笑顔:1.2), 🌸", [("少女, ", 1.0), ("笑顔", 1.2), (", 🌸", 1.0)]),
    ("(café:1.1), naïve", [("café", 1.1), (", naïve", 1.0)]),
    ("score_9, (ratio:4:3), 1girl", [("score_9, ", 1.0), ("ratio:4", 3.0), (", 1girl", 1.0)]),  # last :N) wins
    ("(masterpiece), smile)", [("masterpiece", 1.1), (", smile)", 1.0)]),  # stray ')' is text
    ("a\\b \\\\ c", [("ab \\ c", 1.0)]),  # lone backslash dropped, \\\\ is one backslash
]


@pytest.mark.parametrize("text, expected", A1111_EXAMPLES + CIVITAI, ids=lambda x: x if isinstance(x, str) else "")
def test_parser_gives_a1111_weights(text, expected):
    got = parse_weights(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    for (_, w), (_, want) in zip(got, expected):
        assert math.isclose(w, want, rel_tol=0, abs_tol=1e-12)


def test_a1111_documented_floats_are_exact():
    # A1111 multiplies innermost first; the published floats come out bit for bit.
    weights = dict(parse_weights("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")[1:2])
    assert weights["house"] == 1.5730000000000004


def test_bad_weight_raises_a_clear_error():
    with pytest.raises(PromptSyntaxError, match=r"'1\.2\.3' .* is not a number; write it like \(word:1\.2\)"):
        parse_weights("1girl, (smile:1.2.3)")
    with pytest.raises(PromptSyntaxError, match="<lora:mika:abc>"):
        split_lora_tags("1girl, <lora:mika:abc>")


@pytest.mark.parametrize("text, words", [
    ("(smile, blush", "1 '(' never closed"),
    ("[blurry, lowres", "1 '[' never closed"),
    ("smile), blush", "1 ')' without an opening bracket"),
    ("(smile:abc)", "'abc' is not a number"),
    ("(smile: 1.2)", "a space around the weight"),
    ("[cat:dog:0.5]", "prompt editing"),
    ("cat AND dog", "AND (composable diffusion) is not supported"),
])
def test_prompt_warnings_name_the_fallback(text, words):
    assert any(words in note for note in prompt_warnings(text))


def test_clean_prompts_give_no_warnings():
    assert all(not prompt_warnings(text) for text, _ in CIVITAI[:18] if "ratio" not in text)


def test_lora_tags_are_split_off():
    text, loras = split_lora_tags("1girl, <lora:mika_v2:0.8>, smile, <lora:style>")
    assert text == "1girl, , smile, " and loras == [("mika_v2", 0.8), ("style", 1.0)]


def test_weighting_doctests():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(weighting, globs=dict(vars(weighting))):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


@pytest.fixture(scope="module")
def tiny():
    return load_pipeline()


def test_word_weight_one_is_exactly_the_unweighted_embedding(tiny):
    plain = encode_weighted(tiny, ["1girl, solo, angry, casual"])
    assert torch.equal(encode_weighted(tiny, ["1girl, solo, (angry:1.0), casual"]), plain)
    # ... and both are what diffusers itself encodes for the plain prompt.
    assert torch.equal(plain, tiny.encode_prompt("1girl, solo, angry, casual", "cpu", 1, False)[0])


def test_weights_follow_a1111_maths(tiny):
    """Each token's vector times its weight, then the chunk rescaled to its unweighted mean."""
    chunks = tokenize_chunks(tiny.tokenizer, "1girl, (angry:1.4), [happy]")
    ids = torch.tensor(chunks.token_ids)
    z = tiny.text_encoder(ids)[0]
    mult = torch.tensor(chunks.weights)[..., None]
    expected = z * mult * (z.mean() / (z * mult).mean())
    got = encode_weighted(tiny, ["1girl, (angry:1.4), [happy]"])
    assert torch.allclose(got, expected, atol=1e-6)
    angry = tiny.tokenizer("angry", add_special_tokens=False)["input_ids"]
    weights = dict(zip(chunks.token_ids[0], chunks.weights[0]))
    assert all(weights[t] == 1.4 for t in angry)
    assert not torch.allclose(got, encode_weighted(tiny, ["1girl, angry, happy"]))


def test_clip_skip_uses_the_earlier_layer(tiny):
    from animegen_utils.generation import encode_text

    assert torch.equal(encode_weighted(tiny, ["1girl, angry"], clip_skip=1), encode_text(tiny, ["1girl, angry"], 1))
    assert not torch.equal(encode_weighted(tiny, ["1girl, (angry:1.3)"], clip_skip=1),
                           encode_weighted(tiny, ["1girl, (angry:1.3)"]))


TAGS = [f"{c} hair" for c in ("black", "blonde", "pink", "blue", "red", "silver", "green")] + \
       ["short hair", "long hair", "twintails", "hair ribbon", "glasses", "school uniform", "serafuku",
        "sailor collar", "formal", "black dress", "necklace", "casual", "hoodie", "happy", "smile", "blush"]


def long_prompt(tokenizer, n_tags=50):
    """``n_tags`` two-token tags (3 tokens with their comma): 50 of them are 149 prompt tokens, 151 with BOS/EOS."""
    two = [t for t in TAGS if len(tokenizer(t, add_special_tokens=False)["input_ids"]) == 2]
    return [two[i % len(two)] for i in range(n_tags)]


def test_150_token_prompt_is_two_chunks_and_keeps_every_tag(tiny):
    tags = long_prompt(tiny.tokenizer)
    text = ", ".join(tags)
    chunks = tokenize_chunks(tiny.tokenizer, text)
    assert chunks.n_chunks == 2 and chunks.n_tokens == 149
    assert all(len(c) == 77 and c[0] == tiny.tokenizer.bos_token_id and c[-1] == tiny.tokenizer.eos_token_id
               for c in chunks.token_ids)
    decoded = [tiny.tokenizer.decode([t for t in c[1:-1] if t != tiny.tokenizer.eos_token_id]) for c in chunks.token_ids]
    kept = [t.strip() for part in decoded for t in part.split(",") if t.strip()]
    assert kept == [" ".join(t.split()) for t in tags]  # no tag lost, none split across chunks
    budget = check_token_budget(text, tiny.tokenizer)
    assert budget.n_chunks == 2 and not budget.fits  # the LLM optimizer's 77-token window still sees the cut


def test_comma_backtrack_moves_a_tag_to_the_next_chunk(tiny):
    tok = tiny.tokenizer
    tags = long_prompt(tok, 24) + ["smile"] + long_prompt(tok, 24)  # a comma lands at position 74, not 75
    chunks = tokenize_chunks(tok, ", ".join(tags))
    first = [t for t in chunks.token_ids[0][1:-1] if t != tok.eos_token_id]
    assert len(first) < 75 and tok.decode(first).rstrip().endswith(",")
    no_backtrack = tokenize_chunks(tok, ", ".join(tags), comma_backtrack=0)
    assert sum(t != tok.eos_token_id for t in no_backtrack.token_ids[0][1:-1]) == 75


def test_break_starts_a_new_chunk_and_negative_is_padded(tiny):
    pos, neg = encode_prompt_pair(tiny, ["1girl, smile BREAK school uniform"], ["lowres"])
    assert pos.shape == neg.shape == (1, 154, tiny.text_encoder.config.hidden_size)
    empty = encode_weighted(tiny, [""])
    assert torch.equal(neg[:, 77:], empty)  # padded with an empty chunk, as A1111 does


def test_generate_long_prompt_differs_from_the_cut_version(tiny):
    text = ", ".join(long_prompt(tiny.tokenizer))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [full] = generate(tiny, text, seed=3, steps=2, progress=False)
    assert not [w for w in caught if "ignore" in str(w.message)]  # chunked: nothing cut, nothing to warn about
    with pytest.warns(UserWarning, match="the text encoder will ignore"):
        [cut] = generate(tiny, text, seed=3, steps=2, progress=False, weighting=False)
    diff = np.abs(np.asarray(full.image, dtype=np.int16) - np.asarray(cut.image, dtype=np.int16)).max()
    assert diff > 0
    assert full.params["prompt"] == text and full.params["weighting"] is True


def test_weighting_false_reads_brackets_literally(tiny):
    [a] = generate(tiny, "1girl, (angry:1.4)", seed=1, steps=2, progress=False, weighting=False)
    [b] = generate(tiny, "1girl, (angry:1.4)", seed=1, steps=2, progress=False)
    assert a.params["prompt"] == b.params["prompt"] == "1girl, (angry:1.4)"
    assert np.asarray(a.image).tobytes() != np.asarray(b.image).tobytes()


def test_generate_warns_about_unbalanced_brackets(tiny):
    with pytest.warns(UserWarning, match=r"Positive prompt: 1 '\(' never closed"):
        generate(tiny, "1girl, (smile", seed=0, steps=1, progress=False)
    with pytest.raises(PromptSyntaxError, match="not a number"):
        generate(tiny, "1girl, (smile:1.2.3)", seed=0, steps=1, progress=False)


def test_weighted_png_reproduces(tiny, tmp_path):
    from animegen_utils import reproduce

    [g] = generate(tiny, "1girl, (angry:1.3), [happy]", seed=4, steps=2, progress=False, negative="(lowres:1.2)")
    again = reproduce(g.save(tmp_path / "w.png"), pipe=tiny)
    assert again.max_pixel_diff == 0 and again.params == g.params
