"""S3-compatible object storage (AWS S3, MinIO, Backblaze B2, Cloudflare R2, Wasabi, Ceph,
``rclone serve s3``) through boto3.

* Credentials, region and endpoint come from boto3's default chain (``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``~/.aws/config``, SSO, instance roles, ...) unless
  given explicitly; the endpoint also from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``.
* Objects up to ``multipart_threshold`` bytes go up in one ``PutObject``; larger ones as a
  multipart upload whose parts are uploaded by a small thread pool, with at most
  ``part_size * concurrency`` bytes buffered per :class:`S3Storage` whatever the number of
  concurrent puts.
* Multipart uploads resume: ``put`` first looks for an interrupted upload of the same key and
  reuses every part whose size and MD5 match the caller's bytes (objects are content-addressed
  and written once, so one key means one content). :meth:`S3Storage.cleanup_incomplete` aborts
  stale uploads.
* Integrity: the bytes read from the caller are checked against ``size`` and ``sha256`` before
  the object is committed (an upload that does not match is never completed); every request
  carries ``Content-MD5``, which the server verifies; after the upload a ``HeadObject`` checks the
  stored size and, where the ETag is an MD5 (or the MD5 of the parts' MD5s), the checksum. On a
  mismatch the object is deleted and :class:`StorageError` raised.
* Write-once: ``HeadObject`` before the upload, plus ``If-None-Match: *`` on the final request
  where the server honours it (AWS since 2024, MinIO, R2); servers that ignore it leave a small
  race window between two writers of the same name, harmless for content-addressed objects.
* Retries are left to :class:`~e2ebackup.storage.wrappers.RetryingStorage` (botocore's own
  retries are off unless ``sdk_retries`` says otherwise): every transient failure surfaces as
  :class:`StorageUnavailable`, and a retried multipart put resumes where it stopped.

Besides the :class:`Storage` interface, :meth:`S3Storage.upload` writes one object at any
relative path (:func:`check_key_path`), streamed and made visible only when complete: what
restoring a snapshot into a bucket as plain objects (:mod:`e2ebackup.dask.restore_s3`) writes.

boto3 is imported lazily: ``pip install 'e2ebackup[s3]'`` is needed only to use this backend.
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import datetime as _dt
import hashlib
import io
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from e2ebackup.errors import (
    InvalidArgument,
    ObjectExists,
    ObjectNotFound,
    ObjectTooLarge,
    StorageAuthError,
    StorageDataMismatch,
    StorageError,
    StorageFull,
    StoragePermissionDenied,
    StorageUnavailable,
)
from e2ebackup.storage.base import BLOCK, ObjectInfo, Storage, check_name, valid_name

__all__ = ["MAX_KEY_BYTES", "MIN_PART_SIZE", "S3Storage", "StreamUpload", "check_key_path"]

log = logging.getLogger("e2ebackup.storage.s3")

MIB = 1 << 20
#: S3's smallest part (every part but the last).
MIN_PART_SIZE = 5 * MIB
#: S3's largest part and largest number of parts.
MAX_PART_SIZE = 5 << 30
MAX_PARTS = 10_000

_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}
_AUTH = {
    "AccessDenied",
    "AccountProblem",
    "AllAccessDisabled",
    "AuthorizationHeaderMalformed",
    "ExpiredToken",
    "Forbidden",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "InvalidSecurity",
    "InvalidToken",
    "MissingSecurityHeader",
    "NoSuchBucket",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
    "Unauthorized",
    "401",
    "403",
}
_TRANSIENT = {
    "BadDigest",  # the body was damaged on the way: sending it again fixes it
    "BandwidthLimitExceeded",
    "ConditionalRequestConflict",
    "InternalError",
    "OperationAborted",
    "RequestLimitExceeded",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
    "XAmzContentSHA256Mismatch",
}
_FULL = {"QuotaExceeded", "StorageQuotaExceeded", "XMinioStorageFull", "InsufficientStorage"}
_HEX_MD5 = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-[0-9]+$")
_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+|\*)")
#: The longest key S3 takes, in bytes of UTF-8.
MAX_KEY_BYTES = 1024
# Control characters: S3 takes them in keys, but listings (XML 1.0) cannot carry most of them.
_KEY_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def check_key_path(path: str) -> str:
    """``path`` if it can be the relative part of a key below a prefix: names joined by "/",
    none empty, ``.`` or ``..`` (so no leading "/"), valid UTF-8 (a name kept through surrogate
    escapes is not), no control character, at most ``MAX_KEY_BYTES``; else InvalidArgument.
    Unlike :func:`~e2ebackup.storage.base.check_name` (the repository's own objects), any other
    character is allowed: these are the paths of restored files."""
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidArgument(f"{path!r} is not a relative path of names")
    if _KEY_UNSAFE.search(path):
        raise InvalidArgument(f"{path!r} holds a control character")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{path!r} is not valid UTF-8") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise InvalidArgument(f"{path[:40]!r}...: longer than {MAX_KEY_BYTES} bytes")
    return path


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _read_full(data: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at the end of the stream."""
    if n <= 0:
        return b""
    first = data.read(n)
    if len(first) == n or not first:
        return first
    parts = [first]
    got = len(first)
    while got < n:
        block = data.read(min(n - got, 4 * BLOCK))
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


@dataclass(frozen=True)
class _Part:
    size: int
    etag: str  # without quotes, lower case


class _Body(io.RawIOBase):
    """The body of a GetObject response as a file object: errors while streaming become
    :class:`StorageError`, and a body that ends early is :class:`StorageUnavailable`."""

    def __init__(
        self,
        body: Any,
        expected: int,
        what: str,
        translate: Callable[[Exception, str], StorageError],
        skip: int = 0,
    ) -> None:
        super().__init__()
        self._body = body
        self._left = expected
        self._what = what
        self._translate = translate
        self._skip = skip  # bytes to drop first (a server that ignored the Range header)

    def readable(self) -> bool:
        return True

    def _raw(self, n: int) -> bytes:
        try:
            return cast(bytes, self._body.read(n))
        except StorageError:
            raise
        except Exception as e:
            raise self._translate(e, self._what) from None

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        while self._skip:
            dropped = self._raw(min(self._skip, 4 * BLOCK))
            if not dropped:
                break
            self._skip -= len(dropped)
        n = min(size, self._left)
        if n == 0:
            return b""
        data = self._raw(n)
        if not data:
            raise StorageUnavailable(
                f"{self._what}: the connection ended {self._left} bytes before the end"
            )
        self._left -= len(data)
        return data

    def readall(self) -> bytes:
        chunks = []
        while block := self.read(4 * BLOCK):
            chunks.append(block)
        return b"".join(chunks)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                self._body.close()
        super().close()


_loader: Any = None
_loader_lock = threading.Lock()


def _new_session(**kwargs: Any) -> Any:
    """A boto3 session sharing botocore's data loader with the sessions made before: loading
    the S3 service model takes ~50 ms, a fresh session with a warm loader ~5 ms. (Sessions are
    not shared: each resolves credentials and region from the environment of its time.)"""
    import boto3.session
    import botocore.session

    global _loader
    with _loader_lock:
        core = botocore.session.get_session()
        if _loader is None:
            _loader = core.get_component("data_loader")
        else:
            core.register_component("data_loader", _loader)
        session = boto3.session.Session(botocore_session=core, **kwargs)
        # boto3 appends its own data folder to the (shared) loader's search path every time.
        paths = _loader.search_paths
        paths[:] = list(dict.fromkeys(paths))
        return session


class S3Storage(Storage):
    """Objects under ``prefix`` in an S3 bucket.

    ``endpoint_url`` selects an S3-compatible service (``https://s3.eu-central-003.
    backblazeb2.com``, ``https://<account>.r2.cloudflarestorage.com``, ``http://127.0.0.1:9000``,
    ...); without it, ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` or AWS itself. Explicit
    credentials are optional: boto3's default chain applies otherwise.

    ``multipart_threshold``: larger objects use multipart uploads of ``part_size`` bytes (grown
    if needed to stay within 10,000 parts), ``concurrency`` parts at a time. ``sdk_retries``:
    botocore's own retries per request (default 0: :class:`RetryingStorage` retries).
    ``if_none_match``: send ``If-None-Match: *`` (turned off by itself if the server refuses
    it). ``verify_etag``: compare the stored object's ETag with the MD5 of the bytes sent (only
    when the ETag has the form of one, and never for SSE-KMS or SSE-C objects, whose ETags are
    not MD5s). ``sign_payload``: include the SHA-256 of every body in the request signature
    (default off: bodies carry Content-MD5, which the server checks, as rclone does; see
    docs/STORAGE.md). ``page_size``: keys per listing request.
    """

    # Remote stores hide their latency behind more uploads at once.
    upload_concurrency = 4

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        profile_name: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
        addressing_style: str | None = None,
        multipart_threshold: int = 8 * MIB,
        part_size: int = 8 * MIB,
        concurrency: int = 4,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        verify_tls: bool | str | None = None,
        sdk_retries: int = 0,
        if_none_match: bool = True,
        verify_etag: bool = True,
        sign_payload: bool = False,
        page_size: int = 1000,
    ) -> None:
        if not bucket or "/" in bucket:
            raise InvalidArgument(f"invalid bucket name {bucket!r}")
        prefix = prefix.strip("/")
        if prefix:
            check_name(prefix)
        if multipart_threshold < 0:
            raise InvalidArgument("multipart_threshold must not be negative")
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise InvalidArgument(
                f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes"
            )
        if concurrency < 1 or sdk_retries < 0 or not 1 <= page_size <= 1000:
            raise InvalidArgument("concurrency >= 1, sdk_retries >= 0, 1 <= page_size <= 1000")
        try:
            from botocore.config import Config
        except ImportError:  # pragma: no cover - depends on the installation
            raise StorageError("the S3 backend needs boto3: pip install 'e2ebackup[s3]'") from None

        self.bucket = bucket
        self.prefix = prefix + "/" if prefix else ""
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.concurrency = concurrency
        self.page_size = page_size
        self.verify_etag = verify_etag
        self._if_none_match = if_none_match
        endpoint_url = (
            endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )
        # Secrets we know of, scrubbed from every message (belt and braces: none of ours
        # include them, but text from the SDK or a server is passed through in places).
        self._secrets = [
            s
            for s in (
                aws_secret_access_key,
                aws_session_token,
                os.environ.get("AWS_SECRET_ACCESS_KEY"),
                os.environ.get("AWS_SESSION_TOKEN"),
            )
            if s and len(s) >= 4
        ]
        key_id = aws_access_key_id or os.environ.get("AWS_ACCESS_KEY_ID")
        self._key_hint = f"access key {key_id[:4]}...{key_id[-2:]}" if key_id else "credentials"
        where = f" at {re.sub(r'://[^/@]*@', '://', endpoint_url)}" if endpoint_url else ""
        self.location = f"s3://{bucket}/{prefix}{where}"
        self._bucket_ok = False

        try:
            session = _new_session(
                aws_access_key_id=aws_access_key_id,
                aws_secret_access_key=aws_secret_access_key,
                aws_session_token=aws_session_token,
                region_name=region_name,
                profile_name=profile_name,
            )
        except Exception as e:
            raise self._translate(e, "configure") from None
        if addressing_style is None and endpoint_url is not None:
            # Self-hosted and most third-party services want path-style URLs.
            addressing_style = "path"
        config: dict[str, Any] = {
            "signature_version": "s3v4",
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "retries": {"mode": "standard", "total_max_attempts": 1 + sdk_retries},
            "max_pool_connections": max(16, 2 * concurrency + 8),
            "tcp_keepalive": True,
            "user_agent_extra": "e2ebackup",
        }
        # Bodies are protected by Content-MD5 (checked by the server) rather than by a SHA-256
        # in the signature, as rclone does: hashing every byte once more costs more CPU than
        # the whole upload on a small machine, and e2ebackup authenticates what it reads back.
        # Over HTTPS botocore skips it anyway; sign_payload=True forces it.
        s3_options: dict[str, Any] = {"payload_signing_enabled": sign_payload}
        if addressing_style is not None:
            s3_options["addressing_style"] = addressing_style
        config["s3"] = s3_options
        if session.region_name is None and endpoint_url is not None:
            config["region_name"] = "us-east-1"
        try:
            # boto3 >= 1.36 sends CRC checksums (sometimes as aws-chunked trailers) that several
            # S3-compatible servers refuse, and validates response checksums, which fails on
            # ranged GETs from some of them: Content-MD5 below does the job everywhere, and
            # e2ebackup authenticates every byte it reads with its AEAD anyway.
            cfg = Config(
                **config,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
        except TypeError:  # pragma: no cover - boto3 < 1.36 has neither setting nor the need
            cfg = Config(**config)
        try:
            self._client: Any = session.client(
                "s3", endpoint_url=endpoint_url, config=cfg, verify=verify_tls
            )
        except Exception as e:
            raise self._translate(e, "connect") from None
        self.endpoint_url: str = self._client.meta.endpoint_url
        # At most `concurrency` parts buffered (and uploading) at once, across all puts.
        self._buffers = threading.BoundedSemaphore(concurrency)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        #: Counters (for tests, benchmarks and logs): parts sent, parts reused from an
        #: interrupted upload, multipart uploads resumed.
        self.parts_uploaded = 0
        self.parts_reused = 0
        self.uploads_resumed = 0

    # ------------------------------------------------------------------ helpers

    def _key(self, name: str) -> str:
        return self.prefix + check_name(name)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _translate(self, e: Exception, what: str) -> StorageError:
        """An SDK or connection error as a :class:`StorageError` (never with a secret in it)."""
        from botocore import exceptions as bx

        loc = self.location
        if isinstance(e, StorageError):
            return e
        if isinstance(e, bx.ClientError):
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            detail = f"{code or 'error'} (HTTP {status})" if status else code or "error"
            if code == "NoSuchBucket":
                return StorageAuthError(
                    f"{loc}: bucket {self.bucket!r} does not exist (check the bucket name, "
                    "the endpoint and the region)"
                )
            if code in _NOT_FOUND or status == 404:
                return ObjectNotFound(f"{loc}: no such object: {what}")
            if code in ("PreconditionFailed", "412") or status == 412:
                return ObjectExists(f"{loc}: {what}: the object already exists")
            if code in _TRANSIENT or status >= 500 or status == 429:
                return StorageUnavailable(self._scrub(f"{loc}: {what}: {detail}"))
            if code in _FULL or status == 507:
                return StorageFull(f"{loc}: {what}: no space left ({detail})")
            if code in _AUTH or status in (401, 403):
                if code == "AccessDenied" and status == 403 and self._bucket_ok:
                    # The credentials work (the bucket answered before): this object or
                    # operation is what the policy refuses.
                    return StoragePermissionDenied(f"{loc}: {what}: access denied")
                return StorageAuthError(
                    f"{loc}: the server refused the {self._key_hint} ({detail}): check the "
                    "access key, the secret key, the bucket's permissions and the endpoint"
                )
            return StorageError(self._scrub(f"{loc}: {what}: {detail}"))
        if isinstance(e, bx.NoCredentialsError | bx.PartialCredentialsError):
            return StorageAuthError(
                f"{loc}: no S3 credentials found: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or ~/.aws/credentials"
            )
        if isinstance(e, bx.CredentialRetrievalError | bx.TokenRetrievalError):
            return StorageAuthError(f"{loc}: could not obtain S3 credentials ({type(e).__name__})")
        if isinstance(e, bx.ProfileNotFound | bx.NoRegionError | bx.InvalidConfigError):
            return StorageError(self._scrub(f"{loc}: S3 configuration: {e}"))
        if isinstance(
            e,
            bx.ConnectionError
            | bx.HTTPClientError
            | bx.IncompleteReadError
            | bx.ResponseStreamingError
            | OSError,
        ):
            return StorageUnavailable(self._scrub(f"{loc}: {what}: {type(e).__name__}: {e}"))
        try:
            import urllib3.exceptions

            if isinstance(e, urllib3.exceptions.HTTPError):
                return StorageUnavailable(self._scrub(f"{loc}: {what}: {type(e).__name__}: {e}"))
        except ImportError:  # pragma: no cover
            pass
        return StorageError(self._scrub(f"{loc}: {what}: {type(e).__name__}: {e}"))

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as e:
            raise self._translate(e, what) from None

    def _check_bucket(self) -> None:
        """A 404 from HeadObject cannot tell a missing object from a missing bucket: the first
        one is followed by a HeadBucket (then remembered)."""
        if self._bucket_ok:
            return
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except Exception as e:
            err = self._translate(e, "bucket")
            if isinstance(err, ObjectNotFound):
                raise StorageAuthError(
                    f"{self.location}: bucket {self.bucket!r} does not exist (check the bucket "
                    "name, the endpoint and the region)"
                ) from None
            raise err from None
        self._bucket_ok = True

    def _head(self, key: str, name: str) -> dict[str, Any] | None:
        """HeadObject, or None if the object does not exist."""
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        except Exception as e:
            err = self._translate(e, name)
            if isinstance(err, ObjectNotFound):
                self._check_bucket()
                return None
            raise err from None
        self._bucket_ok = True
        return cast(dict[str, Any], head)

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.concurrency, thread_name_prefix="e2ebackup-s3"
                )
            return self._executor

    def _count(self, attr: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, attr, getattr(self, attr) + n)

    # ------------------------------------------------------------------ the interface

    def put(self, name: str, data: BinaryIO, *, size: int, sha256: bytes) -> None:
        key = self._key(name)
        if size < 0:
            raise InvalidArgument("size must not be negative")
        if self._head(key, name) is not None:
            raise ObjectExists(f"{name} already exists in {self.location}")
        try:
            if size > self.multipart_threshold:
                etag = self._put_multipart(name, key, data, size, sha256)
            else:
                etag = self._put_single(name, key, data, size, sha256)
        except StorageDataMismatch:
            raise StorageDataMismatch(
                f"{self.location}: {name}: the data does not match the expected {size} bytes "
                "and checksum; not stored"
            ) from None
        self._verify(name, key, size, etag)

    def _conditional(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """``fn`` with ``If-None-Match: *`` where the server takes it."""
        if self._if_none_match:
            try:
                return fn(IfNoneMatch="*", **kwargs)
            except Exception as e:
                from botocore import exceptions as bx

                code = ""
                status = 0
                if isinstance(e, bx.ClientError):
                    code = str(e.response.get("Error", {}).get("Code", ""))
                    status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
                if not (code == "NotImplemented" or status == 501):
                    raise self._translate(e, what) from None
                log.info("%s does not support If-None-Match; not sending it", self.location)
                self._if_none_match = False
        return self._call(what, fn, **kwargs)

    def _put_single(self, name: str, key: str, data: BinaryIO, size: int, sha256: bytes) -> str:
        try:
            body = _read_full(data, size + 1)
        except OSError as e:
            raise StorageError(f"{name}: reading the data to upload failed: {e}") from None
        if len(body) != size or hashlib.sha256(body).digest() != sha256:
            raise StorageDataMismatch
        md5 = hashlib.md5(body, usedforsecurity=False).digest()
        self._conditional(
            f"put {name}",
            self._client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentMD5=_b64(md5),
            ContentType="application/octet-stream",
        )
        return md5.hex()

    def _part_size_for(self, size: int) -> int:
        part = self.part_size
        if -(-size // part) > MAX_PARTS:
            part = -(-size // MAX_PARTS)
            part = -(-part // MIB) * MIB  # whole MiB
        return part

    def _find_upload(self, key: str) -> tuple[str, dict[int, _Part]] | None:
        """The newest interrupted multipart upload of ``key`` and its parts."""
        uploads: list[dict[str, Any]] = []
        try:
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=key
            )
            for page in pages:
                uploads.extend(u for u in page.get("Uploads", []) if u.get("Key") == key)
        except Exception as e:
            err = self._translate(e, f"list uploads of {key}")
            # `rclone serve s3` answers NoSuchUpload when it has none at all.
            if isinstance(err, ObjectNotFound) or "NoSuchUpload" in str(e):
                return None
            raise err from None
        if not uploads:
            return None
        newest = max(uploads, key=lambda u: u.get("Initiated") or _dt.datetime.min)
        upload_id = str(newest["UploadId"])
        parts: dict[int, _Part] = {}
        try:
            pages = self._client.get_paginator("list_parts").paginate(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
            for page in pages:
                for p in page.get("Parts", []):
                    etag = str(p.get("ETag", "")).strip('"').lower()
                    parts[int(p["PartNumber"])] = _Part(int(p["Size"]), etag)
        except Exception as e:
            err = self._translate(e, f"list parts of {key}")
            if isinstance(err, ObjectNotFound) or "NoSuchUpload" in str(e):
                return None
            raise err from None
        return upload_id, parts

    def _upload_part(
        self, name: str, key: str, upload_id: str, number: int, chunk: bytes, md5: bytes
    ) -> str:
        resp = self._call(
            f"put {name} (part {number})",
            self._client.upload_part,
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=chunk,
            ContentMD5=_b64(md5),
        )
        self._count("parts_uploaded")
        return str(resp["ETag"])

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as e:
            log.warning("%s: aborting upload of %s failed: %s", self.location, key, e)

    def _put_multipart(self, name: str, key: str, data: BinaryIO, size: int, sha256: bytes) -> str:
        part_size = self._part_size_for(size)
        found = self._find_upload(key)
        parts: dict[int, _Part] = {}
        if found is not None:
            upload_id, parts = found
            first = parts.get(1)
            if (
                first is not None
                and first.size != part_size
                and first.size >= MIN_PART_SIZE
                and -(-size // first.size) <= MAX_PARTS
                and first.size < size
            ):
                part_size = first.size  # resume with the part size the upload was started with
            self._count("uploads_resumed")
            log.info(
                "%s: resuming the upload of %s (%d parts there)", self.location, name, len(parts)
            )
        else:
            resp = self._call(
                f"put {name}",
                self._client.create_multipart_upload,
                Bucket=self.bucket,
                Key=key,
                ContentType="application/octet-stream",
            )
            upload_id = str(resp["UploadId"])

        nparts = -(-size // part_size)
        pool = self._pool()
        digest = hashlib.sha256()
        md5s: list[bytes] = []
        etags: dict[int, str] = {}
        futures: dict[int, concurrent.futures.Future[str]] = {}
        failures: list[BaseException] = []

        def done(f: concurrent.futures.Future[str]) -> None:
            self._buffers.release()
            if not f.cancelled() and f.exception() is not None:
                failures.append(cast(BaseException, f.exception()))

        try:
            for number in range(1, nparts + 1):
                if failures:
                    raise failures[0]
                n = min(part_size, size - (number - 1) * part_size)
                self._buffers.acquire()
                handed_off = False
                try:
                    try:
                        chunk = _read_full(data, n)
                    except OSError as e:
                        raise StorageError(
                            f"{name}: reading the data to upload failed: {e}"
                        ) from None
                    digest.update(chunk)
                    if len(chunk) != n:
                        raise StorageDataMismatch
                    md5 = hashlib.md5(chunk, usedforsecurity=False).digest()
                    md5s.append(md5)
                    have = parts.get(number)
                    if have is not None:
                        if have.size == n and have.etag == md5.hex():
                            etags[number] = f'"{have.etag}"'
                            self._count("parts_reused")
                            continue
                        # Same key, other bytes: the interrupted upload is not ours to finish.
                        self._abort(key, upload_id)
                        raise StorageUnavailable(
                            f"{self.location}: an interrupted upload of {name} did not match "
                            f"the data (part {number}); discarded it, start again"
                        )
                    fut = pool.submit(self._upload_part, name, key, upload_id, number, chunk, md5)
                    handed_off = True
                    fut.add_done_callback(done)
                    futures[number] = fut
                finally:
                    if not handed_off:
                        self._buffers.release()
            if data.read(1):
                raise StorageDataMismatch
            if digest.digest() != sha256:
                raise StorageDataMismatch
            for number, fut in futures.items():
                etags[number] = fut.result()
        except BaseException as e:
            for fut in futures.values():
                fut.cancel()
            concurrent.futures.wait(list(futures.values()))
            if isinstance(e, StorageDataMismatch) or (
                isinstance(e, StorageError) and not isinstance(e, StorageUnavailable)
            ):
                # Nothing to resume: bad data, or a failure that retrying does not fix.
                self._abort(key, upload_id)
            # Transient failures and interruptions keep the upload for the next attempt.
            raise

        self._conditional(
            f"put {name} (complete)",
            self._client.complete_multipart_upload,
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": i, "ETag": etags[i]} for i in range(1, nparts + 1)]
            },
        )
        return hashlib.md5(b"".join(md5s), usedforsecurity=False).hexdigest() + f"-{nparts}"

    def _verify(self, name: str, key: str, size: int, etag: str) -> None:
        """Checks the stored object; deletes it and raises on a mismatch."""
        head = self._head(key, name)
        if head is None:
            raise StorageUnavailable(f"{self.location}: {name} is not there after its upload")
        problem = None
        stored_size = int(head.get("ContentLength", -1))
        stored_etag = str(head.get("ETag", "")).strip('"').lower()
        encrypted = head.get("ServerSideEncryption") in ("aws:kms", "aws:kms:dsse") or head.get(
            "SSECustomerAlgorithm"
        )
        if stored_size != size:
            problem = f"stored {stored_size} bytes instead of {size}"
        elif (
            self.verify_etag
            and not encrypted
            and (
                (_HEX_MD5.match(stored_etag) and _HEX_MD5.match(etag))
                or (_MULTIPART_ETAG.match(stored_etag) and _MULTIPART_ETAG.match(etag))
            )
            and stored_etag != etag
        ):
            problem = f"the stored object's checksum (ETag {stored_etag}) is not {etag}"
        if problem is not None:
            try:
                self._client.delete_object(Bucket=self.bucket, Key=key)
            except Exception as e:
                log.warning("%s: deleting the damaged %s failed: %s", self.location, name, e)
            raise StorageError(f"{self.location}: {name}: {problem}; deleted it")

    def open(self, name: str, *, offset: int = 0, length: int | None = None) -> BinaryIO:
        key = self._key(name)
        if offset < 0 or (length is not None and length < 0):
            raise InvalidArgument("offset and length must not be negative")
        what = f"get {name}"
        if length == 0:
            self.stat(name)
            return cast(BinaryIO, io.BytesIO(b""))
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            kwargs["Range"] = f"bytes={offset}-{end}"
        try:
            resp = self._client.get_object(**kwargs)
        except Exception as e:
            from botocore import exceptions as bx

            if (
                isinstance(e, bx.ClientError)
                and e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 416
            ):
                self.stat(name)  # ObjectNotFound if it does not exist
                return cast(BinaryIO, io.BytesIO(b""))  # a range at or past the end
            err = self._translate(e, name)
            if isinstance(err, ObjectNotFound):
                self._check_bucket()
            raise err from None
        self._bucket_ok = True
        expected = int(resp.get("ContentLength", 0))
        skip = 0
        answered = _RANGE.fullmatch(str(resp.get("ContentRange") or ""))
        if "Range" in kwargs and not resp.get("ContentRange"):
            # The server ignored the Range header and sends the whole object. (Answering 200
            # rather than 206 is not the sign: `rclone serve s3` does that with a range.)
            skip = offset
            expected = max(0, expected - offset)
            if length is not None:
                expected = min(expected, length)
        elif "Range" in kwargs and (
            (length is not None and expected > length)
            or answered is None
            or int(answered[1]) != offset
        ):
            # A server that answers another range, or more bytes than asked for, is not
            # read on: its answer would cost memory and prove nothing.
            with contextlib.suppress(Exception):
                resp["Body"].close()
            raise ObjectTooLarge(
                f"{self.location}: {what}: asked for {length} bytes at {offset}, the server "
                f"answered {expected} bytes ({resp.get('ContentRange')}); refused"
            )
        return cast(BinaryIO, _Body(resp["Body"], expected, what, self._translate, skip))

    def stat(self, name: str) -> ObjectInfo:
        head = self._head(self._key(name), name)
        if head is None:
            raise ObjectNotFound(f"{self.location}: no such object: {name}")
        return ObjectInfo(name, int(head["ContentLength"]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        skip = len(self.prefix)
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket,
                Prefix=self.prefix + prefix,
                PaginationConfig={"PageSize": self.page_size},
            )
            for page in pages:
                self._bucket_ok = True
                for obj in page.get("Contents", []):
                    name = str(obj["Key"])[skip:]
                    # Folder markers and keys other tools left are not objects of ours.
                    if valid_name(name):
                        yield ObjectInfo(name, int(obj["Size"]))
        except Exception as e:
            raise self._translate(e, f"list {prefix or '/'}") from None

    def delete(self, name: str) -> None:
        key = self._key(name)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as e:
            err = self._translate(e, f"delete {name}")
            if not isinstance(err, ObjectNotFound):
                raise err from None

    def head_path(self, path: str) -> tuple[int, dict[str, str]] | None:
        """The size and user metadata (``x-amz-meta-*``, names in lower case: some servers
        answer ``Mtime``) of the object at ``path`` (:func:`check_key_path`) below the prefix,
        None if there is none."""
        head = self._head(self._path_key(path), path)
        if head is None:
            return None
        meta = head.get("Metadata") or {}
        return int(head["ContentLength"]), {str(k).lower(): str(v) for k, v in meta.items()}

    def upload(
        self, path: str, *, size: int, metadata: dict[str, str] | None = None, overwrite: bool
    ) -> StreamUpload:
        """A new object of ``size`` bytes at ``path`` (:func:`check_key_path`) below the
        prefix, written by :meth:`StreamUpload.write` and made visible only by
        :meth:`StreamUpload.complete` (see there)."""
        if size < 0:
            raise InvalidArgument("size must not be negative")
        return StreamUpload(self, path, self._path_key(path), size, metadata or {}, overwrite)

    def _path_key(self, path: str) -> str:
        key = self.prefix + check_key_path(path)
        if len(key.encode("utf-8")) > MAX_KEY_BYTES:
            raise InvalidArgument(f"{path[:40]!r}...: the key is longer than {MAX_KEY_BYTES} bytes")
        return key

    def cleanup_incomplete(self, older_than: float | _dt.timedelta = 86400.0) -> int:
        """Aborts the multipart uploads under this prefix started more than ``older_than``
        (seconds, or a timedelta) ago, freeing the space their parts take; returns how many.
        Uploads younger than that may still be running, or be resumed."""
        age = (
            older_than
            if isinstance(older_than, _dt.timedelta)
            else _dt.timedelta(seconds=older_than)
        )
        cutoff = _dt.datetime.now(_dt.UTC) - age
        stale: list[tuple[str, str]] = []
        try:
            pages = self._client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.prefix
            )
            for page in pages:
                for u in page.get("Uploads", []):
                    started = u.get("Initiated")
                    if isinstance(started, _dt.datetime) and started.tzinfo is None:
                        started = started.replace(tzinfo=_dt.UTC)
                    if started is None or started <= cutoff:
                        stale.append((str(u["Key"]), str(u["UploadId"])))
        except Exception as e:
            if "NoSuchUpload" in str(e):  # `rclone serve s3` when there are none
                return 0
            raise self._translate(e, "list incomplete uploads") from None
        for key, upload_id in stale:
            try:
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception as e:
                err = self._translate(e, f"abort upload of {key}")
                if not isinstance(err, ObjectNotFound) and "NoSuchUpload" not in str(e):
                    raise err from None
        return len(stale)

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        with contextlib.suppress(Exception):  # best effort on the way out
            self._client.close()


class StreamUpload:
    """One object written from consecutive :meth:`write` calls that add up to ``size`` bytes,
    visible at its key only once :meth:`complete` returned: up to the storage's
    ``multipart_threshold`` it is kept in memory and sent in one ``PutObject`` then; a larger
    one is a multipart upload whose parts (``part_size``, grown to stay within 10,000 parts)
    go up as they fill, sharing the storage's ``concurrency`` part buffers with its other
    uploads (what this holds: about ``part_size x (concurrency + 1)``), and which is completed
    only after the last part. On any failure (and on :meth:`abort`) the upload is aborted; a
    process killed meanwhile leaves an incomplete multipart upload, never an object, which
    :meth:`S3Storage.cleanup_incomplete` or the bucket's lifecycle rule removes.

    Without ``overwrite`` the final request carries ``If-None-Match: *`` where the server
    takes it (an object that appeared meanwhile: :class:`ObjectExists`); the caller checks
    for one first (:meth:`S3Storage.head_path`). Nothing is resumed: an interrupted upload
    starts again."""

    def __init__(
        self,
        storage: S3Storage,
        path: str,
        key: str,
        size: int,
        metadata: dict[str, str],
        overwrite: bool,
    ) -> None:
        self.path = path
        self.size = size
        self._s = storage
        self._key = key
        self._metadata = dict(metadata)
        self._overwrite = overwrite
        self._multipart = size > storage.multipart_threshold
        self._part_size = storage._part_size_for(size) if self._multipart else 0
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._written = 0
        self._upload_id: str | None = None
        self._md5s: list[bytes] = []
        self._futures: dict[int, concurrent.futures.Future[str]] = {}
        self._failures: list[BaseException] = []
        self._closed = False

    def write(self, data: bytes) -> None:
        if self._closed:
            raise InvalidArgument(f"{self.path}: the upload is over")
        if self._failures:
            raise self._failures[0]
        if self._written + len(data) > self.size:
            raise StorageDataMismatch(f"{self.path}: more than the {self.size:,} bytes announced")
        self._buffer.append(bytes(data))
        self._buffered += len(data)
        self._written += len(data)
        while self._multipart and self._buffered >= self._part_size:
            self._send_part(self._take(self._part_size))

    def _take(self, n: int) -> bytes:
        joined = b"".join(self._buffer)
        part, rest = joined[:n], joined[n:]
        self._buffer = [rest] if rest else []
        self._buffered = len(rest)
        return part

    def _send_part(self, chunk: bytes) -> None:
        s = self._s
        if self._upload_id is None:
            resp = s._call(
                f"put {self.path}",
                s._client.create_multipart_upload,
                Bucket=s.bucket,
                Key=self._key,
                ContentType="application/octet-stream",
                Metadata=self._metadata,
            )
            self._upload_id = str(resp["UploadId"])
        number = len(self._md5s) + 1
        md5 = hashlib.md5(chunk, usedforsecurity=False).digest()
        s._buffers.acquire()  # at most `concurrency` parts in flight per storage
        try:
            fut = s._pool().submit(
                s._upload_part, self.path, self._key, self._upload_id, number, chunk, md5
            )
        except BaseException:
            s._buffers.release()
            raise
        self._md5s.append(md5)
        self._futures[number] = fut

        def done(f: concurrent.futures.Future[str]) -> None:
            s._buffers.release()
            if not f.cancelled() and f.exception() is not None:
                self._failures.append(cast(BaseException, f.exception()))

        fut.add_done_callback(done)

    def complete(self) -> None:
        """Sends what is left and makes the object visible (then checks its size and, where
        the ETag is one, its MD5); aborts the upload on any failure."""
        if self._closed:
            raise InvalidArgument(f"{self.path}: the upload is over")
        s = self._s
        try:
            if self._written != self.size:
                raise StorageDataMismatch(
                    f"{self.path}: {self._written:,} bytes written, {self.size:,} announced"
                )
            if not self._multipart:
                body = self._take(self._buffered)
                md5 = hashlib.md5(body, usedforsecurity=False).digest()
                self._final(
                    f"put {self.path}",
                    s._client.put_object,
                    Body=body,
                    ContentMD5=_b64(md5),
                    ContentType="application/octet-stream",
                    Metadata=self._metadata,
                )
                etag = md5.hex()
            else:
                if self._buffered:
                    self._send_part(self._take(self._buffered))
                etags = {n: f.result() for n, f in self._futures.items()}
                self._final(
                    f"put {self.path} (complete)",
                    s._client.complete_multipart_upload,
                    UploadId=self._upload_id,
                    MultipartUpload={
                        "Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
                    },
                )
                self._upload_id = None  # complete: nothing to abort
                digest = hashlib.md5(b"".join(self._md5s), usedforsecurity=False).hexdigest()
                etag = f"{digest}-{len(self._md5s)}"
            self._closed = True
            s._verify(self.path, self._key, self.size, etag)
        except BaseException:
            self.abort()
            raise

    def _final(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> None:
        s = self._s
        if self._overwrite:
            s._call(what, fn, Bucket=s.bucket, Key=self._key, **kwargs)
        else:
            s._conditional(what, fn, Bucket=s.bucket, Key=self._key, **kwargs)

    def abort(self) -> None:
        """Stops the upload: its parts are cancelled or waited for, the multipart upload
        aborted; no object appears."""
        self._closed = True
        self._buffer, self._buffered = [], 0
        futures = list(self._futures.values())
        for f in futures:
            f.cancel()
        concurrent.futures.wait(futures)
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            self._s._abort(self._key, upload_id)
