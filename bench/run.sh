#!/usr/bin/env bash
# `make bench`: create the benchmark's own virtualenv (.bench/venv: the peers procrastinate
# and pgqueuer, asyncpg, psutil, py-spy, and this project installed editable, pinned to the
# versions of the project's .venv) and run every scenario (bench/run.py). The peers are never
# dependencies of the project. Extra arguments go to run.py (--quick, --only a,b).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.bench/venv
STAMP=$VENV/.installed
PEERS=(procrastinate==3.10.0 pgqueuer==1.6.0 asyncpg==0.32.0 psutil py-spy)
if [[ ! -f $STAMP || pyproject.toml -nt $STAMP || bench/run.sh -nt $STAMP ]]; then
  python3.11 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  # the worker runs with exactly the library versions the project's .venv has
  .venv/bin/pip freeze --exclude-editable | grep -v -i -E '^(pg-llm-worker|-e )' \
    > .bench/constraints.txt
  "$VENV/bin/pip" install --quiet -c .bench/constraints.txt "${PEERS[@]}" -e .
  touch "$STAMP"
fi
exec "$VENV/bin/python" bench/run.py "$@"
