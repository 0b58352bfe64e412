# medxfer: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Run the end-to-end demo (MedMNIST from MEDXFER_DATA_DIR when set, else downloaded).
demo: $(STAMP)
	$(BIN)/medxfer demo $(if $(MEDXFER_DATA_DIR),--data-dir $(MEDXFER_DATA_DIR),)

## Run the test suite (reads real images from MEDXFER_TEST_DATA, default ../shared/data).
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check medxfer tests benchmarks

clean:
	rm -rf $(VENV) medxfer-runs medxfer-demo .pytest_cache
