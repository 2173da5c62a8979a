"""Every training mode with the project's default precision (`--precision` not given: auto).

The shared fast training flags pin fp32 (conftest.TRAIN_FAST_FLAGS: equal numerics on every
machine), which hid a crash of the default path: on a CPU with AVX512-BF16, auto resolved to
bf16 and two TF_CONFIG workers died at their first step ("Value for attr 'T' of bfloat16 is not
in the list of allowed values ... _FusedConv2D"). Here each mode runs with the default, on a CPU
that claims bfloat16 ($SSD_CPUINFO, utility/training/precision.py): on a real bfloat16 CPU that
is the user's path exactly; on one without it, the project's bf16 path is still taken (the
session config carries the rewrite, params.json records bf16) while oneDNN leaves the graph in
float32 (measured on an AVX2-only CPU: the same losses as --precision=fp32).

Eval, demo and the SavedModel/TFLite exports run with their own defaults throughout the suite
(none of those tests pins --precision; inference defaults to fp32, common/defaults).
"""
import json
import os

import pytest

from conftest import AVAILABLE_DRIVERS, TRAIN_FAST_FLAGS, assert_finite_losses, run_script
from utility.training import precision as precision_lib

# TRAIN_FAST_FLAGS without its --precision pin: the default, as a user runs it.
DEFAULT_PRECISION_FLAGS = [f for f in TRAIN_FAST_FLAGS if not f.startswith('--precision')]
assert len(DEFAULT_PRECISION_FLAGS) == len(TRAIN_FAST_FLAGS) - 1


@pytest.fixture
def bf16_cpu(tmp_path, monkeypatch):
    """$SSD_CPUINFO pointing at a cpuinfo with AVX512-BF16, for this test and its processes."""
    path = tmp_path / 'cpuinfo'
    path.write_text('processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n')
    monkeypatch.setenv(precision_lib.CPUINFO_ENV, str(path))
    return {precision_lib.CPUINFO_ENV: str(path)}


def latest_checkpoint_step(model_dir):
    import tensorflow as tf
    latest = tf.train.latest_checkpoint(model_dir)
    assert latest, 'no checkpoint in %s' % model_dir
    return int(tf.train.load_checkpoint(latest).get_tensor('global_step'))


def _recorded_precision(model_dir):
    with open(os.path.join(model_dir, 'params.json')) as f:
        return json.load(f)['precision']


def test_a_cluster_trains_in_fp32_and_says_why():
    """auto and an explicit bf16 resolve to fp32 in a TF_CONFIG cluster, with the reason; a
    single process on the same CPU keeps bf16."""
    assert precision_lib.resolve_precision('auto', False, True) == (
        'bf16', 'auto: this CPU has AVX512-BF16 or AMX-BF16')
    precision, reason = precision_lib.resolve_precision('auto', False, True, multi_worker=True)
    assert precision == 'fp32'
    assert reason == 'auto: ' + precision_lib.MULTI_WORKER_REASON
    precision, reason = precision_lib.resolve_precision('bf16', False, True, multi_worker=True)
    assert precision == 'fp32'
    assert reason == '--precision=bf16 ignored: ' + precision_lib.MULTI_WORKER_REASON
    assert 'TF_CONFIG' in reason and 'fp32' in reason
    # fp32 stays fp32, with or without a cluster
    assert precision_lib.resolve_precision('fp32', False, True, multi_worker=True)[0] == 'fp32'


@pytest.mark.slow
@pytest.mark.parametrize('driver,replicas', [(d, 0) for d in AVAILABLE_DRIVERS]
                         + [('auto', 2)])
def test_one_process_trains_with_the_default_precision(tfrecord_dir, tmp_path, bf16_cpu,
                                                       driver, replicas):
    """One process (each driver), and two replicas on logical CPUs: bf16, said and recorded."""
    model_dir = str(tmp_path / 'model')
    args = ['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
            '--max_number_of_steps=2', '--driver=' + driver] + DEFAULT_PRECISION_FLAGS
    if replicas:
        args.append('--num_cpu_replicas=%d' % replicas)
    proc = run_script(args, env=bf16_cpu)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'Precision: bf16 (auto: this CPU has AVX512-BF16 or AMX-BF16)' in out
    if replicas:
        assert 'over %d replica(s)' % replicas in out
    assert_finite_losses(out, steps=[2])
    assert _recorded_precision(model_dir) == 'bf16'
    assert latest_checkpoint_step(model_dir) == 2


@pytest.mark.slow
@pytest.mark.parametrize('driver', AVAILABLE_DRIVERS)
def test_two_workers_train_with_the_default_precision(tfrecord_dir, tmp_path, bf16_cpu,
                                                      driver):
    """Two TF_CONFIG workers with the default flags on a bfloat16 CPU train (they crashed at
    step 1 before), in fp32, each saying why in one line."""
    from test_multi_worker import Workers, free_ports
    model_dir = str(tmp_path / 'model')
    workers = Workers(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                       '--max_number_of_steps=2', '--driver=' + driver]
                      + DEFAULT_PRECISION_FLAGS, tmp_path, free_ports(2), 'default')
    try:
        codes = workers.wait()
    finally:
        workers.kill()
    outputs = [workers.output(i) for i in range(2)]
    assert codes == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    for out in outputs:
        lines = [l for l in out.splitlines() if l.startswith('Precision: ')]
        assert lines == ['Precision: fp32 (auto: %s).' % precision_lib.MULTI_WORKER_REASON], out
        assert 'Traceback' not in out
    assert _recorded_precision(model_dir) == 'fp32'
    assert latest_checkpoint_step(model_dir) == 2
