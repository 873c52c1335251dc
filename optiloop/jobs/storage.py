"""Artifact storage: one small interface over local directories, ``pvc://`` mounts and ``s3://``.

Writes are atomic (a temporary name, then a rename; S3 objects appear whole) and a stage's
outputs count as finished only when its completion marker, written last, lists every file
with its SHA-256 and the files still match. A Job killed half-way therefore never leaves
something that looks finished.

    store = open_store("pvc://artifacts/iris")       # /mnt/pvc/artifacts/iris inside a pod
    with StageWriter(store, "r1/tuning") as out:
        out.write_json("best.json", {...})
    assert is_complete(store, "r1/tuning")
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import StorageError

PVC_ROOT_ENV = "OPTILOOP_PVC_ROOT"
DEFAULT_PVC_ROOT = "/mnt/pvc"
COMPLETE_MARKER = "_COMPLETE.json"


class ArtifactStore(Protocol):
    """Where a revision's artifacts live. Keys are relative POSIX paths below the store's root."""

    uri: str

    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> None: ...
    def exists(self, key: str) -> bool: ...
    def delete(self, key: str) -> None: ...
    def local_path(self, key: str) -> Path | None:
        """A filesystem path for ``key`` when the store is a local directory, else None."""
        ...


def _check_key(key: str) -> str:
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise StorageError(f"invalid artifact key {key!r}: keys are relative paths without '.' or '..'")
    return key


@dataclass
class LocalStore:
    """A directory on a local or mounted filesystem."""

    root: Path
    uri: str = ""

    def __post_init__(self) -> None:
        self.uri = self.uri or str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{self.uri}/{key} does not exist") from None
        except IsADirectoryError:
            raise StorageError(f"{self.uri}/{key} is a directory, not a file") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            with tmp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class S3Store:
    """A prefix in an S3 bucket (or an S3-compatible store such as MinIO).

    Credentials come from the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``),
    which the operator fills from the Secret the spec references; the endpoint from
    ``endpoint_url`` or ``AWS_ENDPOINT_URL``.
    """

    bucket: str
    prefix: str
    endpoint_url: str | None = None
    uri: str = ""
    _client: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.uri = self.uri or f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL"))
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{_check_key(key)}" if self.prefix else _check_key(key)

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):
                raise StorageError(f"{self.uri}/{key} does not exist") from None
            raise StorageError(f"cannot read {self.uri}/{key}: {code or exc}") from None
        except BotoCoreError as exc:
            raise StorageError(f"cannot read {self.uri}/{key}: {exc}") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot write {self.uri}/{key}: {exc}") from None

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError:
            return False
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def local_path(self, key: str) -> Path | None:
        return None


def open_store(uri: str, *, endpoint_url: str | None = None) -> ArtifactStore:
    """The store for ``uri``: ``pvc://claim/path``, ``s3://bucket/prefix``, ``file://`` or a local path."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise StorageError(f"{uri!r} names no bucket")
        return S3Store(bucket, prefix.strip("/"), endpoint_url, uri.rstrip("/"))
    if uri.startswith("pvc://"):
        claim_path = uri[len("pvc://") :].strip("/")
        root = Path(os.environ.get(PVC_ROOT_ENV, DEFAULT_PVC_ROOT))
        return LocalStore(root / claim_path, uri.rstrip("/"))
    if uri.startswith("file://"):
        return LocalStore(Path(uri[len("file://") :]), uri)
    if "://" in uri:
        raise StorageError(f"unsupported artifact URI {uri!r}: use pvc://, s3://, file:// or a local path")
    return LocalStore(Path(uri).resolve(), uri)


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b.csv`` -> (``s3://bucket/a``, ``b.csv``): a store for the parent and a key."""
    head, _, name = uri.rstrip("/").rpartition("/")
    if not name or head.endswith((":/", ":")):
        raise StorageError(f"{uri!r} does not name a file")
    return head, name


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class StageWriter:
    """Collects a stage's outputs under ``prefix`` and marks them complete only on success.

    A previous completion marker is removed first, so outputs being replaced are never
    mistaken for finished ones; the new marker is written when the ``with`` block exits
    cleanly.
    """

    def __init__(self, store: ArtifactStore, prefix: str, metadata: dict[str, Any] | None = None) -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self.metadata = metadata or {}
        self.files: dict[str, dict[str, Any]] = {}

    def __enter__(self) -> StageWriter:
        self.store.delete(f"{self.prefix}/{COMPLETE_MARKER}")
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            marker = {"files": self.files, **self.metadata}
            self.store.write_bytes(f"{self.prefix}/{COMPLETE_MARKER}", json.dumps(marker, indent=2).encode())

    def write_bytes(self, name: str, data: bytes) -> None:
        self.store.write_bytes(f"{self.prefix}/{name}", data)
        self.files[name] = {"sha256": _sha256(data), "size": len(data)}

    def write_json(self, name: str, document: Any) -> None:
        self.write_bytes(name, json.dumps(document, indent=2, sort_keys=False).encode())


def completion_marker(store: ArtifactStore, prefix: str) -> dict[str, Any] | None:
    """The parsed marker of a finished stage whose files all still match; None otherwise."""
    prefix = prefix.strip("/")
    if not store.exists(f"{prefix}/{COMPLETE_MARKER}"):
        return None
    try:
        marker = json.loads(store.read_bytes(f"{prefix}/{COMPLETE_MARKER}"))
        for name, info in marker["files"].items():
            if _sha256(store.read_bytes(f"{prefix}/{name}")) != info["sha256"]:
                return None
    except (StorageError, ValueError, KeyError, TypeError):
        return None
    return dict(marker)


def is_complete(store: ArtifactStore, prefix: str) -> bool:
    """Whether the stage under ``prefix`` finished and its files are intact."""
    return completion_marker(store, prefix) is not None
