"""Attribute heads: teach the built-in text encoder to keep each colour with its noun.

SD1.5's text encoder comes pretrained by CLIP on image-caption pairs; the built-in
model's starts from random weights and, trained only through the diffusion loss,
it lets colour words float free of their nouns ("red hair, green eyes" drawn
green-haired). These small linear heads give it a direct signal, used in two places:

* a short text-only stage before the UNet (``train_text``), the toy stand-in for
  CLIP's pre-training, and
* a small auxiliary loss beside the diffusion loss while the two train together.

Two kinds of head read the encoder's last hidden states:

* **noun heads**: at every ``hair`` / ``eyes`` token that follows a colour word, the
  colour. A causal encoder can only answer this by binding the colour to that noun.
* **caption heads**: at the end-of-text token, every attribute of the caption
  (emotion, style, both colours, hairstyle, accessory).

The heads are dropped after training; the saved pipeline is plain SD1.5 classes.

>>> from animegen_utils.toyworld.model import TINY_V1_CONFIG, make_text_encoder, make_tokenizer
>>> tok = make_tokenizer()
>>> heads = AttributeHeads(TINY_V1_CONFIG.text_width, tok)
>>> ids = tok(["1girl, red hair, green eyes"], padding="max_length", return_tensors="pt").input_ids
>>> positions, colours = heads.noun_labels(ids)
>>> [tok.convert_ids_to_tokens(int(ids[0, p])) for p in positions[1]], [heads.colours[c] for c in colours]
(['hair</w>', 'eyes</w>'], ['red', 'green'])
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from animegen_utils.prompts import EYE_COLORS, HAIR_COLORS

from .render import ATTRIBUTE_CHOICES, CharacterAttributes


def _single_token(tokenizer, word: str) -> int:
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"the built-in tokenizer must keep {word!r} as one token, got {len(ids)} pieces")
    return ids[0]


class AttributeHeads(nn.Module):
    """Linear read-outs of a ``CLIPTextModel``'s hidden states (see the module docstring)."""

    def __init__(self, width: int, tokenizer) -> None:
        super().__init__()
        self.colours: tuple[str, ...] = tuple(dict.fromkeys(HAIR_COLORS + EYE_COLORS))
        self.caption_heads = nn.ModuleDict({name: nn.Linear(width, len(choices))
                                            for name, choices in ATTRIBUTE_CHOICES.items()})
        self.noun_head = nn.Linear(width, len(self.colours))
        colour_ids = {_single_token(tokenizer, c): i for i, c in enumerate(self.colours)}
        # token id -> colour index, -1 for every other token
        lookup = torch.full((len(tokenizer),), -1, dtype=torch.long)
        for token_id, index in colour_ids.items():
            lookup[token_id] = index
        self.register_buffer("colour_of_token", lookup, persistent=False)
        self.register_buffer("noun_ids", torch.tensor([_single_token(tokenizer, "hair"),
                                                       _single_token(tokenizer, "eyes")]), persistent=False)

    def noun_labels(self, ids: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``((rows, positions), colour_index)`` of every noun token preceded by a colour word."""
        previous = self.colour_of_token[ids[:, :-1]]
        is_noun = torch.isin(ids[:, 1:], self.noun_ids)
        rows, cols = torch.nonzero(is_noun & (previous >= 0), as_tuple=True)
        return (rows, cols + 1), previous[rows, cols]

    def loss(self, hidden: torch.Tensor, pooled: torch.Tensor, ids: torch.Tensor,
             attrs: Sequence[CharacterAttributes | None]) -> torch.Tensor:
        """Mean cross-entropy of the noun heads plus the caption heads.

        ``attrs[i]`` is the character caption ``i`` describes, or None for an empty or
        junk caption (which describes nothing, so only its noun tokens count, if any).
        """
        (rows, positions), colours = self.noun_labels(ids)
        losses = []
        if len(rows):
            losses.append(F.cross_entropy(self.noun_head(hidden[rows, positions]), colours))
        described = [i for i, a in enumerate(attrs) if a is not None]
        if described:
            state = pooled[described]
            for name, head in self.caption_heads.items():
                choices = ATTRIBUTE_CHOICES[name]
                target = torch.tensor([choices.index(getattr(attrs[i], name)) for i in described])
                losses.append(F.cross_entropy(head(state), target))
        if not losses:
            return hidden.sum() * 0.0
        return torch.stack(losses).mean()

    @torch.no_grad()
    def accuracy(self, hidden: torch.Tensor, pooled: torch.Tensor, ids: torch.Tensor,
                 attrs: Sequence[CharacterAttributes]) -> dict[str, float]:
        """Read-out accuracy per head on described captions: how well the encoder has bound them."""
        (rows, positions), colours = self.noun_labels(ids)
        result = {"noun_colour": float((self.noun_head(hidden[rows, positions]).argmax(-1) == colours)
                                       .float().mean()) if len(rows) else float("nan")}
        for name, head in self.caption_heads.items():
            choices = ATTRIBUTE_CHOICES[name]
            target = torch.tensor([choices.index(getattr(a, name)) for a in attrs])
            result[name] = float((head(pooled).argmax(-1) == target).float().mean())
        return result
