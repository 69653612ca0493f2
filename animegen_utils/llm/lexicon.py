"""The offline description parser's lexicon: words people use for the kit's attributes.

Every entry maps a phrase (English, lowercase, ``-`` and ``_`` read as spaces) or a
Japanese regular expression to one value of the kit's vocabulary
(``prompts.ATTRIBUTES``). The lists hold synonyms, inflections and the common
misspellings seen in real prompts ("angery", "suprised", "pruple", "glases").
Anything that is not listed here is never guessed: the parser reports it in
``unresolved``.

Colours are special: the same word means different things for hair and eyes
("golden hair" is blonde, "golden eyes" are yellow), so a colour word is only
resolved when it is attached to a hair or eye noun (``pink hair``, ``blue-eyed``,
``her eyes are green``, ``eyes the colour of rubies``). The same goes for a
length ("long", "short"): it is a hairstyle only next to a hair noun.

>>> EMOTION_WORDS["angry"][:3]
('angry', 'anger', 'mad')
>>> HAIR_COLOR_WORDS["golden"], EYE_COLOR_WORDS["golden"]
('blonde', 'yellow')
"""

from __future__ import annotations

# -- single-valued attributes -----------------------------------------------------------------
EMOTION_WORDS: dict[str, tuple[str, ...]] = {
    "happy": (
        "happy", "happily", "happiness", "smile", "smiles", "smiling", "smiley", "grin", "grins", "grinning",
        "cheerful", "cheery", "joyful", "joyous", "glad", "delighted", "beaming", "laughing", "laughs", "laugh",
        "jolly", "elated", "ecstatic", "overjoyed", "gleeful", "in a good mood", "all smiles", "bubbly",
        # misspellings
        "hapy", "happpy", "hppy", "smilling", "smileing", "cheerfull", "joyfull", "laughting",
    ),
    "angry": (
        "angry", "anger", "mad", "furious", "fury", "livid", "irritated", "annoyed", "enraged", "fuming",
        "scowling", "scowl", "glaring", "glare", "irate", "cross", "grumpy", "rage", "raging", "seething",
        "pissed", "pissed off", "frowning angrily", "in a rage", "angrily",
        # misspellings
        "angery", "angy", "anrgy", "angary", "furios", "furius", "anoyed", "iritated",
    ),
    "sad": (
        "sad", "sadly", "sadness", "unhappy", "crying", "cries", "cry", "tearful", "teary", "in tears", "tears",
        "weeping", "sobbing", "sorrowful", "sorrow", "melancholy", "melancholic", "gloomy", "depressed",
        "heartbroken", "miserable", "downcast", "dejected", "forlorn", "despondent", "crestfallen", "mournful",
        # misspellings
        "sadd", "saad", "cryng", "crieing", "melancoly", "depresed", "gloomey",
    ),
    "surprised": (
        "surprised", "surprise", "surprising", "shocked", "shock", "astonished", "amazed", "startled", "stunned",
        "gasping", "gasp", "wide eyed", "taken aback", "flabbergasted", "dumbfounded", "open mouthed",
        "mouth wide open", "jaw dropped", "in disbelief",
        # misspellings
        "suprised", "surprized", "suprized", "surpised", "shoked", "astonised", "starteled", "amazd",
    ),
    "neutral": (
        "neutral", "expressionless", "emotionless", "blank expression", "blank stare", "blank face",
        "straight face", "poker face", "stoic", "calm", "deadpan", "impassive", "unreadable expression",
        "no expression", "unemotional", "composed", "serene", "indifferent",
        # misspellings
        "nuetral", "neutal", "nuteral", "expresionless", "expressionles", "emotionles", "stoick",
    ),
}

STYLE_WORDS: dict[str, tuple[str, ...]] = {
    "casual": (
        "casual", "casually dressed", "casual clothes", "casual outfit", "casual wear", "everyday clothes",
        "hoodie", "hoodies", "hoody", "hooded sweatshirt", "sweatshirt", "jeans", "t shirt", "tshirt", "tee",
        "streetwear", "street clothes", "sneakers",
        # misspellings
        "casaul", "casul", "cazual", "hodie", "hoddie", "hoodi",
    ),
    "formal": (
        "formal", "formally dressed", "formal wear", "formalwear", "formal dress", "formal attire",
        "black dress", "evening gown", "gown", "evening dress", "ball gown", "ballgown", "cocktail dress",
        "party dress", "elegant dress", "dress", "little black dress",
        # misspellings
        "formel", "fromal", "formall", "dresss", "gowne", "evening gow",
    ),
    "school_uniform": (
        "school uniform", "school uniforms", "uniform", "sailor uniform", "sailor suit", "sailor outfit",
        "sailor collar", "serafuku", "seifuku", "school outfit", "school clothes", "school blazer",
        # misspellings
        "school unifrom", "schol uniform", "school uniforn", "uniforn", "unifrom", "serafku", "sera fuku",
    ),
}

# A hairstyle named outright (no hair noun needed). Lengths are below.
HAIRSTYLE_WORDS: dict[str, tuple[str, ...]] = {
    "twintails": (
        "twintails", "twintail", "twin tails", "twin tail", "pigtails", "pigtail", "pig tails", "two ponytails",
        "twin ponytails", "bunches", "twin buns",
        # misspellings
        "twintials", "twin tials", "twintales", "pigtales", "pig tales", "twintale",
    ),
    "long hair": (
        "long hair", "longhair", "flowing down her back", "long flowing", "down to her waist",
        "waist length hair", "hip length hair",
        # misspellings
        "long hiar", "lomg hair", "long har",
    ),
    "short hair": (
        "short hair", "shorthair", "bob cut", "bob", "pixie cut", "pixie", "buzz cut", "crew cut",
        "chin length hair",
        # misspellings
        "shrot hair", "short hiar", "short har", "bobcut",
    ),
}

# Lengths: a hairstyle only next to a hair noun ("long silver hair", "her hair is long").
LENGTH_WORDS: dict[str, str] = {
    "long": "long hair", "lengthy": "long hair", "waist length": "long hair", "hip length": "long hair",
    "floor length": "long hair", "flowing": "long hair", "lomg": "long hair",
    "short": "short hair", "cropped": "short hair", "chin length": "short hair", "shrot": "short hair",
}

# -- multi-valued ------------------------------------------------------------------------------
ACCESSORY_WORDS: dict[str, tuple[str, ...]] = {
    "glasses": (
        "glasses", "eyeglasses", "spectacles", "specs", "eyewear", "megane", "round glasses",
        # misspellings
        "glases", "galsses", "glassses", "glasess", "spectacels", "spectakles",
    ),
    "hair ribbon": (
        "hair ribbon", "hair ribbons", "ribbon", "ribbons", "hair bow", "hair bows", "hairbow", "bow in her hair",
        "big bow",
        # misspellings
        "ribon", "ribbbon", "ribbin", "riboon", "hair ribon",
    ),
}

# -- colours -----------------------------------------------------------------------------------
# A colour word -> the kit's hair colour it means (None: not a hair colour the kit knows).
HAIR_COLOR_WORDS: dict[str, str] = {
    # black
    "black": "black", "raven": "black", "jet black": "black", "ebony": "black", "onyx": "black", "inky": "black",
    "blak": "black", "balck": "black",
    # blonde
    "blonde": "blonde", "blond": "blonde", "golden": "blonde", "gold": "blonde", "flaxen": "blonde",
    "yellow": "blonde", "honey blonde": "blonde", "platinum blonde": "blonde", "sandy": "blonde",
    "blone": "blonde", "blode": "blonde", "blondie": "blonde",
    # pink
    "pink": "pink", "rose": "pink", "rosy": "pink", "rose pink": "pink", "bubblegum": "pink", "bubblegum pink": "pink", "salmon": "pink", "pinkish": "pink", "pnik": "pink",
    "pinc": "pink",
    # blue
    "blue": "blue", "azure": "blue", "sapphire": "blue", "cobalt": "blue", "navy": "blue", "sky blue": "blue",
    "cerulean": "blue", "ice blue": "blue", "bluish": "blue", "blu": "blue", "bleu": "blue",
    # red
    "red": "red", "crimson": "red", "scarlet": "red", "ruby": "red", "ruby red": "red", "rubies": "red",
    "vermilion": "red", "cherry red": "red", "blood red": "red", "fiery red": "red", "reddish": "red",
    "redd": "red",
    # silver
    "silver": "silver", "silvery": "silver", "platinum": "silver", "grey": "silver", "gray": "silver",
    "ash grey": "silver", "ash gray": "silver", "ashen": "silver", "steel grey": "silver", "sliver": "silver",
    "silvr": "silver", "sillver": "silver",
    # green
    "green": "green", "emerald": "green", "emeralds": "green", "emerald green": "green", "jade": "green",
    "mint": "green", "mint green": "green", "lime": "green", "forest green": "green", "greenish": "green",
    "grean": "green", "gren": "green", "geen": "green",
}

# A colour word -> the kit's eye colour it means.
EYE_COLOR_WORDS: dict[str, str] = {
    # blue
    "blue": "blue", "azure": "blue", "sapphire": "blue", "sapphires": "blue", "cobalt": "blue",
    "sky blue": "blue", "cerulean": "blue", "ice blue": "blue", "navy": "blue", "ocean blue": "blue",
    "blu": "blue", "bleu": "blue",
    # red
    "red": "red", "ruby": "red", "rubies": "red", "ruby red": "red", "crimson": "red", "scarlet": "red",
    "blood red": "red", "vermilion": "red", "garnet": "red", "redd": "red",
    # green
    "green": "green", "emerald": "green", "emeralds": "green", "emerald green": "green", "jade": "green",
    "mint": "green", "forest green": "green", "grean": "green", "gren": "green", "geen": "green",
    # purple
    "purple": "purple", "violet": "purple", "lavender": "purple", "amethyst": "purple", "amethysts": "purple",
    "lilac": "purple", "plum": "purple", "mauve": "purple", "pruple": "purple", "purpel": "purple",
    "purpul": "purple", "voilet": "purple",
    # yellow
    "yellow": "yellow", "golden": "yellow", "gold": "yellow", "amber": "yellow", "honey": "yellow",
    "citrine": "yellow", "topaz": "yellow", "yelow": "yellow", "yellw": "yellow",
}

# Colour words the kit cannot draw: recognised so that "brown eyes" is reported whole.
OTHER_COLOR_WORDS: tuple[str, ...] = (
    "brown", "white", "orange", "teal", "aqua", "cyan", "turquoise", "chestnut", "auburn", "hazel",
    "copper", "ginger", "beige", "cream", "magenta", "indigo", "multicolored", "rainbow", "snow white",
)

# Nouns colours and lengths attach to. Hairstyle words (pigtails, bob, ...) are hair nouns too.
HAIR_NOUNS: tuple[str, ...] = (
    "hair", "hairs", "haired", "locks", "tresses", "mane", "hairdo", "hairstyle", "bangs", "fringe",
    "ponytail", "ponytails", "braid", "braids", "braided hair", "bun", "buns", "curls", "hiar", "har",
)
# Hair nouns that are a hairstyle the kit cannot draw: reported as unresolved.
UNDRAWABLE_HAIR_NOUNS: tuple[str, ...] = (
    "ponytail", "ponytails", "braid", "braids", "braided hair", "bun", "buns", "curls", "bangs", "fringe",
)
EYE_NOUNS: tuple[str, ...] = ("eyes", "eye", "eyed", "irises", "iris", "pupils", "gaze", "eys", "eyse")

# "redhead", "blonde" name a hair colour on their own ("a blonde girl").
HAIR_COLOR_NOUNS: dict[str, str] = {
    "redhead": "red", "blondie": "blonde", "blonde": "blonde", "blond": "blonde", "brunette": "",
}

# Words that may sit between a noun and its colour: "hair is pink", "eyes the colour of rubies".
LINK_WORDS: frozenset[str] = frozenset(
    "is are was were be that which colored coloured color colour of the a an like as in shade shades "
    "bright light deep pale dark vivid soft pure same to look looks and both".split()
)

# Negation: "not smiling", "without glasses", "never angry", "no glasses".
NEGATIONS: frozenset[str] = frozenset(
    "not no never without nor isn't aren't wasn't doesn't don't didn't hardly neither".split()
)

# Words that carry no request; anything else left over is reported as unresolved.
STOPWORDS: frozenset[str] = frozenset("""
a an the her hers she she's he his him they them their it its this that these those my our your me i
is are was were be been being am has have had having do does did
with in on at of and or but to for from by as into onto about over under up down out off
wearing wears wear wore worn dressed dress-up putting put on
girl girls woman lady young character oc person anime illustration picture image drawing portrait please
draw make show give generate who whose which what where when while also just very really quite so too
totally completely slightly bit little kind sort look looks looking seems seem appears face expression
usual new own one some any all at all has got finally
""".split())

# -- Japanese ------------------------------------------------------------------------------------
# Regular expressions on the NFKC-normalised text. Japanese has no spaces, so each
# entry is written to match a whole word ("ロング" but not "ロングスカート").
JA_EMOTION: dict[str, tuple[str, ...]] = {
    "happy": (r"笑顔", r"嬉し", r"うれし", r"楽しそう", r"にこにこ", r"ニコニコ", r"笑って", r"笑う", r"微笑", r"幸せそう", r"喜んで"),
    "angry": (r"怒って", r"怒った", r"怒り", r"怒る", r"激怒", r"ぷんぷん", r"ムッと", r"不機嫌"),
    "sad": (r"悲し", r"かなし", r"泣いて", r"泣き", r"泣く", r"涙", r"しょんぼり", r"寂し", r"落ち込"),
    "surprised": (r"びっくり", r"驚いて", r"驚いた", r"驚き", r"驚く", r"仰天"),
    "neutral": (r"無表情", r"真顔", r"ポーカーフェイス", r"落ち着いた", r"冷静"),
}
JA_STYLE: dict[str, tuple[str, ...]] = {
    "casual": (r"私服", r"パーカー", r"カジュアル", r"普段着", r"ジーンズ", r"Tシャツ"),
    "formal": (r"黒いドレス", r"ドレス", r"フォーマル", r"礼服", r"イブニングドレス", r"ドレス姿"),
    "school_uniform": (r"セーラー服", r"制服", r"学生服", r"ブレザー"),
}
JA_HAIRSTYLE: dict[str, tuple[str, ...]] = {
    "twintails": (r"ツインテール", r"ツインテ", r"おさげ"),
    "long hair": (r"ロングヘア", r"ロング(?![ァ-ヴー])", r"長い髪", r"長髪", r"髪が長い"),
    "short hair": (r"ショートヘア", r"ショート(?![ァ-ヴー])", r"短い髪", r"短髪", r"髪が短い", r"ボブ(?![ァ-ヴー])"),
}
JA_ACCESSORY: dict[str, tuple[str, ...]] = {
    "glasses": (r"眼鏡", r"めがね", r"メガネ"),
    "hair ribbon": (r"リボン",),
}
# Colour stems: (hair colour, eye colour); "" means the kit has no such colour.
JA_COLORS: dict[str, tuple[str, str]] = {
    "銀": ("silver", ""), "銀色": ("silver", ""), "白銀": ("silver", ""), "灰色": ("silver", ""),
    "金": ("blonde", "yellow"), "金色": ("blonde", "yellow"), "黄": ("blonde", "yellow"), "黄色": ("blonde", "yellow"),
    "黒": ("black", ""), "ピンク": ("pink", ""), "桃色": ("pink", ""),
    "青": ("blue", "blue"), "水色": ("blue", "blue"), "空色": ("blue", "blue"),
    "赤": ("red", "red"), "紅": ("red", "red"), "真紅": ("red", "red"),
    "緑": ("green", "green"), "翠": ("green", "green"), "紫": ("", "purple"),
    "茶": ("", ""), "茶色": ("", ""), "白": ("", ""), "オレンジ": ("", ""),
}
JA_HAIR_NOUN = r"(?:髪|ヘア)"
JA_EYE_NOUN = r"(?:瞳|目|眼)"
# Attached after a word, these negate it: 笑っていない, 眼鏡なし, 怒ってない.
JA_NEGATION = r"^(?:い)?(?:ない|なし|無し|ません|じゃない|ではない)"
# Kana and nouns that carry no request (stripped before reporting leftovers).
JA_FILLER = r"[ぁ-ゖ]|着|女の子|少女|女性|彼女|顔|姿|表情|キャラ"
