#!/usr/bin/env python
"""The project's scripted fake OpenAI server (tests/support/fake_openai.py) in a process of
its own, answering every chat call after `--delay` seconds and every embedding request with
`--dim`-dimensional vectors. Prints its base URL, then serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.fake_openai import (
    FakeOpenAI,
    Recorded,
    Reply,
    chat_json,
    embeddings_for,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--delay", type=float, default=0.05, help="seconds per chat call")
    ap.add_argument("--dim", type=int, default=384, help="embedding dimensions")
    ap.add_argument("--stats", help="write the server-side handling times (ms) here at exit")
    args = ap.parse_args()
    handled_ms: list[float] = []

    def answer(request: Recorded) -> Reply:
        return chat_json({"ok": True}, delay=args.delay)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fake = FakeOpenAI()
    # http.server writes the headers and the body in two sends; with Nagle on, the body
    # waits for the client's delayed ACK (~40 ms on Linux). Real model servers (uvicorn,
    # vLLM, llama.cpp) set TCP_NODELAY, so the fake does here too.
    fake._server.RequestHandlerClass.disable_nagle_algorithm = True  # type: ignore[attr-defined]
    with fake:
        fake.fallback["chat"] = answer
        fake.fallback["embeddings"] = embeddings_for(args.dim)
        print(fake.base_url, flush=True)
        while not stop.wait(0.5):
            # the fake keeps every request for the tests' checks; a benchmark keeps only
            # how long each took the server, from its parsed request to its reply's send
            with fake._lock:
                done, fake.requests = fake.requests, []
            handled_ms += [(r.ended - r.started) * 1000 for r in done if r.ended is not None]
            with fake._lock:  # still being answered: look again next time
                fake.requests[:0] = [r for r in done if r.ended is None]
    if args.stats:
        Path(args.stats).write_text(json.dumps(handled_ms))


if __name__ == "__main__":
    main()
