"""Checkpoint hygiene (utility/checkpoints/files.py, issue 16): leftovers of a killed save,
unreadable and non-finite checkpoints."""
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import Log, save_checkpoints
from utility.checkpoints import files as checkpoint_files


# ----------------------------------------------------------------------------- helpers


def restore_values(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in ('net/a', 'net/b', 'global_step')}


def state_file(directory):
    state = tf.train.get_checkpoint_state(directory)
    resolve = lambda p: os.path.normpath(p if os.path.isabs(p)  # noqa: E731
                                         else os.path.join(directory, p))
    return (resolve(state.model_checkpoint_path),
            [resolve(p) for p in state.all_model_checkpoint_paths])


# ----------------------------------------------------------------------------- leftovers


def test_stale_temp_leftovers_are_removed_and_nothing_else(tmp_path):
    directory = tmp_path / 'model'
    leftovers = ['model.ckpt-5_temp', 'model.ckpt-7_temp_0123456789abcdef0123456789abcdef',
                 'checkpoint.tmp0123456789abcdef0123456789abcdef']
    keep = ['model.ckpt-5.index', 'model.ckpt-5.data-00000-of-00001', 'checkpoint',
            'my_temp_notes.txt', 'params.json', 'events.out.tfevents.1.host']
    for name in leftovers[:2]:
        (directory / name).mkdir(parents=True)
        (directory / name / 'part-00000-of-00001.data-00000-of-00001').write_bytes(
            b'\0' * 1000000)
        (directory / name / 'part-00000-of-00001.index').write_bytes(b'i')
    (directory / leftovers[2]).write_text('model_checkpoint_path: "model.ckpt-')
    for name in keep:
        (directory / name).write_text('keep')
    log = Log()
    removed = checkpoint_files.remove_stale_temp(str(directory), log)
    assert removed == sorted(str(directory / n) for n in leftovers)
    assert sorted(os.listdir(directory)) == sorted(keep)
    assert log == ['Removed 3 leftover(s) of an interrupted checkpoint save (2.0 MB): %s.'
                   % ', '.join(sorted(leftovers))]
    assert checkpoint_files.remove_stale_temp(str(directory), log) == [] and len(log) == 1


# ----------------------------------------------------------------------------- fallback


def test_truncated_newest_checkpoint_falls_back_to_the_older_one(tmp_path):
    directory = str(tmp_path / 'model')
    old, new = save_checkpoints(directory, [(10, 1.0, 2.0), (20, 3.0, 4.0)])
    assert checkpoint_files.newest_readable_checkpoint(directory) == new    # both fine: the newest
    data = new + '.data-00000-of-00001'
    with open(data, 'r+b') as f:
        f.truncate(os.path.getsize(data) // 2)
    with pytest.raises(Exception):
        restore_values(new)                                   # what a resume would hit
    # Without repair (eval, demo): the answer, and nothing on disk changes.
    before = sorted(os.listdir(directory))
    assert checkpoint_files.newest_readable_checkpoint(directory, repair=False) == old
    assert sorted(os.listdir(directory)) == before and tf.train.latest_checkpoint(directory) == new
    log = Log()
    assert checkpoint_files.newest_readable_checkpoint(directory, log) == old
    assert log[0].startswith('Checkpoint %s cannot be read (variable ' % new)
    assert log[0].endswith('its files were renamed to *.unreadable (delete them when you no '
                           'longer need them).')
    assert log[1] == 'Resuming from %s, the newest readable checkpoint (step 10).' % old
    assert state_file(directory) == (old, [old])
    assert tf.train.latest_checkpoint(directory) == old
    values = restore_values(tf.train.latest_checkpoint(directory))
    assert values['global_step'] == 10 and (values['net/a'] == 1.0).all()
    assert os.path.exists(data + '.unreadable') and not os.path.exists(data)
    # A lost state file is rebuilt from the *.index files.
    os.remove(os.path.join(directory, 'checkpoint'))
    assert tf.train.latest_checkpoint(directory) is None
    assert checkpoint_files.newest_readable_checkpoint(directory) == old
    assert tf.train.latest_checkpoint(directory) == old


def test_no_readable_checkpoint_is_an_error_and_an_empty_dir_is_none(tmp_path):
    directory = str(tmp_path / 'model')
    assert checkpoint_files.newest_readable_checkpoint(directory) is None
    (prefix,) = save_checkpoints(directory, [(3, 1.0, 1.0)])
    with open(prefix + '.data-00000-of-00001', 'wb') as f:
        f.write(b'garbage')
    with pytest.raises(ValueError) as info:
        checkpoint_files.newest_readable_checkpoint(directory)
    assert str(info.value).startswith('No checkpoint in %s can be read: the newest, '
                                      'model.ckpt-3, fails because variable ' % directory)
    assert os.path.exists(prefix + '.index')               # nothing moved


# ----------------------------------------------------------------------------- NaN roll back


def test_roll_back_to_the_newest_finite_checkpoint(tmp_path):
    directory = str(tmp_path / 'model')
    ok, huge, nan = save_checkpoints(directory, [(1, 0.5, 0.1), (2, 1.2e30, 0.1),
                                                 (3, np.nan, 0.1)])
    assert checkpoint_files.checkpoint_is_finite(ok) and checkpoint_files.checkpoint_is_finite(huge)
    assert not checkpoint_files.checkpoint_is_finite(huge, max_abs=1e8)
    assert not checkpoint_files.checkpoint_is_finite(nan)
    log = Log()
    prefix, message = checkpoint_files.roll_back_to_finite(directory, log)
    assert prefix == ok
    assert message == ('set aside model.ckpt-3 (*.nonfinite), model.ckpt-2 (*.nonfinite); '
                       'rerunning resumes from %s (step 1), whose weights are all finite.' % ok)
    assert log == ['Set checkpoint %s aside as *.nonfinite: variable net/a holds NaN or Inf.'
                   % nan,
                   'Set checkpoint %s aside as *.nonfinite: variable net/a holds 1.2e+30 '
                   '(diverged: beyond 1e+08).' % huge]
    assert tf.train.latest_checkpoint(directory) == ok
    assert state_file(directory) == (ok, [ok])
    assert os.path.exists(nan + '.index.nonfinite') and not os.path.exists(nan + '.index')
    # Running it again changes nothing.
    assert checkpoint_files.roll_back_to_finite(directory) == (
        ok, 'rerunning resumes from %s (step 1), whose weights are all finite.' % ok)


def test_roll_back_uses_the_nan_step_and_may_leave_nothing(tmp_path):
    directory = str(tmp_path / 'model')
    first, second = save_checkpoints(directory, [(4, 0.5, 0.1), (9, 0.7, 0.2)])
    # The loss was non-finite at step 9: model.ckpt-9 holds the weights that produced it.
    prefix, message = checkpoint_files.roll_back_to_finite(directory, nan_step=9)
    assert prefix == first and tf.train.latest_checkpoint(directory) == first
    assert message.startswith('set aside model.ckpt-9 (*.nonfinite); rerunning resumes from')
    prefix, message = checkpoint_files.roll_back_to_finite(directory, nan_step=2)
    assert prefix is None and tf.train.latest_checkpoint(directory) is None
    assert not os.path.exists(os.path.join(directory, 'checkpoint'))
    assert message == ('set aside model.ckpt-4 (*.nonfinite); no checkpoint with finite '
                       'weights is left in %s, so rerunning starts training afresh (from '
                       '--checkpoint_path, or from scratch).' % directory)
    assert checkpoint_files.newest_readable_checkpoint(directory) is None
    assert checkpoint_files.roll_back_to_finite(str(tmp_path / 'empty'))[0] is None
