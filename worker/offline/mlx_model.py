"""The offline chat model for MLX: the verified GGUF converted once by gguf2mlx into an MLX
model directory, cached, and used only while every file matches the manifest written with it.

The cache key is the GGUF's SHA-256 and the conversion options, so another model or other
options never reuse a directory. A conversion is written into a temporary directory, hashed
into `manifest.json`, then renamed into place: a half-written directory is never found.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import structlog

from worker.errors import ConfigError
from worker.offline.model_file import MODELS, sha256_of

log = structlog.get_logger("worker.offline.mlx")

MANIFEST = "manifest.json"
# 4-bit affine weights with float32 scales: float16 weights or scales run ~10-40x slower on
# x86 CPUs (MLX has no fast float16 kernels there), and Apple Silicon reads float32 well too
OPTIONS = ("--quantize", "--q-bits", "4", "--q-group-size", "64", "--dtype", "float32")
CONVERT_TIMEOUT = 900.0


def cache_key(sha256: str, options: tuple[str, ...] = OPTIONS) -> str:
    """The directory name for one GGUF converted with `options`."""
    digest = hashlib.sha256(" ".join(options).encode()).hexdigest()[:8]
    return f"{sha256[:16]}-{digest}"


def _manifest(directory: Path) -> dict[str, str]:
    return {path.name: sha256_of(path) for path in sorted(directory.iterdir())
            if path.is_file() and path.name != MANIFEST}


def verified(directory: Path, source_sha256: str) -> bool:
    """True if `directory` holds exactly the files its manifest lists, each with its hash,
    converted from the GGUF with `source_sha256`."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(manifest.get("source_sha256") == source_sha256
                and manifest.get("files") == _manifest(directory))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # two processes starting at once (a worker and a test session) convert once, not twice
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert(gguf: Path, into: Path, options: tuple[str, ...]) -> None:
    try:
        import gguf2mlx  # noqa: F401  # only to fail early with a useful message
    except ImportError as exc:
        raise ConfigError("gguf2mlx is not installed: pip install -e '.[mlx]' (make setup "
                          "installs it on Linux x86_64 and Apple Silicon)") from exc
    command = [sys.executable, "-m", "gguf2mlx", "--offline", "--input", str(gguf),
               "--output", str(into), *options]
    log.info("mlx_conversion_started", gguf=gguf.name, output=str(into))
    done = subprocess.run(command, capture_output=True, text=True, timeout=CONVERT_TIMEOUT,
                          check=False, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-2000:]
        raise ConfigError(f"gguf2mlx could not convert {gguf.name} (exit {done.returncode}); "
                          f"its output ends with:\n{tail}")


def mlx_model(key: str, gguf: Path, cache_dir: Path, options: tuple[str, ...] = OPTIONS) -> Path:
    """The MLX directory of offline model `key`, converted from its verified GGUF `gguf` on
    first use and kept in `cache_dir`. A directory that fails its manifest is replaced."""
    spec = MODELS[key]
    target = cache_dir / f"{spec.name}-mlx-{cache_key(spec.sha256, options)}"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / ".lock"):
        if verified(target, spec.sha256):
            return target
        if target.exists():
            log.warning("mlx_cache_invalid", directory=str(target))
            shutil.rmtree(target)
        with tempfile.TemporaryDirectory(prefix=".converting-", dir=cache_dir) as scratch:
            work = Path(scratch) / "model"
            _convert(gguf, work, options)
            manifest = {"source": spec.filename, "source_sha256": spec.sha256,
                        "options": list(options), "files": _manifest(work)}
            (work / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            work.rename(target)
    log.info("mlx_conversion_done", directory=str(target))
    return target
