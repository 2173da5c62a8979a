"""eval_ssd.py --watch: each new checkpoint evaluated, history appended, TensorBoard scalars."""
import glob
import json
import os
import shutil

import pytest
import tensorflow as tf

from conftest import run_script
from utility import eval_watch

# Every test here runs an entry script or a training subprocess (the slow tier).
pytestmark = pytest.mark.slow


def _events(event_dir):
    """{(tag, step): value} of every scalar in the events files of `event_dir`."""
    found = {}
    for path in glob.glob(os.path.join(event_dir, 'events.out.tfevents.*')):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found[(value.tag, event.step)] = value.simple_value
    return found


def _summary(map_07, name='cat'):
    return {'map_07': map_07, 'map_area': map_07 / 2, 'num_detections': 3,
            'classes': [{'name': name, 'ap_07': map_07, 'ap_area': map_07 / 2},
                        {'name': 'dog', 'ap_07': None, 'ap_area': None}]}


def _fake_checkpoint(model_dir, step):
    os.makedirs(model_dir, exist_ok=True)
    prefix = os.path.join(model_dir, 'model.ckpt-%d' % step)
    open(prefix + '.index', 'w').close()
    return prefix


class _Clock(object):
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, secs):
        self.now += secs


def test_watch_evaluates_new_checkpoints_in_order_and_stops_on_timeout(tmp_path):
    model_dir = str(tmp_path / 'model')
    _fake_checkpoint(model_dir, 20)
    _fake_checkpoint(model_dir, 5)
    clock = _Clock()
    evaluated = []

    def evaluate(prefix):
        evaluated.append(prefix)
        if len(evaluated) == 2:      # training writes a third checkpoint meanwhile
            _fake_checkpoint(model_dir, 40)
        return _summary(0.25 * len(evaluated))

    def sleep(secs):
        clock.sleep(secs)

    records = eval_watch.watch_checkpoints(
        model_dir, evaluate, str(tmp_path / 'out'), interval_secs=10, timeout_secs=35,
        log=lambda _: None, sleep=sleep, clock=clock)
    assert [os.path.basename(p) for p in evaluated] == [
        'model.ckpt-5', 'model.ckpt-20', 'model.ckpt-40']
    assert [r['global_step'] for r in records] == [5, 20, 40]
    assert 35 <= clock.now <= 50          # gave up ~35 s after the last new checkpoint
    history = eval_watch.read_history(str(tmp_path / 'out' / eval_watch.HISTORY_FILE))
    assert [(r['global_step'], r['map_07']) for r in history] == [(5, .25), (20, .5), (40, .75)]
    assert history[0]['ap_07'] == {'cat': .25}     # classes without gt are left out
    events = _events(os.path.join(model_dir, 'eval'))
    assert events[('mAP/VOC07', 20)] == pytest.approx(0.5)
    assert events[('mAP/VOC2010', 40)] == pytest.approx(0.375)
    assert events[('AP_VOC07/cat', 5)] == pytest.approx(0.25)
    assert not any(tag.endswith('/dog') for tag, _ in events)


def test_watch_stops_at_max_step_without_waiting(tmp_path):
    model_dir = str(tmp_path / 'model')
    _fake_checkpoint(model_dir, 100)
    clock = _Clock()
    records = eval_watch.watch_checkpoints(
        model_dir, lambda p: _summary(1.0), str(tmp_path), interval_secs=10,
        timeout_secs=1e6, max_step=100, log=lambda _: None, sleep=clock.sleep, clock=clock)
    assert len(records) == 1 and clock.now == 0


def test_eval_ssd_watch_picks_up_a_real_checkpoint(trained_model_dir, tfrecord_dir, tmp_path):
    model_dir = str(tmp_path / 'model')
    shutil.copytree(trained_model_dir, model_dir)
    out_dir = str(tmp_path / 'out')
    proc = run_script(['eval_ssd.py', '--watch', '--model_dir=' + model_dir,
                       '--data_dir=' + tfrecord_dir, '--output_dir=' + out_dir,
                       '--data_format=channels_last', '--watch_interval_secs=1',
                       '--watch_timeout_secs=2', '--batch_size=2', '--num_readers=2'])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # the training run saved at its first step and at its last one
    steps = [s for s, _ in eval_watch.list_checkpoints(model_dir)]
    assert steps == [0, 2]
    assert 'No new checkpoint' in out and 'after 2 evaluation(s)' in out
    history = eval_watch.read_history(os.path.join(out_dir, eval_watch.HISTORY_FILE))
    assert [r['global_step'] for r in history] == [0, 2]
    with open(os.path.join(out_dir, 'metrics.json')) as f:
        metrics = json.load(f)
    assert metrics['checkpoint'].endswith('model.ckpt-2')
    assert history[-1]['map_07'] == metrics['map_07']
    events = _events(os.path.join(model_dir, 'eval'))
    assert events[('mAP/VOC07', 0)] == pytest.approx(history[0]['map_07'])
    assert events[('mAP/VOC07', 2)] == pytest.approx(metrics['map_07'])
    per_class = {tag for tag, step in events if tag.startswith('AP_VOC07/') and step == 2}
    assert per_class == {'AP_VOC07/' + c['name'] for c in metrics['classes']
                         if c['ap_07'] is not None}
