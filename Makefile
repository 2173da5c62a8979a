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

.PHONY: demo test test-fast venv bench clean learn learn-heldout learn-real learn-real-data

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

# The demo on real photos: the 24 microscope photos vendored in tests/data/bccd (MIT licence,
# tests/data/bccd/README.md). It trains from scratch on the 18 listed in trainval.txt with the
# demo recipe (recipes/demo.flags: every training setting of the demo, with the measurements
# that chose them), then scores and draws the 6 listed in test.txt, which it never trained on:
# the mAP table and the pictures show generalization to unseen photos, after a few minutes.
DEMO_DIR    := demo_output
DEMO_DATA   := tests/data/bccd
DEMO_SPLIT  := BCCD
DEMO_RECIPE := recipes/demo.flags
DEMO_HELD_OUT = $(shell cat $(DEMO_DATA)/$(DEMO_SPLIT)/ImageSets/Main/test.txt)

## demo: train on 18 vendored real photos from scratch, score and draw the 6 held-out ones
demo: venv
	rm -rf $(DEMO_DIR)
	$(PY) dataset/convert_tfrecords.py --dataset_directory=$(DEMO_DATA) \
	    --train_splits=$(DEMO_SPLIT) --validation_splits=$(DEMO_SPLIT) \
	    --labels=$(DEMO_DATA)/labels.txt --output_directory=$(DEMO_DIR)/tfrecords \
	    --train_shards 1 --validation_shards 1 --num_threads 1
	$(PY) train_ssd.py --flagfile=$(DEMO_RECIPE) --data_dir=$(DEMO_DIR)/tfrecords \
	    --model_dir=$(DEMO_DIR)/model
	$(PY) eval_ssd.py --data_dir=$(DEMO_DIR)/tfrecords --model_dir=$(DEMO_DIR)/model \
	    --metric=both --batch_size=6 --num_readers=1
	$(PY) simple_ssd_demo.py --checkpoint_path=$(DEMO_DIR)/model --output_dir=$(DEMO_DIR)/detections \
	    --score_threshold=0.5 $(foreach id,$(DEMO_HELD_OUT),--input=$(DEMO_DATA)/$(DEMO_SPLIT)/JPEGImages/$(id).jpg)
	$(PY) tools/draw_eval_images.py --data_dir=$(DEMO_DIR)/tfrecords \
	    --eval_dir=$(DEMO_DIR)/model/eval --output=$(DEMO_DIR)/held_out.jpg --num_images=6
	@echo "Note: the demo trained on the photos of $(DEMO_DATA)/$(DEMO_SPLIT)/ImageSets/Main/trainval.txt and"
	@echo "      scored and drew the $(words $(DEMO_HELD_OUT)) of test.txt, which it never saw (mAP table above;"
	@echo "      $(DEMO_DIR)/held_out.jpg: ground truth left, detections right). docs/learning.md explains it."

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

# Real photos: any Pascal VOC-layout set (<DATA>/<SPLIT>/{JPEGImages,Annotations,ImageSets/Main})
# trained from scratch with the recipe file REAL_RECIPE (an absl flag file; its comments say why
# each value is what it is). trainval.txt becomes the training shards, test.txt the validation
# shards (every annotation when a list is missing); LABELS names the classes (one per line;
# without it the 20 VOC classes). After training, every saved checkpoint (one each
# REAL_CKPT_SECS seconds) is scored on the test split (VOC07, VOC2010+ and COCO AP, per class),
# then the learning curve, the PR curves of the last checkpoint and 8 test images (ground truth
# beside detections) are drawn into REAL_DIR. REAL_EXTRA adds or overrides training flags, e.g.
# REAL_EXTRA=--max_number_of_steps=20 for a smoke run. docs/real_data.md has the results.
REAL_DIR       ?= real_output
REAL_RECIPE    ?= recipes/from_scratch.flags
REAL_CKPT_SECS ?= 300
REAL_EXTRA     ?=

learn-real-data:
	@if [ -z "$(DATA)" ] || [ -z "$(SPLIT)" ]; then \
	  echo "make learn-real trains $(REAL_RECIPE) on a VOC-layout set of real photos:"; \
	  echo "  make learn-real DATA=<folder holding the split folder> SPLIT=<split folder name> LABELS=<labels file>"; \
	  echo "For example BCCD (364 blood-smear photos, 3 classes, MIT licence; docs/real_data.md):"; \
	  echo "  git clone https://github.com/Shenggan/BCCD_Dataset"; \
	  echo "  make learn-real DATA=BCCD_Dataset SPLIT=BCCD LABELS=tests/data/bccd/labels.txt"; \
	  echo "  (that labels file holds its 3 class names, one per line: RBC, WBC, Platelets)"; \
	  echo "error: DATA and SPLIT are not set; name a VOC-layout set as above." >&2; exit 2; fi
	@if [ -e "$(REAL_DIR)" ]; then \
	  echo "error: $(REAL_DIR) exists (an earlier run); remove it or set REAL_DIR=<new folder>." >&2; exit 2; fi

## learn-real: convert a VOC-layout set of real photos, train the from-scratch recipe, score every checkpoint, draw
learn-real: learn-real-data venv
	$(PY) dataset/convert_tfrecords.py --dataset_directory=$(DATA) --train_splits=$(SPLIT) \
	    --validation_splits=$(SPLIT) $(if $(LABELS),--labels=$(LABELS)) \
	    --output_directory=$(REAL_DIR)/tfrecords --train_shards 4 --validation_shards 1 --num_threads 2
	$(PY) train_ssd.py --flagfile=$(REAL_RECIPE) --data_dir=$(REAL_DIR)/tfrecords \
	    --model_dir=$(REAL_DIR)/model --save_checkpoints_secs=$(REAL_CKPT_SECS) \
	    --keep_checkpoint_max=1000 --save_summary_steps=20 --log_every_n_steps=20 \
	    --num_readers=2 --num_preprocessing_threads=2 $(REAL_EXTRA)
	{ $(PY) eval_ssd.py --watch --watch_timeout_secs=0 --metric=both --model_dir=$(REAL_DIR)/model \
	    --data_dir=$(REAL_DIR)/tfrecords --batch_size=8 --num_readers=1 2>&1; \
	  echo $$? > $(REAL_DIR)/eval.status; } | tee $(REAL_DIR)/eval.log; exit $$(cat $(REAL_DIR)/eval.status)
	$(PY) tools/plot_learning_curve.py --model_dir=$(REAL_DIR)/model \
	    --history=$(REAL_DIR)/model/eval/metrics_history.jsonl \
	    --output=$(REAL_DIR)/learning_curve.png --title="$(REAL_RECIPE) on $(SPLIT), test split"
	$(PY) tools/draw_eval_images.py --data_dir=$(REAL_DIR)/tfrecords --eval_dir=$(REAL_DIR)/model/eval \
	    --output=$(REAL_DIR)/test_images.jpg --num_images=8
	@echo "Results in $(REAL_DIR): eval.log (the tables of every checkpoint), model/eval/metrics.json and"
	@echo "  pr_curves.png (the last checkpoint), model/eval/metrics_history.jsonl, learning_curve.png,"
	@echo "  test_images.jpg (ground truth left, detections right)."

bench: venv
	$(PY) benchmarks/bench_ssd.py

clean:
	rm -rf dataset/VOC2012_sample dataset/VOC2012_fit dataset/tfrecords dataset/tfrecords_fit demo_output heldout_output real_output
