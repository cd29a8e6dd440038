"""mkdocs hook: links from docs/ to files outside it become links into the repository.

docs/*.md link to test vectors and tools with relative paths (``../tests/vectors/...``) that
work on GitHub; on the built site those files do not exist, so they point at the repository.
"""

from __future__ import annotations

import re
from typing import Any

REPOSITORY = "https://github.com/e2ebackup/e2ebackup"
_OUTSIDE_DOCS = re.compile(r"\]\(\.\./([^)\s#]*)(#[^)\s]*)?\)")


def outside_link(match: re.Match[str]) -> str:
    path, anchor = match.group(1), match.group(2) or ""
    kind = "tree" if path == "" or path.endswith("/") else "blob"
    return f"]({REPOSITORY}/{kind}/main/{path}{anchor})"


def on_page_markdown(markdown: str, **_: Any) -> str:
    return _OUTSIDE_DOCS.sub(outside_link, markdown)
