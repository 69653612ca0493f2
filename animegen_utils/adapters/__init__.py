"""Adapters per pipeline (LoRA, LCM-LoRA and, next, reference-image adapters), on weights that
pipelines share, fused while they are in use.

``load_pipeline`` gives every task's pipeline the *same* UNet and text encoder, so
a LoRA injected into them is physically present for all of those pipelines. The
kit records which adapters each pipeline asked for, at which scale, and
``generate`` calls ``activate_adapters(pipe)`` first, which switches exactly that
pipeline's adapters on, merged into the weights (``fusing``). An adapter loaded for
one pipeline therefore never changes another pipeline's images, whichever was loaded first.

>>> from animegen_utils import load_pipeline, generate
>>> from animegen_utils.adapters import load_lora, set_lora_scale, unload_lora, active_adapters
>>> pipe = load_pipeline()
>>> plain = load_pipeline()                          # same weights, no LoRA
>>> load_lora(pipe, "outputs/03/lora", adapter_name="mika", scale=0.8)
'mika'
>>> load_lora(pipe, "outputs/03/lora_style", adapter_name="style", scale=0.5)  # blended by name
'style'
>>> active_adapters(pipe)
{'mika': 0.8, 'style': 0.5}
>>> set_lora_scale(pipe, "mika", 1.0)
>>> unload_lora(pipe, "style")                       # unload_lora(pipe) drops them all

Adapters loaded with diffusers' own ``pipe.load_lora_weights(...)`` are not
recorded by the kit. They behave as diffusers documents: they live in the shared
weights, so every pipeline sharing that UNet sees them, and ``set_adapters`` /
``disable_lora`` / ``cross_attention_kwargs={"scale": s}`` work as usual. The kit
never switches off such an adapter that diffusers left active, and fuses nothing while one is.

Modules: ``state`` (load, scale, unload, activate), ``fusing`` (merge and exact unmerge),
``records`` (what an image records, and loading it back), ``text_encoder`` (text-encoder
LoRA layers through peft). This package sits below ``pipelines`` and ``generation``, which use it.
"""

from .fusing import fused_adapters, set_fusing
from .records import (LCM_ADAPTER, adapter_records, check_recorded_adapters, generation_record,
                      load_recorded_adapters)
from .state import (activate_adapters, active_adapters, adapter_sha256, kit_adapter_names, load_lora,
                    set_lora_scale, state_dict_sha256, unload_lora)

__all__ = ["load_lora", "set_lora_scale", "unload_lora", "active_adapters", "activate_adapters",
           "kit_adapter_names", "adapter_records", "adapter_sha256", "state_dict_sha256", "generation_record",
           "load_recorded_adapters", "check_recorded_adapters", "fused_adapters", "set_fusing", "LCM_ADAPTER"]
