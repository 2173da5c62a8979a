# One-command set-up and entry points. Every target creates the virtual environment it needs
# inside the checkout on first use: .venv-py<version> for the Python given by PYTHON, so that
# `make test` and `make test PYTHON=python3.12` keep separate environments (TF 2.15 and 2.21).
PYTHON    ?= python3
PYVER     := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
SUPPORTED := 3.9 3.10 3.11 3.12 3.13
VENV      := .venv-py$(PYVER)
PY        := $(VENV)/bin/python
# Extra pytest arguments, e.g. PYTEST_ARGS='-k driver'.
PYTEST_ARGS ?=

.PHONY: demo test venv bench clean

# A Python outside the supported range stops here with one line, before pip runs.
ifneq ($(filter-out clean,$(or $(MAKECMDGOALS),venv)),)
ifeq ($(filter $(PYVER),$(SUPPORTED)),)
$(error PYTHON=$(PYTHON) is $(if $(PYVER),Python $(PYVER),not a working Python); this project runs on Python 3.9-3.11 (TensorFlow 2.15.1) and 3.12-3.13 (TensorFlow 2.21.0), e.g. make $(or $(firstword $(MAKECMDGOALS)),venv) PYTHON=python3.11)
endif
endif

$(VENV)/.installed: requirements.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -r requirements-test.txt
	touch $@

venv: $(VENV)/.installed

# The demo's short training run (a few minutes on 2 CPU cores; from scratch, so expect a
# near-zero mAP: it shows the whole flow, not a trained detector).
DEMO_DIR   := demo_output
# The seed's learning-rate schedule (its first 500 steps run at 0.1x, 1e-4): from scratch, 1e-3
# is unstable.
DEMO_TRAIN := --checkpoint_path= --batch_size=4 --max_number_of_steps=20 \
              --log_every_n_steps=5 --save_checkpoints_secs=600 --data_format=channels_last

## demo: generate the VOC-format sample, convert it, train, evaluate, draw detections
demo: venv
	rm -rf $(DEMO_DIR)
	$(PY) dataset/make_voc_sample.py --output_dir dataset --num_images 64 --seed 0
	cd dataset && ../$(PY) convert_voc_sample_tfrecords.py --dataset_directory=./ \
	    --output_directory=tfrecords --train_splits VOC2012_sample --validation_splits VOC2012_sample
	$(PY) train_ssd.py --data_dir=dataset/tfrecords --model_dir=$(DEMO_DIR)/model $(DEMO_TRAIN)
	$(PY) eval_ssd.py --data_dir=dataset/tfrecords --model_dir=$(DEMO_DIR)/model \
	    --data_format=channels_last
	$(PY) simple_ssd_demo.py --checkpoint_path=$(DEMO_DIR)/model --output_dir=$(DEMO_DIR)/detections \
	    --data_format=channels_last --score_threshold=0.5 \
	    $$(head -n 4 dataset/VOC2012_sample/ImageSets/Main/val.txt | sed 's|.*|--input=dataset/VOC2012_sample/JPEGImages/&.jpg|')

## test: run the whole test suite
test: venv
	$(PY) -m pytest -q tests $(PYTEST_ARGS)

bench: venv
	$(PY) benchmarks/bench_ssd.py

clean:
	rm -rf dataset/VOC2012_sample dataset/tfrecords demo_output
