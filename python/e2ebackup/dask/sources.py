"""URL sources of a backup on Dask: ``s3://bucket/media``, ``webdav://photos``, ``file:///data``
or any other fsspec URL, listed by the coordinator and read by the workers through fsspec
(docs/SCALE.md, "URL sources").

- **The listing** is walked folder by folder (``fs.ls(path, detail=True)``, depth first, as
  :class:`~e2ebackup.repo.backup.Archiver` walks local folders): each folder's listing is
  turned into compact entries and dropped (with fsspec's listing cache of it) before the next
  one is asked for, so a listing of millions of objects streams into the tree; what stays is
  what the coordinator keeps of every file anyway, its entry.
- **What is kept:** names, sizes, modification times (``mtime``, ``LastModified``,
  ``modified`` or ``created`` from the listing, whichever it gives) and the permission bits
  where the listing has them (0o644 for files, 0o755 for folders otherwise). No owners, no
  inode or change time, no symbolic links (skipped, as special files are), no empty S3
  "folders" that are only a prefix. A file of the same size and modification time as in the
  parent snapshot keeps its chunks without being read.
- **Names from a listing are untrusted** (a bucket someone else writes to): a name that the
  tree format refuses (empty, ``.``, ``..``, holding ``/`` or NUL, not text, outside the
  folder listed, or listed twice) is reported through ``on_error`` and left out.
- **The workers** open each file with ``fs.open(path, "rb")`` from the URL and the storage
  options given (in the holder the client sends straight to the workers, never through the
  scheduler), or from fsspec's configuration in their own environment
  (``FSSPEC_S3_KEY``..., ``~/.config/fsspec``). An SQLite database is read as plain bytes
  (its consistent capture needs a local path), and its ``-wal`` or ``-journal`` is kept
  beside it.
- **The snapshot's paths** are the URLs without credentials, query or fragment
  (:func:`public_url`): the next backup of the same URLs from this host finds its parent.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import posixpath
import re
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import urlsplit

from e2ebackup.errors import E2EBackupError, InvalidArgument, RepositoryCorrupted, TreeTooDeep
from e2ebackup.repo.exclude import Excludes
from e2ebackup.repo.tree import MAX_DEPTH, Entry

if TYPE_CHECKING:
    from e2ebackup.repo.backup import Archiver

#: An fsspec ``FileSystem`` (fsspec, which Dask requires, ships no type information).
FileSystem = Any

__all__ = ["URLSource", "is_url", "public_url"]

FILE_MODE = 0o644
DIR_MODE = 0o755
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str) -> bool:
    """Whether ``path`` is a URL (``scheme://...``) rather than a local path."""
    return _SCHEME.match(path) is not None


def public_url(url: str) -> str:
    """``url`` as a snapshot records it: without user name, password, query or fragment, and
    without a trailing ``/``."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    path = parts.path.rstrip("/")
    if not host and not path:
        path = "/"
    return f"{parts.scheme.lower()}://{host}{path}"


class URLSource:
    """Where the files of a URL backup are and how to reach them: the URLs as given and the
    fsspec storage options. It may hold credentials: it travels to the workers only inside the
    holder of :mod:`e2ebackup.dask.runner` (never through the scheduler) and hides them from
    ``repr``."""

    __slots__ = ("_options", "_urls")

    def __init__(self, urls: Sequence[str], options: Mapping[str, Any] | None = None) -> None:
        if not urls:
            raise InvalidArgument("nothing to back up: give at least one URL")
        if not all(is_url(u) for u in urls):
            raise InvalidArgument("give either URLs or local paths, not both")
        self._urls = tuple(urls)
        self._options = dict(options or {})

    def __reduce__(self) -> tuple[Any, ...]:
        return (URLSource, (self._urls, self._options))

    def __repr__(self) -> str:
        return f"<URLSource of {len(self._urls)} URL(s) (options hidden)>"

    @property
    def paths(self) -> list[str]:
        """The snapshot's paths: the URLs without credentials, query or fragment."""
        return [public_url(u) for u in self._urls]

    def filesystem(self) -> tuple[FileSystem, list[str]]:
        """The one file system of all the URLs and each URL's path in it."""
        from fsspec.core import url_to_fs  # type: ignore[import-untyped]

        fs: FileSystem = None
        roots = []
        for url in self._urls:
            this, root = url_to_fs(url, **self._options)
            if fs is not None and this != fs:
                raise InvalidArgument("the URLs are on different file systems; back them up apart")
            fs = this
            roots.append(root)
        assert fs is not None
        return fs, roots

    def opener(self) -> Callable[[str], BinaryIO]:
        """Opens a file of the listing on a worker. An error of the file system that is not an
        ``OSError`` (an HTTP error) is raised as one, named by its type only: its text may
        hold an address with a password, and a task's failure reaches the scheduler."""
        try:
            fs, _ = self.filesystem()
        except Exception as e:  # a missing fsspec backend, options it refuses, ...
            raise InvalidArgument(
                f"a worker cannot open the source ({type(e).__name__}): is its fsspec backend "
                "installed there?"
            ) from None

        def open_file(path: str) -> BinaryIO:
            try:
                return cast(BinaryIO, _Reading(fs.open(path, "rb")))
            except OSError:
                raise
            except Exception as e:
                raise _os_error(e) from None

        return open_file

    def walk(
        self, archiver: Archiver, excludes: Excludes
    ) -> Callable[[dict[str, Entry]], list[Entry]]:
        """The walk of :meth:`Archiver.run_walk <e2ebackup.repo.backup.Archiver.run_walk>` that
        lists the URLs for ``archiver`` (the Dask coordinator, which has the workers read)."""
        if excludes.exclude_caches:
            raise InvalidArgument("exclude_caches needs local folders: give --exclude patterns")
        fs, roots = self.filesystem()
        names = [posixpath.basename(root.rstrip("/")) or "root" for root in roots]
        for name in names:
            why = bad_name(name)
            if why is not None:
                raise InvalidArgument(f"the last part of a URL {why}: {name!r}")
        if len(set(names)) != len(names):
            raise InvalidArgument("two of the URLs have the same name; back them up separately")
        listing = _Listing(fs, archiver, excludes)

        def walk(old_root: dict[str, Entry]) -> list[Entry]:
            entries = []
            for root, name in zip(roots, names, strict=True):
                detail = fs.info(root)  # a missing root raises, as a missing local path
                entry = listing.entry(root, _found(detail, name), old_root.get(name), 0)
                if entry is not None:
                    entries.append(entry)
            return entries

        return walk


def _os_error(e: Exception) -> OSError:
    return OSError(errno.EIO, f"the source failed ({type(e).__name__})")


class _Reading:
    """A file of the source as Archiver reads it: errors of the file system as ``OSError``."""

    __slots__ = ("_f",)

    def __init__(self, f: Any) -> None:
        self._f = f

    def readinto(self, buf: bytearray) -> int:
        try:
            if hasattr(self._f, "readinto"):
                return int(self._f.readinto(buf) or 0)
            data = self._f.read(len(buf))
            buf[: len(data)] = data
            return len(data)
        except OSError:
            raise
        except Exception as e:
            raise _os_error(e) from None

    def read(self, size: int = -1) -> bytes:
        try:
            return bytes(self._f.read(size))
        except OSError:
            raise
        except Exception as e:
            raise _os_error(e) from None

    def seek(self, offset: int, whence: int = 0) -> int:
        """Where a piece of a large file starts (Archiver.read_range)."""
        try:
            return int(self._f.seek(offset, whence))
        except OSError:
            raise
        except Exception as e:
            raise _os_error(e) from None

    def __enter__(self) -> _Reading:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(Exception):  # what was read is read: a failed close is moot
            self._f.close()


#: One entry of a folder's listing, reduced to what the tree keeps: name, kind ("file",
#: "dir", or why it is left out), size, mtime in ns, mode.
_Found = tuple[str, str, int, int | None, int | None]


def _found(detail: Mapping[str, Any], name: str) -> _Found:
    """The listing's ``detail`` reduced to what the tree keeps."""
    if detail.get("islink"):
        return (name, "link", 0, None, None)
    kind = {"file": "file", "directory": "dir"}.get(str(detail.get("type")), "other")
    listed = detail.get("size")
    size = listed if type(listed) is int and 0 <= listed < 1 << 63 else 0  # 0: the size read
    mode = detail.get("mode")
    bits = stat.S_IMODE(mode) if type(mode) is int and mode >= 0 else None
    return (name, kind, size if kind == "file" else 0, _mtime_ns(detail), bits)


def _mtime_ns(detail: Mapping[str, Any]) -> int | None:
    """The modification time the listing gives, in ns since the epoch (None: none given)."""
    for key in ("mtime", "LastModified", "last_modified", "modified", "created"):
        value = detail.get(key)
        try:
            if isinstance(value, datetime.datetime):
                if value.tzinfo is None:
                    value = value.replace(tzinfo=datetime.UTC)
                delta = value - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
                ns = (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000
            elif isinstance(value, str) and value:
                parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
                return _mtime_ns({"mtime": parsed})
            elif type(value) is int or type(value) is float:
                ns = int(value * 10**9)
            else:
                continue
        except (ValueError, OverflowError):
            continue
        if -(1 << 63) <= ns < 1 << 63:
            return ns
    return None


def bad_name(name: str) -> str | None:
    """Why ``name`` cannot be a name in a folder listing (docs/FORMAT.md, Trees and snapshots),
    or None: not empty, ``.`` or ``..``, no ``/`` or NUL, and text (a listing's names are
    text: the surrogates that stand for bytes of a local name are refused)."""
    if name in ("", ".", ".."):
        return "is not a name"
    if "/" in name or "\0" in name:
        return "holds '/' or NUL"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not text"
    return None


class _Listing:
    """The walk below the roots: one folder's listing at a time."""

    def __init__(self, fs: FileSystem, archiver: Archiver, excludes: Excludes) -> None:
        self.fs = fs
        self.archiver = archiver
        self.excludes = excludes

    def entry(self, path: str, found: _Found, old: Entry | None, depth: int) -> Entry | None:
        """The entry of ``path`` (``depth`` listings below the root's), its files handed to
        the archiver and its folders walked; None for what is left out."""
        name, kind, size, mtime_ns, mode = found
        a = self.archiver
        if kind not in ("file", "dir"):
            a.stats.skipped_special += 1
            return None
        entry: Entry = {"name": name, "type": kind}
        entry["mode"] = mode if mode is not None else FILE_MODE if kind == "file" else DIR_MODE
        if mtime_ns is not None:
            entry["mtime_ns"] = mtime_ns
        if kind == "dir":
            if depth >= MAX_DEPTH:  # no reader accepts a deeper snapshot
                a.report_error(path, TreeTooDeep("", MAX_DEPTH))
                return None
            old_tree = old.get("subtree") if old and old.get("type") == "dir" else None
            a.stats.dirs += 1
            entry["subtree"] = self.folder(path, old_tree, depth + 1)
            return entry
        entry["size"] = size
        a.stats.bytes_total += size
        if (
            old is not None
            and old.get("type") == "file"
            and old.get("size") == size
            and mtime_ns is not None
            and old.get("mtime_ns") == mtime_ns
            and all(bytes.fromhex(c) in a.index for c in old.get("content", []))
        ):
            entry["content"] = list(old.get("content", []))
            a.stats.files_unmodified += 1
            a.stats.bytes_unmodified += size
            a.report_progress(path)
            return entry
        a.store_file(path, entry, old)
        if old is None:
            a.stats.files_new += 1
        else:
            a.stats.files_changed += 1
        return entry

    def folder(self, path: str, old_tree: str | None, depth: int) -> str:
        """The id (or the deferred id) of the listing of the folder ``path``."""
        old = self.archiver.old_entries(old_tree)
        entries: list[Entry] = []
        for child, found in self.children(path):
            if self.excludes.excluded("/" + child.lstrip("/"), found[0]):
                self.archiver.stats.excluded += 1
                continue
            try:
                entry = self.entry(child, found, old.get(found[0]), depth)
            except (OSError, E2EBackupError) as e:
                if isinstance(e, RepositoryCorrupted):
                    raise
                self.archiver.report_error(child, e)
                continue
            if entry is not None:
                entries.append(entry)
        return self.archiver.store_tree(entries)

    def children(self, path: str) -> Iterator[tuple[str, _Found]]:
        """The folder's entries, sorted by name, each named as the tree format allows; the
        others reported. The raw listing is dropped before the first is yielded."""
        fs = self.fs
        try:
            listing = fs.ls(path, detail=True)
        except Exception as e:  # any backend's error: the folder is reported, as a local one
            self.archiver.report_error(path, e if isinstance(e, OSError) else _os_error(e))
            return
        finally:
            fs.invalidate_cache(path)  # its listing stays in memory otherwise
        prefix = path.rstrip("/") + "/" if path.strip("/") else path
        kept: dict[str, tuple[str, _Found]] = {}
        for detail in listing:
            full = str(detail.get("name", "")) if isinstance(detail, Mapping) else ""
            full = full.rstrip("/") or full
            if full == path.rstrip("/") or full == path:
                continue  # the folder itself, as some stores list it
            name = full[len(prefix) :] if full.startswith(prefix) else ""
            why = bad_name(name) if full.startswith(prefix) else "is outside the folder listed"
            if why is None and name in kept:
                why = "is listed twice"
            if why is not None:
                self.archiver.report_error(
                    full, InvalidArgument(f"a name in the listing of {path!r} {why}: {name!r}")
                )
                continue
            kept[name] = (full, _found(detail, name))
        del listing
        for name in sorted(kept):
            yield kept.pop(name)
