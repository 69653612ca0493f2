"""LoRA for the kit: adapters per pipeline (``adapters``).

>>> from animegen_utils.lora import load_lora, unload_lora
>>> load_lora(pipe, "outputs/03/lora", adapter_name="mika", scale=0.8)
"""

from .adapters import activate_adapters, active_adapters, load_lora, set_lora_scale, unload_lora

__all__ = ["load_lora", "set_lora_scale", "unload_lora", "active_adapters", "activate_adapters"]
