"""The worker's HTTP side: Prometheus metrics, /healthz and /readyz, on WORKER_METRICS_ADDR.

prometheus_client's WSGI app serves the two registries of worker/metrics.py; the standard
library's WSGI server runs it on a thread of its own (the asyncio loop never serves HTTP, so
a busy loop cannot hide its own stall: /healthz reads how long ago the loop last ticked).

- `/metrics`        this process's metrics
- `/metrics/queue`  the queue's gauges, read from the database when scraped
- `/healthz`        200 while the event loop ticks and every slot and the listener run
- `/readyz`         200 while the database answers with the schema this worker expects
                    and the model endpoint answered (checked at start-up, then until it has)
"""

from __future__ import annotations

import errno
import json
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app

from worker import metrics
from worker.errors import ConfigError
from worker.health import Health

log = structlog.get_logger("worker.exposition")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scrape in progress never holds the worker's exit


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every 15 s are not log lines


def application(health: Health, queue: CollectorRegistry) -> WsgiApp:
    process_app: WsgiApp = make_wsgi_app(metrics.PROCESS)
    queue_app: WsgiApp = make_wsgi_app(queue)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/metrics", "/"):
            return process_app(environ, start_response)
        if path == "/metrics/queue":
            return queue_app(environ, start_response)
        if path == "/healthz":
            return _json(start_response, *health.liveness())
        if path == "/readyz":
            return _json(start_response, *health.readiness())
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics, /metrics/queue, /healthz, /readyz\n"]

    return app


def _json(start_response: StartResponse, ok: bool, detail: dict[str, Any]) -> list[bytes]:
    body = json.dumps({"ok": ok, **detail}, sort_keys=True).encode() + b"\n"
    start_response("200 OK" if ok else "503 Service Unavailable",
                   [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                    ("Content-Length", str(len(body)))])
    return [body]


class Exposition:
    """The HTTP server on its thread; `close` stops it and its queue connection."""

    def __init__(self, addr: str, port: int, health: Health, dsn: str, options: str) -> None:
        self._collector = metrics.QueueCollector(dsn, options)
        registry = CollectorRegistry()
        registry.register(self._collector)
        try:
            self._server = make_server(addr, port, application(health, registry),
                                       server_class=(_ThreadingServer6 if ":" in addr
                                                     else _ThreadingServer),
                                       handler_class=_QuietHandler)
        except OSError as exc:
            reason = ("is already in use" if exc.errno == errno.EADDRINUSE
                      else f"cannot be served: {exc.strerror or exc}")
            raise ConfigError(f"WORKER_METRICS_PORT={port}: {_host(addr)}:{port} {reason}; "
                              "choose another port, or 0 to serve no metrics") from None
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics",
                                        daemon=True)
        self._thread.start()
        log.info("metrics_serving", address=f"{_host(addr)}:{self.port}",
                 paths=["/metrics", "/metrics/queue", "/healthz", "/readyz"])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._collector.close()


def _host(addr: str) -> str:
    return f"[{addr}]" if ":" in addr else addr
