"""S3 settings and small boto3 helpers (AWS S3 or any S3-compatible store, e.g. SeaweedFS).

Configuration comes from the environment only:

==========================  ==============================================================
``PINREC_S3_ENDPOINT_URL``  endpoint of an S3-compatible store; unset means AWS S3 (boto3
                            then also honours the standard ``AWS_ENDPOINT_URL_S3``)
``PINREC_S3_BUCKET``        bucket, default ``pinrec``
``PINREC_S3_PREFIX``        key prefix inside the bucket, default ``pinrec-ops/<deployment>``
``AWS_ACCESS_KEY_ID``       credentials; when both are unset boto3's default chain is used
``AWS_SECRET_ACCESS_KEY``   (profile, instance role, ...)
``AWS_DEFAULT_REGION``      region, default ``us-east-1`` (``AWS_REGION`` is read as well)
==========================  ==============================================================

Helpers take the client and the bucket explicitly and raise boto3's own exceptions with a note
saying which object and endpoint were involved, except for a missing object, which raises
:class:`ObjectNotFoundError`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from storage.paths import deployment_name, deployment_prefix

DEFAULT_BUCKET = "pinrec"
DEFAULT_PREFIX = "pinrec-ops"
DEFAULT_REGION = "us-east-1"

MiB = 1024 * 1024
#: boto3 transfers switch to multipart above this size (S3's minimum part size is 5 MiB).
DEFAULT_MULTIPART_THRESHOLD = 16 * MiB
DEFAULT_MULTIPART_CHUNKSIZE = 16 * MiB

_AUTH_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"})
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class ObjectNotFoundError(LookupError):
    """The requested object (or its bucket) does not exist."""

    def __init__(self, bucket: str, key: str, code: str = "NoSuchKey") -> None:
        super().__init__(f"s3://{bucket}/{key} does not exist ({code})")
        self.bucket = bucket
        self.key = key
        self.code = code


def _mask(value: str | None, keep: int = 4) -> str:
    if not value:
        return "None"
    return repr(value[:keep] + "...") if len(value) > keep else "'***'"


@dataclass(frozen=True, repr=False)
class S3Settings:
    """Where the artifacts live and how to reach them. Build it with :meth:`from_env`."""

    endpoint_url: str | None = None
    region: str = DEFAULT_REGION
    access_key: str | None = None
    secret_key: str | None = None
    bucket: str = DEFAULT_BUCKET
    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ValueError("S3Settings.bucket must not be empty")
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError(
                "S3 credentials are incomplete: set both AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or neither (to use boto3's default credential chain)"
            )
        object.__setattr__(self, "prefix", self.prefix.strip("/"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        """Read the settings from ``environ`` (default ``os.environ``); empty means unset."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        return cls(
            endpoint_url=get("PINREC_S3_ENDPOINT_URL"),
            region=get("AWS_DEFAULT_REGION") or get("AWS_REGION") or DEFAULT_REGION,
            access_key=get("AWS_ACCESS_KEY_ID"),
            secret_key=get("AWS_SECRET_ACCESS_KEY"),
            bucket=get("PINREC_S3_BUCKET") or DEFAULT_BUCKET,
            # "/" means the bucket root; unset: the deployment's own prefix (storage.paths)
            prefix=get("PINREC_S3_PREFIX") or deployment_prefix(deployment_name(environ=env)),
        )

    def with_prefix(self, prefix: str) -> S3Settings:
        return replace(self, prefix=prefix)

    def key(self, *parts: str) -> str:
        """Full object key: the prefix joined with ``parts`` by ``/``."""
        pieces = [self.prefix] if self.prefix else []
        pieces += [p.strip("/") for p in parts if p.strip("/")]
        return "/".join(pieces)

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"

    def __repr__(self) -> str:
        return (
            f"S3Settings(endpoint_url={self.endpoint_url!r}, region={self.region!r}, "
            f"access_key={_mask(self.access_key)}, "
            f"secret_key={'None' if self.secret_key is None else repr('***')}, "
            f"bucket={self.bucket!r}, prefix={self.prefix!r})"
        )

    __str__ = __repr__


def make_client(
    settings: S3Settings,
    *,
    connect_timeout: float = 10.0,
    read_timeout: float = 120.0,
    max_attempts: int = 5,
    max_pool_connections: int = 16,
) -> Any:
    """A boto3 S3 client: path-style addressing, standard retries, explicit timeouts."""
    session = boto3.session.Session(
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        region_name=settings.region,
    )
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
    )
    return session.client("s3", endpoint_url=settings.endpoint_url, config=config)


def _where(client: Any) -> str:
    try:
        return client.meta.endpoint_url
    except AttributeError:  # pragma: no cover - not a boto3 client
        return "?"


@contextlib.contextmanager
def _annotate(client: Any, what: str) -> Iterator[None]:
    """Add a note naming the operation, object and endpoint to any boto3 error."""
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        exc.add_note(f"while {what} at {_where(client)} (error code {code})")
        if code in _AUTH_CODES:
            exc.add_note(
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and PINREC_S3_ENDPOINT_URL): "
                "the server rejected the credentials or their permissions"
            )
        raise
    except BotoCoreError as exc:
        exc.add_note(f"while {what} at {_where(client)}")
        raise


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def ensure_bucket(client: Any, bucket: str) -> bool:
    """Create ``bucket`` unless it exists already; True when it was created. Idempotent."""
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if _status(exc) != 404 and _code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
            exc.add_note(f"while checking bucket {bucket!r} at {_where(client)}")
            if _status(exc) == 403:
                exc.add_note(
                    f"bucket {bucket!r} exists but these credentials may not use it, or the credentials are wrong"
                )
            raise
    kwargs: dict[str, Any] = {"Bucket": bucket}
    region = client.meta.region_name
    if region and region != "us-east-1" and client.meta.endpoint_url.endswith("amazonaws.com"):
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**kwargs)
        return True
    except ClientError as exc:
        if _code(exc) == "BucketAlreadyOwnedByYou":
            return False
        exc.add_note(f"while creating bucket {bucket!r} at {_where(client)}")
        if _code(exc) == "BucketAlreadyExists":
            exc.add_note(f"bucket name {bucket!r} belongs to another account: set PINREC_S3_BUCKET")
        raise


def put_bytes(client: Any, bucket: str, key: str, data: bytes, *, content_type: str | None = None) -> str:
    """Write ``data`` to ``s3://bucket/key`` (overwriting); returns the ETag."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": data}
    if content_type:
        kwargs["ContentType"] = content_type
    with _annotate(client, f"writing s3://{bucket}/{key}"):
        return client.put_object(**kwargs).get("ETag", "")


def get_bytes(client: Any, bucket: str, key: str) -> bytes:
    """Read the whole object; :class:`ObjectNotFoundError` when it (or the bucket) is missing."""
    try:
        with _annotate(client, f"reading s3://{bucket}/{key}"):
            response = client.get_object(Bucket=bucket, Key=key)
            return response["Body"].read()
    except ClientError as exc:
        if _code(exc) in _NOT_FOUND_CODES or _code(exc) == "NoSuchBucket":
            raise ObjectNotFoundError(bucket, key, _code(exc)) from exc
        raise


def object_exists(client: Any, bucket: str, key: str) -> bool:
    try:
        with _annotate(client, f"checking s3://{bucket}/{key}"):
            client.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if _status(exc) == 404 or _code(exc) in _NOT_FOUND_CODES:
            return False
        raise


def list_keys(client: Any, bucket: str, prefix: str = "", *, page_size: int = 1000) -> list[str]:
    """Every key under ``prefix`` (all pages), in the store's (lexicographic) order."""
    keys: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    with _annotate(client, f"listing s3://{bucket}/{prefix}"):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def delete_prefix(client: Any, bucket: str, prefix: str) -> int:
    """Delete every object under ``prefix``; returns how many there were."""
    keys = list_keys(client, bucket, prefix)
    with _annotate(client, f"deleting s3://{bucket}/{prefix}"):
        for i in range(0, len(keys), 1000):
            client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]})
    return len(keys)


def transfer_config(
    *,
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
    multipart_chunksize: int = DEFAULT_MULTIPART_CHUNKSIZE,
    max_concurrency: int = 4,
) -> TransferConfig:
    return TransferConfig(
        multipart_threshold=multipart_threshold,
        multipart_chunksize=multipart_chunksize,
        max_concurrency=max_concurrency,
        use_threads=max_concurrency > 1,
    )


def upload_file(
    client: Any,
    bucket: str,
    key: str,
    path: str | os.PathLike[str],
    *,
    config: TransferConfig | None = None,
    extra_args: dict[str, Any] | None = None,
) -> None:
    """Upload a local file with boto3's transfer manager (multipart above the threshold)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot upload {path}: no such file")
    with _annotate(client, f"uploading {path} to s3://{bucket}/{key}"):
        client.upload_file(str(path), bucket, key, Config=config or transfer_config(), ExtraArgs=extra_args)


def download_file(
    client: Any,
    bucket: str,
    key: str,
    path: str | os.PathLike[str],
    *,
    config: TransferConfig | None = None,
) -> Path:
    """Download to ``path`` (parents created; boto3 writes a temp file and renames it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _annotate(client, f"downloading s3://{bucket}/{key} to {path}"):
            client.download_file(bucket, key, str(path), Config=config or transfer_config())
    except ClientError as exc:
        if _status(exc) == 404 or _code(exc) in _NOT_FOUND_CODES or _code(exc) == "NoSuchBucket":
            raise ObjectNotFoundError(bucket, key, _code(exc)) from exc
        raise
    return path


def put_if_absent(client: Any, bucket: str, key: str, data: bytes, *, conflict_retries: int = 5) -> bool:
    """Create ``s3://bucket/key`` only if no object has that key (``If-None-Match: *``).

    Returns True when this call created it, False when an object was already there (HTTP 412
    PreconditionFailed); never overwrites. AWS answers 409 ConditionalRequestConflict while a
    concurrent conditional write to the same key is in flight: that is retried. Caveat of any
    conditional write: if a first attempt succeeded but its response was lost, boto3's retry
    gets 412 and this returns False although the object holds ``data``.
    """
    for attempt in range(conflict_retries + 1):
        try:
            with _annotate(client, f"creating s3://{bucket}/{key} if absent"):
                client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            if _code(exc) == "PreconditionFailed" or _status(exc) == 412:
                return False
            if _code(exc) == "ConditionalRequestConflict" and attempt < conflict_retries:
                time.sleep(0.1 * 2**attempt)
                continue
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _precondition_failed(exc: ClientError) -> bool:
    return _code(exc) == "PreconditionFailed" or _status(exc) == 412


def get_with_etag(client: Any, bucket: str, key: str) -> tuple[bytes, str]:
    """The object's bytes and the ETag they were read with (for a later conditional write);
    :class:`ObjectNotFoundError` when it (or the bucket) is missing."""
    try:
        with _annotate(client, f"reading s3://{bucket}/{key}"):
            response = client.get_object(Bucket=bucket, Key=key)
            return response["Body"].read(), response["ETag"]
    except ClientError as exc:
        if _code(exc) in _NOT_FOUND_CODES or _code(exc) == "NoSuchBucket":
            raise ObjectNotFoundError(bucket, key, _code(exc)) from exc
        raise


def put_conditional(
    client: Any,
    bucket: str,
    key: str,
    data: bytes,
    *,
    if_match: str | None,
    content_type: str | None = None,
    conflict_retries: int = 5,
) -> str | None:
    """Write ``s3://bucket/key`` only if it still is what was read: ``If-Match: if_match`` (the
    ETag of the read), or, with ``if_match=None``, only if no object has that key
    (``If-None-Match: *``). Returns the new ETag, or None when the condition failed (HTTP 412:
    someone else wrote in between; re-read and decide again). Same caveat as
    :func:`put_if_absent`: a success whose response was lost is retried by boto3 and reported
    as None; a caller that re-reads sees its own write and has nothing left to do."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": data}
    kwargs.update({"IfMatch": if_match} if if_match is not None else {"IfNoneMatch": "*"})
    if content_type:
        kwargs["ContentType"] = content_type
    for attempt in range(conflict_retries + 1):
        try:
            with _annotate(client, f"writing s3://{bucket}/{key} if unchanged"):
                return client.put_object(**kwargs).get("ETag", "") or "?"
        except ClientError as exc:
            if _precondition_failed(exc):
                return None
            if _code(exc) == "ConditionalRequestConflict" and attempt < conflict_retries:
                time.sleep(0.1 * 2**attempt)
                continue
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def delete_if_match(client: Any, bucket: str, key: str, etag: str) -> bool:
    """Delete ``s3://bucket/key`` only if its ETag still is ``etag`` (``If-Match``). True when
    deleted, False when it changed (or vanished) since it was read."""
    try:
        with _annotate(client, f"deleting s3://{bucket}/{key} if unchanged"):
            client.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
        return True
    except ClientError as exc:
        if _precondition_failed(exc) or _code(exc) in _NOT_FOUND_CODES:
            return False
        raise


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``"s3://bucket/some/key"`` -> ``("bucket", "some/key")``; the key may be empty."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValueError(f"not an S3 URI (expected s3://bucket/key): {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"S3 URI has no bucket: {uri!r}")
    return bucket, key


class S3Unavailable(RuntimeError):
    """S3 cannot be used: no credentials, the endpoint does not answer, or it refuses them. The
    message is one line an operator can act on."""


SETUP_HINT = (
    "start the embedded server with `pinrec-ops ui` (or `python -m devstack.seaweedfs --data-dir "
    "var/seaweedfs --env-file var/s3.env`) and `source var/s3.env`, or set PINREC_S3_ENDPOINT_URL "
    "and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
)


def check_reachable(settings: S3Settings, timeout: float = 5.0) -> None:
    """Raise :class:`S3Unavailable` unless credentials exist and the endpoint answers with them."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    session = boto3.session.Session(
        aws_access_key_id=settings.access_key, aws_secret_access_key=settings.secret_key, region_name=settings.region
    )
    if session.get_credentials() is None:
        raise S3Unavailable(f"no S3 credentials in the environment: {SETUP_HINT}")
    client = session.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        config=Config(
            connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1}, s3={"addressing_style": "path"}
        ),
    )
    where = settings.endpoint_url or "AWS S3"
    try:
        client.list_objects_v2(Bucket=settings.bucket, MaxKeys=1)
    except (EndpointConnectionError, NoCredentialsError) as exc:
        raise S3Unavailable(f"S3 at {where} is not reachable ({type(exc).__name__}): {SETUP_HINT}") from None
    except ClientError as exc:
        if _code(exc) in ("NoSuchBucket",):
            return
        raise S3Unavailable(
            f"S3 at {where} refused the request ({_code(exc)}): check the credentials and "
            f"the bucket {settings.bucket!r}; {SETUP_HINT}"
        ) from None
    except BotoCoreError as exc:
        raise S3Unavailable(f"S3 at {where} is not usable ({type(exc).__name__}: {exc}): {SETUP_HINT}") from None
