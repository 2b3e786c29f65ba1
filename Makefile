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

# Serves the viewer on http://127.0.0.1:8050/ first, then trains the built-in
# regularization sweep into runs/demo behind it (runs appear live; finished runs are
# kept), prints its report and keeps serving until Ctrl-C.
demo: $(VENV)/.installed
	$(PY) -m training demo

bench: $(VENV)/.installed
	$(PY) bench/record_overhead.py

clean:
	rm -rf $(VENV) *.egg-info
