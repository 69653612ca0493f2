"""A1111 prompt weighting and long prompts: ``(word)``, ``(word:1.3)``, ``[word]``, ``BREAK``, 75-token chunks.

AUTOMATIC1111's web UI (and Forge, and the Civitai prompts written for them) read
a prompt like ``(masterpiece:1.2), ((smile)), [blurry]`` as text with per-token
weights. This module does the same, with A1111's rules and maths:

- ``(x)`` multiplies the weight of ``x`` by 1.1, ``((x))`` by 1.21, ``(x:1.3)`` by 1.3,
  ``[x]`` divides it by 1.1; ``\\(``, ``\\)``, ``\\[``, ``\\]``, ``\\\\`` are literal characters.
  Brackets left open apply to the end of the prompt; a closing bracket with no
  opening one is text (both as in A1111; ``prompt_warnings`` names them).
- ``BREAK`` (capitals, a word of its own) starts a new chunk.
- The prompt is tokenized piece by piece into chunks of 75 tokens; each chunk gets
  BOS and EOS (77 tokens) and is encoded by CLIP on its own; the chunks are
  concatenated (a 150-token prompt gives ``(1, 154, dim)``). When a chunk fills up
  and a comma came in its last 20 tokens, the words after that comma move to the
  next chunk (A1111's "comma padding backtrack", default 20), so tags are not split.
- Weighted embeddings: every token's output vector is multiplied by its weight,
  then the whole chunk is rescaled so its mean is what it was before weighting
  (A1111's default "Original" emphasis).
- Positive and negative prompts are padded to the same number of chunks with the
  embedding of an empty chunk, as A1111 does for cond/uncond.

>>> from animegen_utils.weighting import parse_weights
>>> parse_weights("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")[:3]
[('a ', 1.0), ('house', 1.5730000000000004), (' ', 1.1)]
>>> embeds, negative = encode_prompt_pair(pipe, ["(angry:1.4), happy"], ["lowres"])  # doctest: +SKIP

``compel`` is not used: its syntax is different (``word+``, ``(word)1.1``; ``[word]`` is
not a down-weight) and so are its maths (it scales each token's distance from the
empty prompt's embedding, and down-weights by blending with a masked prompt), so it
cannot give A1111's embeddings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch

ROUND_MULTIPLIER = 1.1
CHUNK_LENGTH = 75            # prompt tokens per chunk; +BOS +EOS = CLIP's 77
COMMA_BACKTRACK = 20         # A1111's default "comma padding backtrack"
BREAK = "BREAK"

#: Characters that make a prompt "weighted" (BREAK too, as a word).
_SYNTAX = re.compile(r"[()\[\]\\]|\bBREAK\b")
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.S)
# One lexical unit of A1111's attention grammar, in its order of preference.
_UNIT = re.compile(r"""
    \\[()\[\]\\]            # escaped bracket or backslash: a literal character
  | \\                      # any other backslash: dropped, as A1111 does
  | [(\[]                   # opening bracket
  | :(?P<weight>[+-]?[.\d]+)\)   # ':1.3)' closes a round bracket with that weight
  | [)\]]                   # closing bracket
  | [^\\()\[\]:]+           # plain text
  | :                       # a colon that is not a weight
""", re.X)
_LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?(?::[^>]*)?>")
_SCHEDULED = re.compile(r"\[[^\[\]]*:[^\[\]]*:\s*[\d.]+\s*\]|\[[^\[\]|]*\|[^\[\]]*\]")


class PromptSyntaxError(ValueError):
    """A prompt whose weighting syntax cannot be read (e.g. a weight like ``1.2.3``)."""


@dataclass(frozen=True)
class PromptChunks:
    """A prompt as A1111 feeds it to CLIP: chunks of 77 token ids (BOS, 75 tokens, EOS) and their weights.

    ``n_tokens`` counts the prompt's own tokens (no BOS/EOS, no padding), as A1111's token counter does.
    """

    token_ids: tuple[tuple[int, ...], ...]
    weights: tuple[tuple[float, ...], ...]
    n_tokens: int

    @property
    def n_chunks(self) -> int:
        return len(self.token_ids)


def has_weight_syntax(text: str) -> bool:
    """True if ``text`` has brackets, backslashes or ``BREAK``: what weighting changes.

    >>> has_weight_syntax("1girl, smile"), has_weight_syntax("1girl, (smile:1.2)")
    (False, True)
    """
    return bool(_SYNTAX.search(text))


def parse_weights(text: str) -> list[tuple[str, float]]:
    """Split ``text`` into (text, weight) runs with A1111's rules; ``("BREAK", -1.0)`` marks a chunk break.

    Neighbouring runs with the same weight are merged, as in A1111, so the result
    matches its ``parse_prompt_attention`` (floats included: nested brackets
    multiply innermost first). Raises ``PromptSyntaxError`` for a weight that is
    not a number (``(x:1.2.3)``), which A1111 itself fails on.

    >>> parse_weights("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    >>> parse_weights(r"\\(literal\\]")
    [('(literal]', 1.0)]
    """
    if not isinstance(text, str):
        raise TypeError(f"prompt must be a string, got {type(text).__name__}")
    runs: list[list] = []          # [text, weight]; weight None marks BREAK
    round_open: list[int] = []     # index into runs where each open bracket starts
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for run in runs[start:]:
            if run[1] is not None:  # BREAK is a position, not text: it carries no weight
                run[1] *= factor

    for m in _UNIT.finditer(text):
        unit, weight = m.group(0), m.group("weight")
        if unit.startswith("\\"):
            runs.append([unit[1:], 1.0])
        elif unit == "(":
            round_open.append(len(runs))
        elif unit == "[":
            square_open.append(len(runs))
        elif weight is not None and round_open:
            try:
                factor = float(weight)
            except ValueError:
                raise PromptSyntaxError(f"weight {weight!r} in {text[max(0, m.start() - 20):m.end()]!r} is not a "
                                        "number; write it like (word:1.2)") from None
            scale(round_open.pop(), factor)
        elif unit == ")" and round_open:
            scale(round_open.pop(), ROUND_MULTIPLIER)
        elif unit == "]" and square_open:
            scale(square_open.pop(), 1 / ROUND_MULTIPLIER)
        else:
            for i, part in enumerate(_BREAK_SPLIT.split(unit)):
                if i:
                    runs.append([BREAK, None])
                runs.append([part, 1.0])
    # Unclosed brackets weight everything after them (A1111's fallback).
    for start in round_open:
        scale(start, ROUND_MULTIPLIER)
    for start in square_open:
        scale(start, 1 / ROUND_MULTIPLIER)
    if not runs:
        runs = [["", 1.0]]
    merged: list[list] = []
    for run in runs:
        if merged and run[1] is not None and merged[-1][1] == run[1]:
            merged[-1][0] += run[0]
        else:
            merged.append(list(run))
    return [(t, -1.0) if w is None else (t, w) for t, w in merged]


def prompt_warnings(text: str) -> list[str]:
    """What in ``text`` A1111 reads in a way the writer probably did not mean, or the kit does not support.

    Each message says what happens instead. ``generate`` issues them as warnings.

    >>> prompt_warnings("(smile, blush")
    ["1 '(' never closed: the rest of the prompt is weighted x1.1 (as A1111 does); escape a literal bracket as \\\\("]
    """
    notes: list[str] = []
    depth = {"(": 0, "[": 0}
    stray = {")": 0, "]": 0}
    for m in _UNIT.finditer(text):
        unit = m.group(0)
        if unit in depth:
            depth[unit] += 1
        elif m.group("weight") is not None or unit in stray:
            key = "(" if unit != "]" else "["
            if depth[key]:
                depth[key] -= 1
            else:
                stray["]" if unit == "]" else ")"] += 1
    for opener, factor in (("(", "x1.1"), ("[", "/1.1")):
        if depth[opener]:
            notes.append(f"{depth[opener]} '{opener}' never closed: the rest of the prompt is weighted {factor} "
                         "(as A1111 does); escape a literal bracket as \\" + opener)
    for closer, n in stray.items():
        if n:
            notes.append(f"{n} '{closer}' without an opening bracket: read as text (as A1111 does)")
    for m in re.finditer(r"\(([^()\\]*):(\s*)([^():]*?)(\s*)\)", text):  # the last colon is the weight's
        weight = m.group(3)
        if not re.fullmatch(r"[+-]?[.\d]+", weight):
            notes.append(f"{m.group(0)!r}: {weight!r} is not a number, so A1111 (and the kit) read the whole "
                         "bracket as text weighted x1.1")
        elif m.group(2) or m.group(4):
            notes.append(f"{m.group(0)!r}: a space around the weight makes A1111 (and the kit) read the bracket "
                         "as text weighted x1.1; write (text:1.2)")
    if _SCHEDULED.search(text):
        notes.append("prompt editing [from:to:when] / alternation [a|b] is not supported: read as text in "
                     "square brackets (weighted /1.1)")
    if re.search(r"\bAND\b", text):
        notes.append("AND (composable diffusion) is not supported: read as the word 'AND'")
    return notes


def split_lora_tags(text: str) -> tuple[str, list[tuple[str, float]]]:
    """Remove A1111 ``<lora:name:weight>`` tags from a prompt; return the text and (name, weight) pairs.

    A1111 removes these tags before encoding, and so does ``generate``. The weight
    defaults to 1.0; one that is not a number raises ``PromptSyntaxError``.

    >>> split_lora_tags("1girl, <lora:mika_v2:0.8>, smile")
    ('1girl, , smile', [('mika_v2', 0.8)])
    """
    found: list[tuple[str, float]] = []
    for m in _LORA_TAG.finditer(text):
        name, weight = m.group(1).strip(), (m.group(2) or "1").strip()
        try:
            found.append((name, float(weight)))
        except ValueError:
            raise PromptSyntaxError(f"LoRA tag {m.group(0)!r}: weight {weight!r} is not a number; "
                                    "write it like <lora:name:0.8>") from None
    return _LORA_TAG.sub("", text), found


def tokenize_chunks(tokenizer, text: str, weighting: bool = True, comma_backtrack: int = COMMA_BACKTRACK
                    ) -> PromptChunks:
    """``text`` as A1111's chunks of token ids and weights (see the module docstring).

    With ``weighting=False`` the text is taken literally (brackets are tokens, all
    weights 1.0) but still chunked, so nothing is cut.

    >>> chunks = tokenize_chunks(pipe.tokenizer, "1girl, (smile:1.2)")  # doctest: +SKIP
    >>> chunks.n_chunks, len(chunks.token_ids[0])                       # doctest: +SKIP
    (1, 77)
    """
    runs = parse_weights(text) if weighting else [(text, 1.0)]
    pieces = [t for t, w in runs if not (t == BREAK and w == -1.0)]
    # verbose=False: chunking is the point, so no "longer than 77 tokens" warning from transformers.
    ids_per_piece = iter(tokenizer(pieces, truncation=False, add_special_tokens=False, verbose=False)["input_ids"]
                         if pieces else ())
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    comma = tokenizer.get_vocab().get(",</w>")
    chunks: list[tuple[tuple[int, ...], tuple[float, ...]]] = []
    ids: list[int] = []
    weights: list[float] = []
    last_comma = -1
    n_tokens = 0

    def close(last: bool = False) -> None:
        nonlocal ids, weights, last_comma, n_tokens
        n_tokens += len(ids) if last else CHUNK_LENGTH
        pad = CHUNK_LENGTH - len(ids)
        chunks.append(((bos, *ids, *[eos] * pad, eos), (1.0, *weights, *[1.0] * pad, 1.0)))
        ids, weights, last_comma = [], [], -1

    for text_run, weight in runs:
        if text_run == BREAK and weight == -1.0:
            close()
            continue
        for token in next(ids_per_piece):
            if token == comma:
                last_comma = len(ids)
            elif (comma_backtrack and len(ids) == CHUNK_LENGTH and last_comma != -1
                  and len(ids) - last_comma <= comma_backtrack):
                # Move the words after the last comma to the next chunk, so a tag is not split.
                moved_ids, moved_weights = ids[last_comma + 1:], weights[last_comma + 1:]
                ids, weights = ids[:last_comma + 1], weights[:last_comma + 1]
                close()
                ids, weights = moved_ids, moved_weights
            if len(ids) == CHUNK_LENGTH:
                close()
            ids.append(token)
            weights.append(weight)
    if ids or not chunks:
        close(last=True)
    return PromptChunks(token_ids=tuple(c[0] for c in chunks), weights=tuple(c[1] for c in chunks),
                        n_tokens=n_tokens)


def needs_chunked_encoding(tokenizer, text: str, weighting: bool = True) -> bool:
    """True when A1111-style encoding differs from plain CLIP encoding: weight syntax, or over 75 tokens."""
    if weighting and has_weight_syntax(text):
        return True
    return len(tokenizer(text, truncation=False, add_special_tokens=False, verbose=False)["input_ids"]) > CHUNK_LENGTH


@torch.no_grad()
def _encode_chunk_batch(text_encoder, ids: torch.Tensor, clip_skip: int | None) -> torch.Tensor:
    if clip_skip:
        # A1111's "Clip skip: N" is hidden_states[-N] then the final layer norm; the kit's clip_skip is N-1.
        hidden = text_encoder(ids, output_hidden_states=True).hidden_states[-(clip_skip + 1)]
        return getattr(text_encoder, "text_model", text_encoder).final_layer_norm(hidden)
    return text_encoder(ids)[0]


@torch.no_grad()
def encode_weighted(pipe, texts: Sequence[str], clip_skip: int | None = None, weighting: bool = True,
                    n_chunks: int | None = None) -> torch.Tensor:
    """A1111 embeddings of ``texts``: ``(len(texts), 77 * chunks, dim)``, in the UNet's dtype.

    Each chunk is encoded on its own; every token's vector is multiplied by its
    weight and the chunk rescaled to its unweighted mean. Prompts with fewer
    chunks than the longest (or than ``n_chunks``) are padded with the embedding
    of an empty chunk.

    >>> encode_weighted(pipe, ["1girl, (smile:1.2)"]).shape  # doctest: +SKIP
    torch.Size([1, 77, 768])
    """
    tokenized = [tokenize_chunks(pipe.tokenizer, t, weighting=weighting) for t in texts]
    total = max([c.n_chunks for c in tokenized] + [n_chunks or 0])
    empty = tokenize_chunks(pipe.tokenizer, "", weighting=False)
    device = pipe.text_encoder.device
    out = []
    for i in range(total):
        rows = [c if i < c.n_chunks else empty for c in tokenized]
        index = [i if i < c.n_chunks else 0 for c in tokenized]
        ids = torch.tensor([r.token_ids[j] for r, j in zip(rows, index)], device=device)
        mult = torch.tensor([r.weights[j] for r, j in zip(rows, index)], device=device)
        z = _encode_chunk_batch(pipe.text_encoder, ids, clip_skip)
        mult = mult.to(z.dtype)[..., None]
        # Per prompt, as A1111 encodes one prompt at a time: scale, then restore the chunk's mean.
        before = z.mean(dim=(1, 2), keepdim=True)
        weighted = z * mult
        after = weighted.mean(dim=(1, 2), keepdim=True)
        out.append(weighted * (before / after))
    return torch.cat(out, dim=1).to(pipe.unet.dtype)


def encode_prompt_pair(pipe, positives: Sequence[str], negatives: Sequence[str], clip_skip: int | None = None,
                       weighting: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative embeddings with the same number of chunks (the UNet batches them together)."""
    pos_chunks = max(tokenize_chunks(pipe.tokenizer, t, weighting=weighting).n_chunks for t in positives)
    neg_chunks = max(tokenize_chunks(pipe.tokenizer, t, weighting=weighting).n_chunks for t in negatives)
    n = max(pos_chunks, neg_chunks)
    return (encode_weighted(pipe, positives, clip_skip, weighting, n_chunks=n),
            encode_weighted(pipe, negatives, clip_skip, weighting, n_chunks=n))
