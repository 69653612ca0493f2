"""Errors that several layers of the kit raise (kept below all of them)."""

from __future__ import annotations


class ModelNotFoundError(OSError):
    """A model id or path that cannot be loaded (offline, typo, or missing file)."""


__all__ = ["ModelNotFoundError"]
