"""LoRA fine-tuning and LoRA adapters for the kit.

>>> from animegen_utils.lora import LoraTrainingConfig, train_lora, load_lora
>>> result = train_lora(LoraTrainingConfig(data_dir="training_data", max_train_steps=300))
>>> pipe = load_pipeline()
>>> load_lora(pipe, result.lora_dir, adapter_name="mine", scale=0.8)

Modules: ``dataset`` (three folder layouts), ``train`` (PEFT + accelerate), ``export`` (kohya
keys for A1111/ComfyUI), ``toydata`` (notebook 03's new character), ``__main__`` (the shell).
The per-pipeline adapter functions are ``animegen_utils.adapters``'s, re-exported here.
"""

from ..adapters import activate_adapters, active_adapters, load_lora, set_lora_scale, unload_lora
from .dataset import ImageCaptionDataset, load_image_dataset
from .export import save_kohya, to_kohya
from .train import DEFAULT_TARGETS, PLAN_TARGETS, LoraTrainingConfig, TrainingResult, train_lora

__all__ = [
    "load_lora", "set_lora_scale", "unload_lora", "active_adapters", "activate_adapters",
    "load_image_dataset", "ImageCaptionDataset", "LoraTrainingConfig", "TrainingResult", "train_lora",
    "DEFAULT_TARGETS", "PLAN_TARGETS", "save_kohya", "to_kohya",
]
