"""train_ssd.py end to end: checkpoints, resume, two replicas, replica averaging, errors."""
import json
import os
import re
import shutil
import signal
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import (AVAILABLE_DRIVERS, REPO_ROOT, TRAIN_FAST_FLAGS, assert_finite_losses,
                      run_script, write_initial_checkpoint, write_variables)
from utility.training import precision as precision_lib
from utility.training import schedule


def _ckpt_step(model_dir):
    latest = tf.train.latest_checkpoint(model_dir)
    assert latest, 'no checkpoint in %s' % model_dir
    return int(tf.train.load_checkpoint(latest).get_tensor('global_step'))


@pytest.mark.slow
def test_short_run_writes_checkpoint_params_and_finite_losses(trained_run):
    trained_model_dir, output = trained_run
    assert _ckpt_step(trained_model_dir) == 2
    assert_finite_losses(output, steps=[1, 2])
    with open(os.path.join(trained_model_dir, 'params.json')) as f:
        params = json.load(f)
    assert params['batch_size'] == 2 and params['anchor_spec']['feature_shapes'][0] == 38
    assert params['checkpoint_path'] is None  # trained from scratch


def _trained_weights(prefix):
    """{name: value} of a checkpoint's model weights (the optimizer's slots, the batch-norm
    moving statistics and the global step left out: they move without the learning rate)."""
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith('ssd300/')
            and not re.search(r'/Momentum$|/moving_(mean|variance)$', name)}


def _backbone_checkpoint(trained_prefix, path):
    """A ResNet-18 backbone checkpoint (resnet_v1_18 scope, no SSD layers) whose every weight
    is the trained one + 0.5: restoring it would change every backbone weight."""
    from net import ssd_net
    new_layers = [s.strip() + '/' for s in ssd_net.default_exclude_scopes('resnet18').split(',')]
    backbone = {name.replace('ssd300/', 'resnet_v1_18/', 1): value + np.float32(0.5)
                for name, value in _trained_weights(trained_prefix).items()
                if not any(name.startswith(scope) for scope in new_layers)}
    assert len(backbone) > 20
    return write_variables(path, backbone)


@pytest.mark.slow
@pytest.mark.parametrize('backbone', ['', 'backbone'])
@pytest.mark.parametrize('driver', AVAILABLE_DRIVERS)
def test_second_run_resumes_from_the_checkpoint(trained_model_dir, tfrecord_dir, tmp_path,
                                                driver, backbone):
    """Either driver resumes a checkpoint written by the default one (same names, same step):
    at a learning rate of 1e-30 (--end_learning_rate too: the rate never goes below it) the
    resumed run saves the checkpoint's weights unchanged to within 1e-20 (its one step moves
    weights by about 1e-32; a re-initialization, even with the default seed, moves them by far
    more; a backbone restore too). With a backbone --checkpoint_path, as
    in the README's training command, the trained weights win and the log says the backbone
    checkpoint is not used."""
    model_dir = str(tmp_path / 'model')
    shutil.copytree(trained_model_dir, model_dir)
    before = _trained_weights(tf.train.latest_checkpoint(model_dir))
    extra = []
    if backbone:
        extra = ['--checkpoint_path=' + _backbone_checkpoint(
            tf.train.latest_checkpoint(model_dir), str(tmp_path / 'backbone' / 'resnet.ckpt'))]
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                       '--max_number_of_steps=3', '--driver=' + driver] + TRAIN_FAST_FLAGS
                      + ['--learning_rate=1e-30', '--end_learning_rate=1e-30'] + extra)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'Resuming from' in out and 'model.ckpt-2' in out and driver + ' driver' in out
    if backbone:
        assert '--checkpoint_path is not used' in out, out[-3000:]
        assert 'Initializing the backbone' not in out
    # exactly one more step was run, starting at global step 2
    assert re.search(r'step 3, loss', out) and not re.search(r'step [12], loss', out)
    assert_finite_losses(out, steps=[3])
    assert _ckpt_step(model_dir) == 3
    after = _trained_weights(tf.train.latest_checkpoint(model_dir))
    assert sorted(after) == sorted(before) and len(before) > 50
    moved = {name: float(np.abs(after[name] - value).max()) for name, value in before.items()
             if not np.allclose(after[name], value, rtol=0, atol=1e-20)}
    assert not moved, 'weights differ from the resumed checkpoint: %s' % sorted(
        moved.items(), key=lambda item: -item[1])[:5]


@pytest.mark.slow
@pytest.mark.parametrize('driver', AVAILABLE_DRIVERS)
def test_two_replicas_on_logical_cpus_train(tfrecord_dir, tmp_path, driver):
    model_dir = str(tmp_path / 'model')
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                       '--max_number_of_steps=1', '--num_cpu_replicas=2',
                       '--driver=' + driver] + TRAIN_FAST_FLAGS)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'MirroredStrategy on 2 logical CPU devices' in out
    assert_finite_losses(out, steps=[1])
    assert _ckpt_step(model_dir) == 1


@pytest.mark.slow
@pytest.mark.parametrize('driver', AVAILABLE_DRIVERS)
def test_replicas_average_not_add(tmp_path, driver):
    """One step on two replicas == one step on one device with the same global batch."""
    init = write_initial_checkpoint(str(tmp_path / 'init' / 'model.ckpt'))
    deltas = {}
    for replicas in (1, 2):
        model_dir = str(tmp_path / ('r%d' % replicas))
        proc = run_script(['tests/replica_step_check.py', '--replicas=%d' % replicas,
                           '--init_ckpt=' + init, '--model_dir=' + model_dir,
                           '--driver=' + driver])
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        assert '"step": 1' in proc.stdout
        deltas[replicas] = dict(np.load(os.path.join(model_dir, 'deltas.npz')))
    assert set(deltas[1]) == set(deltas[2])
    moved = 0
    for name, one in deltas[1].items():
        two = deltas[2][name]
        scale = np.abs(one).max()
        if scale == 0:
            continue
        moved += 1
        # equal updates (float32 reduction-order noise only); a sum would be 2x
        np.testing.assert_allclose(two, one, rtol=0, atol=1e-3 * scale, err_msg=name)
    assert moved > 30


@pytest.mark.slow
def test_missing_checkpoint_is_a_clear_error(tfrecord_dir, tmp_path):
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir,
                       '--model_dir=' + str(tmp_path / 'm'),
                       '--checkpoint_path=' + str(tmp_path / 'nowhere'), '--batch_size=2'])
    assert proc.returncode != 0
    assert 'nowhere' in proc.stderr and '--checkpoint_path=' in proc.stderr
    assert 'Traceback' not in proc.stderr


@pytest.mark.slow
def test_empty_data_dir_is_a_clear_error(tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    proc = run_script(['train_ssd.py', '--data_dir=' + str(empty),
                       '--model_dir=' + str(tmp_path / 'm')] + TRAIN_FAST_FLAGS)
    assert proc.returncode != 0
    assert 'No TFRecord files match' in proc.stderr and str(empty) in proc.stderr
    assert 'Traceback' not in proc.stderr


@pytest.mark.slow
def test_batch_that_does_not_divide_over_replicas_is_a_clear_error(tfrecord_dir, tmp_path):
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir,
                       '--model_dir=' + str(tmp_path / 'm'), '--checkpoint_path=',
                       '--num_cpu_replicas=2', '--batch_size=3'])
    assert proc.returncode != 0
    assert '--batch_size=3 does not divide evenly over 2 replicas' in proc.stderr
    assert 'Traceback' not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize('driver', AVAILABLE_DRIVERS)
def test_nan_loss_stops_with_step_and_last_good_checkpoint(tfrecord_dir, tmp_path, driver):
    model_dir = str(tmp_path / 'model')
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                       '--max_number_of_steps=6', '--learning_rate=1e30',
                       '--lr_decay_factors=1,1,1,1', '--driver=' + driver] + TRAIN_FAST_FLAGS)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-4000:]
    match = re.search(r'loss became NaN or infinite at global step (\d+), before the weights '
                      r'were updated; .*rerunning resumes from (\S+) \(step (\d+)\), whose '
                      r'weights are all finite', out)
    assert match, out[-3000:]
    step, ckpt = int(match.group(1)), match.group(2)
    assert 1 <= step < 6 and int(match.group(3)) < step
    assert tf.train.latest_checkpoint(model_dir) == ckpt
    # the checkpoint named is intact and holds only finite weights
    reader = tf.train.load_checkpoint(ckpt)
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.all(np.isfinite(value)), name


@pytest.mark.slow
def test_after_a_nan_stop_the_advised_rerun_trains(tfrecord_dir, tmp_path):
    """Checkpoints saved every second while the weights blew up to ~1e30 are set aside, so
    following the message (lower the rate, rerun) trains instead of failing again forever."""
    model_dir = str(tmp_path / 'model')
    flags = [f for f in TRAIN_FAST_FLAGS if not f.startswith('--save_checkpoints_secs')]
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                       '--max_number_of_steps=8', '--learning_rate=1e30',
                       '--save_checkpoints_secs=1', '--lr_decay_factors=1,1,1,1'] + flags)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and 'NaN or infinite' in out, out[-3000:]
    match = re.search(r'rerunning (resumes from (\S+) \(step (\d+)\)|starts training afresh)',
                      out)
    assert match, out[-3000:]
    resumed_from = int(match.group(3)) if match.group(3) else 0
    rerun = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                        '--max_number_of_steps=%d' % (resumed_from + 2),
                        '--learning_rate=1e-4'] + flags)
    out = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, out[-3000:]
    assert _ckpt_step(model_dir) == resumed_from + 2
    assert_finite_losses(out, steps=[resumed_from + 1, resumed_from + 2])


def test_learning_rate_schedule_values():
    with tf.Graph().as_default():
        step = tf.compat.v1.placeholder(tf.int64, [])
        lr = schedule.learning_rate_schedule(step, 1e-3, [500, 80000, 100000],
                                             [0.1, 1, 0.1, 0.01], 2e-6)
        with tf.compat.v1.Session() as sess:
            got = [sess.run(lr, {step: s}) for s in (0, 500, 501, 80000, 80001, 100000, 100001)]
    np.testing.assert_allclose(got, [1e-4, 1e-4, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5], rtol=1e-6)
    with tf.Graph().as_default():
        lr = schedule.learning_rate_schedule(tf.constant(200000, tf.int64), 1e-3, [10],
                                             [1, 1e-6], 1e-6)
        with tf.compat.v1.Session() as sess:
            assert sess.run(lr) == pytest.approx(1e-6)  # floored at end_learning_rate
    with pytest.raises(ValueError, match='one more entry'):
        schedule.learning_rate_schedule(tf.constant(0), 1e-3, [1, 2], [1, 1], 0)


SEED_TRAIN_FLAGS = (
    'num_readers', 'num_preprocessing_threads', 'num_cpu_threads', 'gpu_memory_fraction',
    'data_dir', 'num_classes', 'model_dir', 'log_every_n_steps', 'save_summary_steps',
    'save_checkpoints_secs', 'train_image_size', 'train_epochs', 'max_number_of_steps',
    'batch_size', 'data_format', 'negative_ratio', 'match_threshold', 'neg_threshold',
    'tf_random_seed', 'weight_decay', 'momentum', 'learning_rate', 'end_learning_rate',
    'decay_boundaries', 'lr_decay_factors', 'checkpoint_path', 'checkpoint_model_scope',
    'model_scope', 'checkpoint_exclude_scopes', 'ignore_missing_vars', 'multi_gpu', 'use_amp')


@pytest.mark.slow
def test_help_explains_every_seed_flag():
    proc = run_script(['train_ssd.py', '--help'], timeout=120)
    text = proc.stdout + proc.stderr
    assert 'Try --helpfull' in text, text[-2000:]  # absl's help (it exits with status 1)
    for name in SEED_TRAIN_FLAGS:
        # absl prints "--name: help text" (booleans as "--[no]name: ...")
        match = re.search(r'--(?:\[no\])?%s: (\S.*)' % name, text)
        assert match and len(match.group(1)) > 10, name
    assert "(default: '500, 80000, 100000')" in text and "(default: '16')" in text
    # --data_format's choices and default are the model's (common/defaults).
    from common import defaults
    match = re.search(r"--data_format: <([^>]*)>:.*?\(default: '([^']*)'\)", text, re.S)
    assert match, text[-2000:]
    assert set(match.group(1).split('|')) == set(defaults.DATA_FORMATS)
    assert match.group(2) == defaults.DEFAULT_PARAMS['data_format']


# Flags whose default deliberately differs from the library's: the CLI restores ./model and
# counts the classes and takes the anchor preset from the data's manifest; the library takes
# them from its caller.
CLI_ONLY_DEFAULTS = ('checkpoint_path', 'num_classes', 'anchor_preset')


@pytest.mark.slow
def test_train_flag_defaults_are_the_model_defaults():
    """Each train_ssd.py flag that is also a model param defaults to
    common/defaults.DEFAULT_PARAMS, the one source (a value written into a flag again fails
    here); train_ssd.py imports no TensorFlow for it (--help stays fast)."""
    code = (
        "import json, sys\n"
        "from absl import flags\n"
        "import train_ssd\n"
        "from common import defaults\n"
        "assert 'tensorflow' not in sys.modules\n"
        "from common import console\n"
        "lists = {'decay_boundaries': int, 'lr_decay_factors': float}\n"
        "out = {}\n"
        "for name, value in defaults.DEFAULT_PARAMS.items():\n"
        "    if name in flags.FLAGS and name not in %r:\n"
        "        default = flags.FLAGS[name].default\n"
        "        if name in lists:\n"
        "            default = console.parse_number_list(default, lists[name])\n"
        "        out[name] = [default, value]\n"
        "json.dump(out, sys.stdout)\n" % (CLI_ONLY_DEFAULTS,))
    proc = run_script(['-c', code], timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pairs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(pairs) >= 20, sorted(pairs)  # the flags really were compared
    differ = {name: pair for name, pair in pairs.items() if pair[0] != pair[1]}
    assert not differ, 'flag default != DEFAULT_PARAMS: %s' % differ


def test_cpu_supports_bf16_reads_the_cpuinfo_flags(tmp_path):
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n')
    assert not precision_lib.cpu_supports_bf16(str(cpuinfo))
    cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n')
    assert precision_lib.cpu_supports_bf16(str(cpuinfo))
    cpuinfo.write_text('flags\t\t: fpu amx_bf16 amx_tile\n')
    assert precision_lib.cpu_supports_bf16(str(cpuinfo))
    assert not precision_lib.cpu_supports_bf16(str(tmp_path / 'missing'))


@pytest.mark.parametrize('requested, has_gpu, cpu_bf16, expected, reason', [
    ('auto', False, True, 'bf16', 'auto: this CPU has AVX512-BF16'),
    ('auto', False, False, 'fp32', 'auto: this CPU has neither AVX512-BF16 nor AMX-BF16'),
    ('auto', True, True, 'fp32', 'auto: a GPU is visible'),
    ('bf16', False, True, 'bf16', 'this CPU has AVX512-BF16'),
    ('bf16', False, False, 'fp32', '--precision=bf16 ignored: this CPU has neither'),
    ('bf16', True, True, 'fp32', '--precision=bf16 ignored: a GPU is visible'),
    ('fp32', False, True, 'fp32', '--precision=fp32'),
])
def test_resolve_precision_uses_bf16_only_where_the_cpu_has_it(requested, has_gpu, cpu_bf16,
                                                               expected, reason):
    precision, why = precision_lib.resolve_precision(requested, has_gpu, cpu_bf16)
    assert precision == expected
    assert why.startswith(reason)


def test_resolve_precision_refuses_an_unknown_choice():
    with pytest.raises(ValueError, match='--precision=fp16 is not one of auto|fp32|bf16'):
        precision_lib.resolve_precision('fp16', False, True)


def test_configure_precision_turns_on_the_onednn_rewrite_only_for_bf16(tmp_path, monkeypatch):
    from tensorflow.core.protobuf import rewriter_config_pb2
    monkeypatch.setattr(tf.config, 'list_physical_devices', lambda *_, **__: [])  # a CPU
    on = rewriter_config_pb2.RewriterConfig.ON
    yes, no = tmp_path / 'yes', tmp_path / 'no'
    yes.write_text('flags\t\t: avx512_bf16\n')
    no.write_text('flags\t\t: avx2\n')

    def rewrite(config):
        return config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16

    messages = []
    for requested, cpuinfo, expected in [('fp32', yes, 'fp32'), ('auto', no, 'fp32'),
                                         ('bf16', no, 'fp32')]:
        config = tf.compat.v1.ConfigProto()
        assert precision_lib.configure_precision(config, requested, log=messages.append,
                                                 cpuinfo_path=str(cpuinfo)) == expected
        assert rewrite(config) != on
        assert messages[-1].startswith('Precision: fp32 (')
    assert 'neither AVX512-BF16 nor AMX-BF16' in messages[-1]
    # the simulated CPU can also come from the environment (what subprocess tests use)
    monkeypatch.setenv(precision_lib.CPUINFO_ENV, str(yes))
    for requested in ('auto', 'bf16'):
        config = tf.compat.v1.ConfigProto()
        assert precision_lib.configure_precision(config, requested, log=messages.append) == 'bf16'
        assert rewrite(config) == on
        assert messages[-1].startswith('Precision: bf16 (')


def _convolution_in_session(config):
    """(conv output, its loss's gradient, the dtypes of the Cast ops the session ran) of one
    fixed 3x3 convolution run in a session with `config`."""
    rng = np.random.RandomState(0)
    images = rng.randn(2, 24, 24, 16).astype(np.float32)
    kernel = rng.randn(3, 3, 16, 32).astype(np.float32)
    with tf.Graph().as_default():
        x = tf.compat.v1.placeholder(tf.float32, images.shape)
        w = tf.compat.v1.get_variable('w', initializer=kernel)
        y = tf.nn.conv2d(x, w, 1, 'SAME')
        grad = tf.gradients(tf.reduce_sum(tf.square(y)), w)[0]
        metadata = tf.compat.v1.RunMetadata()
        with tf.compat.v1.Session(config=config) as session:
            session.run(w.initializer)
            values = session.run([y, grad], {x: images}, run_metadata=metadata,
                                 options=tf.compat.v1.RunOptions(output_partition_graphs=True))
    casts = {tf.as_dtype(node.attr['DstT'].type).name for graph in metadata.partition_graphs
             for node in graph.node if node.op == 'Cast'}
    return values[0], values[1], casts


def test_bf16_changes_the_numbers_and_fp32_does_not(tmp_path, monkeypatch):
    """The session config that --precision builds is in effect: fp32 (asked for, or auto on a
    simulated CPU without bfloat16) runs the same float32 numbers every time; bf16 (auto on a
    simulated CPU with it) has grappler cast the convolution to bfloat16, and its output and
    gradient differ from float32's."""
    monkeypatch.setattr(tf.config, 'list_physical_devices', lambda *_, **__: [])  # a CPU
    without, with_bf16 = tmp_path / 'without', tmp_path / 'with'
    without.write_text('flags\t\t: fpu sse2 avx2 avx512f\n')
    with_bf16.write_text('flags\t\t: fpu avx512f avx512_bf16\n')

    def run(requested, cpuinfo):
        config = tf.compat.v1.ConfigProto()
        precision = precision_lib.configure_precision(config, requested, log=lambda _: None,
                                                      cpuinfo_path=str(cpuinfo))
        return (precision,) + _convolution_in_session(config)

    fp32 = run('fp32', with_bf16)
    for precision, y, grad, casts in (run('fp32', with_bf16), run('auto', without)):
        assert precision == 'fp32' and 'bfloat16' not in casts
        assert np.array_equal(y, fp32[1]) and np.array_equal(grad, fp32[2])
    precision, y, grad, casts = run('auto', with_bf16)
    assert precision == 'bf16'
    if 'bfloat16' not in casts and not precision_lib.cpu_supports_bf16('/proc/cpuinfo'):
        # Measured on an AVX2-only CPU (TF 2.15 and 2.21): grappler leaves the graph in
        # float32 when the CPU has no native bfloat16, whatever the config says.
        pytest.skip('this CPU has neither AVX512-BF16 nor AMX-BF16: TensorFlow does not '
                    'apply the bfloat16 rewrite here, so there is no bf16 result to compare')
    assert 'bfloat16' in casts, casts
    # bfloat16 keeps 8 significant bits: relative errors near 2^-8, never exactly float32's
    scale = np.abs(fp32[1]).max()
    assert 1e-5 * scale < np.abs(y - fp32[1]).max() < 0.05 * scale
    assert not np.array_equal(grad, fp32[2])


@pytest.mark.slow
def test_precision_is_printed_recorded_and_free_to_change_on_resume(tfrecord_dir, tmp_path):
    """--precision=auto falls back to fp32 on a CPU without bfloat16 (simulated through
    $SSD_CPUINFO) and resolves for this machine on the real one; each run says which in one
    line and params.json records it; a checkpoint trained in one precision resumes in the
    other; eval takes --precision too."""
    machine = (bool(tf.config.list_physical_devices('GPU')), precision_lib.cpu_supports_bf16())
    native = precision_lib.resolve_precision('auto', *machine)[0]
    flags = [f for f in TRAIN_FAST_FLAGS if not f.startswith('--precision')] + [
        '--precision=auto']
    model_dir = str(tmp_path / 'model')

    def train(steps, env=None):
        proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir,
                           '--model_dir=' + model_dir, '--max_number_of_steps=%d' % steps]
                          + flags, env=env)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        assert_finite_losses(out, steps=[steps])
        with open(os.path.join(model_dir, 'params.json')) as f:
            return out, json.load(f)['precision']

    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n')
    out, recorded = train(1, env={precision_lib.CPUINFO_ENV: str(cpuinfo)})
    assert 'Precision: fp32 (auto: this CPU has neither AVX512-BF16 nor AMX-BF16)' in out
    assert recorded == 'fp32'
    out, recorded = train(2)
    assert 'Precision: %s (auto' % native in out and recorded == native
    assert 'Resuming from' in out and 'model.ckpt-1' in out
    assert _ckpt_step(model_dir) == 2
    proc = run_script(['eval_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                       '--precision=auto', '--output_dir=' + str(tmp_path / 'eval')])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'Precision: %s (auto' % native in out
    with open(tmp_path / 'eval' / 'metrics.json') as f:
        assert json.load(f)['checkpoint'].endswith('model.ckpt-2')


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_exits_cleanly(tfrecord_dir, tmp_path, signum):
    """SIGTERM (schedulers, docker stop) and Ctrl-C keep the steps done: a checkpoint at the
    current step, exit status 0, a line saying where; rerunning resumes from it."""
    import subprocess
    model_dir = str(tmp_path / 'model')
    command = [sys.executable, 'train_ssd.py', '--data_dir=' + tfrecord_dir,
               '--model_dir=' + model_dir, '--max_number_of_steps=1000'] + TRAIN_FAST_FLAGS
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    lines, logged_step = [], None
    try:
        for line in proc.stdout:
            lines.append(line)
            match = re.search(r'step (\d+), loss', line)
            if match and int(match.group(1)) >= 2:
                logged_step = int(match.group(1))
                proc.send_signal(signum)
                break
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = ''.join(lines) + rest
    assert logged_step is not None, out[-3000:]
    assert proc.returncode == 0, out[-3000:]
    match = re.search(r'Stopped by %s at global step (\d+); saved (\S+)\. Run the same '
                      r'command again to resume\.' % signal.Signals(signum).name, out)
    assert match, out[-3000:]
    step = int(match.group(1))
    assert step >= logged_step and step < 1000
    assert match.group(2) == tf.train.latest_checkpoint(model_dir)
    assert _ckpt_step(model_dir) == step
    assert 'Traceback' not in out
    # the same command (one step further) resumes from the checkpoint the signal saved
    rerun = run_script(command[1:3] + ['--model_dir=' + model_dir,
                                       '--max_number_of_steps=%d' % (step + 1)]
                       + TRAIN_FAST_FLAGS)
    again = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, again[-3000:]
    assert 'Resuming from %s' % match.group(2) in again, again[-3000:]
    assert_finite_losses(again, steps=[step + 1])
    assert _ckpt_step(model_dir) == step + 1


@pytest.mark.slow
def test_save_checkpoints_secs_zero_still_writes_the_final_checkpoint(tfrecord_dir, tmp_path):
    model_dir = str(tmp_path / 'model')
    flags = [f for f in TRAIN_FAST_FLAGS if not f.startswith('--save_checkpoints_secs')]
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                       '--max_number_of_steps=2', '--save_checkpoints_secs=0'] + flags)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert _ckpt_step(model_dir) == 2
    assert 'latest checkpoint: %s' % os.path.join(model_dir, 'model.ckpt-2') in proc.stdout
