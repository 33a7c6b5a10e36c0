"""Waiting for a quiet machine before a measurement: the 1-minute load average must drop
below a threshold; after `give_up_s` the measurement runs anyway and says so."""

from __future__ import annotations

import time
from typing import Any


def loadavg() -> float:
    with open("/proc/loadavg", encoding="ascii") as f:
        return float(f.read().split()[0])


def wait_quiet(threshold: float = 0.8, give_up_s: float = 1200.0, poll_s: float = 10.0,
               label: str = "") -> dict[str, Any]:
    """Block until loadavg < threshold; returns what happened, for the results."""
    started = time.monotonic()
    first = loadavg()
    load = first
    while load >= threshold:
        waited = time.monotonic() - started
        if waited >= give_up_s:
            print(f"== {label}: load {load:.2f} still >= {threshold} after {waited:.0f} s "
                  "(the run's waiting budget is spent); "
                  "measuring on a loaded machine", flush=True)
            return {"label": label, "load_at_start": first, "load": load,
                    "waited_s": round(waited), "quiet": False}
        time.sleep(poll_s)
        load = loadavg()
    waited = time.monotonic() - started
    print(f"== {label}: load {load:.2f} (waited {waited:.0f} s)", flush=True)
    return {"label": label, "load_at_start": first, "load": load, "waited_s": round(waited),
            "quiet": True}
