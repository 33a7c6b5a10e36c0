"""The notify protocol's client side without a service manager (worker/systemd.py)."""

from __future__ import annotations

import pytest

from worker.systemd import notify


def test_notify_does_nothing_without_a_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
