# One-command set-up and entry points. Every target creates the virtual
# environment it needs inside the checkout (.venv) on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

.PHONY: demo test venv bench clean

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -r requirements-test.txt
	touch $@

venv: $(VENV)/.installed

## demo: generate the VOC-format sample, convert it, train, evaluate, draw detections
demo: venv
	$(PY) scripts/run_demo.py

## test: run the whole test suite
test: venv
	$(PY) -m pytest -q tests

bench: venv
	$(PY) benchmarks/bench_ssd.py

clean:
	rm -rf dataset/VOC2012_sample dataset/tfrecords demo_output
