"""Storage for pinrec-ops: S3 through boto3, and local files written atomically.

`storage.s3` holds the configuration (:class:`~storage.s3.S3Settings`, read from the
environment, never from code) and small boto3 helpers; `storage.files` writes local files so
that readers never see a torn one. The local S3 server of the embedded default lives in
`devstack.seaweedfs`. Nothing in this package imports dagster.
"""

from storage.s3 import (
    ObjectNotFoundError,
    S3Settings,
    delete_if_match,
    download_file,
    ensure_bucket,
    get_bytes,
    get_with_etag,
    list_keys,
    make_client,
    object_exists,
    parse_s3_uri,
    put_bytes,
    put_conditional,
    put_if_absent,
    upload_file,
)

__all__ = [
    "ObjectNotFoundError",
    "S3Settings",
    "delete_if_match",
    "download_file",
    "ensure_bucket",
    "get_bytes",
    "get_with_etag",
    "list_keys",
    "make_client",
    "object_exists",
    "parse_s3_uri",
    "put_bytes",
    "put_conditional",
    "put_if_absent",
    "upload_file",
]
