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
API_KEY_FILE_ENV = "ANIMEGEN_API_KEY_FILE"
DATABASE_URL_ENV = "ANIMEGEN_DATABASE_URL"
ALLOWED_HOSTS_ENV = "ANIMEGEN_ALLOWED_HOSTS"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def is_loopback(host: str) -> bool:
    """True for ``localhost``, ``127.x.x.x`` and ``::1``; False for ``0.0.0.0`` and real addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_hosts(value: str | None) -> tuple[str, ...]:
    """``"a.example, b.example"`` -> ``("a.example", "b.example")`` (lowercase, no ports); ``None`` -> ()."""
    hosts = []
    for part in (value or "").split(","):
        part = part.strip().lower()
        if part:
            hosts.append(part)
    return tuple(hosts)


def read_api_key_file(path: str) -> str:
    """The key in ``path`` (first line, stripped): ``--api-key-file`` keeps it out of ``ps``."""
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as err:
        raise ValueError(f"Cannot read the API key file {path}: {err.strerror}") from None
    key = lines[0].strip() if lines else ""
    if not key:
        raise ValueError(f"The API key file {path} is empty.")
    return key


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
    max_size: int | None = None  # largest image side served (None: core.MAX_SIZE); the OpenAPI document says it
    allowed_hosts: tuple[str, ...] = ()
    max_connections: int | None = None
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    min_free_bytes: int = 64 * 1024**2
    # The model (issue 20): passed to load_pipeline as they are.
    config: str | None = None
    scheduler: str = "dpm++"
    clip_skip: int | None = None
    safety_checker: bool = True

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ValueError("api_key must be at least 8 characters")
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_connections is not None and self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")
        self.allowed_hosts = tuple(h.lower() for h in self.allowed_hosts)

    def hosts(self) -> tuple[str, ...]:
        """The ``Host`` names answered: loopback's names (a rebinding page never sends those), and
        ``allowed_hosts`` or, without them, the bind address when it is a specific one."""
        if self.allowed_hosts:
            return LOOPBACK_HOSTS + tuple(h for h in self.allowed_hosts if h not in LOOPBACK_HOSTS)
        bind = self.host.lower()
        if ":" in bind and not bind.startswith("["):
            bind = f"[{bind}]"  # an IPv6 literal, as it appears in a Host header
        extra = () if bind in ("0.0.0.0", "[::]") or bind in LOOPBACK_HOSTS else (bind,)
        return LOOPBACK_HOSTS + extra

    @classmethod
    def from_env(cls, **overrides) -> "ServeSettings":
        """Settings with ``api_key`` (or its file), ``database_url`` and ``allowed_hosts`` from the environment."""
        if "api_key" not in overrides:
            key_file = os.environ.get(API_KEY_FILE_ENV)
            overrides["api_key"] = read_api_key_file(key_file) if key_file else os.environ.get(API_KEY_ENV) or None
        overrides.setdefault("database_url", os.environ.get(DATABASE_URL_ENV) or None)
        overrides.setdefault("allowed_hosts", parse_hosts(os.environ.get(ALLOWED_HOSTS_ENV)))
        return cls(**overrides)

    def check_access(self) -> None:
        """Refuse an open service on a public address: raises ``ValueError`` saying what to do."""
        if self.api_key or self.insecure or is_loopback(self.host):
            return
        raise ValueError(
            f"Refusing to serve on {self.host} without an API key: anyone who can reach it could "
            f"generate. Pass --api-key-file (or set {API_KEY_ENV}), bind to 127.0.0.1, or pass --insecure "
            "if something in front of it (a proxy, a firewall) already controls access.")
