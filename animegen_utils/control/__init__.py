"""Phase 3: change an existing character (img2img) and draw one that follows a sketch (ControlNet).

>>> from animegen_utils import load_pipeline, generate, build_prompt
>>> from animegen_utils.control import transfer_emotion, sketch_to_control
>>> pipe = load_pipeline()
>>> sad = transfer_emotion(pipe, "my_character.png", "sad")            # img2img
>>> cn = load_pipeline(task="controlnet")                              # built-in canny ControlNet
>>> control = sketch_to_control("my_sketch.jpg", size=64)
>>> [g] = generate(cn, build_prompt("happy", "casual"), seed=0, image=control)
"""

from .img2img import (DEFAULT_STRENGTH, SWEEP_STRENGTHS, emotion_prompt, strength_sweep, transfer_batch,
                      transfer_emotion)
from .preprocess import canny_map, load_image, prepare_image, sketch_to_control
from .sketches import SKETCHES, draw_sketch

__all__ = ["canny_map", "sketch_to_control", "load_image", "prepare_image", "transfer_emotion",
           "strength_sweep", "transfer_batch", "emotion_prompt", "DEFAULT_STRENGTH", "SWEEP_STRENGTHS", "SKETCHES", "draw_sketch"]
