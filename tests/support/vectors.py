"""Deterministic text vectors for the fake embedding server: hashed character trigrams.

Texts that share more trigrams get closer vectors, so similarity order is meaningful.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from tests.support.fake_openai import Recorded, Reply, embeddings

DIM = 1024


def vector(text: str, dim: int = DIM) -> list[float]:
    out = [0.0] * dim
    padded = f"  {text}  "
    for i in range(len(padded) - 2):
        digest = hashlib.blake2b(padded[i:i + 3].encode(), digest_size=4).digest()
        out[int.from_bytes(digest, "big") % dim] += 1.0
    norm = math.sqrt(sum(x * x for x in out)) or 1.0
    return [x / norm for x in out]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def responder(dim: int = DIM, **kwargs: Any) -> Any:
    """A fake-server responder embedding each input text with vector()."""

    def respond(request: Recorded) -> Reply:
        texts = request.body.get("input", [])
        texts = texts if isinstance(texts, list) else [texts]
        return embeddings([vector(t, dim) for t in texts], **kwargs)

    return respond
