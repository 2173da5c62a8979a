"""Shared pytest fixtures.

* ``voc_sample_dir``: a 12-image synthetic VOC split folder made once per test
  session by ``dataset.make_voc_sample`` (seed 0): ``<tmp>/VOC2012_sample`` with
  JPEGImages/, Annotations/ and ImageSets/Main/{train,val,trainval}.txt (10 train,
  2 val images). Its parent folder is the converter's ``--dataset_directory``.
* ``tfrecord_dir``: that sample converted once per session: ``train-0000{0,1}-of-00002``,
  ``val-0000{0,1}-of-00002`` and ``manifest.json``.

Treat both as read-only; copy them (``shutil.copytree``) before changing anything.
"""
import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

SAMPLE_NAME = 'VOC2012_sample'
SAMPLE_IMAGES = 12
SAMPLE_SEED = 0
SAMPLE_TRAIN_SHARDS = 2
SAMPLE_VALIDATION_SHARDS = 2


@pytest.fixture(scope='session')
def voc_sample_dir(tmp_path_factory):
    """Path (str) of the session's 12-image ``VOC2012_sample`` split folder."""
    from dataset.make_voc_sample import make_voc_sample
    root = tmp_path_factory.mktemp('voc_sample')
    return make_voc_sample(str(root), num_images=SAMPLE_IMAGES, seed=SAMPLE_SEED,
                           name=SAMPLE_NAME)


@pytest.fixture(scope='session')
def tfrecord_dir(voc_sample_dir, tmp_path_factory):
    """Path (str) of the folder with the sample's TFRecord shards and manifest.json."""
    from dataset import voc_to_tfrecords
    out = str(tmp_path_factory.mktemp('tfrecords'))
    voc_to_tfrecords.convert_dataset(
        os.path.dirname(voc_sample_dir), out, [SAMPLE_NAME], [SAMPLE_NAME],
        train_shards=SAMPLE_TRAIN_SHARDS, validation_shards=SAMPLE_VALIDATION_SHARDS,
        num_threads=2, train_list='train', validation_list='val')
    return out


def run_script(args, cwd=REPO_ROOT, timeout=900, env=None, python=None):
    """Runs a repo script with the test interpreter (or `python`); returns CompletedProcess."""
    import subprocess
    full_env = dict(os.environ)
    full_env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    full_env.update(env or {})
    return subprocess.run([python or sys.executable] + list(args), cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def write_initial_checkpoint(path, num_classes=21):
    """Writes a seeded from-scratch SSD300 (VGG-16) checkpoint, built in its own graph, with
    `num_classes` (background included) and no global step; returns its prefix."""
    import tensorflow as tf
    from net import ssd_net
    from net import anchors
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(1)
        images = tf.compat.v1.placeholder(tf.float32, [None, 300, 300, 3])
        ssd_net.ssd300(images, num_classes, anchors.anchors_per_location(anchors.SSD300_SPEC))
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return saver.save(sess, path)


def _available_drivers():
    from utility import drivers
    return ['estimator', 'session'] if drivers.has_estimator() else ['session']


# The training drivers this TensorFlow runs (tf.estimator exists on 2.15 and older only).
AVAILABLE_DRIVERS = _available_drivers()

TRAIN_FAST_FLAGS = ['--checkpoint_path=', '--batch_size=2', '--data_format=channels_last',
                    '--log_every_n_steps=1', '--save_checkpoints_secs=3600',
                    '--num_readers=2', '--num_preprocessing_threads=2']


@pytest.fixture(scope='session')
def trained_model_dir(tfrecord_dir, tmp_path_factory):
    """model_dir of a 2-step, batch-2 training run from scratch on the sample records.

    Read-only for tests: copy it before training further in it.
    """
    model_dir = str(tmp_path_factory.mktemp('trained') / 'model')
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                       '--max_number_of_steps=2'] + TRAIN_FAST_FLAGS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return model_dir


def write_variables(prefix, tensors):
    """Saves {name: numpy array} as tf.compat.v1 variables of those names with a Saver (V2, no
    meta graph), built in its own graph, like any TF1-style checkpoint; returns the prefix."""
    import tensorflow as tf
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    with tf.Graph().as_default():
        feeds, variables = {}, []
        for name, value in tensors.items():
            placeholder = tf.compat.v1.placeholder(tf.as_dtype(value.dtype), value.shape)
            variables.append(tf.compat.v1.Variable(placeholder, name=name))
            feeds[placeholder] = value
        saver = tf.compat.v1.train.Saver(variables)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer(), feeds)
            return saver.save(session, prefix, write_meta_graph=False)
