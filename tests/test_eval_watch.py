"""eval_ssd.py --watch: each new checkpoint evaluated, history appended, TensorBoard scalars."""
import glob
import json
import os
import shutil

import pytest
import tensorflow as tf

from conftest import run_script
from utility.inference import watch as eval_watch


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


class _Clock:
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


@pytest.mark.slow
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


def _restore(prefix):
    """What eval does first with a checkpoint: a Saver restores its variables."""
    with tf.Graph().as_default():
        weights = tf.compat.v1.get_variable('w', [3], tf.float32)
        with tf.compat.v1.Session() as session:
            tf.compat.v1.train.Saver([weights]).restore(session, prefix)
            return float(session.run(weights).sum())


def _delete_checkpoint(prefix):
    for path in glob.glob(prefix + '.*'):
        os.remove(path)


def test_watch_skips_a_checkpoint_deleted_during_its_evaluation(tmp_path):
    """--keep_checkpoint_max rotation: the trainer writes step 30 and deletes steps 10 and 20
    while the watcher restores step 10; the watcher says so and evaluates step 30."""
    import numpy as np
    from conftest import write_variables
    model_dir = str(tmp_path / 'model')
    for step in (10, 20):
        write_variables(os.path.join(model_dir, 'model.ckpt-%d' % step),
                        {'w': np.full(3, step, np.float32)})
    lines, evaluated = [], []

    def evaluate(prefix):
        if prefix.endswith('-10'):   # the trainer rotates while eval builds its graph
            write_variables(os.path.join(model_dir, 'model.ckpt-30'),
                            {'w': np.full(3, 30, np.float32)})
            _delete_checkpoint(os.path.join(model_dir, 'model.ckpt-10'))
            _delete_checkpoint(os.path.join(model_dir, 'model.ckpt-20'))
        evaluated.append(_restore(prefix))
        return _summary(0.5)

    clock = _Clock()
    records = eval_watch.watch_checkpoints(
        model_dir, evaluate, str(tmp_path / 'out'), interval_secs=10, timeout_secs=15,
        log=lines.append, sleep=clock.sleep, clock=clock)
    assert [r['global_step'] for r in records] == [30]
    assert evaluated == [90.0]
    notice = [line for line in lines if 'model.ckpt-10 was deleted while' in line]
    assert len(notice) == 1 and notice[0].endswith('going on with %s.' % os.path.join(
        model_dir, 'model.ckpt-30')), lines


def test_watch_still_fails_on_a_damaged_checkpoint_that_exists(tmp_path):
    """Only a vanished checkpoint is skipped: an unreadable one that is still there is an
    error the user must see."""
    model_dir = str(tmp_path / 'model')
    prefix = _fake_checkpoint(model_dir, 5)          # an empty .index: not a checkpoint
    open(prefix + '.data-00000-of-00001', 'w').close()
    clock = _Clock()
    with pytest.raises((ValueError, tf.errors.OpError)):
        eval_watch.watch_checkpoints(
            model_dir, lambda p: _summary(_restore(p)), str(tmp_path / 'out'),
            interval_secs=10, timeout_secs=15, log=lambda _: None, sleep=clock.sleep,
            clock=clock)


@pytest.mark.slow
def test_eval_ssd_watch_survives_a_trainer_that_deletes_checkpoints(
        trained_model_dir, tfrecord_dir, tmp_path):
    """A fake trainer keeps one checkpoint (--keep_checkpoint_max 1), writing a new one every
    0.3 s: the watcher restores checkpoints that are gone by then, says so, keeps watching,
    and evaluates the last one."""
    import subprocess
    import sys
    import threading
    import time
    from conftest import REPO_ROOT
    model_dir = str(tmp_path / 'model')
    shutil.copytree(trained_model_dir, model_dir)
    source = os.path.join(model_dir, 'source')
    os.makedirs(source)
    for path in glob.glob(os.path.join(model_dir, 'model.ckpt-2.*')):
        shutil.copy(path, source)
    for path in glob.glob(os.path.join(model_dir, 'model.ckpt-*')):
        os.remove(path)

    def write(step):  # data first, the .index last, as TensorFlow does
        files = sorted(glob.glob(os.path.join(source, '*')), key=lambda p: p.endswith('.index'))
        for path in files:
            shutil.copy(path, os.path.join(model_dir, os.path.basename(path).replace(
                'model.ckpt-2', 'model.ckpt-%d' % step)))

    stop = threading.Event()

    def trainer():
        step = 3
        write(step)
        while not stop.wait(0.3):
            write(step + 1)
            _delete_checkpoint(os.path.join(model_dir, 'model.ckpt-%d' % step))
            step += 1
        write(1000)
        _delete_checkpoint(os.path.join(model_dir, 'model.ckpt-%d' % step))

    log_path = str(tmp_path / 'watch.log')
    thread = threading.Thread(target=trainer)
    thread.start()
    with open(log_path, 'w') as out:
        proc = subprocess.Popen(
            [sys.executable, 'eval_ssd.py', '--watch', '--model_dir=' + model_dir,
             '--data_dir=' + tfrecord_dir, '--output_dir=' + str(tmp_path / 'out'),
             '--data_format=channels_last', '--watch_interval_secs=0.5',
             '--watch_timeout_secs=60', '--watch_max_step=1000', '--batch_size=2',
             '--num_readers=2'], cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    try:
        deadline = time.time() + 240
        while (time.time() < deadline and proc.poll() is None
               and 'was deleted while it was being evaluated' not in open(log_path).read()):
            time.sleep(0.5)
        stop.set()
        thread.join()
        proc.wait(timeout=240)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    out = open(log_path).read()
    assert proc.returncode == 0, out[-4000:]
    assert 'was deleted while it was being evaluated' in out, out[-4000:]
    history = eval_watch.read_history(str(tmp_path / 'out' / eval_watch.HISTORY_FILE))
    assert history and history[-1]['global_step'] == 1000, out[-4000:]
