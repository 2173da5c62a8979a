"""utility/drivers.py: the Estimator and the session driver run the same model_fn alike.

The training behaviour of both drivers (resume, two replicas, replica averaging, NaN stop) is
exercised in test_train.py, parametrized over the drivers this TensorFlow has; export in
test_demo_export.py. Here: driver selection, checkpoints moving between the drivers, and
identical predictions.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import (FAST_BACKBONE_WEIGHT, TRAIN_FAST_FLAGS, assert_same_detections,
                      read_detections, run_script)
from utility import drivers

needs_estimator = pytest.mark.skipif(
    not drivers.has_estimator(),
    reason='TensorFlow %s has no tf.estimator (removed in 2.16)' % tf.__version__)


def test_auto_picks_the_estimator_only_where_tensorflow_has_it(monkeypatch):
    expected = 'estimator' if drivers.has_estimator() else 'session'
    assert drivers.resolve_driver('auto') == expected
    assert drivers.resolve_driver('') == expected
    assert drivers.resolve_driver('Session') == 'session'
    monkeypatch.setattr(drivers, 'has_estimator', lambda: False)
    assert drivers.resolve_driver('auto') == 'session'
    with pytest.raises(ValueError, match=r'--driver=estimator needs tf.estimator, which '
                                         r'TensorFlow \S+ does not have .*--driver=session'):
        drivers.resolve_driver('estimator')
    with pytest.raises(ValueError, match='--driver=keras is not one of auto, estimator'):
        drivers.resolve_driver('keras')


@pytest.mark.slow
def test_estimator_flag_without_estimator_is_one_line(tmp_path, tfrecord_dir):
    """On TF >= 2.16 --driver=estimator is refused in one line, before any work."""
    if drivers.has_estimator():
        pytest.skip('this TensorFlow has tf.estimator; the unit test above covers the message')
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--driver=estimator',
                       '--model_dir=' + str(tmp_path / 'm')] + TRAIN_FAST_FLAGS)
    assert proc.returncode == 2
    assert 'error: --driver=estimator needs tf.estimator' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not os.path.exists(str(tmp_path / 'm' / 'checkpoint'))


def _global_step(model_dir):
    latest = tf.train.latest_checkpoint(model_dir)
    return int(tf.train.load_checkpoint(latest).get_tensor('global_step'))


@pytest.mark.slow
@needs_estimator
def test_session_checkpoint_resumes_under_the_estimator(tfrecord_dir, tmp_path):
    model_dir = str(tmp_path / 'model')
    common = ['--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir] + TRAIN_FAST_FLAGS
    first = run_script(['train_ssd.py', '--max_number_of_steps=1', '--driver=session'] + common)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    weights_1 = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir)).get_tensor(
        FAST_BACKBONE_WEIGHT)
    second = run_script(['train_ssd.py', '--max_number_of_steps=2', '--driver=estimator']
                        + common)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-3000:]
    assert 'Resuming from' in out and 'model.ckpt-1' in out and 'estimator driver' in out
    assert _global_step(model_dir) == 2
    weights_2 = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir)).get_tensor(
        FAST_BACKBONE_WEIGHT)
    # one more small step from the restored weights, not a fresh initialization
    change = np.abs(weights_2 - weights_1).max()
    assert 0 < change < 0.1 * np.abs(weights_1).max()


def _evaluate(model_dir, tfrecord_dir, output_dir, driver):
    proc = run_script(['eval_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                       '--data_format=channels_last', '--output_dir=' + output_dir,
                       '--driver=' + driver])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert '%s driver' % driver in proc.stdout
    with open(os.path.join(output_dir, 'metrics.json')) as f:
        return json.load(f)


@pytest.mark.slow
@needs_estimator
def test_both_drivers_predict_the_same_detections(trained_model_dir, tfrecord_dir, tmp_path):
    metrics = {}
    for driver in ('estimator', 'session'):
        metrics[driver] = _evaluate(trained_model_dir, tfrecord_dir, str(tmp_path / driver),
                                    driver)
    first, second = (read_detections(str(tmp_path / d)) for d in ('estimator', 'session'))
    assert assert_same_detections(first, second, score_tol=1e-5, box_tol=1e-5) > 100
    assert metrics['estimator']['map_07'] == metrics['session']['map_07']


@pytest.mark.slow
def test_eval_refuses_an_estimator_where_there_is_none(trained_model_dir, tfrecord_dir,
                                                         tmp_path):
    """The inference scripts share the driver flag and its one-line error."""
    if drivers.has_estimator():
        pytest.skip('this TensorFlow has tf.estimator')
    proc = run_script(['eval_ssd.py', '--data_dir=' + tfrecord_dir,
                       '--model_dir=' + trained_model_dir, '--driver=estimator',
                       '--output_dir=' + str(tmp_path / 'e')])
    assert proc.returncode == 2 and 'error: --driver=estimator needs' in proc.stderr


@pytest.mark.slow
def test_session_driver_writes_summaries_and_keeps_checkpoints(tfrecord_dir, tmp_path):
    model_dir = str(tmp_path / 'model')
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                       '--max_number_of_steps=3', '--driver=session', '--save_summary_steps=1',
                       '--keep_checkpoint_max=1'] + TRAIN_FAST_FLAGS)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert _global_step(model_dir) == 3
    # keep_checkpoint_max=1: only the final checkpoint's files remain
    assert sorted(f for f in os.listdir(model_dir) if f.endswith('.index')) == [
        'model.ckpt-3.index']
    tags = set()
    for name in os.listdir(model_dir):
        if name.startswith('events.out.tfevents'):
            for event in tf.compat.v1.train.summary_iterator(os.path.join(model_dir, name)):
                tags.update(value.tag for value in event.summary.value)
    assert {'cls_loss', 'loc_loss', 'learning_rate', 'accuracy'} <= {
        t.split('/')[-1].rsplit('_1', 1)[0] for t in tags}, tags
    assert os.path.isfile(os.path.join(model_dir, 'params.json'))
