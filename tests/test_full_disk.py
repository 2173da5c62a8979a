"""A checkpoint save that runs out of disk space ends in one line, and the older checkpoint
stays intact (issue 24, item 5)."""
import os
import subprocess

import numpy as np
import pytest

from conftest import TRAIN_FAST_FLAGS, run_script, write_variables
from utility.checkpoints import files as checkpoint_files

# TensorFlow's message for a SaveV2 that hit ENOSPC (TF 2.15, shortened).
SAVE_ERROR = ("Graph execution error:\n\nDetected at node 'save/SaveV2' defined at ...\n"
              "{path}/model.ckpt-7_temp/part-00000-of-00001.data-00000-of-00001.tempstate1087"
              "; No space left on device\n\t [[{{{{node save/SaveV2}}}}]]")


def test_full_disk_message_names_checkpoint_folder_space_and_the_intact_one(tmp_path):
    model_dir = str(tmp_path / 'model')
    write_variables(os.path.join(model_dir, 'model.ckpt-5'),
                    {'global_step': np.array(5, np.int64), 'w': np.ones(3, np.float32)})
    temp = os.path.join(model_dir, 'model.ckpt-7_temp')
    os.makedirs(temp)
    with open(os.path.join(temp, 'part-00000-of-00001.data-00000-of-00001.tempstate1'),
              'wb') as f:
        f.write(b'\0' * 1000)
    message = checkpoint_files.describe_full_disk(model_dir, SAVE_ERROR.format(path=model_dir))
    assert '\n' not in message
    assert message.startswith('No space left on device while saving checkpoint model.ckpt-7 '
                              'in %s (' % model_dir)
    assert 'MB free there now' in message
    assert 'model.ckpt-5 (global step 5) is intact and the same command resumes from it' \
        in message
    assert not os.path.exists(temp)                      # the half-written save is gone
    assert os.path.exists(os.path.join(model_dir, 'model.ckpt-5.index'))
    # nothing saved yet: says so; another error is not a full disk
    empty = str(tmp_path / 'empty')
    os.makedirs(empty)
    assert 'no checkpoint was saved before' in checkpoint_files.describe_full_disk(
        empty, SAVE_ERROR.format(path=empty))
    assert checkpoint_files.describe_full_disk(model_dir, 'Permission denied') is None


@pytest.fixture
def small_disk(tmp_path):
    """A 100 MB tmpfs: room for a ResNet-18 run's first checkpoint (58 MB with its graph and
    events), not for a second one. Skipped where this process may not mount one."""
    mount_point = str(tmp_path / 'disk')
    os.makedirs(mount_point)
    proc = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=100m', 'tmpfs', mount_point],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip('cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): %s'
                    % (proc.stderr.strip() or proc.returncode))
    try:
        yield mount_point
    finally:
        subprocess.run(['umount', '-l', mount_point], capture_output=True)


@pytest.mark.slow
def test_training_on_a_full_disk_stops_in_one_line_and_keeps_the_older_checkpoint(
        tfrecord_dir, small_disk):
    model_dir = os.path.join(small_disk, 'model')
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                       '--backbone=resnet18', '--max_number_of_steps=2'] + TRAIN_FAST_FLAGS,
                      timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-4000:]
    assert 'Traceback' not in out, out[-4000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: No space left on device while saving checkpoint '
                           'model.ckpt-2 in %s (' % model_dir), out[-4000:]
    assert 'model.ckpt-0 (global step 0) is intact and the same command resumes' in last
    assert not [n for n in os.listdir(model_dir) if '_temp' in n]
    assert checkpoint_files.newest_readable_checkpoint(
        model_dir, repair=False).endswith('model.ckpt-0')
