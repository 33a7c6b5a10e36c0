"""The server's own rate-limit headers: x-ratelimit-* durations and holds, and Retry-After,
read defensively (garbage, negative, non-finite and huge values never reach the queue)."""

from __future__ import annotations

import math

import pytest

from worker.models.openai_backend import retry_after
from worker.models.ratelimit import MAX_HOLD, header_hold, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("6m0s", 360.0), ("1s", 1.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5s", 0.5),
    ("59.876s", 59.876), ("0s", 0.0), ("2", 2.0), ("1.5", 1.5), (" 7s ", 7.0),
    ("250us", 0.00025), ("3ns", 3e-9), ("1m30s", 90.0), ("2h", 7200.0),
])
def test_durations_as_openai_sends_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [
    "", "s", "garbage", "-1s", "-1", "1e999s", "1e3", "nan", "inf", "NaN", "infinity",
    "1.2.3s", "5x", "ms", "1s garbage", "1 s", "+1s", "0x10", "1" * 400 + "s",
    "\uff11s",  # a fullwidth digit one: a digit to \\d, not to the header's grammar
])
def test_garbage_durations_are_none(text: str) -> None:
    assert parse_duration(text) is None


def _headers(**values: str) -> dict[str, str]:
    return {f"x-ratelimit-{k.replace('_', '-')}": v for k, v in values.items()}


def test_no_remaining_requests_holds_until_the_reset() -> None:
    hold = header_hold(_headers(remaining_requests="0", reset_requests="2s",
                                remaining_tokens="5000", reset_tokens="1s"), tokens=100)
    assert hold == pytest.approx(2.0)


def test_requests_left_hold_nothing() -> None:
    assert header_hold(_headers(remaining_requests="1", reset_requests="2s"), tokens=100) is None
    assert header_hold({}, tokens=100) is None


def test_tokens_below_the_last_request_hold_until_their_reset() -> None:
    headers = _headers(remaining_requests="10", reset_requests="1s",
                       remaining_tokens="50", reset_tokens="6m0s")
    assert header_hold(headers, tokens=100) == pytest.approx(360.0)
    assert header_hold(headers, tokens=40) is None


def test_both_exhausted_hold_for_the_longer_reset() -> None:
    headers = _headers(remaining_requests="0", reset_requests="1s",
                       remaining_tokens="0", reset_tokens="3s")
    assert header_hold(headers, tokens=1) == pytest.approx(3.0)


def test_a_huge_reset_is_clipped() -> None:
    hold = header_hold(_headers(remaining_requests="0", reset_requests="99999999h"), tokens=1)
    assert hold == MAX_HOLD


@pytest.mark.parametrize("headers", [
    _headers(remaining_requests="0", reset_requests="soon"),
    _headers(remaining_requests="0", reset_requests="-5s"),
    _headers(remaining_requests="0", reset_requests="nan"),
    _headers(remaining_requests="0"),
    _headers(remaining_requests="none", reset_requests="2s"),
    _headers(remaining_requests="-1", reset_requests="2s"),
    _headers(remaining_requests="0.5", reset_requests="2s"),
    _headers(remaining_requests="1e9", reset_requests="2s"),
    _headers(remaining_tokens="-100", reset_tokens="2s"),
    _headers(remaining_requests="0", reset_requests="0s"),
])
def test_garbage_headers_hold_nothing(headers: dict[str, str]) -> None:
    assert header_hold(headers, tokens=100) is None


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after-ms": "nan"}, None), ({"retry-after-ms": "inf"}, None),
    ({"retry-after": "inf"}, None), ({"retry-after": "1e400"}, None),
    ({"retry-after": "-5"}, 0.0), ({"retry-after": "99999999"}, MAX_HOLD),
    ({"retry-after-ms": "nan", "retry-after": "3"}, 3.0), ({"retry-after": "later"}, None),
    ({"retry-after-ms": "250"}, 0.25),
])
def test_retry_after_is_finite_and_clipped(headers: dict[str, str], seconds: float | None) \
        -> None:
    got = retry_after(headers)
    assert got == seconds and (got is None or math.isfinite(got))
