"""One storage layer for local folders and ``s3://bucket/prefix`` URIs.

Two clients, each where it is best: a ``pyarrow.fs`` filesystem for Ray (Ray Data reads and
Ray Train checkpoints take it directly) and boto3 for small objects (JSON cards, pointers,
locks), where conditional writes matter. Both honour ``AWS_ENDPOINT_URL`` — boto3 by itself,
pyarrow because we pass ``endpoint_override`` (pyarrow does not read the variable) — so MinIO
or any S3-compatible store works unchanged. Credentials come only from the standard AWS
chain; nothing here writes them anywhere.

Small writes are atomic: write-then-rename locally, a single PUT on S3, so a reader never
sees half a file. Every failure becomes a :class:`StorageError` naming the URI and the cause.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from medxfer.errors import StorageError

DEFAULT_RETRIES = int(os.environ.get("MEDXFER_S3_RETRIES", "8"))


# ----------------------------------------------------------------------------- URIs


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def _local(uri: str) -> str:
    u = str(uri)
    return u[len("file://"):] if u.startswith("file://") else u


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI or a local path."""
    base = str(uri)
    if is_remote(base):
        out = base.rstrip("/")
        for p in parts:
            p = str(p).strip("/")
            if p:
                out = f"{out}/{p}"
        return out
    return str(Path(_local(base), *[str(p) for p in parts]))


def parent(uri: str) -> str:
    u = str(uri).rstrip("/")
    if is_remote(u):
        scheme, rest = u.split("://", 1)
        if "/" not in rest:
            return u
        return f"{scheme}://{rest.rsplit('/', 1)[0]}"
    return str(Path(_local(u)).parent)


def basename(uri: str) -> str:
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


def normalize(uri: str) -> str:
    """Absolute local paths (so Ray workers in other folders agree); remote URIs unchanged."""
    return str(uri).rstrip("/") if is_remote(uri) else os.path.abspath(_local(uri))


def split_s3(uri: str) -> tuple[str, str]:
    p = urlparse(uri)
    if p.scheme != "s3" or not p.netloc:
        raise StorageError(f"{uri}: not an s3://bucket/key URI")
    return p.netloc, p.path.lstrip("/")


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
    return _s3_client_cached(endpoint_url(), _region(), DEFAULT_RETRIES if retries is None else retries)


def pyarrow_s3fs(retries: int | None = None):
    """A pyarrow S3 filesystem pointed at ``AWS_ENDPOINT_URL`` when set (pyarrow won't read it).

    No keys are passed: this object is pickled into Ray Data tasks and Ray Train's run config,
    and a filesystem built with explicit keys carries the secret inside it. Built from the
    standard AWS credential chain instead, it pickles only its settings, and each worker that
    unpickles it resolves credentials from its own environment (pod Secret, workload identity).
    """
    from pyarrow import fs as pafs

    kwargs: dict[str, Any] = {
        "region": _region(),
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(
            max_attempts=(DEFAULT_RETRIES if retries is None else retries) + 1
        ),
    }
    ep = endpoint_url()
    if ep:
        p = urlparse(ep)
        kwargs["endpoint_override"] = p.netloc or p.path
        kwargs["scheme"] = p.scheme or "https"
    return pafs.S3FileSystem(**kwargs)


def pyarrow_fs(uri: str):
    """``(filesystem, path)`` for Ray: Ray Data readers/writers and ``RunConfig.storage_filesystem``."""
    from pyarrow import fs as pafs

    if is_s3(uri):
        bucket, key = split_s3(uri)
        return pyarrow_s3fs(), f"{bucket}/{key}".rstrip("/")
    if is_remote(uri):
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path
    return pafs.LocalFileSystem(), os.path.abspath(_local(uri))


# ----------------------------------------------------------------------------- errors


def _s3_error(uri: str, e: Exception, action: str) -> StorageError:
    """Translate a botocore error into a message that names the URI and what to do."""
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
            f"{uri}: cannot reach the S3 endpoint {ep} while trying to {action}; check "
            "AWS_ENDPOINT_URL and the network"
        )
    if isinstance(e, ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return StorageError(f"{uri}: bucket does not exist; create it or fix the storage root")
        if code in ("NoSuchKey", "404", "NotFound"):
            return StorageError(f"{uri}: not found")
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(
                f"{uri}: access denied ({code}) while trying to {action}; check the credentials "
                "and the bucket policy"
            )
        return StorageError(f"{uri}: S3 error {code or status} from {ep} while trying to {action}: {e}")
    return StorageError(f"{uri}: could not {action}: {e}")


def _local_error(uri: str, e: OSError, action: str) -> StorageError:
    if isinstance(e, FileNotFoundError):
        return StorageError(f"{uri}: not found")
    if isinstance(e, PermissionError):
        return StorageError(f"{uri}: permission denied while trying to {action}")
    if getattr(e, "errno", None) == 28:
        return StorageError(f"{uri}: no space left on device while trying to {action}; free space")
    return StorageError(f"{uri}: could not {action}: {e.strerror or e}")


# ----------------------------------------------------------------------------- small objects


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as e:  # noqa: BLE001 - translated into a named error
            raise _s3_error(uri, e, "read") from None
    if is_remote(uri):
        fs, path = pyarrow_fs(uri)
        with fs.open_input_stream(path) as f:
            return f.read()
    try:
        return Path(_local(uri)).read_bytes()
    except OSError as e:
        raise _local_error(uri, e, "read") from None


def write_bytes(uri: str, data: bytes) -> None:
    """Write atomically: a temp file renamed into place locally, a single PUT on S3."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        except Exception as e:  # noqa: BLE001
            raise _s3_error(uri, e, "write") from None
        return
    path = Path(_local(uri))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as e:
        raise _local_error(uri, e, "write") from None


def put_if_absent(uri: str, data: bytes) -> bool:
    """Create ``uri`` only if it does not exist; True if this call created it.

    The primitive behind registry promotion and run locks: two writers racing for the same
    name cannot both win. Local: ``os.link`` of a finished temp file (atomic, exclusive).
    S3: ``PutObject`` with ``If-None-Match: *`` (a 412 means someone else won).
    """
    if is_s3(uri):
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        try:
            s3_client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                # A retried PUT whose first reply was lost sees its own object: that is a win.
                # Callers write unique payloads (owner, time, uuid), so equal bytes mean "mine".
                try:
                    return read_bytes(uri) == data
                except StorageError:
                    return False
            raise _s3_error(uri, e, "create") from None
        except Exception as e:  # noqa: BLE001
            raise _s3_error(uri, e, "create") from None
    path = Path(_local(uri))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
        finally:
            os.unlink(tmp)
    except OSError as e:
        raise _local_error(uri, e, "create") from None


def read_head(uri: str, nbytes: int) -> bytes:
    """The first ``nbytes`` of an object (all of it when smaller): enough for an image header."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        try:
            obj = s3_client().get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{max(0, nbytes - 1)}")
            return obj["Body"].read()
        except Exception as e:  # noqa: BLE001
            raise _s3_error(uri, e, "read") from None
    if is_remote(uri):
        fs, path = pyarrow_fs(uri)
        with fs.open_input_stream(path) as f:
            return f.read(nbytes)
    try:
        with open(_local(uri), "rb") as f:
            return f.read(nbytes)
    except OSError as e:
        raise _local_error(uri, e, "read") from None


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_json(uri: str) -> Any:
    raw = read_bytes(uri)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise StorageError(f"{uri}: not valid JSON ({e.msg} at line {e.lineno})") from None


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode("utf-8"))


def exists(uri: str) -> bool:
    if is_s3(uri):
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        try:
            s3_client().head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                # Maybe a "folder": any object under the prefix.
                try:
                    r = s3_client().list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1)
                except Exception as e2:  # noqa: BLE001
                    raise _s3_error(uri, e2, "check") from None
                return r.get("KeyCount", 0) > 0
            raise _s3_error(uri, e, "check") from None
        except Exception as e:  # noqa: BLE001
            raise _s3_error(uri, e, "check") from None
    return os.path.exists(_local(uri))


def list_files(uri: str) -> list[str]:
    """All files under ``uri`` (recursive), as full URIs/paths, sorted."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        out: list[str] = []
        try:
            pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                out.extend(f"s3://{bucket}/{o['Key']}" for o in page.get("Contents", []))
        except Exception as e:  # noqa: BLE001
            raise _s3_error(uri, e, "list") from None
        return sorted(out)
    root = Path(_local(uri))
    if not root.exists():
        return []
    return sorted(str(p) for p in root.rglob("*") if p.is_file())


def list_dir(uri: str) -> list[str]:
    """Immediate children names (files and 'folders') under ``uri``."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        names: set[str] = set()
        try:
            pages = s3_client().get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix, Delimiter="/"
            )
            for page in pages:
                names.update(c["Prefix"][len(prefix):].rstrip("/") for c in page.get("CommonPrefixes", []))
                names.update(o["Key"][len(prefix):] for o in page.get("Contents", []))
        except Exception as e:  # noqa: BLE001
            raise _s3_error(uri, e, "list") from None
        return sorted(n for n in names if n)
    p = Path(_local(uri))
    return sorted(c.name for c in p.iterdir()) if p.is_dir() else []


def delete(uri: str, recursive: bool = False) -> None:
    if is_s3(uri):
        bucket, key = split_s3(uri)
        keys = [split_s3(u)[1] for u in list_files(uri)] if recursive else [key]
        try:
            for i in range(0, len(keys), 1000):
                batch = [{"Key": k} for k in keys[i : i + 1000]]
                if batch:
                    s3_client().delete_objects(Bucket=bucket, Delete={"Objects": batch})
        except Exception as e:  # noqa: BLE001
            raise _s3_error(uri, e, "delete") from None
        return
    p = Path(_local(uri))
    try:
        if p.is_dir() and recursive:
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    except OSError as e:
        raise _local_error(uri, e, "delete") from None


def inside(path: str, real_root: str) -> bool:
    """Whether local ``path``, symlinks resolved, is ``real_root`` or lies under it (already resolved)."""
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def links_leaving(root: str, files: list[str]) -> list[str]:
    """The local ``files`` under ``root`` that are symlinks (or inside linked folders) leading outside it.

    Listing a folder follows file symlinks, so a tree can name any file the process may read;
    callers that copy or list a tree drop or refuse these. Remote trees have no links: [].
    """
    if is_remote(root):
        return []
    real_root = os.path.realpath(_local(root))
    return [f for f in files if not inside(f, real_root)]


def _relative_names(src: str, files: list[str]) -> list[tuple[str, str]]:
    """``(file, name relative to src)`` pairs, refusing any name that could land outside a destination.

    S3 keys are plain strings: ``b/../../x``, ``b//etc/x`` and ``b/./x`` are valid keys, and a local
    destination would resolve them to places outside itself. Only names made of ordinary parts pass;
    folder markers (keys ending in '/') carry no file and are left out.
    """
    remote = is_remote(src)
    prefix = src.rstrip("/") if remote else _local(src)
    pairs: list[tuple[str, str]] = []
    bad: list[str] = []
    for f in files:
        rel = f[len(prefix) + 1:] if remote else os.path.relpath(f, prefix).replace(os.sep, "/")
        if remote and rel.endswith("/"):
            continue
        if any(part in ("", ".", "..") for part in rel.split("/")):
            bad.append(f)
        pairs.append((f, rel))
    if bad:
        raise StorageError(
            f"{src}: {len(bad)} name(s) would leave the destination when copied, e.g. {bad[0]!r}; "
            "nothing was copied. Remove those objects (names with '..', '.' or empty parts)"
        )
    return pairs


def copy_tree(src: str, dst: str) -> None:
    """Copy every file under ``src`` to the same relative place under ``dst`` (any mix of backends).

    Everything is checked before the first write, so a refused tree leaves ``dst`` untouched:
    every name must stay inside ``dst``, and a local source may not hold symlinks leading outside
    it (a bundle's ``notes.txt`` linked to a file elsewhere would copy that file's contents).
    """
    files = list_files(src)
    outside = links_leaving(src, files)
    if outside:
        raise StorageError(
            f"{src}: {len(outside)} symlink(s) lead outside the folder, e.g. {outside[0]}; nothing was "
            "copied. Replace the links with the files, or remove them"
        )
    for f, rel in _relative_names(src, files):
        write_bytes(join(dst, rel), read_bytes(f))


def makedirs(uri: str) -> None:
    if not is_remote(uri):
        try:
            Path(_local(uri)).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _local_error(uri, e, "create the folder") from None


def check_writable(uri: str) -> None:
    """Fail early, with the cause, when the storage root cannot be written (bucket missing, no access)."""
    probe = join(uri, f".medxfer-probe-{uuid.uuid4().hex}")
    write_bytes(probe, b"ok")
    delete(probe)


def iter_lines(uri: str) -> Iterator[str]:
    yield from read_text(uri).splitlines()


# ----------------------------------------------------------------------------- layout


class Layout:
    """The storage layout under one root: datasets/, cache/, runs/, registry/."""

    def __init__(self, root: str):
        self.root = normalize(root)

    def dataset(self, name: str) -> str:
        return join(self.root, "datasets", name)

    def cache(self, key: str = "") -> str:
        return join(self.root, "cache", key) if key else join(self.root, "cache")

    def runs(self) -> str:
        return join(self.root, "runs")

    def run(self, name: str) -> str:
        return join(self.root, "runs", name)

    def registry(self, model_name: str = "") -> str:
        return join(self.root, "registry", model_name) if model_name else join(self.root, "registry")
