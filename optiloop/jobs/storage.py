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

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..api.jobs import DATASET_CREDENTIALS_PREFIX, DATASET_URI_ENV
from ..formats.model_dir import COMPLETE_MARKER, marker_entry, sha256, write_atomically
from .errors import StorageError

PVC_ROOT_ENV = "OPTILOOP_PVC_ROOT"
DEFAULT_PVC_ROOT = "/mnt/pvc"
_ABSENT_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
"""The only S3 answers that mean "no such object"; a 403 or a throttled request means "cannot tell"."""


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
        write_atomically(self._path(key), data)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class S3Credentials:
    """One identity for S3: keys, an optional session token, endpoint and region.

    ``source`` names where they came from, for error messages (never the values)."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None
    endpoint_url: str | None
    region: str | None
    source: str


def credentials_for(object_uri: str, environ: Mapping[str, str] | None = None) -> S3Credentials | None:
    """The credentials to read ``object_uri`` with: the dataset's set for the dataset's object,
    None (boto3's usual chain: ``AWS_*``, a profile, the pod's role) for everything else.

    The dataset is matched by its exact object URI, so an artifact store in the same bucket, or
    even a prefix above the dataset, still uses the artifact store's identity."""
    env = os.environ if environ is None else environ
    dataset = env.get(DATASET_URI_ENV, "").rstrip("/")
    if not dataset or object_uri.rstrip("/") != dataset:
        return None
    prefix = DATASET_CREDENTIALS_PREFIX

    def var(name: str) -> str | None:
        return env.get(prefix + name) or None

    key_id, secret = var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")
    if key_id is None and secret is None:
        return None  # no Secret named for the dataset: the pod's usual identity reads it
    if key_id is None or secret is None:
        missing = "AWS_ACCESS_KEY_ID" if key_id is None else "AWS_SECRET_ACCESS_KEY"
        raise StorageError(
            f"the dataset's credentials (spec.dataset.credentialsSecretRef) have no {missing}: the Secret needs "
            "both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    return S3Credentials(
        access_key_id=key_id,
        secret_access_key=secret,
        session_token=var("AWS_SESSION_TOKEN"),
        endpoint_url=var("AWS_ENDPOINT_URL"),
        region=var("AWS_REGION") or var("AWS_DEFAULT_REGION"),
        source="spec.dataset.credentialsSecretRef",
    )


@dataclass
class S3Store:
    """A prefix in an S3 bucket (or an S3-compatible store such as MinIO).

    Credentials come from the environment: the artifact store's as ``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY`` (the operator fills them from deployment.storageCredentialsSecretRef),
    the dataset's object with the ``OPTILOOP_DATASET_``-prefixed set when there is one (see
    :func:`credentials_for`); the endpoint from ``endpoint_url``, else the set's own, else
    ``AWS_ENDPOINT_URL`` for the artifact store.
    """

    bucket: str
    prefix: str
    endpoint_url: str | None = None
    uri: str = ""
    _clients: dict[S3Credentials | None, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.uri = self.uri or f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _client(self, key: str) -> Any:
        """The client for ``key``: one per identity, made on first use."""
        credentials = credentials_for(f"{self.uri}/{key}")
        if credentials not in self._clients:
            import boto3

            # A session of its own, not boto3's default one, which keeps the first credentials
            # it found for the life of the process.
            session = boto3.session.Session()
            if credentials is None:
                client = session.client("s3", endpoint_url=self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL"))
            else:
                client = session.client(
                    "s3",
                    endpoint_url=self.endpoint_url or credentials.endpoint_url,
                    region_name=credentials.region,
                    aws_access_key_id=credentials.access_key_id,
                    aws_secret_access_key=credentials.secret_access_key,
                    aws_session_token=credentials.session_token,
                )
            self._clients[credentials] = client
        return self._clients[credentials]

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{_check_key(key)}" if self.prefix else _check_key(key)

    def _where(self, key: str) -> str:
        return f"{self.uri}/{key} (bucket {self.bucket!r}, key {self._key(key)!r})"

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return bytes(self._client(key).get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())
        except ClientError as exc:
            code = _error_code(exc)
            if code in _ABSENT_CODES:
                raise StorageError(f"{self.uri}/{key} does not exist") from None
            raise StorageError(f"cannot read {self._where(key)}: {code or exc}") from None
        except BotoCoreError as exc:
            raise StorageError(f"cannot read {self._where(key)}: {exc}") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client(key).put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot write {self._where(key)}: {exc}") from None

    def exists(self, key: str) -> bool:
        """Whether the object is there. Only S3's "not found" means no: a refused (403) or
        throttled request raises, since taking it for "absent" would make a finished stage look
        unfinished and get its completion marker deleted."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client(key).head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            code = _error_code(exc)
            if code in _ABSENT_CODES:
                return False
            raise StorageError(f"cannot tell whether {self._where(key)} exists: {code or exc}") from None
        except BotoCoreError as exc:
            raise StorageError(f"cannot tell whether {self._where(key)} exists: {exc}") from None
        return True

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._client(key).delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"cannot delete {self._where(key)}: {exc}") from None

    def local_path(self, key: str) -> Path | None:
        return None


def _error_code(exc: Any) -> str:
    """S3's error code (``NoSuchKey``, ``AccessDenied``, ``SlowDown``), or the bare HTTP status
    of a HEAD request, whose answers have no body."""
    response = getattr(exc, "response", {}) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return code or str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


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
        return LocalStore(Path(uri[len("file://") :] or "/"), uri)
    if "://" in uri:
        raise StorageError(f"unsupported artifact URI {uri!r}: use pvc://, s3://, file:// or a local path")
    return LocalStore(Path(uri).resolve(), uri)


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b.csv`` -> (``s3://bucket/a``, ``b.csv``): a store for the parent and a key."""
    head, _, name = uri.rstrip("/").rpartition("/")
    if not name or head.endswith((":/", ":")):
        raise StorageError(f"{uri!r} does not name a file")
    return head, name


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
        self.files[name] = marker_entry(data)

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
            if sha256(store.read_bytes(f"{prefix}/{name}")) != info["sha256"]:
                return None
    except (StorageError, ValueError, KeyError, TypeError):
        return None
    return dict(marker)


def is_complete(store: ArtifactStore, prefix: str) -> bool:
    """Whether the stage under ``prefix`` finished and its files are intact."""
    return completion_marker(store, prefix) is not None
