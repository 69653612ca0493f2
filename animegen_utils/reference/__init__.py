"""Reference-image adapters (IP-Adapter) per pipeline, on a UNet that pipelines share.

>>> from animegen_utils import load_pipeline, generate
>>> pipe = load_pipeline(ip_adapter=True)            # model "tiny": the built-in IP-Adapter
>>> plain = load_pipeline()                          # same UNet, no adapter: its images never change
>>> [g] = generate(pipe, "1girl, angry, school uniform", seed=0, reference="mika.png", reference_scale=1.0)
>>> g.params["reference_sha256"], g.params["reference_scale"]
('3f1c...', 1.0)
>>> sd = load_pipeline("stable-diffusion-v1-5/stable-diffusion-v1-5", ip_adapter=True)  # h94 plus-face

diffusers' ``pipe.load_ip_adapter`` replaces the UNet's attention processors and sets its
``encoder_hid_proj``. ``load_pipeline`` gives every pipeline of a model the *same* UNet, so that
would change (or, without image embeddings, break) every other pipeline's calls. The kit
therefore follows the LoRA adapters' rule (``animegen_utils.adapters``): ``load_reference_adapter``
calls diffusers' loader and puts the UNet back as it was, keeping the adapter's modules aside;
``generate(..., reference=...)`` installs them for its own pipeline calls only
(``attach_reference``) and restores the UNet's processors afterwards, also after an error. A
pipeline without the adapter draws bit for bit what it drew before, whichever was loaded first.

Embeddings are computed once per reference picture (by its pixels' SHA-256) with diffusers'
``prepare_ip_adapter_image_embeds`` and reused across calls and grids
(``ip_adapter_image_embeds``). A picture of any size and mode is accepted (transparency on
white); anything else is a ``TypeError``/``ValueError`` naming what is accepted. The PNG records
``reference_sha256``, ``reference_scale`` and the adapter (source, file, weights' SHA-256);
``reproduce(path, reference=picture)`` checks the picture's hash and draws it again.

Modules: ``state`` (load, scale, unload, install per call, embeddings cache), ``records`` (one
call's reference and what it records), ``images`` (accepted pictures, hashes), ``weights``
(h94's file layout, for writing adapters), ``train`` (the built-in adapter:
``python -m animegen_utils.reference train``). This package sits beside ``adapters``, below
``pipelines`` and ``generation``, which use it.
"""

from .images import reference_image, reference_sha256
from .records import (ReferenceCall, attach_reference, check_recorded_reference, load_recorded_reference,
                      prepare_reference, recorded_reference_kwargs)
from .state import (BUILTIN_IP_ADAPTERS, DEFAULT_SCALE, SD15_IP_ADAPTER, ReferenceAdapter, default_reference_adapter,
                    load_reference_adapter, reference_adapter, reference_embeds, reference_scale,
                    set_reference_scale, unload_reference_adapter)
from .weights import WEIGHT_NAME, ip_adapter_state_dict, save_ip_adapter

__all__ = ["load_reference_adapter", "unload_reference_adapter", "set_reference_scale", "reference_scale",
           "reference_adapter", "reference_embeds", "default_reference_adapter", "ReferenceAdapter", "ReferenceCall",
           "prepare_reference", "attach_reference", "load_recorded_reference", "check_recorded_reference",
           "recorded_reference_kwargs", "reference_image", "reference_sha256", "save_ip_adapter",
           "ip_adapter_state_dict", "WEIGHT_NAME", "BUILTIN_IP_ADAPTERS", "SD15_IP_ADAPTER", "DEFAULT_SCALE"]
