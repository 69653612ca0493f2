"""The attribute heads that teach the built-in text encoder to bind colours to nouns."""

import random

import torch

from animegen_utils.toyworld.captions import caption_for
from animegen_utils.toyworld.model import TINY_V1_CONFIG, make_text_encoder
from animegen_utils.toyworld.render import CharacterAttributes
from animegen_utils.toyworld.text_heads import AttributeHeads


def _batch(tokenizer, n, seed):
    rng = random.Random(seed)
    attrs = [CharacterAttributes.random(rng) for _ in range(n)]
    ids = tokenizer([caption_for(a, rng) for a in attrs], padding="max_length", return_tensors="pt").input_ids
    return ids, attrs


def test_noun_labels_follow_the_colour_word_before_each_noun(tokenizer):
    heads = AttributeHeads(TINY_V1_CONFIG.text_width, tokenizer)
    ids = tokenizer(["green eyes, long hair, pink hair, 1girl", "blue hair"], padding="max_length",
                    return_tensors="pt").input_ids
    (rows, positions), colours = heads.noun_labels(ids)
    # "long hair" names a hairstyle, not a colour: no label there
    assert rows.tolist() == [0, 0, 1]
    assert [heads.colours[c] for c in colours] == ["green", "pink", "blue"]
    assert [tokenizer.convert_ids_to_tokens(int(ids[r, p])) for r, p in zip(rows, positions)] == \
        ["eyes</w>", "hair</w>", "hair</w>"]


def test_a_few_steps_teach_the_encoder_which_colour_belongs_to_which_noun(tokenizer):
    torch.manual_seed(0)
    encoder = make_text_encoder(TINY_V1_CONFIG, tokenizer)
    heads = AttributeHeads(TINY_V1_CONFIG.text_width, tokenizer)
    test_ids, test_attrs = _batch(tokenizer, 64, "held-out")

    def accuracy():
        with torch.no_grad():
            out = encoder(test_ids)
        return heads.accuracy(out.last_hidden_state, out.pooler_output, test_ids, test_attrs)

    before = accuracy()
    opt = torch.optim.AdamW(list(encoder.parameters()) + list(heads.parameters()), lr=2e-3)
    for step in range(120):
        ids, attrs = _batch(tokenizer, 32, step)
        out = encoder(ids)
        loss = heads.loss(out.last_hidden_state, out.pooler_output, ids, attrs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = accuracy()
    # chance is 1/9 for the noun head; the caption heads must read both colours from one state
    assert before["noun_colour"] < 0.4
    assert after["noun_colour"] > 0.9, after
    assert after["hair_color"] > before["hair_color"] and after["eye_color"] > before["eye_color"], (before, after)
