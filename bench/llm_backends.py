#!/usr/bin/env python
"""The offline chat model through both local backends in one run: the same Qwen2.5-Coder-0.5B
(the GGUF for llama.cpp, its gguf2mlx conversion for MLX) and the same prompt (the real
explanation prompt v2 with one evidence piece and the schema, as the prompt JSON mode sends
it), greedy, `--max-tokens` tokens.

    python bench/llm_backends.py                      # print the table
    python bench/llm_backends.py --write BENCHMARKS.md  # and replace its bench:llm block

llama.cpp is the server `run --offline` starts (llama-cpp-python[server]), with 1 thread and
with one per core, timed by streaming; MLX is mlx-lm in process through MlxChat, in a child
process so that its RSS is its own. Time to first token is from sending the request to the
first generated token: prompt tokens/s is the prompt over that time, generation tokens/s the
rest of the tokens over the rest of the time. RSS is the process's peak (VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(PROJECT))

from worker.config import load_settings  # noqa: E402
from worker.kinds.explanation import Envelope  # noqa: E402
from worker.models import structured  # noqa: E402
from worker.models.types import CompletionRequest, Message  # noqa: E402
from worker.offline.model_file import MODELS, assemble  # noqa: E402
from worker.prompts import Budget, load_prompt  # noqa: E402

QUESTION = {
    "question_text": "변압기의 효율이 최대가 되는 조건은?",
    "choice_1": "철손이 동손의 2배일 때", "choice_2": "동손이 철손의 2배일 때",
    "choice_3": "철손과 동손이 같을 때", "choice_4": "무부하일 때", "correct_choice": 3,
    "evidence": "[자료 1] (문서: 변압기의 손실과 효율)\n변압기의 손실은 철손과 동손으로 "
                "나뉜다. 동손은 부하 전류의 제곱에 비례하고, 효율은 철손과 동손이 같을 때 "
                "최대가 된다.",
}


def request(max_tokens: int) -> CompletionRequest[Envelope]:
    """The explanation request as the kind makes it (MlxChat adds the schema itself), with
    `max_tokens` in place of the prompt file's and greedy."""
    prompt = load_prompt("explanation", "2")
    made = prompt.request(QUESTION, Envelope, Budget(max_tokens=max_tokens, temperature=0.0))
    return made.model_copy(update={"max_tokens": max_tokens, "temperature": 0.0})


def with_schema(max_tokens: int) -> list[dict[str, str]]:
    """What the prompt JSON mode sends a server: the same messages with the schema."""
    sent = structured.with_schema_prompt(list(request(max_tokens).messages), Envelope)
    return [{"role": m.role, "content": m.content} for m in sent]


def peak_rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def figures(prompt_tokens: int, completion_tokens: int, first: float, total: float
            ) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "ttft_s": round(first, 2), "total_s": round(total, 2),
            "prompt_tps": round(prompt_tokens / first, 2),
            "generation_tps": round((completion_tokens - 1) / (total - first), 2)
            if completion_tokens > 1 else None}


def run_llama(gguf: Path, threads: int, max_tokens: int) -> dict[str, Any]:
    from openai import OpenAI

    from worker.offline.servers import CHAT_ALIAS, llama_server

    with llama_server(gguf, threads=threads) as server:
        client = OpenAI(base_url=server.base_url, api_key="bench")
        # warm: the weights read once; a different prompt, so that no prefix is reused
        client.chat.completions.create(model=CHAT_ALIAS, max_tokens=1,
                                       messages=[{"role": "user", "content": "hi"}])
        started = time.perf_counter()
        first = None
        stream = client.chat.completions.create(
            model=CHAT_ALIAS, messages=with_schema(max_tokens),  # type: ignore[arg-type]
            max_tokens=max_tokens, temperature=0.0, stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter() - started
        total = time.perf_counter() - started
        # its stream carries no usage: the same request again (greedy: the same reply; the
        # prompt is cached by now, so this costs the generation only) for the token counts
        usage = client.chat.completions.create(
            model=CHAT_ALIAS, messages=with_schema(max_tokens),  # type: ignore[arg-type]
            max_tokens=max_tokens, temperature=0.0).usage
        rss = peak_rss_mb(server.proc.pid)
    assert first is not None and usage is not None
    return {"backend": f"llama.cpp server, {threads} thread{'s' if threads > 1 else ''}",
            **figures(usage.prompt_tokens, usage.completion_tokens, first, total),
            "peak_rss_mb": round(rss)}


async def run_mlx(directory: Path, max_tokens: int) -> dict[str, Any]:
    """In the child: load, warm, then the request through MlxChat as the worker sends it."""
    from worker.models.gate import Gate, RoundTrip
    from worker.models.mlx_backend import MlxChat, MlxLmRuntime

    marks: list[float] = []
    chat = MlxChat(str(directory), MlxLmRuntime(on_token=lambda n: marks.append(
        time.perf_counter())))
    loading = time.perf_counter()
    await chat.start()
    load_s = time.perf_counter() - loading

    warm = CompletionRequest[Envelope](messages=(Message(role="user", content="hi"),),
                                       output=Envelope, max_tokens=1, temperature=0.0)
    await chat.chat(warm, RoundTrip(Gate("mlx", 1), 3600))
    marks.clear()
    started = time.perf_counter()
    reply = await chat.chat(request(max_tokens), RoundTrip(Gate("mlx", 1), 3600))
    total = time.perf_counter() - started
    await chat.aclose()
    return {"backend": "mlx-lm in process (MLX CPU, 1 thread)",
            **figures(reply.usage.prompt_tokens, reply.usage.completion_tokens,
                      marks[0] - started, total),
            "peak_rss_mb": round(peak_rss_mb()), "load_s": round(load_s, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--write", type=Path, help="BENCHMARKS.md to update in place")
    ap.add_argument("--child-mlx", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_mlx:
        print(json.dumps(asyncio.run(run_mlx(args.child_mlx, args.max_tokens))))
        return
    from worker.offline.mlx_model import mlx_model

    settings = load_settings()
    load_before = os.getloadavg()[0]
    gguf = assemble(settings.offline_model, settings.models_dir)
    converting = time.perf_counter()
    directory = mlx_model(settings.offline_model, gguf, settings.mlx_cache_dir)
    convert_s = time.perf_counter() - converting
    child = subprocess.run([sys.executable, __file__, "--child-mlx", str(directory),
                            "--max-tokens", str(args.max_tokens)], check=True,
                           capture_output=True, text=True)
    mlx = json.loads(child.stdout.strip().splitlines()[-1])
    runs = [run_llama(gguf, threads, args.max_tokens)
            for threads in sorted({1, os.cpu_count() or 1})]
    result = {"date": dt.date.today().isoformat(),
              "machine": f"{os.cpu_count()} cores, {platform.machine()} {platform.system()}",
              "model": MODELS[settings.offline_model].name, "max_tokens": args.max_tokens,
              "convert_note": "an earlier run (cached)" if convert_s < 5 else
                              f"{convert_s:.0f} s in this run",
              "runs": [*runs, mlx],
              # the machine is shared: how busy it was around the run
              "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)]}
    # inside make bench, next to the other scenarios' results; alone, a folder of its own
    results = Path(os.environ.get("BENCH_RESULTS") or
                   HERE / "results" / f"llm-{dt.datetime.now():%Y%m%d-%H%M%S}")
    results.mkdir(parents=True, exist_ok=True)
    (results / "llm.json").write_text(json.dumps(result, indent=2))
    sys.path.insert(0, str(HERE))
    from report import llm_block, write

    text = llm_block(results)
    print(text)
    if args.write:
        write(args.write, {"llm": text})
        print(f"updated {args.write}")


if __name__ == "__main__":
    main()
