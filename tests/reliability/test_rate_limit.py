"""Three worker processes share one model endpoint whose server allows N requests per window
and answers 429 past it. With the limit configured (WORKER_CHAT_RATE_LIMIT) the fleet keeps
under it together; a 429 snoozes a job instead of using an attempt. Every job completes.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

import pytest

from tests.reliability.support import (
    SEED,
    Course,
    Fleet,
    envelope,
    model_env,
    report,
    sql,
    wait_terminal,
)
from tests.support import fake_openai as fake

pytestmark = pytest.mark.chaos

LIMIT, WINDOW = 6, 3.0  # requests per seconds, as the server enforces it


class LimitedServer:
    """The fake server's chat answers behind a sliding-window limit of LIMIT per WINDOW:
    past it, 429 with the seconds until the oldest request of the window ages out."""

    def __init__(self) -> None:
        self.sent: collections.deque[float] = collections.deque()
        self.arrived: list[float] = []  # every request, answered or refused
        self.refused = 0
        self._lock = threading.Lock()

    def __call__(self, request: fake.Recorded) -> fake.Reply:
        with self._lock:
            now = time.monotonic()
            self.arrived.append(now)
            while self.sent and self.sent[0] <= now - WINDOW:
                self.sent.popleft()
            if len(self.sent) >= LIMIT:
                self.refused += 1
                wait = self.sent[0] + WINDOW - now
                return fake.rate_limited(retry_after=None, retry_after_ms=str(int(wait * 1000)))
            self.sent.append(now)
        return fake.chat_json(envelope(2))

    def most_in_a_window(self) -> int:
        """The most requests that arrived within any WINDOW seconds, refused ones included."""
        times = sorted(self.arrived)
        most, start = 0, 0
        for end, at in enumerate(times):
            while times[start] <= at - WINDOW:
                start += 1
            most = max(most, end - start + 1)
        return most


def _run(dsn: str, model: fake.FakeOpenAI, fleets: Callable[..., Fleet], jobs: int,
         **env: str) -> tuple[LimitedServer, list[dict[str, object]]]:
    server = LimitedServer()
    model.fallback["chat"] = server
    course = Course(dsn)
    job_ids = [course.request(course.add(marker, key=2)) for marker in range(1, jobs + 1)]
    fleet = fleets(dsn, model_env(model, WORKER_LLM_GATE_CAPACITY="2", **env))
    fleet.start(3)
    try:
        wait_terminal(dsn, job_ids, 180, fleet)
    finally:
        fleet.stop()
    rows = sql(dsn, "SELECT j.status, j.error_code, (SELECT count(*) FROM queue.attempts a "
                    "WHERE a.job_id = j.id AND a.outcome = 'snoozed') AS snoozed "
                    "FROM queue.jobs j WHERE j.id = ANY(%s)", (job_ids,))
    return server, rows


def test_three_workers_keep_under_a_shared_limit_and_every_job_completes(
        dsn: str, model: fake.FakeOpenAI, fleets: Callable[..., Fleet]) -> None:
    server, rows = _run(dsn, model, fleets, jobs=24,
                        WORKER_CHAT_RATE_LIMIT=f"{LIMIT}/{WINDOW:g}s")
    most = server.most_in_a_window()
    report("rate_limit", "limited", SEED, {"jobs": 24, "workers": 3, "limit": LIMIT,
                                           "window_s": WINDOW, "most_in_window": most,
                                           "server_429s": server.refused})
    assert [r["status"] for r in rows] == ["completed"] * 24
    # the limiter counts a request when it takes its slot, right before sending it, and
    # keeps half a second of the window in hand for the way to the server; one request of
    # tolerance for a send delayed longer than that (measured: a worker's first request,
    # which also opens its connection, on a loaded 2-core machine), whose 429 then holds
    # the whole fleet back until the server's retry-after
    assert most <= LIMIT + 1, most
    assert server.refused <= 1, server.refused


def test_without_a_configured_limit_429s_snooze_jobs_instead_of_failing_them(
        dsn: str, model: fake.FakeOpenAI, fleets: Callable[..., Fleet]) -> None:
    """The fleet does not know the server's limit: it meets 429s, and each one reschedules
    its job at the server's retry-after without using an attempt (2 allowed)."""
    server, rows = _run(dsn, model, fleets, jobs=24)
    assert [r["status"] for r in rows] == ["completed"] * 24
    assert server.refused > 0 and server.most_in_a_window() > LIMIT + 1
    assert sum(int(str(r["snoozed"])) for r in rows) > 0
    report("rate_limit", "unlimited", SEED, {"jobs": 24, "workers": 3,
                                             "server_429s": server.refused,
                                             "snoozes": sum(int(str(r["snoozed"]))
                                                            for r in rows)})


def test_a_reply_with_no_requests_left_holds_another_worker_process_until_the_reset(
        dsn: str, model: fake.FakeOpenAI, fleets: Callable[..., Fleet]) -> None:
    """The first worker's reply says (x-ratelimit-*) that no request is left for RESET
    seconds. That worker stops; a second process, started afresh, gets the next job: its
    request waits for the reset, which only PostgreSQL (queue.rate_limiters) remembers."""
    reset = 10.0
    first_reply = fake.chat_json(envelope(2))
    first_reply.headers = {"x-ratelimit-limit-requests": "500",
                           "x-ratelimit-remaining-requests": "0",
                           "x-ratelimit-reset-requests": f"{reset:g}s"}
    model.script(first_reply)
    model.fallback["chat"] = lambda request: fake.chat_json(envelope(2))
    course = Course(dsn)
    env = model_env(model, WORKER_CHAT_RATE_LIMIT="1000/min",
                    WORKER_RATE_LIMIT_MAX_WAIT="60")
    one_fleet = fleets(dsn, env)
    one_fleet.start(1)
    first_job = course.request(course.add(1, key=2))
    try:
        wait_terminal(dsn, [first_job], 60, one_fleet)
    finally:
        one_fleet.stop()
    other = fleets(dsn, env)
    other.start(1)
    second_job = course.request(course.add(2, key=2))
    try:
        wait_terminal(dsn, [second_job], 60, other)
    finally:
        other.stop()
    chats = [r for r in model.requests if r.endpoint == "chat"]
    assert len(chats) == 2 and chats[0].ended is not None
    waited = chats[1].started - chats[0].ended
    report("rate_limit", "headers", SEED, {"reset_s": reset, "next_request_after_s": waited})
    assert waited >= reset * 0.9, waited
    assert [r["status"] for r in sql(dsn, "SELECT status FROM queue.jobs WHERE id = ANY(%s)",
                                     ([first_job, second_job],))] == ["completed"] * 2
