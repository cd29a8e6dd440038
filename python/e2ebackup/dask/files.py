"""Bulk encryption of a file collection on a Dask cluster, without a repository: the
"drop-in encryptor" at scale (``pip install 'e2ebackup[dask]'``, docs/SCALE.md).

:func:`encrypt_files` turns every file of a listing (or of a folder it walks) into one
encrypted file under ``dst``, at the same relative path plus ``suffix``; :func:`decrypt_files`
does the reverse. The bytes are :func:`e2ebackup.encrypt_file`'s (a plain C2SP message under
``key=``, a sealed file under a password, a recovery key or recipients): nothing here is a
format. Dask's ``distributed`` does all of the scheduling, retrying and moving of results.

- **Work units:** the coordinator (this process) lists and sizes the files and cuts the list
  into batches of roughly ``batch_bytes`` (by default at most 64 MiB, and small enough for
  four batches per worker thread; a larger file alone in its batch); one task per
  batch, named ``e2ebackup-encrypt-<batch>-<random>``.
- **Secrets never reach the scheduler:** the credential is sent by the client straight to the
  workers (:mod:`e2ebackup.dask.runner`); tasks carry only a reference to it, their names are
  random, and the holder's ``repr`` hides it. The scheduler sees file names, sizes and task
  names, never key bytes, passwords or contents. The data is released from the workers when
  the run ends.
- **Fault tolerance:** every output is written to an unnamed (or hidden temporary) file and
  renamed only once complete (:func:`e2ebackup.paths.atomic_output`), so a worker killed
  mid-task leaves nothing under a final name, and the task Dask runs again rewrites the
  batch from the start. If every worker holding the credential dies, Dask cancels the batches
  that need it: they are sent again with the credential scattered anew (``retries`` rounds at
  most). A batch that still fails after its retries (it keeps killing its workers) is
  reported, file by file, like any other failure; the run does not raise.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import distributed

from e2ebackup.dask.runner import Hidden, auto_unit_bytes, run_units, split_by_bytes
from e2ebackup.errors import E2EBackupError, InvalidArgument
from e2ebackup.files import decrypt_file, encrypt_file
from e2ebackup.keys import KdfParams, Password, RecoveryKey
from e2ebackup.paths import StrPath
from e2ebackup.recipients import Identity, Recipient

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_FILES",
    "DEFAULT_SUFFIX",
    "Batch",
    "Failure",
    "Report",
    "decrypt_files",
    "encrypt_files",
    "split_batches",
]

DEFAULT_BATCH_BYTES = 64 << 20
DEFAULT_BATCH_FILES = 1000
MIN_BATCH_BYTES = 1 << 20
BATCHES_PER_THREAD = 4
DEFAULT_SUFFIX = ".e2e"
# What a file costs beyond its bytes (an open, a rename, an fsync), counted in bytes so that a
# batch of many tiny files is not as long as a whole folder.
FILE_COST = 64 << 10

Direction = Literal["encrypt", "decrypt"]


@dataclass(frozen=True)
class Failure:
    """One file that was not done: its path relative to the root and the class name of the
    error (an :mod:`e2ebackup.errors` class, an ``OSError`` subclass, or Dask's
    ``KilledWorker`` for a batch that failed every retry). Never a message: no secret, no
    content."""

    path: str
    error: str


@dataclass
class Report:
    """What a run did: files done, input bytes read (plaintext when encrypting, ciphertext when
    decrypting), outputs left as they were (``skip_existing``), and the failures."""

    files: int = 0
    bytes: int = 0
    skipped: int = 0
    batches: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def add(self, other: Report) -> None:
        self.files += other.files
        self.bytes += other.bytes
        self.skipped += other.skipped
        self.failures.extend(other.failures)


@dataclass(frozen=True)
class Batch:
    """One work unit: (source, output, relative name) of each file, and their total size."""

    files: tuple[tuple[str, str, str], ...]
    size: int


class _Credential(Hidden):
    """The key material of a run, as it travels from the client to the workers (and only
    there: it is scattered directly, never through the scheduler). Hidden from ``repr`` and
    ``str``. Unlike :class:`~e2ebackup.keys.Password` it can be pickled: that is its one job."""

    __slots__ = ("_context", "_identity", "_key", "_password", "_recipients", "_recovery_key")

    def __init__(
        self,
        key: bytes | None,
        context: bytes | None,
        password: bytes | None,
        recovery_key: bytes | None,
        recipients: tuple[bytes, ...],
        identity: str | None,
    ) -> None:
        self._key = key
        self._context = context
        self._password = password
        self._recovery_key = recovery_key
        self._recipients = recipients
        self._identity = identity

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _Credential,
            (
                self._key,
                self._context,
                self._password,
                self._recovery_key,
                self._recipients,
                self._identity,
            ),
        )

    def bind(self, direction: Direction, options: _Options) -> Callable[[str, str], int]:
        """What encrypts (or decrypts) one source path into one output path with this
        credential; built once per batch, so an identity or a password is parsed once."""
        password = None if self._password is None else Password(self._password)
        recovery_key = None if self._recovery_key is None else RecoveryKey(self._recovery_key)
        common: dict[str, Any] = {"threads": options.threads}
        if self._key is not None:
            common.update(context=self._context, algorithm=options.algorithm)
        if direction == "encrypt":
            if self._key is None:
                common.update(
                    kdf=options.kdf,
                    algorithm=options.algorithm,
                    recipients=[Recipient(r) for r in self._recipients],
                )
            return functools.partial(
                encrypt_file, key=self._key, password=password, recovery_key=recovery_key, **common
            )
        identity = None if self._identity is None else Identity.parse(self._identity)
        return functools.partial(
            decrypt_file,
            key=self._key,
            password=password,
            recovery_key=recovery_key,
            identity=identity,
            **common,
        )


@dataclass(frozen=True)
class _Options:
    algorithm: str
    threads: int | None
    skip_existing: bool
    kdf: KdfParams | None  # parameters, not secrets


def _run_batch(
    credential: _Credential, batch: Batch, direction: Direction, options: _Options
) -> Report:
    """A task: every file of the batch, in order. Each output appears under its final name
    only once complete, so running the batch again after a crash redoes it cleanly."""
    report = Report()
    one_file = credential.bind(direction, options)
    for src, dst, rel in batch.files:
        try:
            if options.skip_existing and os.path.lexists(dst):
                report.skipped += 1
                continue
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            report.bytes += one_file(src, dst)
            report.files += 1
        except (E2EBackupError, OSError) as e:
            report.failures.append(Failure(rel, type(e).__name__))
    return report


def split_batches(
    files: Iterable[tuple[str, str, str, int]],
    *,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    batch_files: int = DEFAULT_BATCH_FILES,
) -> list[Batch]:
    """Cuts ``(source, output, relative name, size)`` into batches of about ``batch_bytes``
    (each file counting ``FILE_COST`` more) and at most ``batch_files`` files, in order; a
    file larger than ``batch_bytes`` is alone in its batch."""
    if batch_bytes < 1 or batch_files < 1:
        raise InvalidArgument("batch_bytes and batch_files must be positive")
    units = split_by_bytes(
        list(files), lambda f: f[3] + FILE_COST, target=batch_bytes, most=batch_files
    )
    return [Batch(tuple(f[:3] for f in unit), sum(f[3] for f in unit)) for unit in units]


def _auto_batch_bytes(client: distributed.Client, planned: list[tuple[str, str, str, int]]) -> int:
    """``DEFAULT_BATCH_BYTES``, or less when that would leave fewer than ``BATCHES_PER_THREAD``
    batches per worker thread of the cluster: the last batches then keep every thread busy
    until close to the end. Never below ``MIN_BATCH_BYTES``."""
    total = sum(size + FILE_COST for *_, size in planned)
    return auto_unit_bytes(
        client,
        total,
        most=DEFAULT_BATCH_BYTES,
        least=MIN_BATCH_BYTES,
        per_thread=BATCHES_PER_THREAD,
    )


def _walk(root: str, skipped: list[str]) -> list[str]:
    """The regular files under ``root``, sorted; anything else (a symlink, a socket) is named
    in ``skipped``."""
    found: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(folder, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                found.append(path)
            else:
                skipped.append(os.path.relpath(path, root))
        for name in dirs:  # os.walk does not descend into symlinked folders; say so
            if os.path.islink(os.path.join(folder, name)):
                skipped.append(os.path.relpath(os.path.join(folder, name), root))
    return found


def _plan(
    listing: Iterable[StrPath] | StrPath,
    dst: StrPath,
    root: StrPath | None,
    direction: Direction,
    suffix: str,
    report: Report,
) -> list[tuple[str, str, str, int]]:
    out_root = os.path.abspath(dst)
    walked: list[str] = []
    if isinstance(listing, str | os.PathLike):
        base = os.path.abspath(listing)
        if not os.path.isdir(base):
            raise InvalidArgument("a single path to encrypt must be a folder to walk")
        if root is not None and os.path.abspath(root) != base:
            raise InvalidArgument("root= is the walked folder itself")
        if os.path.commonpath([base, out_root]) == base:
            raise InvalidArgument("the output folder must not lie inside the folder walked")
        paths = _walk(base, walked)
        report.skipped += len(walked)
    else:
        paths = [os.path.abspath(p) for p in listing]
        if root is not None:
            base = os.path.abspath(root)
        elif paths:
            base = os.path.commonpath([os.path.dirname(p) for p in paths])
        else:
            base = out_root
    planned: list[tuple[str, str, str, int]] = []
    outputs: set[str] = set()
    for path in paths:
        rel = os.path.relpath(path, base)
        if rel.startswith(os.pardir + os.sep) or rel in (os.curdir, os.pardir):
            raise InvalidArgument(f"{path} is not inside the root folder {base}")
        if direction == "encrypt":
            out_rel = rel + suffix
        else:
            out_rel = rel[: -len(suffix)] if suffix and rel.endswith(suffix) else rel
        out = os.path.join(out_root, out_rel)
        if out in outputs or out == path:
            raise InvalidArgument(f"two inputs, or an input and its output, meet at {out_rel}")
        outputs.add(out)
        try:
            size = os.stat(path).st_size
        except OSError as e:
            report.failures.append(Failure(rel, type(e).__name__))
            continue
        planned.append((path, out, rel, size))
    return planned


def _credential(
    *,
    key: bytes | bytearray | memoryview | None,
    context: bytes | None,
    password: str | bytes | Password | None,
    recovery_key: RecoveryKey | str | None,
    recipients: Iterable[Recipient | str],
    identity: Identity | None,
) -> _Credential:
    listed = [recipients] if isinstance(recipients, str) else list(recipients)
    given = sum(x is not None for x in (key, password, recovery_key, identity)) + bool(listed)
    if given == 0:
        raise InvalidArgument("give key=, password=, recovery_key=, recipients= or identity=")
    if key is not None and given > 1:
        raise InvalidArgument("key= makes a plain C2SP message; it does not combine")
    if key is not None and len(bytes(key)) != 32:
        raise InvalidArgument("a key is 32 bytes")
    if isinstance(recovery_key, str):
        recovery_key = RecoveryKey.parse(recovery_key)
    return _Credential(
        None if key is None else bytes(key),
        context,
        None if password is None else Password(password).secret,
        None if recovery_key is None else recovery_key.key,
        tuple((Recipient.parse(r) if isinstance(r, str) else r).public for r in listed),
        None if identity is None else identity.secret(),
    )


def _run(
    direction: Direction,
    listing: Iterable[StrPath] | StrPath,
    dst: StrPath,
    client: distributed.Client,
    credential: _Credential,
    *,
    root: StrPath | None,
    suffix: str,
    batch_bytes: int | None,
    batch_files: int,
    retries: int,
    options: _Options,
) -> Report:
    report = Report()
    planned = _plan(listing, dst, root, direction, suffix, report)
    if batch_bytes is None:
        batch_bytes = _auto_batch_bytes(client, planned)
    batches = split_batches(planned, batch_bytes=batch_bytes, batch_files=batch_files)
    report.batches = len(batches)
    if not batches:
        return report
    os.makedirs(dst, exist_ok=True)
    done = run_units(
        client,
        credential,
        _run_batch,
        batches,
        name=direction,
        args=(direction, options),
        retries=retries,
    )
    for batch, result in done:
        if isinstance(result, Report):
            report.add(result)
        else:  # the batch failed every retry (KilledWorker, a bug): each file is reported
            error = type(result).__name__
            report.failures.extend(Failure(rel, error) for _, _, rel in batch.files)
    return report


def encrypt_files(
    listing: Iterable[StrPath] | StrPath,
    dst: StrPath,
    *,
    client: distributed.Client,
    key: bytes | bytearray | memoryview | None = None,
    context: bytes | None = None,
    password: str | bytes | Password | None = None,
    recovery_key: RecoveryKey | str | None = None,
    recipients: Iterable[Recipient | str] = (),
    kdf: KdfParams | None = None,
    algorithm: str = "aes-256-gcm",
    root: StrPath | None = None,
    suffix: str = DEFAULT_SUFFIX,
    batch_bytes: int | None = None,
    batch_files: int = DEFAULT_BATCH_FILES,
    threads: int | None = 1,
    retries: int = 3,
    skip_existing: bool = False,
) -> Report:
    """Encrypts every file of ``listing`` into ``dst/<relative path><suffix>`` on the Dask
    cluster of ``client``; returns a :class:`Report` (failures are reported, not raised).

    ``listing``: a folder (walked; its regular files, sorted; symlinks and special files are
    counted as skipped) or an iterable of file paths, named relative to ``root`` (default:
    their common folder). The client must see the files to size them, and every worker must
    see them and ``dst`` at the same paths (a shared file system).

    ``key`` (32 bytes) makes plain C2SP messages, the fast path. ``password``, ``recovery_key``
    and/or ``recipients`` make sealed files (docs/FORMAT.md), each with its own key slots: a
    password costs one full KDF run per file (by design: every file opens alone), so for many
    files prefer a key, a recovery key or recipients (one AEAD or one KEM per file).

    ``batch_bytes``: the bytes of one task (default: 64 MiB, or less so that there are at
    least four batches per worker thread, but not below 1 MiB); ``batch_files``: its most
    files. ``threads``: the encryption threads of each task (default 1: the cluster's worker
    threads are the parallelism). ``retries``: how often Dask runs a failed batch again (a
    worker lost mid-task is rescheduled on top of that, up to
    ``distributed.scheduler.allowed-failures``).
    ``skip_existing``: leave an output that already exists (a rerun after an interrupted run
    picks up where it stopped: outputs only ever appear complete).
    """
    credential = _credential(
        key=key,
        context=context,
        password=password,
        recovery_key=recovery_key,
        recipients=recipients,
        identity=None,
    )
    options = _Options(algorithm, threads, skip_existing, kdf)
    return _run(
        "encrypt",
        listing,
        dst,
        client,
        credential,
        root=root,
        suffix=suffix,
        batch_bytes=batch_bytes,
        batch_files=batch_files,
        retries=retries,
        options=options,
    )


def decrypt_files(
    listing: Iterable[StrPath] | StrPath,
    dst: StrPath,
    *,
    client: distributed.Client,
    key: bytes | bytearray | memoryview | None = None,
    context: bytes | None = None,
    password: str | bytes | Password | None = None,
    recovery_key: RecoveryKey | str | None = None,
    identity: Identity | None = None,
    algorithm: str = "aes-256-gcm",
    root: StrPath | None = None,
    suffix: str = DEFAULT_SUFFIX,
    batch_bytes: int | None = None,
    batch_files: int = DEFAULT_BATCH_FILES,
    threads: int | None = 1,
    retries: int = 3,
    skip_existing: bool = False,
) -> Report:
    """Decrypts every file of ``listing`` into ``dst/<relative path>`` (``suffix`` removed
    where present), as :func:`encrypt_files` encrypted them. A file that does not
    authenticate, or that the credential does not open, is a :class:`Failure` with its error's
    class name (``InvalidTag``, ``WrongPassword``, ``NotSealedFile``...) and leaves nothing
    under its output name."""
    credential = _credential(
        key=key,
        context=context,
        password=password,
        recovery_key=recovery_key,
        recipients=(),
        identity=identity,
    )
    options = _Options(algorithm, threads, skip_existing, None)
    return _run(
        "decrypt",
        listing,
        dst,
        client,
        credential,
        root=root,
        suffix=suffix,
        batch_bytes=batch_bytes,
        batch_files=batch_files,
        retries=retries,
        options=options,
    )
