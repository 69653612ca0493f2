"""Where the service keeps its images: a local folder by default, or S3.

>>> store = LocalStorage("outputs/serve/images")
>>> store.put("3f2a....png", png_bytes)            # atomic: the whole file or nothing
>>> store.get("3f2a....png") == png_bytes
True
>>> s3 = S3Storage("my-bucket")                    # objects under output/<key>, presigned URLs
>>> s3 = S3Storage("b", endpoint_url="http://127.0.0.1:9000")   # MinIO, moto, R2, ...

Both implement ``Storage``. Keys are plain file names (``"<uuid4 hex>.png"``), checked
against ``KEY_RE``; nothing a client sends is ever joined to a path.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

# One path segment, no leading dot (temp files start with one), no separators. Always with
# fullmatch: "$" would also match before a final newline.
KEY_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
TEMP_PREFIX = ".tmp-"
TEMP_RE = re.compile(r"\.tmp-[A-Za-z0-9_]{1,64}")  # what tempfile.mkstemp(prefix=TEMP_PREFIX) makes


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY_RE.fullmatch(key) or ".." in key:
        shown = repr(key[:40]) if isinstance(key, str) else type(key).__name__
        raise ValueError(f"Invalid storage key {shown}: expected a file name like '<uuid hex>.png'")
    return key


@runtime_checkable
class Storage(Protocol):
    """What the service needs from an image store."""

    def put(self, key: str, data: bytes, content_type: str = "image/png") -> None: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def keys(self, prefix: str = "") -> list[str]: ...
    def url(self, key: str) -> str: ...


class LocalStorage:
    """Images as files in one folder (created on first use).

    ``base_url`` is what ``url()`` prefixes (the service passes ``"/images/"``);
    without it ``url()`` gives a ``file://`` URI.
    """

    def __init__(self, root: str | os.PathLike, base_url: str | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        self.base_url = base_url

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes, content_type: str = "image/png") -> None:
        path = self._path(key)
        self.root.mkdir(parents=True, exist_ok=True)
        # Write a hidden temp file beside the target, then rename: readers see all or nothing.
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def keys(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_file() and not p.name.startswith(".") and p.name.startswith(prefix))

    def url(self, key: str) -> str:
        path = self._path(key)
        return f"{self.base_url}{key}" if self.base_url is not None else path.as_uri()

    def temp_files(self, older_than_s: float = 60.0) -> list[str]:
        """Names of ``put``'s temp files older than ``older_than_s``: left by a crash mid-write."""
        if not self.root.is_dir():
            return []
        cutoff = time.time() - older_than_s
        found = []
        for p in self.root.iterdir():
            try:
                if TEMP_RE.fullmatch(p.name) and p.is_file() and p.stat().st_mtime < cutoff:
                    found.append(p.name)
            except FileNotFoundError:  # renamed into place meanwhile
                continue
        return sorted(found)

    def delete_temp(self, name: str) -> None:
        """Remove one of ``temp_files``' names (nothing else)."""
        if not TEMP_RE.fullmatch(name):
            raise ValueError(f"Not a temp file name: {name[:40]!r}")
        (self.root / name).unlink(missing_ok=True)


class S3Storage:
    """Images as S3 objects under ``prefix`` (the plan's ``output/<uuid>.png``).

    ``endpoint_url`` points at any S3-compatible server. Credentials and region come
    from boto3's usual chain (environment, ``~/.aws``, the Lambda role) unless given.
    ``url()`` returns a presigned GET URL valid for ``url_expires_s`` seconds.
    A PUT is atomic in S3: an object appears whole or not at all.
    """

    def __init__(self, bucket: str, prefix: str = "output/", endpoint_url: str | None = None,
                 region_name: str | None = None, url_expires_s: int = 3600, client: Any = None,
                 **client_kwargs: Any) -> None:
        if not bucket:
            raise ValueError("S3Storage needs a bucket name")
        if prefix and not prefix.endswith("/"):
            raise ValueError(f"S3 prefix must end with '/', got {prefix!r}")
        self.bucket, self.prefix, self.url_expires_s = bucket, prefix, int(url_expires_s)
        if client is None:
            import boto3
            from botocore.config import Config

            client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region_name,
                                  config=Config(signature_version="s3v4", retries={"max_attempts": 3}),
                                  **client_kwargs)
        self.client = client

    def __repr__(self) -> str:
        return f"S3Storage(s3://{self.bucket}/{self.prefix})"

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def put(self, key: str, data: bytes, content_type: str = "image/png") -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def keys(self, prefix: str = "") -> list[str]:
        found: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        for page in pages:
            found += [obj["Key"][len(self.prefix):] for obj in page.get("Contents", [])]
        return sorted(found)

    def url(self, key: str) -> str:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=self.url_expires_s)


@dataclass
class StorageSettings:
    """Plain settings for ``make_storage``: a local folder, or S3 when ``s3_bucket`` is set.

    ``root`` defaults to ``<project>/outputs/serve/images`` (``animegen_utils.paths``).
    """

    root: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = "output/"
    s3_endpoint_url: str | None = None
    s3_region: str | None = None

    @property
    def kind(self) -> str:
        return "s3" if self.s3_bucket else "local"

    def local_root(self) -> Path:
        """The local image folder (also where a default SQLite file goes, beside it)."""
        if self.root is not None:
            return Path(self.root).expanduser().resolve()
        from animegen_utils import paths

        return paths.outputs_dir("serve") / "images"


def make_storage(settings: StorageSettings, base_url: str | None = None) -> Storage:
    """``S3Storage`` when a bucket is configured, else ``LocalStorage``."""
    if settings.s3_bucket:
        return S3Storage(settings.s3_bucket, prefix=settings.s3_prefix, endpoint_url=settings.s3_endpoint_url,
                         region_name=settings.s3_region)
    return LocalStorage(settings.local_root(), base_url=base_url)
