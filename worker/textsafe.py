"""Text that is safe to store: what a model or a server sent may hold characters PostgreSQL
refuses (NUL, lone surrogates) or secrets it echoed back (an API key in an error)."""

from __future__ import annotations

import re

from worker.logs import map_strings, mask

_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(text: str) -> str:
    """`text` without NUL, with lone surrogates replaced, and credentials masked."""
    return mask(_SURROGATE.sub("\ufffd", text.replace("\x00", "")))


def storable_tree(value: object) -> object:
    """storable() applied to every string inside a JSON-like value."""
    return map_strings(value, storable)
