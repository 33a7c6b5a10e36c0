"""A model endpoint's rate limit, shared by every worker process through PostgreSQL.

`WORKER_CHAT_RATE_LIMIT=500/min` (requests) and `WORKER_CHAT_TOKEN_LIMIT=200000/min`
(estimated tokens; the two share the requests' window when both are set), and the same for
embeddings. Right before each request, inside the endpoint's gate, the request takes a slot
(queue.rate_take, sql/migrations/0023_rate_limits.sql). A short wait is waited where it is;
a longer one snoozes the job (ModelSnoozed: rescheduled without using an attempt). A 429
from the server blocks the endpoint for the whole fleet until its retry-after, and so does a
reply whose x-ratelimit-* headers say nothing is left until their reset (header_hold).
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from worker.models.errors import ModelSnoozed

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(?:(\d+(?:\.\d+)?)\s*)?(s|sec|min|m|h)\s*$")
_UNIT = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}

# The longest a server's word holds the fleet back at once (queue.rate_block clips to the
# same): a server that asks for longer is asked again after that.
MAX_HOLD = 3600.0
# a Go duration as OpenAI sends it ("6m0s", "1s", "20ms", "1h2m3.5s"), or bare seconds
_PART = re.compile(r"(\d{1,12}(?:\.\d{1,12})?)(h|ms|us|µs|ns|m|s)", re.ASCII)
_SECONDS = re.compile(r"\d{1,12}(?:\.\d{1,12})?", re.ASCII)
_PART_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6,
              "ns": 1e-9}
_COUNT = re.compile(r"\d{1,18}", re.ASCII)


def parse_rate(text: str) -> tuple[int, float]:
    """"500/min", "10/5s", "3/h" as (count, window seconds)."""
    found = _RATE.match(text)
    if found is None or int(found.group(1)) < 1:
        raise ValueError(f"{text!r}: expected N/min, N/s, N/h or N/<seconds>s, N ≥ 1")
    count, multiple, unit = found.groups()
    return int(count), float(multiple or 1) * _UNIT[unit]


def parse_duration(text: str) -> float | None:
    """Seconds in a reset header ("6m0s", "20ms", "2"); None for anything else: a server's
    garbage, a negative or non-finite value, is ignored, never raised."""
    text = text.strip()
    if _SECONDS.fullmatch(text):
        return float(text)
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _PART_UNIT[u] for n, u in parts)


def header_hold(headers: Mapping[str, str], tokens: int) -> float | None:
    """Seconds the fleet should hold its requests to the endpoint, from a reply's
    x-ratelimit-* headers: until the requests' reset when none is left, until the tokens'
    reset when fewer are left than the request just made used (`tokens`, the next one's
    likely size). At most MAX_HOLD; None when there is nothing (readable) to hold for."""
    holds = [_hold(headers, "requests", 1), _hold(headers, "tokens", max(tokens, 1))]
    found = [hold for hold in holds if hold is not None]
    return min(max(found), MAX_HOLD) if found else None


def _hold(headers: Mapping[str, str], what: str, needed: int) -> float | None:
    remaining = headers.get(f"x-ratelimit-remaining-{what}", "").strip()
    reset = parse_duration(headers.get(f"x-ratelimit-reset-{what}", ""))
    if not _COUNT.fullmatch(remaining) or int(remaining) >= needed:
        return None
    if reset is None or not math.isfinite(reset) or reset <= 0:
        return None
    return reset


@dataclass(frozen=True)
class RateLimit:
    """At most `requests` requests and `tokens` estimated tokens per `window` seconds to the
    endpoint `key` (None: no such limit)."""

    key: str
    window: float
    requests: int | None = None
    tokens: int | None = None

    @classmethod
    def of(cls, key: str, requests: str | None, tokens: str | None) -> RateLimit | None:
        if requests is None and tokens is None:
            return None
        per_request = parse_rate(requests) if requests else None
        per_token = parse_rate(tokens) if tokens else None
        windows = {rate[1] for rate in (per_request, per_token) if rate is not None}
        if len(windows) != 1:
            raise ValueError(f"the request and token limits of {key} must share a window")
        return cls(key, windows.pop(), per_request[0] if per_request else None,
                   per_token[0] if per_token else None)

    @property
    def counted_window(self) -> float:
        """The window the fleet's requests are counted over: the limit's, with 5 % (at
        least half a second) in hand for the moment between taking a slot and the request
        reaching the server (a worker's first request also opens its connection), which a
        server counting arrivals would otherwise see as a burst."""
        return self.window + max(0.05 * self.window, 0.5)

    def describe(self) -> str:
        parts = [f"{self.requests} requests" if self.requests else "",
                 f"{self.tokens} tokens" if self.tokens else ""]
        return f"{' and '.join(p for p in parts if p)} per {self.window:g} s"


Take = Callable[[RateLimit, int], Awaitable[float]]


class LimitReached(ModelSnoozed):
    """Our own limit, not the server's: no request was sent."""


async def pace(limit: RateLimit, tokens: int, take: Take, max_wait: float) -> None:
    """Take a slot for one request of about `tokens` tokens, waiting for it up to
    `max_wait` seconds in all; past that the job is snoozed for the rest of the wait."""
    waited = 0.0
    while True:
        wait = await take(limit, tokens)
        if wait <= 0:
            return
        if waited + wait > max_wait:
            raise LimitReached(
                "rate_limited",
                f"{limit.key}: its limit of {limit.describe()} is reached for the next "
                f"{wait:.1f} s (WORKER_*_RATE_LIMIT); the job is snoozed until then", wait)
        # a little jitter, so the fleet's waiters do not all come back at the same instant
        nap = wait + random.uniform(0, min(0.05 * wait, 0.5))
        await asyncio.sleep(nap)
        waited += nap
