# primehub-jupyter: `make demo` and `make test` set everything up on a fresh machine.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8888
GATEWAY_PORT ?= 8890
DEMO_DIR ?= .demo
PYTEST_ARGS ?=
TORCH_VERSION ?= 2.13.0

.PHONY: help env demo test test-fast test-frontend test-browser lint format generate bench clean

help:
	@echo "make demo   - create the environment, build, and start JupyterLab with the extension"
	@echo "make test   - create the environment and run every test"
	@echo "make lint   - ruff and mypy on the package"
	@echo "make generate - rewrite the files generated from core/ (CRD, API schema, TS types)"
	@echo "make bench  - run the benchmarks in bench/"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

FRONTEND_SOURCES := $(shell find labextension/src labextension/style -type f) labextension/package.json
LABEXTENSION := primehub_jupyter/labextension/package.json
JLPM := PATH=$(abspath $(BIN)):$$PATH jlpm

# The first editable install also builds the labextension (hatch-jupyter-builder runs jlpm).
# torch first, pinned to the CPU build, so nothing later resolves a CUDA one.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/python -m pip install --quiet -e ".[dev,frameworks]"
	@touch $@

# Later changes of the frontend sources rebuild it.
$(LABEXTENSION): $(FRONTEND_SOURCES) | $(VENV)/.installed
	cd labextension && $(JLPM) install && $(JLPM) build

env: $(VENV)/.installed $(LABEXTENSION)

demo: env
	@mkdir -p $(DEMO_DIR)/work $(DEMO_DIR)/data
	@cp -n notebooks/*.ipynb $(DEMO_DIR)/work/ 2>/dev/null || true
	@test -s $(DEMO_DIR)/token || $(BIN)/python -c "import secrets; print(secrets.token_hex(16))" > $(DEMO_DIR)/token
	@echo ""
	@echo "  PrimeHub Model Deployment demo (embedded engine, data in $(DEMO_DIR)/data)"
	@echo "  Open: http://127.0.0.1:$(PORT)/lab/tree/01-quickstart.ipynb?token=$$(cat $(DEMO_DIR)/token)"
	@echo "  Gateway (model endpoints): http://127.0.0.1:$(GATEWAY_PORT)/deployment/<id>/api/v1.0/predictions"
	@echo "  CLI:  export PRIMEHUB_API_URL=http://127.0.0.1:$(PORT)/ PRIMEHUB_API_TOKEN=$$(cat $(DEMO_DIR)/token)"
	@echo "        $(BIN)/primehub-deploy get"
	@echo ""
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/jupyter lab --no-browser --ip=127.0.0.1 --port=$(PORT) --ServerApp.allow_root=True \
		--ServerApp.root_dir=$(DEMO_DIR)/work --IdentityProvider.token=$$(cat $(DEMO_DIR)/token) \
		--PrimeHubApp.data_dir=$(abspath $(DEMO_DIR))/data --LocalEngine.gateway_port=$(GATEWAY_PORT)

test: env
	cd labextension && $(JLPM) typecheck && $(JLPM) test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-frontend: env
	cd labextension && $(JLPM) lint:check && $(JLPM) test

test-browser: env
	$(BIN)/python -m pytest -m browser $(PYTEST_ARGS)

test-fast: env
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

lint: env
	$(BIN)/ruff check primehub_jupyter tests bench
	$(BIN)/ruff format --check primehub_jupyter tests bench
	$(BIN)/mypy

format: env
	$(BIN)/ruff format primehub_jupyter tests bench
	$(BIN)/ruff check --fix primehub_jupyter tests bench

# The CRD and the API's JSON schema from the pydantic models, then the TypeScript types from
# that schema; tests fail (naming this target) when a committed copy is out of date.
generate: env
	$(BIN)/python -m primehub_jupyter.generate
	cd labextension && $(JLPM) generate:types

bench: env
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/serving.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) primehub_jupyter/labextension labextension/lib labextension/node_modules
