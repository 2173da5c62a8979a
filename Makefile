# One-command set-up and entry points. Every target creates the virtual environment it needs
# inside the checkout on first use: .venv-py<version> for the Python given by PYTHON, so that
# `make test` and `make test PYTHON=python3.12` keep separate environments (TF 2.15 and 2.21).
PYTHON    ?= python3
PYVER     := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
SUPPORTED := 3.9 3.10 3.11 3.12 3.13
VENV      := .venv-py$(PYVER)
PY        := $(VENV)/bin/python
# What `make test` runs: TESTS (files or folders) and extra pytest arguments, e.g.
# make test TESTS=tests/test_drivers.py PYTEST_ARGS='-k session'.
TESTS       ?= tests
PYTEST_ARGS ?=

.PHONY: demo test test-fast venv bench clean learn learn-heldout

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

# The demo fits the overfit check's configuration (tests/conftest.OVERFIT_TRAIN_FLAGS, in fp32
# as measured, on every CPU) on the 2 images it
# then draws: from scratch, no augmentation, 120 steps of batch 2 (lr 1e-5 for 10 steps, 1e-4
# to step 60, then 3e-5 and 1e-5; 1e-3 diverges from scratch). About 5 minutes on 2 CPU cores
# (measured: see docs/learning.md, "What make demo does"). It shows that the whole
# chain learns and that its boxes are right on images it has memorized, not generalization.
DEMO_DIR   := demo_output
DEMO_IMAGES := 2
DEMO_TRAIN := --checkpoint_path= --noaugment --batch_size=2 --max_number_of_steps=120 \
              --learning_rate=1e-4 --decay_boundaries=10,60,100 --lr_decay_factors=0.1,1,0.3,0.1 \
              --tf_random_seed=1 --log_every_n_steps=10 --save_checkpoints_secs=100000 \
              --num_readers=1 --num_preprocessing_threads=2 --data_format=channels_last \
              --precision=fp32

## demo: generate the sample, fit 2 of its images, evaluate them (mAP table), draw detections
demo: venv
	rm -rf $(DEMO_DIR)
	$(PY) dataset/make_voc_sample.py --output_dir dataset --num_images 64 --seed 0
	$(PY) dataset/select_images.py --split_dir dataset/VOC2012_sample --output_name VOC2012_fit \
	    --num_images $(DEMO_IMAGES) --min_object 0.15
	$(PY) dataset/convert_voc_sample_tfrecords.py --dataset_directory=dataset \
	    --output_directory=dataset/tfrecords_fit --train_splits VOC2012_fit --validation_splits VOC2012_fit \
	    --train_shards 1 --validation_shards 1 --num_threads 1
	$(PY) train_ssd.py --data_dir=dataset/tfrecords_fit --model_dir=$(DEMO_DIR)/model $(DEMO_TRAIN)
	$(PY) eval_ssd.py --data_dir=dataset/tfrecords_fit --model_dir=$(DEMO_DIR)/model \
	    --data_format=channels_last --batch_size=2 --num_readers=1
	$(PY) simple_ssd_demo.py --checkpoint_path=$(DEMO_DIR)/model --output_dir=$(DEMO_DIR)/detections \
	    --data_format=channels_last --score_threshold=0.5 --input=dataset/VOC2012_fit/JPEGImages
	@echo "Note: the demo trained on these $(DEMO_IMAGES) images and evaluated/drew the same images:"
	@echo "      the boxes show that the detector learns (it memorized them), not how it generalizes."
	@echo "      For held-out images, see 'make learn-heldout' (docs/learning.md)."

## test: run the whole test suite (both tiers)
test: venv
	$(PY) -m pytest -q $(TESTS) $(PYTEST_ARGS)

## test-fast: the fast tier only (no test marked slow: no training, no entry-script subprocess)
test-fast: venv
	$(PY) -m pytest -q -m "not slow" $(TESTS) $(PYTEST_ARGS)

## learn: the overfit check (tests/test_learning.py): train from scratch on 2 fixed images, mAP >= 0.9
learn: venv
	$(PY) -m pytest -q -s tests/test_learning.py

# Held-out recipe (about 80 minutes on 2 CPU cores with bf16; measured VOC07 mAP 0.528 on the
# 80 held-out images at step 1000, docs/learning.md): a larger
# generated sample, training from scratch with augmentation, every checkpoint evaluated on the
# held-out val split as it appears (eval_ssd.py --watch), the curve plotted to a PNG.
# `make learn-heldout HELDOUT_STEPS=20 HELDOUT_IMAGES=40` is a smoke run of the same commands.
HELDOUT_DIR    := heldout_output
HELDOUT_IMAGES ?= 400
HELDOUT_STEPS  ?= 1000
HELDOUT_CKPT_SECS ?= 600
# The default precision (auto: bfloat16 on CPUs with AVX512-BF16/AMX, fp32 elsewhere);
# HELDOUT_PRECISION=--precision=fp32 trains in fp32 everywhere.
HELDOUT_PRECISION ?=
HELDOUT_TRAIN  := --checkpoint_path= --batch_size=8 --max_number_of_steps=$(HELDOUT_STEPS) $(HELDOUT_PRECISION) \
                  --learning_rate=1e-3 --decay_boundaries=200,800 --lr_decay_factors=0.1,0.3,0.1 \
                  --data_format=channels_last --save_checkpoints_secs=$(HELDOUT_CKPT_SECS) \
                  --keep_checkpoint_max=50 --save_summary_steps=20 --log_every_n_steps=20 \
                  --num_readers=2 --num_preprocessing_threads=2 --tf_random_seed=1 $(HELDOUT_EXTRA)

learn-heldout: venv
	rm -rf $(HELDOUT_DIR)
	$(PY) dataset/make_voc_sample.py --output_dir $(HELDOUT_DIR)/data --num_images $(HELDOUT_IMAGES) --seed 1
	$(PY) dataset/convert_voc_sample_tfrecords.py --dataset_directory=$(HELDOUT_DIR)/data \
	    --output_directory=$(HELDOUT_DIR)/data/tfrecords --train_splits VOC2012_sample \
	    --validation_splits VOC2012_sample --train_shards 4 --validation_shards 1 --num_threads 2
	$(PY) eval_ssd.py --watch --model_dir=$(HELDOUT_DIR)/model --data_dir=$(HELDOUT_DIR)/data/tfrecords \
	    --data_format=channels_last --batch_size=8 --num_readers=1 --watch_interval_secs=30 \
	    --watch_timeout_secs=3600 --watch_max_step=$(HELDOUT_STEPS) > $(HELDOUT_DIR)/eval.log 2>&1 & \
	  $(PY) train_ssd.py --data_dir=$(HELDOUT_DIR)/data/tfrecords --model_dir=$(HELDOUT_DIR)/model \
	    $(HELDOUT_TRAIN); status=$$?; wait; \
	  tail -n 30 $(HELDOUT_DIR)/eval.log; exit $$status
	$(PY) tools/plot_learning_curve.py --model_dir=$(HELDOUT_DIR)/model \
	    --history=$(HELDOUT_DIR)/model/eval/metrics_history.jsonl \
	    --output=$(HELDOUT_DIR)/heldout_curve.png \
	    --title="from scratch, $(HELDOUT_IMAGES) generated images, held-out val split"

bench: venv
	$(PY) benchmarks/bench_ssd.py

clean:
	rm -rf dataset/VOC2012_sample dataset/VOC2012_fit dataset/tfrecords dataset/tfrecords_fit demo_output heldout_output
