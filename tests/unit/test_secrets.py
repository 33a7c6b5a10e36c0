"""Secrets stay out of logs, stored messages and error output: the configured values
themselves are masked, not only what looks like a credential."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import structlog
from pydantic import SecretStr

from worker import logs
from worker.config import Settings, secret_values
from worker.textsafe import storable


@pytest.fixture
def remembered() -> Iterator[None]:
    yield
    logs.forget_secrets()


@pytest.mark.parametrize(("text", "secret"), [
    ("postgresql://app:p@ss@db/app", "p@ss"),
    ("postgresql://app:p@ss@db/app", "ss@"),
    ("postgresql//worker_login:S3cretPw42@db/app", "S3cretPw42"),
    ("dsn postgres://u:a:b:c@h and postgres://v:d@e@h2", "a:b:c"),
    ("dsn postgres://u:a:b:c@h and postgres://v:d@e@h2", "d@e"),
])
def test_a_password_with_an_at_sign_or_no_scheme_colon_is_masked_whole(
        text: str, secret: str) -> None:
    masked = logs.mask(text)
    assert secret not in masked, masked
    assert "db" in masked or "h" in masked  # the host stays readable


def test_a_configured_secret_is_masked_whatever_its_shape(remembered: None) -> None:
    key = "gsk_live_4f9a8b7c6d5e"
    echoed = f"Error code: 401 - Incorrect API key provided: {key}. Check it."
    assert key in logs.mask(echoed)  # no pattern knows this shape
    logs.remember_secrets([key])
    assert key not in logs.mask(echoed)
    assert key not in storable(echoed)
    assert "Incorrect API key provided" in logs.mask(echoed)


def test_the_settings_name_every_secret_they_hold() -> None:
    settings = Settings(
        database_url=SecretStr("postgresql://worker_login:p%40ss%21@db/app"),
        models={"openai_api_key": "gsk_live_chat", "embed_api_key": "emb-key-1234"},
        rerank={"api_key": "rr-key-5678"},
    )
    found = secret_values(settings)
    for value in ("gsk_live_chat", "emb-key-1234", "rr-key-5678", "p%40ss%21", "p@ss!"):
        assert value in found, found


def test_short_values_are_not_treated_as_secrets(remembered: None) -> None:
    # a one-letter password must not blank every "a" of every log line
    logs.remember_secrets(["a", ""])
    assert logs.mask("a job of kind embedding") == "a job of kind embedding"


def test_nested_values_in_a_log_record_are_masked(remembered: None) -> None:
    stream = io.StringIO()
    logs.remember_secrets(["gsk_live_nested_123"])
    logs.configure("json", "info", stream)
    structlog.get_logger("t").info(
        "config", cfg={"dsn": "postgresql://app:hunter2@db/app",
                       "keys": ["gsk_live_nested_123"], "n": 3})
    out = stream.getvalue()
    assert "hunter2" not in out and "gsk_live_nested_123" not in out
    assert '"n": 3' in out
