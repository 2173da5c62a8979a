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


def under_ci():
    """True where the CI environment variable says so (.ci/run sets CI=true, as CI services do):
    there every test dependency is installed (requirements-test.txt)."""
    return os.environ.get('CI', '').strip().lower() in ('true', '1')


def import_or_skip(module, reason):
    """pytest.importorskip, except under CI (`under_ci`): there a missing dependency fails the
    test instead of hiding behind a skip. Returns the module."""
    if not under_ci():
        return pytest.importorskip(module, reason=reason)
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as error:
        pytest.fail('%s is missing under CI=true (%s): %s; pip install -r requirements-test.txt'
                    % (module, reason, error), pytrace=False)


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

# Training flags of the end-to-end tests: from scratch, batch 2, ResNet-18 (18.5 GFLOP per
# training image against VGG-16's 188: the backbone is beside the point of these tests; the
# ones about VGG-16 pass --backbone after these flags or build it in-process).
# --precision=fp32: the same numerics on every machine (the default, auto, is bf16 only where
# the CPU has it), so that comparisons between runs, drivers and TF lines stay tight; the
# precision tests leave it out.
# --batch_norm_decay=0: the moving statistics are the last batch's, so a 2-step model's
# inference is normalized like its training (with 0.997 they are still the initial ones, the
# activations blow up and every top score is 1.0: detections too degenerate to compare).
FAST_BACKBONE = 'resnet18'
TRAIN_FAST_FLAGS = ['--checkpoint_path=', '--batch_size=2', '--data_format=channels_last',
                    '--log_every_n_steps=1', '--save_checkpoints_secs=3600',
                    '--num_readers=2', '--num_preprocessing_threads=2',
                    '--backbone=' + FAST_BACKBONE, '--batch_norm_decay=0', '--precision=fp32']
# The VGG-16 overfit check's training (tests/test_learning.py, its COCO twin in
# tests/test_coco_end_to_end.py): from scratch, no augmentation, 120
# steps of batch 2; 1e-5 warm-up for 10 steps, 1e-4 to step 60, then 3e-5 and 1e-5 (constant
# 1e-4 fits by step ~60 but then spikes: cls_loss 7 -> 12 at step 80, measured; 1e-3
# diverges). --precision=fp32: the fit was measured in float32 and stays the same on every CPU
# (the default, auto, trains in bf16 where the CPU has it; the ResNet-18 check runs that).
OVERFIT_TRAIN_FLAGS = [
    '--checkpoint_path=', '--noaugment', '--data_format=channels_last',
    '--batch_size=2', '--max_number_of_steps=120',
    '--learning_rate=1e-4', '--decay_boundaries=10,60,100', '--lr_decay_factors=0.1,1,0.3,0.1',
    '--tf_random_seed=1', '--log_every_n_steps=10', '--save_checkpoints_secs=100000',
    '--num_readers=1', '--num_preprocessing_threads=2', '--precision=fp32']
# The cheap overfit check (tests/test_learning.py on VOC, tests/test_coco_end_to_end.py on
# COCO; about a tenth of VGG-16's cost per image): ResNet-18 from scratch under the session
# driver (the only driver on TF 2.16+). Its batch norm needs --batch_norm_decay=0.9: with the
# default 0.997 the moving averages still hold 64% of their initial values at step 150 and the
# same fit evaluates at mAP 0.0015 (measured). No --precision: it trains in the default (auto).
RESNET18_OVERFIT_FLAGS = [
    '--checkpoint_path=', '--noaugment', '--data_format=channels_last', '--backbone=resnet18',
    '--driver=session', '--batch_norm_decay=0.9', '--batch_size=4',
    '--max_number_of_steps=150', '--learning_rate=1e-3', '--decay_boundaries=10',
    '--lr_decay_factors=0.1,1', '--tf_random_seed=1', '--log_every_n_steps=10',
    '--save_checkpoints_secs=100000', '--num_readers=1', '--num_preprocessing_threads=2']
# A weight of FAST_BACKBONE's first convolution, for tests that follow weights across runs.
FAST_BACKBONE_WEIGHT = 'ssd300/conv1/weights'


@pytest.fixture(scope='session')
def trained_run(tfrecord_dir, tmp_path_factory):
    """(model_dir, output) of a 2-step, batch-2 training run from scratch (TRAIN_FAST_FLAGS:
    ResNet-18) on the sample records; output is the run's stdout + stderr, for tests that read
    its loss lines."""
    model_dir = str(tmp_path_factory.mktemp('trained') / 'model')
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                       '--max_number_of_steps=2'] + TRAIN_FAST_FLAGS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return model_dir, proc.stdout + proc.stderr


@pytest.fixture(scope='session')
def trained_model_dir(trained_run):
    """model_dir of `trained_run`. Read-only for tests: copy it before training further in it."""
    return trained_run[0]


@pytest.fixture(scope='session')
def resnet18_model_dir(trained_model_dir):
    """trained_model_dir, named for the tests that are about its ResNet-18 backbone."""
    assert FAST_BACKBONE == 'resnet18'
    return trained_model_dir


# Session fixtures above that start training subprocesses: a test that uses one is slow.
SLOW_FIXTURES = ('trained_run', 'trained_model_dir', 'resnet18_model_dir')

# The fast tier's guard (pytest hooks below, not a fixture: a fixture-based guard is set up
# after the module- and session-scoped fixtures it should watch). A test not marked `slow` may
# neither start a Python subprocess (an entry script, a trainer) during its set-up or its call,
# nor use a fixture that started one for an earlier test (any scope: recorded as fixtures are
# set up), nor one of SLOW_FIXTURES.
_guarded_test = [None]      # node id of the fast test now being set up or run
_python_starts = [0]        # Python subprocesses started so far in this session
_fixtures_that_start_python = set()


def _starts_python(args):
    program = os.path.basename(str(args[0] if isinstance(args, (list, tuple)) else args))
    return program.startswith('python') or program == os.path.basename(sys.executable)


def pytest_configure(config):
    import subprocess
    original = subprocess.Popen.__init__

    def counted(self, args, *rest, **kwargs):
        if _starts_python(args):
            if _guarded_test[0]:
                raise AssertionError('%s starts %s: mark it @pytest.mark.slow'
                                     % (_guarded_test[0], args))
            _python_starts[0] += 1
        original(self, args, *rest, **kwargs)
    subprocess.Popen.__init__ = counted


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    before = _python_starts[0]
    yield
    if _python_starts[0] > before:
        _fixtures_that_start_python.add(fixturedef.argname)


def _guard_fast_tier(item):
    """Context for one phase of `item`: guards it unless it is marked slow."""
    import contextlib
    if item.get_closest_marker('slow'):
        return contextlib.nullcontext()
    used = [name for name in item.fixturenames
            if name in SLOW_FIXTURES or name in _fixtures_that_start_python]
    assert not used, '%s uses %s: mark it @pytest.mark.slow' % (item.nodeid, used)

    @contextlib.contextmanager
    def guarded():
        _guarded_test[0] = item.nodeid
        try:
            yield
        finally:
            _guarded_test[0] = None
    return guarded()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _guard_fast_tier(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _guard_fast_tier(item):
        yield


# ----------------------------------------------------------------------------- output checks

def assert_one_line_error(proc, *fragments):
    """The process failed with exactly one `error: ` line holding every fragment, no traceback."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert 'Traceback' not in proc.stderr


def logged_losses(output):
    """{global step: total loss} of train_ssd.py's `step N, loss X` lines (nan/inf kept)."""
    import re
    return {int(step): float(loss) for step, loss in
            re.findall(r'step (\d+), loss ([-+0-9.e]+|nan|inf)', output)}


def assert_finite_losses(output, steps):
    """Every global step in `steps` logged a loss, and every logged loss is finite (a run that
    logged nothing fails here instead of passing an empty all())."""
    import math
    losses = logged_losses(output)
    missing = sorted(set(steps) - set(losses))
    assert not missing, 'no loss logged for steps %s:\n%s' % (missing, output[-3000:])
    bad = {step: loss for step, loss in losses.items() if not math.isfinite(loss)}
    assert not bad, 'non-finite losses %s' % bad
    return losses


def read_detections(output_dir):
    """{(class file, image id): [(score, xmin, ymin, xmax, ymax), ...]} from eval's comp4
    results files, each list in file order (score descending)."""
    rows = {}
    for name in sorted(os.listdir(output_dir)):
        if name.startswith('comp4_det_test_'):
            with open(os.path.join(output_dir, name)) as f:
                for line in f:
                    fields = line.split()
                    rows.setdefault((name, fields[0]), []).append(
                        tuple(float(v) for v in fields[1:]))
    return rows


def assert_same_detections(first, second, score_tol, box_tol, max_per_image=None):
    """The two read_detections() results ({(class, image): [(score, box...), ...]}) hold the
    same detections, whatever the order of tied scores. Per image, across its classes:

    * every detection of one is paired with a distinct detection of the other of the same
      class whose score is within `score_tol` and whose box is within `box_tol`;
    * an image that neither result filled to its top-k cap (`max_per_image`, by default the
      post-processing's: defaults.POSTPROCESS nms_topk, kept per image) has as many
      detections in both, every one paired;
    * an image that hit the cap in either result may leave unpaired only detections scoring
      within `score_tol` of the image's lowest score, over all its classes and both results
      (a near-tie at the top-k cut moves which of them make it in).

    Returns the number of pairs."""
    import numpy as np
    from common import defaults
    if max_per_image is None:
        assert defaults.POSTPROCESS['keep_per'] == 'image'
        max_per_image = defaults.POSTPROCESS['nms_topk']
    assert first and second, 'no detections to compare'

    def by_image(results):
        images = {}
        for (label, image), rows in results.items():
            images.setdefault(image, {})[label] = np.array(rows, dtype=np.float64)
        return images
    images_a, images_b = by_image(first), by_image(second)
    assert set(images_a) == set(images_b), sorted(set(images_a) ^ set(images_b))[:10]
    paired = 0
    for image, classes_a in images_a.items():
        classes_b = images_b[image]
        count_a = sum(len(rows) for rows in classes_a.values())
        count_b = sum(len(rows) for rows in classes_b.values())
        capped = max(count_a, count_b) >= max_per_image
        assert capped or count_a == count_b, (
            'image %s: %d detections against %d (top-k cap %d not reached)'
            % (image, count_a, count_b, max_per_image))
        lowest = min(rows[:, 0].min() for rows in list(classes_a.values())
                     + list(classes_b.values()))
        left = []
        for label in set(classes_a) | set(classes_b):
            empty = np.zeros([0, 5])
            a, b = classes_a.get(label, empty), classes_b.get(label, empty)
            used = np.zeros(len(b), bool)
            for row in a:
                fits = ((np.abs(b[:, 0] - row[0]) <= score_tol)
                        & (np.abs(b[:, 1:] - row[1:]).max(axis=1) <= box_tol) & ~used)
                if fits.any():
                    candidates = np.flatnonzero(fits)
                    used[candidates[np.argmin(np.abs(b[candidates, 0] - row[0]))]] = True
                    paired += 1
                else:
                    left.append((label, 'first') + tuple(row))
            left += [(label, 'second') + tuple(row) for row in b[~used]]
        if not capped:
            assert not left, ('image %s: unpaired detections %s' % (image, left[:3]))
        too_high = [row for row in left if row[2] > lowest + score_tol]
        assert not too_high, ('image %s: unpaired detections above its lowest score %g: %s'
                              % (image, lowest, too_high[:3]))
    return paired


def write_variables(prefix, tensors, version=None):
    """Saves {name: numpy array} as tf.compat.v1 variables of those names with a Saver (V2, or
    `version` tf.compat.v1.train.SaverDef.V1; no meta graph), built in its own graph, like any
    TF1-style checkpoint; returns the prefix."""
    import tensorflow as tf
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    with tf.Graph().as_default():
        feeds, variables = {}, []
        for name, value in tensors.items():
            placeholder = tf.compat.v1.placeholder(tf.as_dtype(value.dtype), value.shape)
            variables.append(tf.compat.v1.Variable(placeholder, name=name))
            feeds[placeholder] = value
        saver = tf.compat.v1.train.Saver(
            variables, write_version=version or tf.compat.v1.train.SaverDef.V2)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer(), feeds)
            return saver.save(session, prefix, write_meta_graph=False)


class Log(list):
    """A `log` callable for library functions that keeps their messages, each one line."""

    def __call__(self, message):
        assert '\n' not in message
        self.append(message)


def save_checkpoints(directory, steps):
    """Saves one checkpoint per (step, a, b) with tf.compat.v1.train.Saver over two small
    variables and the global step; returns the prefixes."""
    import numpy as np
    import tensorflow as tf
    prefixes = []
    with tf.Graph().as_default():
        a = tf.compat.v1.get_variable('net/a', shape=[3, 4], dtype=tf.float32)
        b = tf.compat.v1.get_variable('net/b', shape=[5], dtype=tf.float32)
        step = tf.compat.v1.train.get_or_create_global_step()
        values = [tf.compat.v1.placeholder(tf.float32, v.shape) for v in (a, b)]
        new_step = tf.compat.v1.placeholder(tf.int64, [])
        assign = [a.assign(values[0]), b.assign(values[1]), step.assign(new_step)]
        saver = tf.compat.v1.train.Saver(max_to_keep=10)
        with tf.compat.v1.Session() as sess:
            for n, a_value, b_value in steps:
                sess.run(assign, {values[0]: np.full([3, 4], a_value, np.float32),
                                  values[1]: np.full([5], b_value, np.float32),
                                  new_step: n})
                prefixes.append(saver.save(sess, os.path.join(directory, 'model.ckpt'),
                                           global_step=n))
    return prefixes


