# The two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test install bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# torch and torchvision come from the package registry in one resolve, so that
# torchvision gets the torch build it was made for.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install torch torchvision
	$(PIP) install -e '.[test,lightning]'
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

# Trains the built-in regularization sweep into runs/demo (about 5-7 minutes on
# 2 cores; finished runs are kept), prints its report, then serves the viewer.
demo: $(VENV)/.installed
	$(PY) -m training sweep --preset demo
	$(PY) -m viewer runs/demo

bench: $(VENV)/.installed
	$(PY) bench/record_overhead.py

clean:
	rm -rf $(VENV) *.egg-info
