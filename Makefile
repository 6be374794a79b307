# The two commands: `make run` and `make test`. Everything else is a helper of these.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint fuzz bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Plain HTTP on loopback: the session cookie goes without the Secure flag (the service says so).
run: $(STAMP)
	TALLENNE_INSECURE_COOKIES=$${TALLENNE_INSECURE_COOKIES:-true} $(BIN)/tallenne serve

# Two test processes, each with its own embedded PostgreSQL and S3 (TEST_WORKERS=0: one);
# one that runs out of tests takes some still queued for the other (--dist worksteal).
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist worksteal)

lint: $(STAMP)
	$(BIN)/ruff check service storage schemas devstack tests bench
	$(BIN)/mypy schemas storage service devstack tests bench
	$(BIN)/lint-imports

fuzz: $(STAMP)
	TALLENNE_FUZZ_EXAMPLES=$${TALLENNE_FUZZ_EXAMPLES:-200} $(BIN)/python -m pytest -q tests/service/test_fuzz_api.py tests/service/test_bad_input_corpus.py

bench: $(STAMP)
	for b in bench/*.py; do n=$$(basename $$b .py); [ $$n = __init__ ] || [ $$n = stack ] || $(BIN)/python -m bench.$$n --quick; done

clean:
	rm -rf $(VENV) build *.egg-info
