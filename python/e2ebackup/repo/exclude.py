"""What a backup leaves out: glob patterns and cache folders.

* A pattern without ``/`` matches a file or folder name anywhere: ``*.tmp``, ``node_modules``,
  ``.cache``.
* A pattern with ``/`` matches the end of the absolute path at a folder boundary
  (``Pictures/thumbnails``), or the whole path if it starts with ``/``
  (``/home/ann/Downloads``); ``~`` is the home folder.
* ``*`` and ``?`` match within one name, ``[...]`` one character of a set, ``**`` any number
  of folders (``/data/**/tmp``).
* A folder that matches is left out with everything in it.
* With ``exclude_caches``, a folder holding a ``CACHEDIR.TAG`` file with the standard signature
  (https://bford.info/cachedir/) is backed up as that file alone, as restic and Borg do.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable

from e2ebackup.errors import InvalidArgument

__all__ = ["CACHEDIR_TAG", "Excludes", "read_lines"]

CACHEDIR_TAG = "CACHEDIR.TAG"
_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


def _translate(pattern: str) -> str:
    """The regular expression for one glob pattern (matched against a whole string)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            # As fnmatch: "!" first negates, a "]" right after "[" or "[!" is a member.
            j = i + 1
            negate = pattern[j : j + 1] == "!"
            j += negate
            j += pattern[j : j + 1] == "]"
            end = pattern.find("]", j)
            if end < 0:
                raise InvalidArgument(f"exclude pattern {pattern!r}: '[' without ']'")
            out.append(_bracket(pattern[i : end + 1]))
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _bracket(expression: str) -> str:
    """The regular expression of one ``[...]`` set, exactly as fnmatch reads it (ranges,
    negation, and the characters a regular expression would take for operators)."""
    translated = fnmatch.translate(expression)  # "(?s:" + the set + ")\\Z"
    prefix, suffix = "(?s:", ")\\Z"
    if not (translated.startswith(prefix) and translated.endswith(suffix)):
        raise InvalidArgument(f"exclude pattern: cannot read {expression!r}")
    return translated[len(prefix) : -len(suffix)]


class Excludes:
    """The exclusion rules of one backup. ``excluded(path, name, is_dir)`` answers for an
    entry found while walking (``path`` absolute)."""

    def __init__(self, patterns: Iterable[str] = (), *, exclude_caches: bool = False) -> None:
        self.patterns = [p.strip() for p in patterns if p.strip()]
        self.exclude_caches = exclude_caches
        names, paths = [], []
        for p in self.patterns:
            p = os.path.expanduser(p).rstrip("/") or "/"
            if "/" not in p:
                names.append(_translate(p))
            elif p.startswith("/"):
                paths.append(_translate(p))
            else:
                paths.append("(?:.*/)?" + _translate(p))
        try:
            self._name = re.compile("|".join(f"(?:{n})" for n in names)) if names else None
            self._path = re.compile("|".join(f"(?:{p})" for p in paths)) if paths else None
        except re.error as e:  # a character range backwards, like [z-a]
            raise InvalidArgument(f"exclude pattern: {e}") from None

    def __bool__(self) -> bool:
        return bool(self.patterns) or self.exclude_caches

    def excluded(self, path: str, name: str) -> bool:
        if self._name is not None and self._name.fullmatch(name):
            return True
        return self._path is not None and self._path.fullmatch(path) is not None

    def is_cache_dir(self, path: str) -> bool:
        """Whether ``path`` (a folder) is tagged as a cache and caches are excluded."""
        if not self.exclude_caches:
            return False
        try:
            with open(os.path.join(path, CACHEDIR_TAG), "rb") as f:
                return f.read(len(_SIGNATURE)) == _SIGNATURE
        except OSError:
            return False


def read_lines(path: str) -> list[str]:
    """Entries of a list file (``--exclude-file`` patterns, ``--files-from`` paths): one a
    line, surrounding blanks stripped; blank lines and lines starting with ``#`` skipped."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
