"""train_ssd.py and eval_ssd.py against what goes wrong in real use: a second trainer, a wrong
--num_classes, damaged shards, a damaged newest checkpoint, leftovers of a killed save.

Each case ends in a correct run or a one-line error naming the cause, the file and the fix,
and nothing valid is lost (checkpoints, params.json, shards). The library pieces
(utility/checkpoints/, dataset/shard_checks.py) have unit tests of their own in
test_checkpoint_lock.py, test_checkpoint_files.py, test_params_file.py and test_shard_checks.py;
these run the entry scripts.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import tensorflow as tf

from conftest import (REPO_ROOT, TRAIN_FAST_FLAGS, assert_finite_losses, assert_one_line_error,
                      run_script)


def _train(tfrecord_dir, model_dir, steps, *extra):
    return run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                       '--max_number_of_steps=%d' % steps] + TRAIN_FAST_FLAGS + list(extra))


def _step(prefix):
    return int(tf.train.load_checkpoint(prefix).get_tensor('global_step'))


@pytest.mark.slow
def test_second_trainer_on_the_same_model_dir_is_refused(tfrecord_dir, tmp_path):
    model_dir = str(tmp_path / 'model')
    command = [sys.executable, 'train_ssd.py', '--data_dir=' + tfrecord_dir,
               '--model_dir=' + model_dir, '--max_number_of_steps=1000'] + TRAIN_FAST_FLAGS
    first = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    try:
        for line in first.stdout:
            if re.search(r'step \d+, loss', line):
                break
        second = _train(tfrecord_dir, model_dir, 3)
        assert_one_line_error(second, 'Another training', 'pid %d' % first.pid, model_dir)
        first.send_signal(signal.SIGTERM)
        rest, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0 and 'Stopped by SIGTERM' in rest, rest[-2000:]
    assert not os.path.exists(os.path.join(model_dir, 'train.lock'))
    # the lock is gone with its holder: the same command now resumes
    saved = tf.train.latest_checkpoint(model_dir)
    third = _train(tfrecord_dir, model_dir, _step(saved) + 1)
    out = third.stdout + third.stderr
    assert third.returncode == 0, out[-3000:]
    assert 'Resuming from %s' % saved in out, out[-3000:]
    assert_finite_losses(out, steps=[_step(saved) + 1])
    assert _step(tf.train.latest_checkpoint(model_dir)) == _step(saved) + 1


@pytest.mark.slow
def test_labels_beyond_num_classes_are_caught_before_anything_is_written(tfrecord_dir,
                                                                         tmp_path):
    model_dir = tmp_path / 'model'
    proc = _train(tfrecord_dir, str(model_dir), 2, '--num_classes=5')
    assert_one_line_error(proc, '--num_classes 5 only allows labels up to 4',
                           '--num_classes 21')
    written = sorted(os.listdir(str(model_dir))) if model_dir.exists() else []
    assert not [f for f in written if f.startswith('model.ckpt') or f == 'params.json'], written


@pytest.mark.slow
def test_resume_with_other_graph_settings_names_both_values(trained_model_dir, tfrecord_dir,
                                                            tmp_path):
    model_dir = str(tmp_path / 'model')
    shutil.copytree(trained_model_dir, model_dir)
    with open(os.path.join(model_dir, 'params.json')) as f:
        before = f.read()
    proc = _train(tfrecord_dir, model_dir, 3, '--model_scope=other')
    assert_one_line_error(proc, 'model_scope="ssd300"', 'model_scope="other"', 'params.json')
    with open(os.path.join(model_dir, 'params.json')) as f:
        assert f.read() == before  # the identity is not overwritten by the refused run
    assert _step(tf.train.latest_checkpoint(model_dir)) == 2


def _copy_records(tfrecord_dir, tmp_path):
    data_dir = str(tmp_path / 'records')
    shutil.copytree(tfrecord_dir, data_dir)
    return data_dir


@pytest.mark.slow
def test_truncated_train_shard_is_named(tfrecord_dir, tmp_path):
    data_dir = _copy_records(tfrecord_dir, tmp_path)
    shard = os.path.join(data_dir, 'train-00001-of-00002')
    with open(shard, 'rb') as f:
        data = f.read()
    with open(shard, 'wb') as f:
        f.write(data[:len(data) // 2])
    proc = _train(data_dir, str(tmp_path / 'model'), 2)
    assert_one_line_error(proc, shard, 'truncated', 're-run the converter')


@pytest.mark.slow
def test_random_bytes_val_shard_is_named_by_eval(trained_model_dir, tfrecord_dir, tmp_path):
    data_dir = _copy_records(tfrecord_dir, tmp_path)
    shard = os.path.join(data_dir, 'val-00000-of-00002')
    with open(shard, 'wb') as f:
        f.write(os.urandom(4096))
    proc = run_script(['eval_ssd.py', '--data_dir=' + data_dir, '--model_dir=' + trained_model_dir,
                       '--output_dir=' + str(tmp_path / 'eval')])
    assert_one_line_error(proc, shard)


@pytest.mark.slow
def test_empty_train_shards_are_an_error_not_a_zero_step_success(tfrecord_dir, tmp_path):
    data_dir = _copy_records(tfrecord_dir, tmp_path)
    for name in os.listdir(data_dir):
        if name.startswith('train-'):
            open(os.path.join(data_dir, name), 'wb').close()
    proc = _train(data_dir, str(tmp_path / 'model'), 2)
    assert_one_line_error(proc, 'train-0000')


@pytest.mark.slow
def test_zero_byte_val_shard_is_reported_by_eval(trained_model_dir, tfrecord_dir, tmp_path):
    data_dir = _copy_records(tfrecord_dir, tmp_path)
    open(os.path.join(data_dir, 'val-00001-of-00002'), 'wb').close()
    proc = run_script(['eval_ssd.py', '--data_dir=' + data_dir, '--model_dir=' + trained_model_dir,
                       '--output_dir=' + str(tmp_path / 'eval')])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r'warning: 1 images were read from the val shards in .* says 2',
                     proc.stderr), proc.stderr[-2000:]


@pytest.mark.slow
def test_unreadable_newest_checkpoint_falls_back_and_leftovers_are_removed(
        trained_model_dir, tfrecord_dir, tmp_path):
    model_dir = str(tmp_path / 'model')
    shutil.copytree(trained_model_dir, model_dir)
    first = _train(tfrecord_dir, model_dir, 3, '--keep_checkpoint_max=5')
    assert first.returncode == 0, first.stderr[-3000:]
    newest = tf.train.latest_checkpoint(model_dir)
    assert _step(newest) == 3
    data_file = [f for f in os.listdir(model_dir) if f.startswith('model.ckpt-3.data')][0]
    with open(os.path.join(model_dir, data_file), 'r+b') as f:
        f.truncate(1000)
    temp = os.path.join(model_dir, 'model.ckpt-4_temp')
    os.makedirs(temp)
    with open(os.path.join(temp, 'part-00000-of-00001.data-00000-of-00001'), 'wb') as f:
        f.write(b'\0' * 1000)
    proc = _train(tfrecord_dir, model_dir, 4)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert 'model.ckpt-3 cannot be read' in out and 'Resuming from' in out
    assert re.search(r'Resuming from \S*model\.ckpt-2 ', out), out[-3000:]
    assert not os.path.exists(temp)
    assert _step(tf.train.latest_checkpoint(model_dir)) == 4
    # the damaged files are kept aside for inspection, not deleted
    assert any(f.endswith('.unreadable') for f in os.listdir(model_dir))


@pytest.mark.slow
def flag_values_in_params(params, flags):
    """{name: (flag value as params' type, params' value)} for every --name=value of `flags`
    that params.json holds (an empty value stands for None)."""
    pairs = {}
    for flag in flags:
        name, value = flag[2:].split('=', 1)
        if name not in params:
            continue
        recorded = params[name]
        if value == '':
            value = None
        elif isinstance(recorded, bool):
            value = value.lower() in ('1', 'true')
        elif isinstance(recorded, (int, float)):
            value = type(recorded)(float(value))
        pairs[name] = (value, recorded)
    return pairs


@pytest.mark.slow
def test_params_json_records_what_the_run_used(trained_model_dir, tfrecord_dir):
    """Every training flag of the run that params.json holds is recorded with the run's value,
    most of them not the defaults (a params.json of defaults fails)."""
    from common import defaults
    with open(os.path.join(trained_model_dir, 'params.json')) as f:
        params = json.load(f)
    assert params['num_classes'] == 21 and params['model_scope'] == 'ssd300'
    assert params['data_dir'] == tfrecord_dir
    pairs = flag_values_in_params(params, TRAIN_FAST_FLAGS)
    wrong = {name: pair for name, pair in pairs.items() if pair[0] != pair[1]}
    assert not wrong, wrong
    not_default = [name for name, (value, _) in pairs.items()
                   if value != defaults.DEFAULT_PARAMS.get(name)]
    assert len(not_default) >= 4, (not_default, pairs)
    assert 'train.lock' not in os.listdir(trained_model_dir)


@pytest.mark.slow
@pytest.mark.parametrize('text', ['{"cluster": 1', '[]'])
def test_unreadable_params_json_is_a_one_line_error(trained_model_dir, tfrecord_dir, tmp_path,
                                                    text):
    model_dir = str(tmp_path / 'model')
    shutil.copytree(trained_model_dir, model_dir)
    with open(os.path.join(model_dir, 'params.json'), 'w') as f:
        f.write(text)
    proc = _train(tfrecord_dir, model_dir, 3)
    assert_one_line_error(proc, 'params.json')
