"""The user's terminal keeps the lines that matter (issue 24, item 8): no RunConfig dict, no
TensorFlow UserWarnings or native log lines (type_inference.cc on export), unless --verbose."""
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, TRAIN_FAST_FLAGS

# Not listed: TF 2.16+ prints its oneDNN notice from C++ at import, before absl logging is
# initialized, whatever TF_CPP_MIN_LOG_LEVEL says (one line; nothing in Python can stop it).
NOISE = ('Using config:', 'UserWarning', 'type_inference.cc', 'Graph was finalized',
         'Calling model_fn', 'cpu_feature_guard', 'mlir_graph_optimization_pass')


def _run(args):
    """A script run as a user would: TF_CPP_MIN_LOG_LEVEL not set."""
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    proc = subprocess.run([sys.executable] + args, cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_training_and_export_print_no_tensorflow_noise_unless_verbose(tfrecord_dir, tmp_path):
    model_dir = str(tmp_path / 'model')
    out = _run(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                '--backbone=resnet18', '--max_number_of_steps=1'] + TRAIN_FAST_FLAGS)
    assert 'step 1, loss' in out and 'Training finished' in out, out[-4000:]
    assert 'Saving checkpoints for 1 into' in out, out[-4000:]
    assert [n for n in NOISE if n in out] == [], out[-4000:]

    export = ['export_ssd.py', '--checkpoint_path=' + model_dir]
    quiet = _run(export + ['--export_dir=' + str(tmp_path / 'quiet')])
    assert 'SavedModel written to' in quiet
    assert [n for n in NOISE if n in quiet] == [], quiet[-4000:]
    verbose = _run(export + ['--export_dir=' + str(tmp_path / 'verbose'), '--verbose'])
    assert 'SavedModel written to' in verbose
    # the switch shows TensorFlow's own lines again
    assert len(verbose.splitlines()) > len(quiet.splitlines()) + 2, verbose[-4000:]
