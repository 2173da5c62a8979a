"""net.backbones.dilated_conv2d (fc6): the native dilated Conv2D is the same layer as
slim.conv2d(rate=6) -- same variables, same outputs, same gradients -- and falls back to
slim.conv2d where TensorFlow cannot run dilated backprop natively."""
import os
import platform

import numpy as np
import pytest
import tensorflow as tf
import tf_slim as slim

from net import backbones
from net import ssd_net

# TensorFlow's x86-64 Linux builds run oneDNN CPU kernels when TF_ENABLE_ONEDNN_OPTS=1 says so,
# and by default on CPUs with the neural-network instructions (AVX512-VNNI, AVX512-BF16,
# AVX-VNNI, AMX): an AVX2-only CPU gets TensorFlow's plain kernels (measured on an AMD EPYC with
# AVX2: off by default, on with the variable set to 1). Where oneDNN runs (and on a GPU) fc6 must
# run natively. Decided from the platform and the CPU's flags, not from the function under test,
# so a broken detection fails below instead of skipping every test.
ONEDNN_DEFAULT_CPU_FLAGS = {'avx512_vnni', 'avx512_bf16', 'avx_vnni', 'amx_tile', 'amx_int8',
                            'amx_bf16'}


def _cpu_flags():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags') and ':' in line:
                    return set(line.split(':', 1)[1].split())
    except OSError:
        pass
    return set()


_ONEDNN_SETTING = os.environ.get('TF_ENABLE_ONEDNN_OPTS')
ONEDNN_EXPECTED = (platform.system() == 'Linux' and platform.machine() in ('x86_64', 'AMD64')
                   and (_ONEDNN_SETTING == '1' or (
                       _ONEDNN_SETTING is None and bool(_cpu_flags() & ONEDNN_DEFAULT_CPU_FLAGS))))
needs_native = pytest.mark.skipif(
    not (ONEDNN_EXPECTED or tf.config.list_physical_devices('GPU')),
    reason='no native dilated Conv2D backprop expected here (not x86-64 Linux, oneDNN off by '
           'TF_ENABLE_ONEDNN_OPTS=0 or by a CPU without AVX512-VNNI/BF16, AVX-VNNI or AMX, and no '
           'GPU): fc6 uses slim.conv2d itself')


@needs_native
def test_native_dilation_is_detected_where_expected():
    assert backbones.native_dilation_supported()


def _layer_pair(rate=6, size=19, channels=8, filters=16):
    """slim.conv2d(rate) and dilated_conv2d on one input, with the same weights."""
    rng = np.random.RandomState(0)
    inputs = tf.constant(rng.uniform(-1, 1, (2, size, size, channels)).astype(np.float32))
    with slim.arg_scope(ssd_net.ssd_arg_scope()):
        reference = slim.conv2d(inputs, filters, [3, 3], rate=rate, scope='reference')
        native = backbones.dilated_conv2d(inputs, filters, rate=rate, scope='native')
    variables = {v.op.name: v for v in tf.compat.v1.global_variables()}
    weights = rng.uniform(-.2, .2, (3, 3, channels, filters)).astype(np.float32)
    biases = rng.uniform(-.1, .1, (filters,)).astype(np.float32)
    assign = tf.group(*[variables['%s/%s' % (s, n)].assign(v)
                        for s in ('reference', 'native')
                        for n, v in (('weights', weights), ('biases', biases))])
    return inputs, reference, native, variables, assign


@needs_native
def test_same_variables_as_slim_conv2d():
    with tf.Graph().as_default():
        _, _, _, variables, _ = _layer_pair()
        model = {v.op.name for v in tf.compat.v1.model_variables()}
        trainable = {v.op.name for v in tf.compat.v1.trainable_variables()}
    shapes = {n: v.shape.as_list() for n, v in variables.items()}
    assert shapes == {'reference/weights': [3, 3, 8, 16], 'reference/biases': [16],
                      'native/weights': [3, 3, 8, 16], 'native/biases': [16]}
    assert model == trainable == set(shapes)


@needs_native
def test_same_outputs_and_gradients_as_space_to_batch():
    with tf.Graph().as_default():
        inputs, reference, native, variables, assign = _layer_pair()
        # Relu zeroes some outputs: a nonlinear loss of both still tests every path.
        loss_ref = tf.reduce_sum(tf.square(reference))
        loss_nat = tf.reduce_sum(tf.square(native))
        grads_ref = tf.gradients(loss_ref, [inputs, variables['reference/weights'],
                                            variables['reference/biases']])
        grads_nat = tf.gradients(loss_nat, [inputs, variables['native/weights'],
                                            variables['native/biases']])
        op_types = {op.type for op in tf.compat.v1.get_default_graph().get_operations()
                    if op.name.startswith('native/')}
        with tf.compat.v1.Session() as sess:
            sess.run(assign)
            out_ref, out_nat, g_ref, g_nat = sess.run([reference, native, grads_ref,
                                                        grads_nat])
    assert 'SpaceToBatchND' not in op_types and 'Conv2D' in op_types
    assert out_nat.shape == (2, 19, 19, 16)
    assert (out_ref > 0).mean() > 0.2  # not a dead layer
    np.testing.assert_allclose(out_nat, out_ref, rtol=1e-4, atol=1e-5)
    for a, b in zip(g_nat, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_falls_back_to_slim_conv2d(monkeypatch):
    monkeypatch.setattr(backbones, 'native_dilation_supported', lambda: False)
    with tf.Graph().as_default():
        inputs = tf.zeros([1, 19, 19, 4])
        with slim.arg_scope(ssd_net.ssd_arg_scope()):
            backbones.dilated_conv2d(inputs, 8, rate=6, scope='fc6')
        op_types = {op.type for op in tf.compat.v1.get_default_graph().get_operations()}
    assert 'SpaceToBatchND' in op_types  # what tf.nn.convolution builds for rate 6


@needs_native
def test_ssd300_end_points_keep_fc6():
    with tf.Graph().as_default():
        images = tf.zeros([1, 300, 300, 3])
        _, _, end_points = ssd_net.ssd300(images, 21, [4, 6, 6, 6, 4, 4])
        graph = tf.compat.v1.get_default_graph()
        fc6_ops = {op.type for op in graph.get_operations() if op.name.startswith('ssd300/fc6/')}
    assert end_points['ssd300/fc6'].shape.as_list() == [1, 19, 19, 1024]
    assert 'SpaceToBatchND' not in fc6_ops
