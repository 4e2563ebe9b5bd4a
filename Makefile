# Two commands do all set-up:  `make demo` (the main job) and `make test` (the test suite).
# Each bootstraps .venv idempotently: it is (re)installed only when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
TEST_STAMP := $(VENV)/.installed-test-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: demo test lint bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	@rm -f $(VENV)/.installed-[0-9a-f]*
	@touch $@

# The tests also compare the maps with the CAM libraries of the `bench` extra (same formulas).
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev,bench,integrations]'
	@rm -f $(VENV)/.installed-test-*
	@touch $@

demo: $(STAMP)
	$(VENV)/bin/lightning-cam fit --config configs/shapes.yaml

# The checks a careful team runs on every change: lint (ruff), types (mypy), then the tests and
# the package's docstring examples (--doctest-modules). Every test runs for real: the script
# installs detectron2 (CPU, pure Python) once, and LIGHTNING_CAM_REQUIRE_OPTIONAL=1 turns the
# skips of tests whose optional packages (detectron2, the peer CAM libraries) are missing into
# failures. install_chromium.sh installs the Chromium the report's browser tests drive;
# install_fiftyone_db.sh FiftyOne's database server where fiftyone-db could not download it.
test: $(TEST_STAMP)
	bash scripts/install_detectron2.sh $(VENV)
	bash scripts/install_chromium.sh
	bash scripts/install_fiftyone_db.sh $(VENV)
	$(VENV)/bin/ruff check lightning_cam tests examples benchmarks
	$(PY) -m mypy lightning_cam
	LIGHTNING_CAM_REQUIRE_OPTIONAL=1 $(PY) -m pytest -q --doctest-modules lightning_cam tests

lint: $(STAMP)
	$(VENV)/bin/ruff check lightning_cam tests examples benchmarks

bench: $(TEST_STAMP)
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) lightning_logs results
