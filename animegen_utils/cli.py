"""Command-line flags from a training config dataclass: every field becomes ``--field-name``.

>>> from animegen_utils.fast.distill import DistillConfig
>>> parser = argparse.ArgumentParser()
>>> add_config_flags(parser, DistillConfig)
>>> cfg = config_from_args(parser.parse_args(["--max-train-steps", "20"]), DistillConfig)

Booleans take ``1/true/yes`` (anything else is false), tuples a comma-separated list.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Callable

import torch


def _flag_type(f: dataclasses.Field) -> Callable[[str], Any]:
    if isinstance(f.default, bool):
        return lambda s: s.lower() in ("1", "true", "yes")
    if isinstance(f.default, tuple):
        return lambda s: tuple(x.strip() for x in s.split(",") if x.strip())
    return type(f.default)


def add_config_flags(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One ``--flag`` per field of ``config_cls``, defaulting to the field's default."""
    for f in dataclasses.fields(config_cls):
        default = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        parser.add_argument("--" + f.name.replace("_", "-"), type=_flag_type(f), default=f.default,
                            help=f"default: {default}")


def config_from_args(args: argparse.Namespace, config_cls: type) -> Any:
    """The ``config_cls`` that the parsed flags describe."""
    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})


def use_threads_from_env() -> None:
    """Use ``OMP_NUM_THREADS`` torch threads (all cores if unset). 1 leaves a core to other work:
    two busy torch processes on two cores slow each other down several-fold."""
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
