"""One ``generate`` call's reference: checked up front, installed per pipeline call, recorded in the PNG.

>>> call = prepare_reference(pipe, "mika.png", reference_scale=0.8, guidance=7.5)   # checks, hashes
>>> with attach_reference(pipe, call) as kwargs:          # {"ip_adapter_image_embeds": [...]}
...     out = pipe(prompt, **kwargs)
>>> call.record()
{'reference_sha256': '3f1c...', 'reference_scale': 0.8, 'reference_adapter': {...}}
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from PIL import Image

from .images import reference_image, reference_sha256
from .state import (ReferenceAdapter, _check_scale, _embeds, installed, load_reference_adapter, reference_adapter,
                    reference_scale)

__all__ = ["ReferenceCall", "prepare_reference", "attach_reference", "load_recorded_reference",
           "check_recorded_reference", "recorded_reference_kwargs", "RAW_KWARGS"]

#: diffusers' own IP-Adapter arguments, which the kit's reference= replaces.
RAW_KWARGS = ("ip_adapter_image", "ip_adapter_image_embeds")


@dataclass
class ReferenceCall:
    """A checked reference for one ``generate`` call: the picture, its hash, the adapter and scale."""

    adapter: ReferenceAdapter
    image: Image.Image
    sha256: str
    scale: float
    guided: bool  # classifier-free guidance: the embeddings carry an unconditional half

    def record(self) -> dict[str, Any]:
        """What the image's parameters record (the picture itself is not in the PNG: its hash is)."""
        return {"reference_sha256": self.sha256, "reference_scale": self.scale,
                "reference_adapter": self.adapter.record()}


def prepare_reference(pipe: Any, reference: Any, reference_scale: float | None = None, guidance: float = 7.5,
                      pipeline_kwargs: dict[str, Any] | None = None) -> ReferenceCall | None:
    """Check ``generate``'s ``reference``/``reference_scale`` before anything runs; None without a reference.

    Raises ``ValueError`` when the pipeline has no IP-Adapter, for a scale without a reference, for
    diffusers' raw ``ip_adapter_image``/``ip_adapter_image_embeds`` (use ``reference=``), and for
    anything that is not a picture (naming what is accepted).
    """
    raw = [k for k in RAW_KWARGS if k in (pipeline_kwargs or {})]
    if raw:
        raise ValueError(f"Pass the reference picture as generate(..., reference=image), not {raw[0]}=: the kit "
                         "installs the pipeline's IP-Adapter in the shared UNet only for its own calls.")
    if reference is None:
        if reference_scale is not None:
            raise ValueError("reference_scale is for generate(..., reference=image); no reference was given.")
        return None
    entry = reference_adapter(pipe)
    if entry is None:
        raise ValueError("reference= needs an IP-Adapter on this pipeline: load_pipeline(..., ip_adapter=True) "
                         "or animegen_utils.reference.load_reference_adapter(pipe) first.")
    image = reference_image(reference)
    scale = _check_scale(reference_scale) if reference_scale is not None else float(_scale_of(pipe))
    unet = pipe.unet
    guided = guidance > 1 and unet.config.time_cond_proj_dim is None  # diffusers' do_classifier_free_guidance
    return ReferenceCall(entry, image, reference_sha256(reference), scale, guided)


def _scale_of(pipe: Any) -> float:
    scale = reference_scale(pipe)
    return 1.0 if scale is None else scale


@contextmanager
def attach_reference(pipe: Any, call: ReferenceCall | None) -> Iterator[dict[str, Any]]:
    """The pipeline-call arguments for ``call`` (``ip_adapter_image_embeds``, cached per picture),
    with the adapter installed in the shared UNet for the block; ``{}`` and nothing installed for None."""
    if call is None:
        yield {}
        return
    embeds = _embeds(call.adapter, call.image, call.sha256, pipe.device)
    if not call.guided:
        embeds = [e.chunk(2)[1] for e in embeds]
    with installed(pipe, call.adapter, call.scale):
        yield {"ip_adapter_image_embeds": embeds}


def load_recorded_reference(pipe: Any, record: dict[str, Any]) -> None:
    """Load the IP-Adapter an image's parameters record (``params["reference_adapter"]``) into ``pipe``.

    ``ModelNotFoundError`` names it when it cannot be loaded here.
    """
    from ..errors import ModelNotFoundError

    try:
        if record.get("default"):
            load_reference_adapter(pipe)
        else:
            load_reference_adapter(pipe, record["source"], subfolder=record.get("subfolder") or "",
                                   weight_name=record["weight_name"],
                                   image_encoder_folder=record.get("image_encoder_folder", "image_encoder"),
                                   adapter_name=record["name"])
    except (OSError, ValueError) as err:
        raise ModelNotFoundError(
            f"The image was drawn with the IP-Adapter {record['name']!r} ({record['source']}/{record['weight_name']}, "
            f"sha256 {str(record.get('sha256'))[:12]}), which cannot be loaded here: {type(err).__name__}: {err}. "
            "Put it back there, or load it yourself and pass pipe=.") from err


def check_recorded_reference(pipe: Any, record: dict[str, Any]) -> list[str]:
    """Where ``pipe``'s IP-Adapter differs from the one an image records (for ``reproduce``'s warning)."""
    entry = reference_adapter(pipe)
    if entry is None:
        return [f"the IP-Adapter {record['name']!r} is not loaded"]
    if entry.sha256 != record.get("sha256"):
        return [f"the IP-Adapter has other weights (sha256 {entry.sha256[:12]}, the image's {str(record.get('sha256'))[:12]})"]
    return []


def recorded_reference_kwargs(params: dict[str, Any], reference: Any, path: str = "the image") -> dict[str, Any]:
    """``generate`` arguments for the reference a PNG's parameters record, checked against the picture
    the caller passes (the PNG holds only its SHA-256): ``{}`` when none is recorded.

    >>> recorded_reference_kwargs(read_parameters("out.png"), "mika.png")
    {'reference': <PIL.Image...>, 'reference_scale': 0.8}
    """
    sha = params.get("reference_sha256")
    if sha is None:
        if reference is not None:
            raise ValueError(f"{path} was drawn without a reference picture; leave reference= out.")
        return {}
    if reference is None:
        raise ValueError(f"{path} was drawn with a reference picture (sha256 {sha[:12]}, scale "
                         f"{params.get('reference_scale')}), which is not in the file: pass reference= that picture.")
    given = reference_sha256(reference)
    if given != sha:
        raise ValueError(f"The reference given (sha256 {given[:12]}) is not the picture {path} was drawn with "
                         f"(sha256 {sha[:12]}).")
    return {"reference": reference, "reference_scale": params.get("reference_scale")}
