# The two commands of the README: `make demo` and `make test`. Each sets up .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
# test processes: most tests keep one core busy (small models, fresh TensorFlow imports),
# so two workers use both cores of a small machine; one test file per worker at a time
# keeps each file's module fixtures (trained models, the embedded Milvus server) in one process
TEST_WORKERS ?= 2

.PHONY: demo test lint install clean

$(STAMP): setup.cfg pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,milvus]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tfhash demo --out demo-output

test: $(STAMP)
	$(BIN)/python -m pytest --numprocesses $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check tfhash tests benchmarks

clean:
	rm -rf $(VENV) demo-output .pytest_cache
