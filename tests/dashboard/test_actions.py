"""The dashboard's buttons over HTTP against a real PostgreSQL: each calls the operator
function it stands for, and none works without the token's session, its CSRF token and a
same-origin request, or in read-only mode."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from tests.dashboard.conftest import ORIGIN, TOKEN, csrf_of, dashboard, seed, sign_in
from tests.support.db import one, sql

SAME = {"Origin": ORIGIN}


def _status(dsn: str, job: int) -> str:
    status: str = one(dsn, "SELECT status FROM queue.jobs WHERE id = %s", (job,))
    return status


def test_requeue_makes_a_failed_job_pending_again(
        client: TestClient, seeded: dict[str, Any], dsn: str) -> None:
    csrf = sign_in(client)
    response = client.post(f"/jobs/{seeded['guard']}/requeue", data={"csrf": csrf},
                           headers=SAME)
    new = one(dsn, "SELECT requeued_to FROM queue.jobs WHERE id = %s", (seeded["guard"],))
    assert new is not None and _status(dsn, new) == "pending"
    assert response.url.path == f"/jobs/{new}"
    assert "new pending run" in response.text and 'class="state pending"' in response.text


def test_cancel_pause_resume_and_request_an_explanation(
        client: TestClient, seeded: dict[str, Any], dsn: str) -> None:
    csrf = sign_in(client)
    pending = one(dsn, "SELECT id FROM queue.jobs WHERE status = 'pending' ORDER BY id LIMIT 1")
    client.post(f"/jobs/{pending}/cancel", data={"csrf": csrf}, headers=SAME)
    assert _status(dsn, pending) == "cancelled"
    again = client.post(f"/jobs/{pending}/cancel", data={"csrf": csrf}, headers=SAME)
    assert "already finished" in again.text

    client.post("/kinds/pause", data={"csrf": csrf, "kind": "embedding", "reason": "quota"},
                headers=SAME)
    assert sql(dsn, "SELECT reason FROM queue.paused_kinds WHERE kind = 'embedding'") == [
        {"reason": "quota"}]
    client.post("/kinds/resume", data={"csrf": csrf, "kind": "embedding"}, headers=SAME)
    assert sql(dsn, "SELECT 1 FROM queue.paused_kinds WHERE kind = 'embedding'") == []

    refused = seeded["refused"]
    client.post(f"/questions/{refused}/explain", data={"csrf": csrf}, headers=SAME)
    assert one(dsn, "SELECT ai_explanation_status FROM app.questions WHERE id = %s",
               (refused,)) == "pending"
    ready = seeded["ready"]
    kept = client.post(f"/questions/{ready}/explain", data={"csrf": csrf}, headers=SAME)
    assert "no model call" in kept.text
    assert one(dsn, "SELECT count(*) FROM queue.jobs WHERE subject = %s AND status = "
                    "'pending' AND kind = 'explanation'", (f"question:{ready}",)) == 0
    client.post(f"/questions/{ready}/explain", data={"csrf": csrf, "regenerate": "1"},
                headers=SAME)
    assert one(dsn, "SELECT count(*) FROM queue.jobs WHERE subject = %s AND status = "
                    "'pending' AND kind = 'explanation'", (f"question:{ready}",)) == 1


def test_an_action_without_a_session_csrf_token_or_same_origin_is_refused(
        client: TestClient, seeded: dict[str, Any], dsn: str) -> None:
    job = seeded["guard"]
    path = f"/jobs/{job}/requeue"
    assert client.post(path, data={"csrf": "x"}, headers=SAME).status_code == 403  # no session
    assert client.post("/login", data={"token": "wrong-token-0123456789"},
                       headers=SAME).status_code == 403
    csrf = sign_in(client)
    assert client.post(path, data={"csrf": csrf}).status_code == 403  # no Origin
    assert client.post(path, data={"csrf": csrf},
                       headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.post(path, data={"csrf": csrf + "0"}, headers=SAME).status_code == 403
    assert client.post(path, data={}, headers=SAME).status_code == 403
    assert client.get(path).status_code == 405  # actions are POST only
    assert _status(dsn, job) == "failed"
    assert one(dsn, "SELECT requeued_to FROM queue.jobs WHERE id = %s", (job,)) is None
    # a session cookie this process did not sign is no session
    client.cookies.clear()
    client.cookies.set("pg_llm_dashboard", "forged.0123")
    assert client.post(path, data={"csrf": csrf}, headers=SAME).status_code == 403


def test_another_session_cannot_use_this_sessions_csrf_token(
        seeded: dict[str, Any], dsn: str) -> None:
    with dashboard(dsn) as first:
        csrf = sign_in(first)
        with TestClient(first.app, base_url=ORIGIN) as second:
            sign_in(second)
            response = second.post(f"/jobs/{seeded['guard']}/requeue", data={"csrf": csrf},
                                   headers=SAME)
    assert response.status_code == 403
    assert _status(dsn, seeded["guard"]) == "failed"


def test_read_only_mode_shows_no_buttons_and_refuses_actions(dsn: str) -> None:
    ids = seed(dsn)
    with dashboard(dsn, dashboard_read_only=True) as client:
        page = client.get(f"/jobs/{ids['guard']}").text
        assert "<button" not in page and "read-only" in page
        assert client.post("/login", data={"token": TOKEN}, headers=SAME).status_code == 403
        refused = client.post(f"/jobs/{ids['guard']}/requeue", data={"csrf": "x"},
                              headers=SAME)
    assert refused.status_code == 403 and "read-only" in refused.text
    assert _status(dsn, ids["guard"]) == "failed"
    with dashboard(dsn, dashboard_token=None) as client:  # no token: no actions either
        assert client.post("/login", data={"token": TOKEN}, headers=SAME).status_code == 403


def test_sign_in_goes_back_only_to_a_local_page(client: TestClient) -> None:
    response = client.post("/login", data={"token": TOKEN, "next": "//evil.example/x"},
                           headers=SAME, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/?done=signed_in"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


def test_a_signed_in_page_carries_buttons_with_the_sessions_csrf_token(
        client: TestClient, seeded: dict[str, Any]) -> None:
    csrf = sign_in(client)
    html = client.get(f"/jobs/{seeded['guard']}").text
    assert csrf_of(html) == csrf
    assert f'action="/jobs/{seeded["guard"]}/requeue"' in html


def test_every_response_forbids_framing_and_script(client: TestClient) -> None:
    headers = client.get("/").headers
    policy = headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
    assert "script-src" not in policy  # none allowed: default-src 'none'
    assert headers["x-frame-options"] == "DENY"
    assert client.get("/static/style.css").headers["x-frame-options"] == "DENY"


def test_an_action_on_a_job_that_does_not_exist_says_so(client: TestClient) -> None:
    csrf = sign_in(client)
    response = client.post("/jobs/987654321/requeue", data={"csrf": csrf}, headers=SAME)
    assert response.status_code == 404 and "does not exist" in response.text
    assert client.get("/jobs/99999999999999999999").status_code in (400, 404)
