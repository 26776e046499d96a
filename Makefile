# The whole set-up on a fresh machine: `make demo` and `make test`.
# Also: `make lint`, `make docs`, `make test-lowest` (all run by .ci/run),
# `make test-quick` (the suite without the tests marked slow, while working),
# `make bench`, `make reliability`, `make test-dialect-suite`, `make clean`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs
# a second virtualenv with the lowest runtime dependencies pyproject.toml admits
LOWEST     := .venv-lowest
LOWEST_STAMP := $(LOWEST)/.installed

.PHONY: demo test test-quick test-dialect-suite lint docs test-lowest bench reliability clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,lint]'
	touch $(STAMP)

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,lint,docs]'
	touch $(DOCS_STAMP)

demo: $(STAMP)
	$(BIN)/tinycortex-sa demo demo-workspace

test: $(STAMP)
	$(BIN)/python -m pytest

# everything but the multi-process, reliability-scenario, wheel and benchmark tests (marked slow)
test-quick: $(STAMP)
	$(BIN)/python -m pytest -m 'not slow'

# SQLAlchemy's and Alembic's dialect compliance suites against sqlite+tinycortex, on a new chunk DB
# in a temporary directory: a pytest run of its own (tests/dialect_suite/pytest.ini), which the
# main suite does not collect
test-dialect-suite: $(STAMP)
	$(BIN)/python -m pytest tests/dialect_suite -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check tinycortex_sa tests migrations docs/sphinx_roles.py
	$(BIN)/ruff format --check tinycortex_sa tests migrations docs/sphinx_roles.py
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# docs/mkdocs.yml is the configuration; MkDocs refuses a docs_dir that is the
# config file's own folder, so build/mkdocs.yml inherits it and points back.
docs: $(DOCS_STAMP)
	@mkdir -p build
	@printf 'INHERIT: ../docs/mkdocs.yml\ndocs_dir: ../docs\nsite_dir: site\n' > build/mkdocs.yml
	$(BIN)/mkdocs build --strict --quiet -f build/mkdocs.yml
	@echo "docs built in build/site (preview: $(BIN)/mkdocs serve -f build/mkdocs.yml)"

$(LOWEST_STAMP): pyproject.toml .ci/lowest.py
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install -q --upgrade pip
	$(PYTHON) .ci/lowest.py > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/python -m pip install -q -c $(LOWEST)/constraints.txt -e '.[test]'
	touch $(LOWEST_STAMP)

test-lowest: $(LOWEST_STAMP)
	@$(LOWEST)/bin/python -c 'import sqlalchemy, alembic, tenacity; from importlib.metadata import version; \
	print("lowest:", *(f"{n} {version(n)}" for n in ("sqlalchemy", "alembic", "tenacity")))'
	$(LOWEST)/bin/python -m pytest -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python -m tests.benchmark --write-docs docs/performance.md

reliability: $(STAMP)
	$(BIN)/python -m tests.reliability --full

clean:
	rm -rf $(VENV) $(LOWEST) demo-workspace build dist *.egg-info
