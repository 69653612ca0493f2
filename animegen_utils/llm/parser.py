"""The offline description parser: free text (English or Japanese) → the kit's request, by lexicon.

>>> parsed = parse_description("my OC Mika: silver pigtails, ruby eyes, furious, in her sailor uniform")
>>> parsed.request["emotion"], parsed.request["hair_color"], parsed.request["eye_color"]
('angry', 'silver', 'red')
>>> parsed.request["hairstyle"], parsed.request["style"]
('twintails', 'school_uniform')
>>> parsed.unresolved
('mika',)
>>> parse_description("not smiling, glasses").request["emotion"] is None   # negated: never guessed
True
>>> parse_description("not smiling, glasses").avoid
('happy', 'smile')

The rules it follows (the notebook and the tests hold it to them):

* a phrase it has no entry for (``llm.lexicon``) goes to ``unresolved``; it never guesses;
* a colour or a length counts only when attached to a hair or eye noun;
* a negated phrase ("not smiling", "without glasses", 笑っていない) sets nothing and its
  tags go to ``avoid`` (the negative prompt);
* two different values for one attribute ("happy ... furious") set nothing: both
  phrases go to ``unresolved``. Twintails beat a length ("long twintails" is twintails).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Mapping

from animegen_utils.prompts import ACCESSORIES, EMOTION_TAGS, STYLE_TAGS

from . import lexicon as lx

#: The keys of ``Prompt.request``, in order.
REQUEST_FIELDS: tuple[str, ...] = ("emotion", "style", "hair_color", "eye_color", "hairstyle", "accessories")
KIT_ACCESSORIES: tuple[str, ...] = tuple(a for a in ACCESSORIES if a != "none")
_SINGLE = ("emotion", "style", "hair_color", "eye_color", "hairstyle")


def empty_request() -> dict[str, Any]:
    """``{"emotion": None, ..., "accessories": []}``: nothing understood yet."""
    return {**{k: None for k in _SINGLE}, "accessories": []}


@dataclass(frozen=True)
class Parsed:
    """What a description asks for, in the kit's vocabulary.

    ``request`` has every key of ``REQUEST_FIELDS`` (``None`` / ``[]`` when not stated);
    ``unresolved`` the phrases that map to nothing; ``avoid`` tags for the negative
    prompt (from negations); ``extra_tags`` drawable details outside the kit's closed
    vocabulary (only LLMs write these; the offline parser reports them as unresolved).
    """

    request: dict[str, Any]
    unresolved: tuple[str, ...] = ()
    avoid: tuple[str, ...] = ()
    extra_tags: tuple[str, ...] = ()
    rationale: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"request": self.request, "unresolved": list(self.unresolved), "avoid": list(self.avoid),
                "extra_tags": list(self.extra_tags), "rationale": self.rationale}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Parsed":
        return cls(dict(data["request"]), tuple(data.get("unresolved", ())), tuple(data.get("avoid", ())),
                   tuple(data.get("extra_tags", ())), data.get("rationale", ""))


# -- the offline parser ------------------------------------------------------------------------
@dataclass
class _Match:
    start: int
    end: int
    kind: str  # emotion, style, hairstyle, accessory, length, color, hair_noun, eye_noun, hair_color, ...
    value: Any
    text: str
    negated: bool = False


def normalize_text(text: str) -> str:
    """NFKC, lowercase, ``-``/``_``/``/`` as spaces, curly quotes straightened, spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'").replace("‘", "'")
    text = re.sub(r"(?<=[a-z])[-_/](?=[a-z])", " ", text)
    return re.sub(r"[ \t]+", " ", text).strip()


def _english_entries() -> dict[str, tuple[str, Any]]:
    entries: dict[str, tuple[str, Any]] = {}

    def add(phrase: str, kind: str, value: Any) -> None:
        entries.setdefault(normalize_text(phrase), (kind, value))

    for table, kind in ((lx.EMOTION_WORDS, "emotion"), (lx.STYLE_WORDS, "style"),
                        (lx.HAIRSTYLE_WORDS, "hairstyle"), (lx.ACCESSORY_WORDS, "accessory")):
        for value, phrases in table.items():
            for p in phrases:
                add(p, kind, value)
    for p, value in lx.HAIR_COLOR_NOUNS.items():
        add(p, "hair_color", value)
    for p, value in lx.LENGTH_WORDS.items():
        add(p, "length", value)
    for p in {*lx.HAIR_COLOR_WORDS, *lx.EYE_COLOR_WORDS}:
        add(p, "color", (lx.HAIR_COLOR_WORDS.get(p, ""), lx.EYE_COLOR_WORDS.get(p, "")))
    for p in lx.OTHER_COLOR_WORDS:
        add(p, "color", ("", ""))
    for p in lx.HAIR_NOUNS:
        add(p, "hair_noun", None)
    for p in lx.EYE_NOUNS:
        add(p, "eye_noun", None)
    return entries


_EN_ENTRIES = _english_entries()
_EN_PATTERN = re.compile(
    r"(?<![a-z0-9'])(" + "|".join(re.escape(p) for p in sorted(_EN_ENTRIES, key=len, reverse=True)) + r")(?![a-z0-9])"
)
# Clause boundaries: punctuation, a dash between spaces, "but", "while", "with".
_BOUNDARY = re.compile(r"[,.;:!?、。！？\n()\"]| - | — |\bbut\b|\bwhile\b|\bwith\b")
_WORD = re.compile(r"[a-z0-9']+")
_FILLER = lx.STOPWORDS | lx.NEGATIONS | lx.LINK_WORDS


def _japanese_matches(text: str) -> list[_Match]:
    found: list[_Match] = []

    def add(pattern: str, kind: str, value: Any) -> None:
        for m in re.finditer(pattern, text):
            found.append(_Match(m.start(), m.end(), kind, value, m.group(0)))

    stems = "|".join(sorted(map(re.escape, lx.JA_COLORS), key=len, reverse=True))
    for m in re.finditer(rf"({stems})(?:色)?(?:の|い)?({lx.JA_HAIR_NOUN}|{lx.JA_EYE_NOUN})", text):
        hair, eye = lx.JA_COLORS[m.group(1)]
        is_hair = re.fullmatch(lx.JA_HAIR_NOUN, m.group(2)) is not None
        value = hair if is_hair else eye
        found.append(_Match(m.start(), m.end(), "hair_color" if is_hair else "eye_color", value, m.group(0)))
    for table, kind in ((lx.JA_EMOTION, "emotion"), (lx.JA_STYLE, "style"), (lx.JA_HAIRSTYLE, "hairstyle"),
                        (lx.JA_ACCESSORY, "accessory")):
        for value, patterns in table.items():
            for pattern in patterns:
                add(pattern, kind, value)
    # Longest first, then leftmost; drop anything overlapping a kept match.
    found.sort(key=lambda m: (-(m.end - m.start), m.start))
    kept: list[_Match] = []
    for m in found:
        if all(m.end <= k.start or m.start >= k.end for k in kept):
            kept.append(m)
    for m in kept:
        if re.match(lx.JA_NEGATION, text[m.end:m.end + 6]):
            m.negated = True
    return sorted(kept, key=lambda m: m.start)


def _clause_of(pos: int, bounds: list[int]) -> int:
    return sum(1 for b in bounds if b <= pos)


def _words_between(text: str, a: int, b: int) -> list[str]:
    return _WORD.findall(text[a:b])


def _english_matches(text: str) -> list[_Match]:
    matches = [_Match(m.start(), m.end(), *_EN_ENTRIES[m.group(1)], m.group(1)) for m in _EN_PATTERN.finditer(text)]
    bounds = [m.start() for m in _BOUNDARY.finditer(text)]
    clause = [_clause_of(m.start, bounds) for m in matches]

    def is_noun(m: _Match, target: str) -> bool:
        if target == "hair":
            return m.kind in ("hair_noun", "hairstyle")  # "silver long hair", "pink pigtails"
        return m.kind == "eye_noun"

    def attach(i: int, targets: tuple[str, ...]) -> tuple[str, int] | None:
        """The noun a colour/length at ``i`` belongs to: (target, index) or None."""
        # Forward: "pink hair", "blue-eyed", "ruby red hair", "long wavy silver hair": at most 2
        # free words on the way, no "and". A colour skips only adjacent colours ("rose has blue
        # eyes" says nothing about a rose colour); a length skips adjectives too.
        j, free = i + 1, []
        while j < len(matches) and clause[j] == clause[i] and matches[j].kind in ("color", "length"):
            gap = _words_between(text, matches[j - 1].end, matches[j].start)
            if gap and (matches[i].kind == "color" or len(free) + len(gap) > 2 or "and" in gap):
                break
            free += gap
            j += 1
        if j < len(matches) and clause[j] == clause[i]:
            between = free + _words_between(text, matches[j - 1].end, matches[j].start)
            if len(between) <= 2 and "and" not in between:
                for t in targets:
                    if is_noun(matches[j], t):
                        return t, j
        # Backward: "hair is pink", "eyes the colour of rubies", "hair is long and blue".
        j = i - 1
        while j >= 0 and clause[j] == clause[i] and matches[j].kind in ("color", "length") \
                and set(_words_between(text, matches[j].end, matches[j + 1].start)) <= lx.LINK_WORDS:
            j -= 1
        if j >= 0 and clause[j] == clause[i]:
            between = _words_between(text, matches[j].end, matches[i].start)
            inner = {w for k in range(j + 1, i) for w in _WORD.findall(matches[k].text)}
            if len(between) <= 6 and all(w in lx.LINK_WORDS or w in inner for w in between):
                for t in targets:
                    if is_noun(matches[j], t):
                        return t, j
        return None

    resolved: list[_Match] = []
    for i, m in enumerate(matches):
        if m.kind == "color":
            hit = attach(i, ("hair", "eye"))
            if hit is None:  # left in the text: it ends up in ``unresolved``
                continue
            target, j = hit
            hair, eye = m.value
            value = hair if target == "hair" else eye
            if not value:  # a colour the kit cannot draw ("brown eyes"): report it whole
                noun = matches[j]
                lo, hi = min(m.start, noun.start), max(m.end, noun.end)
                resolved.append(_Match(lo, hi, "unresolved", text[lo:hi], text[lo:hi]))
                continue
            resolved.append(_Match(m.start, m.end, f"{target}_color", value, m.text))
        elif m.kind == "length":
            if attach(i, ("hair",)) is None:
                continue
            resolved.append(_Match(m.start, m.end, "hairstyle", m.value, m.text))
        elif m.kind == "hair_color" and not m.value:
            resolved.append(_Match(m.start, m.end, "unresolved", m.text, m.text))
        elif m.kind == "hair_noun" and m.text in lx.UNDRAWABLE_HAIR_NOUNS:
            resolved.append(_Match(m.start, m.end, "unresolved", m.text, m.text))
        else:
            resolved.append(m)
    # Negation: a negation word up to 3 words before the phrase, inside its clause.
    for m in resolved:
        if m.kind in ("emotion", "style", "accessory", "hairstyle"):
            before = text[max(0, m.start - 40):m.start]
            cut = max((b.end() for b in _BOUNDARY.finditer(before)), default=0)
            words = _WORD.findall(before[cut:])[-3:]
            m.negated = any(w in lx.NEGATIONS for w in words)
    # The unattached colours/lengths stay in the text: they end up in ``unresolved``.
    return sorted(resolved, key=lambda m: m.start)


def _leftovers(text: str, spans: list[tuple[int, int]]) -> list[str]:
    """Text outside ``spans``, split into clauses, minus filler words: the unresolved phrases."""
    chars = list(text)
    for a, b in spans:
        for k in range(a, b):
            chars[k] = "\x00"
    rest = "".join(chars)
    phrases: list[str] = []
    for chunk in re.split(r"\x00+|[,.;:!?、。！？\n()\"]| - | — ", rest):
        # Negation and link words only matter next to what they qualify; alone they are filler.
        words = _WORD.findall(chunk)
        content = [i for i, w in enumerate(words) if w not in _FILLER]
        ja = re.sub(lx.JA_FILLER, "", re.sub(r"[\sa-z0-9'\-]", "", chunk))
        if content:
            phrases.append(" ".join(words[content[0]:content[-1] + 1]))
        elif ja:
            phrases.append(chunk.strip(" ・"))
    return phrases


def parse_description(text: str) -> Parsed:
    """The offline lexicon parser: ``text`` (English or Japanese) → ``Parsed``.

    >>> parse_description("金髪ロングの笑顔の女の子、パーカー姿").request["hair_color"]
    'blonde'
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"description must be a non-empty string, got {text!r}")
    norm = normalize_text(text)
    matches = _english_matches(norm) + _japanese_matches(norm)
    values: dict[str, list[_Match]] = {k: [] for k in (*_SINGLE, "accessory")}
    avoid: list[str] = []
    unresolved_spans: list[_Match] = []
    for m in matches:
        if m.kind == "unresolved":
            unresolved_spans.append(m)
        elif m.kind in values and m.value:
            if m.negated:
                avoid += _tags_for(m.kind, m.value)
            else:
                values[m.kind].append(m)
    request = empty_request()
    conflicting: list[_Match] = []
    # Twintails are more specific than a length: "long twintails" asks for twintails.
    if any(m.value == "twintails" for m in values["hairstyle"]):
        values["hairstyle"] = [m for m in values["hairstyle"] if m.value == "twintails"]
    for key in _SINGLE:
        distinct = list(dict.fromkeys(m.value for m in values[key]))
        if len(distinct) == 1:
            request[key] = distinct[0]
        elif len(distinct) > 1:  # two answers to one question: never pick one
            conflicting += values[key]
    request["accessories"] = list(dict.fromkeys(m.value for m in values["accessory"]))
    consumed = [(m.start, m.end) for m in matches if m.kind != "unresolved" and m not in conflicting]
    # Noun matches (hair, eyes) and resolved colour/length spans are consumed; unattached
    # colour words are not in ``matches`` and so stay in the leftovers.
    unresolved = [m.text for m in unresolved_spans] + [m.text for m in conflicting]
    unresolved += _leftovers(norm, consumed + [(m.start, m.end) for m in unresolved_spans + conflicting])
    # "brown ponytail" already says "ponytail": keep the longer phrase.
    unresolved = [u for u in dict.fromkeys(unresolved) if not any(u != v and u in v for v in unresolved)]
    n_found = sum(v is not None and v != [] for v in request.values())
    return Parsed(request=request, unresolved=tuple(dict.fromkeys(unresolved)), avoid=tuple(dict.fromkeys(avoid)),
                  rationale=f"offline lexicon parser: {n_found} attribute(s) understood, "
                            f"{len(set(unresolved))} phrase(s) unresolved")


def _tags_for(kind: str, value: str) -> list[str]:
    if kind == "emotion":
        return list(EMOTION_TAGS[value][:2])
    if kind == "style":
        return [STYLE_TAGS[value][0]]
    return [value]  # accessory, hairstyle


__all__ = ["KIT_ACCESSORIES", "REQUEST_FIELDS", "Parsed", "empty_request", "normalize_text", "parse_description"]
