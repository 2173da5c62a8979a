"""Multi-worker training over loopback (TF_CONFIG, MultiWorkerMirroredStrategy).

Every test that starts workers picks free ports on 127.0.0.1, bounds every process by a
timeout and kills what is left in `finally`. Each worker has one CPU replica; the global
batch is 2 (one 300x300 image per worker per step).
"""
import json
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import (AVAILABLE_DRIVERS, REPO_ROOT, TRAIN_FAST_FLAGS, run_script,
                      write_initial_checkpoint)

PROCESS_TIMEOUT = 600


def free_ports(count):
    """`count` distinct ports that were free on 127.0.0.1 a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(('127.0.0.1', 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(ports, index):
    return json.dumps({'cluster': {'worker': ['127.0.0.1:%d' % p for p in ports]},
                       'task': {'type': 'worker', 'index': index}})


class Workers:
    """Starts one process per worker (same command, own TF_CONFIG); output to files."""

    def __init__(self, args, log_dir, ports, tag, start=None):
        """Starts the workers whose index is in `start` (default: all); `start_worker` the
        others later."""
        self.args, self.log_dir, self.ports, self.tag = list(args), str(log_dir), ports, tag
        self.procs = [None] * len(ports)
        self.logs = [os.path.join(self.log_dir, '%s-worker%d.log' % (tag, index))
                     for index in range(len(ports))]
        for index in range(len(ports)) if start is None else start:
            self.start_worker(index)

    def start_worker(self, index):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', TF_CONFIG=tf_config(self.ports, index))
        with open(self.logs[index], 'w') as out:
            self.procs[index] = subprocess.Popen(
                [sys.executable] + self.args, cwd=REPO_ROOT, env=env, stdout=out,
                stderr=subprocess.STDOUT, text=True)

    def output(self, index):
        with open(self.logs[index]) as f:
            return f.read()

    def wait(self, timeout=PROCESS_TIMEOUT):
        deadline = time.time() + timeout
        for proc in self.procs:
            proc.wait(timeout=max(1, deadline - time.time()))
        return [proc.returncode for proc in self.procs]

    def kill(self):
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def _result(output):
    match = re.search(r'^RESULT (.*)$', output, re.M)
    assert match, output[-4000:]
    return json.loads(match.group(1))


@pytest.mark.slow
@pytest.mark.parametrize('driver', AVAILABLE_DRIVERS)
def test_two_workers_train_as_one_process_on_the_same_batches(tmp_path, driver):
    """2 workers x 1 CPU replica, 3 steps == one process with 2 replicas, 3 steps."""
    init = write_initial_checkpoint(str(tmp_path / 'init' / 'model.ckpt'))
    script = ['tests/multi_worker_step_check.py', '--init_ckpt=' + init, '--driver=' + driver]
    workers = Workers(script + ['--model_dir=' + str(tmp_path / 'multi')], tmp_path,
                      free_ports(2), 'train')
    try:
        reference = run_script(script + ['--model_dir=' + str(tmp_path / 'single')],
                               timeout=PROCESS_TIMEOUT)
        codes = workers.wait()
    finally:
        workers.kill()
    outputs = [workers.output(i) for i in range(2)]
    for code, out in zip(codes, outputs):
        assert code == 0, out[-4000:]
    assert reference.returncode == 0, (reference.stdout + reference.stderr)[-4000:]
    results = [_result(out) for out in outputs]
    assert 'MirroredStrategy on 2 logical CPU devices' in reference.stdout
    assert [r['step'] for r in results] == [3, 3] and _result(reference.stdout)['step'] == 3
    assert [r['replicas'] for r in results] == [2, 2]
    # the chief wrote model_dir's checkpoint; worker 1 its own copy under tmp_worker_1
    assert results[0]['checkpoint'] == os.path.join(str(tmp_path / 'multi'), 'model.ckpt-3')
    assert 'tmp_worker_1' in results[1]['checkpoint']

    init_reader = tf.train.load_checkpoint(init)
    chief, other, single = (tf.train.load_checkpoint(p) for p in (
        results[0]['checkpoint'], results[1]['checkpoint'], _result(reference.stdout)[
            'checkpoint']))
    moved = 0
    for name in init_reader.get_variable_to_shape_map():
        start = init_reader.get_tensor(name)
        a, b, ref = (r.get_tensor(name) for r in (chief, other, single))
        np.testing.assert_array_equal(a, b, err_msg=name)  # the workers agree exactly
        delta, ref_delta = a - start, ref - start
        scale = np.abs(ref_delta).max()
        if scale == 0:
            continue
        moved += 1
        # the same update as one process on the same global batches (float32 noise only);
        # workers training on the same images, or summing instead of averaging, differ
        np.testing.assert_allclose(delta, ref_delta, rtol=0, atol=2e-3 * scale, err_msg=name)
    assert moved > 30


def _step(prefix):
    return int(tf.train.load_checkpoint(prefix).get_tensor('global_step'))


def _newest_step(model_dir):
    """The step of model_dir's newest checkpoint; -1 while there is none or it is being
    written."""
    try:
        return _step(tf.train.latest_checkpoint(model_dir))
    except Exception:  # pylint: disable=broad-except
        return -1


@pytest.mark.slow
def test_lost_worker_stops_the_other_and_a_rerun_resumes(tfrecord_dir, tmp_path):
    """Under the session driver (the only one on TF 2.16+): the chief waits for a worker that
    starts after it (live, only late); kill -9 that worker mid-run: the chief stops within the
    collective timeout, naming it; the same command on both workers then resumes from the
    chief's latest checkpoint, one that holds trained steps (step >= 1)."""
    timeout = 30
    model_dir = str(tmp_path / 'model')
    flags = [f for f in TRAIN_FAST_FLAGS if not f.startswith('--save_checkpoints_secs')]
    command = ['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
               '--driver=session', '--save_checkpoints_secs=1',
               '--collective_timeout_secs=%d' % timeout] + flags
    ports = free_ports(2)
    first = Workers(command + ['--max_number_of_steps=1000'], tmp_path, ports, 'first',
                    start=[0])
    try:
        deadline = time.time() + PROCESS_TIMEOUT
        while 'Waiting for the other 1 worker(s) to join' not in first.output(0):
            assert time.time() < deadline and first.procs[0].poll() is None, first.output(0)[-4000:]
            time.sleep(0.5)
        time.sleep(5)  # the peer comes late, well within the start-up timeout
        assert first.procs[0].poll() is None, first.output(0)[-4000:]
        first.start_worker(1)
        # wait for a trained step in a checkpoint, then lose worker 1
        while not (re.search(r'step 2, loss', first.output(0))
                   and _newest_step(model_dir) >= 1):
            assert time.time() < deadline and first.procs[0].poll() is None, first.output(0)[-4000:]
            time.sleep(0.5)
        first.procs[1].kill()
        killed_at = time.time()
        first.procs[0].wait(timeout=3 * timeout + 120)
        elapsed = time.time() - killed_at
    finally:
        first.kill()
    out = first.output(0)
    assert 'session driver' in out, out[-4000:]
    assert first.procs[0].returncode == 1, out[-4000:]
    message = re.findall(r'^error: .*$', out, re.M)
    assert len(message) == 1, out[-4000:]
    assert ('lost contact with worker 1 (/job:worker/task:1 at 127.0.0.1:%d)' % ports[1]
            in message[0]), message
    assert 'run the same command on every worker again' in message[0]
    assert 'Traceback' not in out
    assert elapsed < 3 * timeout + 60, elapsed
    latest = tf.train.latest_checkpoint(model_dir)
    resumed_from = _step(latest)
    # the newest checkpoint holds steps that ran
    logged = [int(s) for s in re.findall(r'step (\d+), loss', out)]
    assert 1 <= resumed_from <= max(logged), (resumed_from, logged)

    second = Workers(command + ['--max_number_of_steps=%d' % (resumed_from + 1)], tmp_path,
                     free_ports(2), 'second')
    try:
        codes = second.wait()
    finally:
        second.kill()
    for index, code in enumerate(codes):
        out = second.output(index)
        assert code == 0, out[-4000:]
        assert 'Resuming from %s' % latest in out, out[-4000:]
    chief_out = second.output(0)
    # exactly one more step, from the chief's checkpoint
    assert re.search(r'step %d, loss' % (resumed_from + 1), chief_out), chief_out[-3000:]
    assert not re.search(r'step %d, loss' % resumed_from, chief_out)
    assert _step(tf.train.latest_checkpoint(model_dir)) == resumed_from + 1


def _one_line_error(proc):
    errors = [l for l in proc.stderr.splitlines() if l.startswith('error: ')]
    assert proc.returncode == 2, (proc.stdout + proc.stderr)[-3000:]
    assert len(errors) == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize('value, expected', [
    ('{"cluster": {"worker": ["127.0.0.1:1"]', 'TF_CONFIG is not valid JSON'),
    ('{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}}', 'has a "cluster" but no "task"'),
    ('{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, '
     '"task": {"type": "worker", "index": 2}}', 'task index 2 is out of range'),
])
def test_bad_tf_config_is_a_one_line_error(tfrecord_dir, tmp_path, value, expected):
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir,
                       '--model_dir=' + str(tmp_path / 'm')] + TRAIN_FAST_FLAGS,
                      env={'TF_CONFIG': value}, timeout=300)
    line = _one_line_error(proc)
    assert expected in line and 'set it on every machine' in line, line
    assert not os.path.exists(str(tmp_path / 'm'))


@pytest.mark.slow
def test_batch_that_does_not_divide_over_all_workers_is_a_clear_error(tfrecord_dir, tmp_path):
    flags = [f for f in TRAIN_FAST_FLAGS if not f.startswith('--batch_size')]
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--batch_size=3',
                       '--model_dir=' + str(tmp_path / 'm')] + flags,
                      env={'TF_CONFIG': tf_config(free_ports(2), 1)}, timeout=300)
    line = _one_line_error(proc)
    assert '--batch_size=3 does not divide evenly over 2 replicas (2 workers x 1)' in line
