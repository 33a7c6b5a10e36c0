"""Named SQL queries loaded once from `sql/queries/*.sql`.

Each query sits under a `-- name: <name>` header; no SQL is written as Python strings.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from worker.paths import QUERIES_DIR

_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse(text: str, origin: str = "<string>") -> dict[str, bytes]:
    """Split a file into {name: query}. Queries are bytes, which psycopg takes as-is."""
    parts = _HEADER.split(text)
    found: dict[str, bytes] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"{origin}: query {name!r} defined twice")
        found[name] = body.strip().encode()
    return found


@cache
def _load(directory: Path) -> dict[str, bytes]:
    queries: dict[str, bytes] = {}
    for path in sorted(directory.glob("*.sql")):
        for name, body in parse(path.read_text(encoding="utf-8"), str(path)).items():
            if name in queries:
                raise ValueError(f"{path}: query {name!r} already defined in another file")
            queries[name] = body
    return queries


def q(name: str) -> bytes:
    """The query called `name`; a KeyError names the missing query."""
    try:
        return _load(QUERIES_DIR)[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} under {QUERIES_DIR}") from None
