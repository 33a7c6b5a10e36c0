"""Log records for journald: a syslog priority prefix when stdout is the journal (so
`journalctl -p warning` filters), and the standard library's records in the same JSON form."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from worker import logs
from worker.systemd import journal_stream


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    structlog.reset_defaults()
    root.setLevel(level)
    for handler in list(root.handlers):
        if isinstance(handler, logs.StructlogHandler):
            root.removeHandler(handler)


def test_records_carry_a_syslog_priority_for_journald() -> None:
    stream = io.StringIO()
    logs.configure("json", "debug", stream, journald=True)
    log = structlog.get_logger("t")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    lines = stream.getvalue().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<2>"]
    assert json.loads(lines[2][3:])["event"] == "w"


def test_no_prefix_when_stdout_is_not_the_journal() -> None:
    stream = io.StringIO()
    logs.configure("json", "info", stream)
    structlog.get_logger("t").warning("w")
    assert json.loads(stream.getvalue())["event"] == "w"


def test_standard_library_records_come_out_as_the_same_masked_json() -> None:
    stream = io.StringIO()
    logs.configure("json", "info", stream, journald=True)
    logging.getLogger("psycopg.pool").warning(
        "error connecting to postgresql://u:S3cretPw42@db/app")
    logging.getLogger("httpx2").info("HTTP Request: POST /v1/chat 200")  # below warning
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("<4>")
    record = json.loads(lines[0][3:])
    assert record["logger"] == "psycopg.pool" and record["level"] == "warning"
    assert "S3cretPw42" not in lines[0] and "timestamp" in record


def test_the_journal_stream_is_recognised_only_on_its_own_descriptor(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch
                                                                     ) -> None:
    with (tmp_path / "out").open("w") as handle:
        info = os.fstat(handle.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        assert journal_stream(handle.fileno())
        with (tmp_path / "other").open("w") as other:
            assert not journal_stream(other.fileno())  # inherited, but not this descriptor
    monkeypatch.delenv("JOURNAL_STREAM")
    with (tmp_path / "out").open("w") as handle:
        assert not journal_stream(handle.fileno())
