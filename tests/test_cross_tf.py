"""Checkpoints move between the two TensorFlow lines (2.15 with tf.estimator, 2.16+ without).

Needs a second interpreter with the other TensorFlow: SSD_OTHER_PYTHON=<its python> (.ci/run
sets it when it runs the suite on Python 3.12 with the 3.11 environment beside it). A
checkpoint trained 2 steps under one line resumes to step 3 under the other, and eval_ssd.py
gives the same detections (scores within 1e-3, boxes within 0.5 px, paired whatever the
order of tied scores) and mAP (within 1e-4) under both.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import (FAST_BACKBONE_WEIGHT, TRAIN_FAST_FLAGS, assert_finite_losses,
                      assert_same_detections, read_detections, run_script)

OTHER = os.environ.get('SSD_OTHER_PYTHON', '')
pytestmark = pytest.mark.skipif(
    not OTHER, reason='set SSD_OTHER_PYTHON to a Python with the other TensorFlow line')


def _tf_version(python):
    return subprocess.run([python, '-c', 'import tensorflow as tf; print(tf.__version__)'],
                          capture_output=True, text=True, check=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')).stdout.split()[-1]


@pytest.mark.slow
@pytest.mark.parametrize('first', ['this', 'other'])
def test_checkpoint_resumes_and_evaluates_alike_across_tensorflow_lines(
        tfrecord_dir, tmp_path, first):
    pythons = {'this': sys.executable, 'other': OTHER}
    versions = {k: _tf_version(p) for k, p in pythons.items()}
    assert versions['this'] != versions['other'], versions
    second = 'other' if first == 'this' else 'this'
    model_dir = str(tmp_path / 'model')
    common = ['--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir] + TRAIN_FAST_FLAGS
    weights = {}
    for who, steps in ((first, 2), (second, 3)):
        proc = run_script(['train_ssd.py', '--max_number_of_steps=%d' % steps] + common,
                          python=pythons[who])
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, '%s (TF %s): %s' % (who, versions[who], out[-3000:])
        reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
        assert int(reader.get_tensor('global_step')) == steps
        weights[steps] = {name: reader.get_tensor(name) for name in
                          (FAST_BACKBONE_WEIGHT, 'ssd300/multibox_head/cls_0/weights')}
    assert 'Resuming from' in out and 'model.ckpt-2' in out
    assert_finite_losses(out, steps=[3])
    # the other line restored the weights and took one small step from them (a fresh
    # initialization would move them by about their own size)
    for name, before in weights[2].items():
        change = np.abs(weights[3][name] - before).max()
        assert 0 < change < 0.1 * np.abs(before).max(), (name, change)

    results = {}
    for who in ('this', 'other'):
        out_dir = str(tmp_path / ('eval_' + who))
        proc = run_script(['eval_ssd.py', '--data_dir=' + tfrecord_dir,
                           '--model_dir=' + model_dir, '--data_format=channels_last',
                           '--output_dir=' + out_dir], python=pythons[who])
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        with open(os.path.join(out_dir, 'metrics.json')) as f:
            results[who] = (json.load(f), read_detections(out_dir))
    (metrics_a, dets_a), (metrics_b, dets_b) = results['this'], results['other']
    assert assert_same_detections(dets_a, dets_b, score_tol=1e-3, box_tol=0.5) > 100
    for key in ('map_07', 'map_area'):
        assert abs(metrics_a[key] - metrics_b[key]) <= 1e-4, key
