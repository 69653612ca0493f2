"""The service's settings: plain values, easy to override from the CLI, the environment or code.

>>> from animegen_utils.serve.settings import ServeSettings, StorageSettings
>>> ServeSettings(model="tiny", port=8000, storage=StorageSettings(root="/tmp/images"))
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

from .storage import StorageSettings

API_KEY_ENV = "ANIMEGEN_API_KEY"
DATABASE_URL_ENV = "ANIMEGEN_DATABASE_URL"


def is_loopback(host: str) -> bool:
    """True for ``localhost``, ``127.x.x.x`` and ``::1``; False for ``0.0.0.0`` and real addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServeSettings:
    """Everything ``create_app`` needs.

    ``queue_size`` is how many requests may be admitted at once (one generating, the rest
    waiting); the next one gets 503 with ``Retry-After``. ``timeout_s`` bounds one request
    from admission to answer. ``api_key`` is required on ``/api/*`` when set; a service bound
    beyond loopback must have one unless ``insecure`` is set. ``database_url`` is for the
    generation records (``None``: a SQLite file beside the local image folder).
    """

    model: str = "tiny"
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    insecure: bool = False
    storage: StorageSettings = field(default_factory=StorageSettings)
    database_url: str | None = None
    queue_size: int = 8
    timeout_s: float = 120.0
    device: str = "auto"
    max_body_bytes: int = 16 * 1024

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ValueError("api_key must be at least 8 characters")

    @classmethod
    def from_env(cls, **overrides) -> "ServeSettings":
        """Settings with ``api_key`` and ``database_url`` read from the environment unless given."""
        overrides.setdefault("api_key", os.environ.get(API_KEY_ENV) or None)
        overrides.setdefault("database_url", os.environ.get(DATABASE_URL_ENV) or None)
        return cls(**overrides)

    def check_access(self) -> None:
        """Refuse an open service on a public address: raises ``ValueError`` saying what to do."""
        if self.api_key or self.insecure or is_loopback(self.host):
            return
        raise ValueError(
            f"Refusing to serve on {self.host} without an API key: anyone who can reach it could "
            f"generate. Pass --api-key (or set {API_KEY_ENV}), bind to 127.0.0.1, or pass --insecure "
            "if something in front of it (a proxy, a firewall) already controls access.")
