"""``s3://bucket/key`` through two clients, each where it is best.

boto3 for single objects (JSON cards, pointers, locks), where conditional writes and precise
error codes matter; a ``pyarrow.fs`` filesystem for Ray (Ray Data readers and writers, Ray
Train checkpoints) and for reading many image files at once, where its C++ client and threads
outpace boto3. Both honour ``AWS_ENDPOINT_URL`` — boto3 by itself, pyarrow because it is passed
as ``endpoint_override`` (pyarrow does not read the variable) — so MinIO or any S3-compatible
store works unchanged. Credentials come only from the standard AWS chain; nothing here writes
them anywhere, and the pyarrow filesystem is built without keys, so pickling it into Ray
tasks carries none. Both retry transient errors ``MEDXFER_S3_RETRIES`` times.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from medxfer.errors import StorageError
from medxfer.storage.backend import Backend, NotFound, TooLarge, register


def split_s3(uri: str) -> tuple[str, str]:
    """``(bucket, key)``. Everything after the bucket is the key, as S3 has it: ``#`` and ``?`` are
    characters of a key (``scan#2.dcm``), not a URL's fragment or query."""
    bucket, _, key = uri[len("s3://"):].partition("/") if uri.startswith("s3://") else ("", "", "")
    if not bucket:
        raise StorageError(f"{uri}: not an s3://bucket/key URI")
    return bucket, key.lstrip("/")


#: Retries of transient errors (boto3's standard mode and pyarrow's retry strategy) before a StorageError.
DEFAULT_RETRIES = int(os.environ.get("MEDXFER_S3_RETRIES", "8"))


def _retries(retries: int | None) -> int:
    """The module's setting, read at call time so that a caller (a test) can lower it."""
    return DEFAULT_RETRIES if retries is None else retries


# ----------------------------------------------------------------------------- clients


def endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


@functools.lru_cache(maxsize=8)
def _s3_client_cached(endpoint: str | None, region: str, retries: int):
    import boto3
    from botocore.config import Config

    cfg = Config(
        retries={"max_attempts": retries + 1, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        s3={"addressing_style": "path"} if endpoint else {},
    )
    return boto3.session.Session().client("s3", region_name=region, endpoint_url=endpoint, config=cfg)


def s3_client(retries: int | None = None):
    """A boto3 S3 client using the standard credential chain and ``AWS_ENDPOINT_URL``."""
    return _s3_client_cached(endpoint_url(), _region(), _retries(retries))


def pyarrow_s3fs(retries: int | None = None):
    """A pyarrow S3 filesystem pointed at ``AWS_ENDPOINT_URL`` when set, without keys (see module doc)."""
    from pyarrow import fs as pafs

    kwargs: dict[str, Any] = {
        "region": _region(),
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=_retries(retries) + 1),
    }
    ep = endpoint_url()
    if ep:
        p = urlparse(ep)
        kwargs["endpoint_override"] = p.netloc or p.path
        kwargs["scheme"] = p.scheme or "https"
    return pafs.S3FileSystem(**kwargs)


# ----------------------------------------------------------------------------- errors


def s3_error(uri: str, e: Exception, action: str) -> StorageError:
    """A botocore error as a message that names the URI and what to do."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        EndpointConnectionError,
        NoCredentialsError,
    )

    ep = endpoint_url() or "the AWS S3 endpoint"
    if isinstance(e, NoCredentialsError):
        return StorageError(
            f"{uri}: no AWS credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE, or attach a workload identity"
        )
    if isinstance(e, (EndpointConnectionError, ConnectionClosedError)):
        return StorageError(
            f"{uri}: cannot reach the S3 endpoint {ep} while trying to {action}; check AWS_ENDPOINT_URL and the network"
        )
    if isinstance(e, ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return StorageError(f"{uri}: bucket does not exist; create it or fix the storage root")
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFound(f"{uri}: not found")
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(
                f"{uri}: access denied ({code}) while trying to {action}; check the credentials and the bucket policy"
            )
        return StorageError(f"{uri}: S3 error {code or status} from {ep} while trying to {action}: {e}")
    return StorageError(f"{uri}: could not {action}: {e}")


def _pyarrow_error(uri: str, e: Exception) -> StorageError:
    if isinstance(e, FileNotFoundError):
        return NotFound(f"{uri}: not found")
    return StorageError(f"{uri}: could not read: {type(e).__name__}: {str(e)[:300]}")


def _error_code(e: Exception) -> tuple[str, Any]:
    from botocore.exceptions import ClientError

    if not isinstance(e, ClientError):
        return "", None
    return str(e.response.get("Error", {}).get("Code", "")), e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


# ----------------------------------------------------------------------------- the backend


class S3Backend(Backend):
    #: S3 requests are latency-bound; boto3 holds the GIL for part of each, so more threads stop paying.
    io_threads = int(os.environ.get("MEDXFER_IO_THREADS", "8"))

    def read(self, uri: str) -> bytes:
        bucket, key = split_s3(uri)
        try:
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as e:  # noqa: BLE001 - translated into a named error
            raise s3_error(uri, e, "read") from None

    def read_head(self, uri: str, nbytes: int) -> bytes:
        bucket, key = split_s3(uri)
        try:
            obj = s3_client().get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{max(0, nbytes - 1)}")
            return obj["Body"].read()
        except Exception as e:  # noqa: BLE001
            raise s3_error(uri, e, "read") from None

    def read_at_most(self, uri: str, max_bytes: int) -> bytes:
        got = self.read_many([uri], max_bytes)[0]
        if isinstance(got, StorageError):
            raise got
        return got

    def read_many(self, uris_: Sequence[str], max_bytes: int | None = None) -> list[bytes | StorageError]:
        """Through one pyarrow filesystem, whose reads release the GIL, on ``io_threads`` threads.

        With ``max_bytes``, the object's size (pyarrow's HEAD on open, a request it makes anyway) is
        checked first and a larger object is a :class:`TooLarge` in its place, never downloaded."""
        fs = pyarrow_s3fs()

        def one(uri: str) -> bytes:
            bucket, key = split_s3(uri)
            try:
                with fs.open_input_file(f"{bucket}/{key}") as f:
                    if max_bytes is not None and f.size() > max_bytes:
                        raise TooLarge(uri, f.size(), max_bytes)
                    return f.read()
            except StorageError:
                raise
            except Exception as e:  # noqa: BLE001 - becomes this file's error
                raise _pyarrow_error(uri, e) from None

        return self.each(one, uris_)

    def write(self, uri: str, data: bytes) -> None:
        """A single PUT: S3 makes it visible whole or not at all."""
        bucket, key = split_s3(uri)
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        except Exception as e:  # noqa: BLE001
            raise s3_error(uri, e, "write") from None

    def put_if_absent(self, uri: str, data: bytes) -> bool:
        """``PutObject`` with ``If-None-Match: *``; a 412 means someone else won."""
        bucket, key = split_s3(uri)
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except Exception as e:  # noqa: BLE001
            code, status = _error_code(e)
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                # A retried PUT whose first reply was lost sees its own object: that is a win.
                # Callers write unique payloads (owner, time, uuid), so equal bytes mean "mine".
                try:
                    return self.read(uri) == data
                except StorageError:
                    return False
            raise s3_error(uri, e, "create") from None

    def delete(self, uri: str, recursive: bool = False) -> None:
        bucket, key = split_s3(uri)
        keys = self._keys(uri)[1] if recursive else [key]  # folder markers too
        try:
            for i in range(0, len(keys), 1000):
                batch = [{"Key": k} for k in keys[i : i + 1000]]
                if batch:
                    s3_client().delete_objects(Bucket=bucket, Delete={"Objects": batch})
        except Exception as e:  # noqa: BLE001
            raise s3_error(uri, e, "delete") from None

    def exists(self, uri: str) -> bool:
        bucket, key = split_s3(uri)
        try:
            s3_client().head_object(Bucket=bucket, Key=key)
            return True
        except Exception as e:  # noqa: BLE001
            if _error_code(e)[0] not in ("404", "NoSuchKey", "NotFound"):
                raise s3_error(uri, e, "check") from None
        return self.is_dir(uri)

    def is_dir(self, uri: str) -> bool:
        """Any object under the prefix: S3 has no folders, only names with '/' in them."""
        bucket, key = split_s3(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        try:
            return s3_client().list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0) > 0
        except Exception as e:  # noqa: BLE001
            raise s3_error(uri, e, "check") from None

    def missing(self, uris_: Sequence[str]) -> list[str]:
        """One listing per bucket, under the keys' common folder, not one request per file."""
        by_bucket: dict[str, list[str]] = {}
        for u in uris_:
            b, k = split_s3(u)
            by_bucket.setdefault(b, []).append(k)
        out = []
        for b, keys in by_bucket.items():
            prefix = os.path.commonprefix(keys)
            prefix = prefix[: prefix.rfind("/")] if "/" in prefix else ""
            have = {split_s3(u)[1] for u in self.list_files(f"s3://{b}/{prefix}".rstrip("/"))}
            out.extend(f"s3://{b}/{k}" for k in keys if k not in have)
        return out

    def _pages(self, uri: str, **kwargs):
        bucket, key = split_s3(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        try:
            paginator = s3_client().get_paginator("list_objects_v2")
            return bucket, prefix, list(paginator.paginate(Bucket=bucket, Prefix=prefix, **kwargs))
        except Exception as e:  # noqa: BLE001
            raise s3_error(uri, e, "list") from None

    def _keys(self, uri: str) -> tuple[str, list[str]]:
        """``(bucket, every key under uri)``, folder markers included."""
        bucket, _, pages = self._pages(uri)
        return bucket, [o["Key"] for page in pages for o in page.get("Contents", [])]

    def list_files(self, uri: str) -> list[str]:
        """Every object under ``uri`` but folder markers: the empty ``name/`` objects that the S3
        console's "Create folder" and some sync tools write, which are no files."""
        bucket, keys = self._keys(uri)
        return sorted(f"s3://{bucket}/{k}" for k in keys if not k.endswith("/"))

    def list_dir(self, uri: str) -> list[str]:
        _, prefix, pages = self._pages(uri, Delimiter="/")
        names: set[str] = set()
        for page in pages:
            names.update(c["Prefix"][len(prefix):].rstrip("/") for c in page.get("CommonPrefixes", []))
            names.update(o["Key"][len(prefix):] for o in page.get("Contents", []))
        return sorted(n for n in names if n)

    def pyarrow_fs(self, uri: str):
        bucket, key = split_s3(uri)
        return pyarrow_s3fs(), f"{bucket}/{key}".rstrip("/")


register("s3", S3Backend())
