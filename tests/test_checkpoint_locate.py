"""The one checkpoint locator (utility/checkpoints/locate.py): a directory, prefix or file
turned into a checkpoint prefix, V1 and V2."""

import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import write_variables
from utility.checkpoints import locate

V1 = tf.compat.v1.train.SaverDef.V1


def test_directory_without_checkpoint_file_picks_the_newest(tmp_path):
    old = write_variables(str(tmp_path / 'a.ckpt'),
                          {'vgg_16/conv1/conv1_1/biases': np.zeros([64], np.float32)})
    new = write_variables(str(tmp_path / 'b.ckpt'),
                          {'vgg_16/conv1/conv1_1/biases': np.ones([64], np.float32)})
    os.remove(str(tmp_path / 'checkpoint'))
    os.utime(old + '.index', (2_000_000_000, 2_000_000_000))
    os.utime(new + '.index', (1_000_000_000, 1_000_000_000))
    assert locate.resolve_checkpoint(str(tmp_path)) == old


def test_directory_checkpoint_file_wins_over_newer_files(tmp_path):
    first = write_variables(str(tmp_path / 'first'), {'x': np.zeros([2], np.float32)})
    write_variables(str(tmp_path / 'second'), {'x': np.ones([2], np.float32)})
    tf.compat.v1.train.update_checkpoint_state(str(tmp_path), 'first')
    assert locate.resolve_checkpoint(str(tmp_path)) == first


def test_locate_checkpoint_one_rule_set(tmp_path):
    """Directory without a state file: highest step, then newest file; a prefix's files give
    the prefix; nothing there gives None (callers word the error)."""
    for step in (5, 10, 9):
        write_variables(str(tmp_path / ('model.ckpt-%d' % step)),
                        {'x': np.zeros([2], np.float32)})
    os.remove(str(tmp_path / 'checkpoint'))
    newest = str(tmp_path / 'model.ckpt-10')
    os.utime(newest + '.index', (1_000_000_000, 1_000_000_000))  # older file, higher step
    assert locate.locate_checkpoint(str(tmp_path)) == newest
    for suffix in ('', '.index', '.meta', '.data-00000-of-00001'):
        assert locate.locate_checkpoint(newest + suffix) == newest
    assert locate.locate_checkpoint(str(tmp_path / 'model.ckpt-7')) is None
    assert locate.locate_checkpoint(str(tmp_path / 'empty_dir_missing')) is None
    (tmp_path / 'empty').mkdir()
    assert locate.locate_checkpoint(str(tmp_path / 'empty')) is None
    assert locate.step_in_name(newest) == 10
    assert locate.step_in_name(str(tmp_path / 'm.ckpt-5-?????-of-00001')) == 5
    assert locate.step_in_name(str(tmp_path / 'vgg16_reducedfc')) is None


def test_v1_sharded_checkpoint_resolves_to_its_pattern(tmp_path):
    with tf.Graph().as_default():
        variable = tf.compat.v1.Variable(np.arange(3, dtype=np.float32), name='x')
        saver = tf.compat.v1.train.Saver(write_version=V1, sharded=True)
        with tf.compat.v1.Session() as session:
            session.run(variable.initializer)
            saved = saver.save(session, str(tmp_path / 'model.ckpt'), global_step=5,
                               write_meta_graph=False)
    pattern = str(tmp_path / 'model.ckpt-5-?????-of-00001')
    assert saved == pattern
    assert (tmp_path / 'model.ckpt-5-00000-of-00001').exists()
    assert locate.resolve_checkpoint(str(tmp_path)) == pattern
    assert locate.resolve_checkpoint(str(tmp_path / 'model.ckpt-5')) == pattern
    os.remove(str(tmp_path / 'checkpoint'))
    assert locate.resolve_checkpoint(str(tmp_path)) == pattern


def test_corrupt_checkpoint_is_reported_as_unreadable(tmp_path):
    (tmp_path / 'broken.index').write_bytes(b'not a checkpoint index')
    (tmp_path / 'broken.data-00000-of-00001').write_bytes(b'\0' * 64)
    with pytest.raises(ValueError, match='cannot be read.*truncated'):
        locate.resolve_checkpoint(str(tmp_path / 'broken'))
