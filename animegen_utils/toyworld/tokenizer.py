"""A real CLIP tokenizer (vocab.json + merges.txt) for the built-in model, built offline.

SD1.5's tokenizer comes from the Hub, so the kit learns its own byte-level BPE merges, in
CLIP's file layout, which ``CLIPTokenizer`` reads with CLIP's normalizer and pre-tokenizer. Every word of the toy world and the common
Stable Diffusion prompt vocabulary becomes one whole token; any other word breaks
into sub-word or byte pieces and never errors.

>>> from animegen_utils.toyworld.tokenizer import build_clip_tokenizer
>>> tok = build_clip_tokenizer("/tmp/tok")          # writes vocab.json, merges.txt, ...
>>> tok.tokenize("pink hair")
['pink</w>', 'hair</w>']
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .. import prompts

BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Words that people and LLMs put in Stable Diffusion prompts. The toy model never
# saw most of them drawn, but they must tokenize as whole words so long prompts
# cost what they would cost with SD1.5's tokenizer, roughly.
COMMON_PROMPT_WORDS = """
a an and the with in on of at by for to from her his is very same different her
masterpiece best quality high highres absurdres detailed ultra intricate 8k 4k hd uhd
illustration anime manga style artwork digital art painting official key visual
portrait full body upper close up cowboy shot looking viewer face facial expression
girl boy woman man character cute beautiful pretty kawaii elegant gorgeous lovely
happy sad angry surprised neutral smile smiling grin laughing laugh crying cry tears
teary eyes eye hair long short medium twintails twin tails ponytail bob cut braid bangs
blush blushing embarrassed shy excited enthusiastic cheerful joyful joy delighted bright
melancholy gloomy sorrow depressed lonely upset furious rage annoyed irritated mad
shocked astonished amazed startled calm serene expressionless emotionless stoic bored
wide eyed eyebrows raised furrowed brows clenched teeth gritted open closed mouth frown
pout pouting smug determined confident sleepy tired scared fear afraid disgust love
v shaped shaded tear streaks streaming sparkle sparkling sparkles shiny glossy vibrant
dress formal casual clothes clothing outfit wearing attire school uniform serafuku
sailor collar neckerchief ribbon bow hoodie hood drawstrings shirt t jacket blazer skirt
suit tie necktie necklace pearl jewelry earrings gown evening sweater streetwear
black white red blue green yellow purple pink orange brown silver blonde grey gray gold
golden lavender aqua teal navy crimson violet dark light pale colors colorful pastel
background simple gradient outdoors indoors sky cherry blossoms plain solid
soft lighting cinematic dramatic studio rim sharp focus depth field bokeh glow
glasses hat accessories ornament hairclip hairband headband
lowres bad anatomy hands text error missing fingers extra digit digits fewer cropped
worst low normal jpeg artifacts signature watermark username blurry deformed ugly
disfigured mutated mutation poorly drawn duplicate out frame nsfw noisy grainy
sketch lineart line drawing canny edges edge map transfer emotion variant
trending pixiv danbooru artstation lineup 1girl 1boy solo
"""

EXTRA_SPECIAL_WORDS: tuple[str, ...] = ()


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W\d_]+", text.lower())


def vocabulary_words() -> list[str]:
    """Every word that must be one whole token, sorted for a reproducible build."""
    texts = [COMMON_PROMPT_WORDS]
    for table in (prompts.EMOTION_TAGS, prompts.STYLE_TAGS):
        texts += [" ".join(tags) for tags in table.values()]
    texts += list(prompts.EMOTIONS) + list(prompts.STYLES)
    texts += list(prompts.HAIR_COLORS) + list(prompts.EYE_COLORS)
    texts += list(prompts.HAIRSTYLES) + list(prompts.ACCESSORIES)
    texts += list(prompts.SUBJECT_TAGS + prompts.QUALITY_TAGS + prompts.DEFAULT_NEGATIVE_TAGS)
    try:  # the renderer's caption vocabulary, when present
        from .captions import caption_tags

        texts += list(caption_tags())
    except ImportError:
        pass
    return sorted({w for t in texts for w in _words(t)})


def train_clip_bpe(words: list[str]) -> tuple[dict[str, int], list[str]]:
    """Learn BPE merges until every word is one token; return CLIP-layout (vocab, merges).

    CLIP's vocab layout is: 256 byte symbols, the same 256 with ``</w>``, then one
    token per merge in rank order, then the two special tokens.

    The merges are learnt here rather than by ``tokenizers.BpeTrainer``, whose ties between
    equally frequent pairs fall in hash order, so two builds could give different merges (and a
    resumed training run different token ids). Here the most frequent pair wins and ties go to
    the lexicographically first pair: the same words always give the same tokenizer.
    """
    to_unicode = _bytes_to_unicode()
    # each word as byte-level symbols, the last one carrying the end-of-word suffix
    pieces = {}
    for word in sorted(set(words)):
        symbols = [to_unicode[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        pieces[word] = symbols
    merges = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for symbols in pieces.values():
            for pair in zip(symbols, symbols[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(" ".join(best))
        joined = best[0] + best[1]
        for word, symbols in pieces.items():
            i, out = 0, []
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            pieces[word] = out

    byte_symbols = sorted(to_unicode.values(), key=_byte_order)
    tokens = byte_symbols + [s + "</w>" for s in byte_symbols]
    seen = set(tokens)
    for merge in merges:
        merged = merge.replace(" ", "")
        if merged not in seen:
            seen.add(merged)
            tokens.append(merged)
    tokens += [BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def _byte_order(symbol: str) -> int:
    # GPT-2/CLIP byte-to-unicode table: printable bytes map to themselves, the rest
    # are shifted above 255. Ordering by byte value gives CLIP's first 256 ids.
    table = _bytes_to_unicode()
    return {v: k for k, v in table.items()}[symbol]


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_clip_tokenizer_files(out_dir: str | Path, words: list[str] | None = None) -> Path:
    """Write vocab.json, merges.txt and tokenizer_config.json for ``CLIPTokenizer``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = train_clip_bpe(words if words is not None else vocabulary_words())
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": prompts.CLIP_MAX_TOKENS,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "unk_token": EOS,
        "do_lower_case": True,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}, indent=2),
        encoding="utf-8",
    )
    return out


def build_clip_tokenizer(out_dir: str | Path, words: list[str] | None = None):
    """Write the tokenizer files to ``out_dir`` and load them with ``CLIPTokenizer``."""
    from transformers import CLIPTokenizer

    write_clip_tokenizer_files(out_dir, words)
    return CLIPTokenizer.from_pretrained(str(out_dir))
