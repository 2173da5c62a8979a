"""The TF graph measurements, each in a fresh process: the kernels (a large convolution and a
matmul), one training step and one inference batch of model_fn's graphs.

The train, kernels and infer stages run one worker each in a subprocess (`run_worker`): a
fresh TensorFlow whose thread pools follow the session config train_ssd.py uses
(utility/training/replicas.setup_replicas, plus the --intra_op / --inter_op / --xla / --bf16
experiments), and whose peak memory is its own.  The subprocess is this file run as a script,
`workers.py NAME SETTINGS_JSON`; it prints one JSON object as its last stdout line.

The large convolution is [16,75,75,256] x 3x3x256x256 (NHWC, SAME: 106.2 GFLOP), the
matmul 4096^3 (137.4 GFLOP), both float32, median of --kernel_repeats; the forward + both
gradients of the convolution is reported too (oneDNN's backward kernels are slower).
"""
import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import warnings

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # run as the worker process
    sys.path.insert(0, REPO_ROOT)

import tensorflow as tf  # noqa: E402

from benchmarks.sample_data import SAMPLE_SEED  # noqa: E402
from benchmarks.timing import peak_memory, time_runs, trace  # noqa: E402


# Large 3x3 convolution: input [batch, height, width, in channels], kernel 3x3 -> out channels.
CONV_INPUT = (16, 75, 75, 256)
CONV_OUT_CHANNELS = 256
MATMUL_SIZE = 4096


def session_config(args):
    """The ConfigProto train_ssd.py trains with (replicas.setup_replicas, one replica)
    plus the --intra_op / --inter_op / --xla experiment overrides."""
    from utility.training import precision as precision_lib
    from utility.training import replicas
    _, _, config = replicas.setup_replicas(multi_gpu=False, num_cpu_replicas=0,
                                           num_cpu_threads=args.threads,
                                           log=lambda *_: None)
    if args.intra_op:
        config.intra_op_parallelism_threads = args.intra_op
    if args.inter_op:
        config.inter_op_parallelism_threads = args.inter_op
    if args.xla:
        config.graph_options.optimizer_options.global_jit_level = (
            tf.compat.v1.OptimizerOptions.ON_1)
    if args.bf16:
        precision_lib.apply_bf16(config)  # what train_ssd.py --precision=bf16 applies
    return config


def variable_batch(values):
    """Numpy arrays -> local (non-trainable) variables holding them, read every step.

    Returns (dict name -> tensor, init op, feed dict for the init op).
    """
    tensors, feed, inits = {}, {}, []
    for name, value in values.items():
        if value.dtype.kind in 'SUO':  # strings stay constants
            tensors[name] = tf.constant(value)
            continue
        placeholder = tf.compat.v1.placeholder(tf.as_dtype(value.dtype), value.shape)
        variable = tf.compat.v1.Variable(
            placeholder, trainable=False, name='fixed_' + name,
            collections=[tf.compat.v1.GraphKeys.LOCAL_VARIABLES])
        tensors[name] = variable.read_value()
        inits.append(variable.initializer)
        feed[placeholder] = value
    return tensors, tf.group(*inits), feed


def draw_batch(dataset, config):
    """The first element of `dataset` as numpy, drawn in a graph-mode session."""
    element = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
    with tf.compat.v1.Session(config=config) as sess:
        return sess.run(element)


def worker_kernels(args):
    """GFLOP/s of a large 3x3 convolution (forward, and forward + both gradients) and of a
    large matmul, in the training session config."""
    config = session_config(args)
    batch, height, width, channels = CONV_INPUT
    conv_flop = 2. * batch * height * width * 9 * channels * CONV_OUT_CHANNELS  # SAME padding
    matmul_flop = 2. * MATMUL_SIZE ** 3
    with tf.Graph().as_default():
        init = tf.compat.v1.random_uniform_initializer(-1., 1., seed=SAMPLE_SEED)
        x = tf.compat.v1.get_variable('x', CONV_INPUT, initializer=init)
        w = tf.compat.v1.get_variable('w', [3, 3, channels, CONV_OUT_CHANNELS], initializer=init)
        y = tf.nn.conv2d(x, w, strides=1, padding='SAME')
        grad_y = tf.compat.v1.get_variable('grad_y', y.shape, initializer=init)
        grad_x, grad_w = tf.gradients(y, [x, w], grad_ys=grad_y)
        a = tf.compat.v1.get_variable('a', [MATMUL_SIZE] * 2, initializer=init)
        b = tf.compat.v1.get_variable('b', [MATMUL_SIZE] * 2, initializer=init)
        product = tf.matmul(a, b)
        fetches = collections.OrderedDict([
            ('conv3x3', y.op),
            # A list, not tf.group: a NoOp fetch with only control inputs gets pruned.
            ('conv3x3_fwd_bwd', [y.op, grad_x.op, grad_w.op]),
            ('matmul', product.op)])
        with tf.compat.v1.Session(config=config) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            seconds = time_runs(sess, fetches, 1, args.kernel_repeats)
    flops = {'conv3x3': conv_flop, 'conv3x3_fwd_bwd': 3 * conv_flop, 'matmul': matmul_flop}
    result = collections.OrderedDict()
    for name in fetches:
        s = statistics.median(seconds[name])
        result[name] = {'gflop_per_s': round(flops[name] / s / 1e9, 1),
                        'gflop': round(flops[name] / 1e9, 1), 'seconds': round(s, 3)}
    result['conv3x3']['shape'] = '[%d,%d,%d,%d] x 3x3x%dx%d, NHWC, SAME' % (
        CONV_INPUT + (channels, CONV_OUT_CHANNELS))
    result['matmul']['shape'] = '%d^3 float32' % MATMUL_SIZE
    return result


def worker_train(args):
    """Times sess.run(train_op) of model_fn's TRAIN graph on one fixed real batch."""
    from utility import ssd_model
    from utility import drivers
    config = session_config(args)
    params = ssd_model.make_params(data_dir=args.data_dir, batch_size=args.batch_size,
                                   data_format='channels_last', checkpoint_path=None,
                                   backbone=args.backbone)
    result = collections.OrderedDict(batch_size=args.batch_size)
    with tf.Graph().as_default() as graph:
        tf.compat.v1.set_random_seed(SAMPLE_SEED)
        features, labels = draw_batch(ssd_model.make_input_fn(params, is_training=True)(),
                                       config)
        feature_tensors, init_features, feed = variable_batch(features)
        label_tensors, init_labels, label_feed = variable_batch(labels)
        feed.update(label_feed)
        spec = ssd_model.model_fn(feature_tensors, label_tensors, drivers.ModeKeys.TRAIN,
                                  params)
        init_model = tf.compat.v1.global_variables_initializer()
        graph.finalize()
        with tf.compat.v1.Session(config=config) as sess:
            sess.run(init_model)
            sess.run([init_features, init_labels], feed_dict=feed)
            seconds = time_runs(sess, {'step': spec.train_op}, args.train_warmup,
                                 args.train_steps)['step']
            loss = float(sess.run(spec.loss))
            if args.trace_dir:
                result['trace_top_ops_ms'] = trace(sess, spec.train_op, os.path.join(
                    args.trace_dir, 'train_b%d.json' % args.batch_size))
    step = statistics.median(seconds)
    result['step_seconds'] = round(step, 3)
    result['steps_seconds'] = [round(s, 3) for s in seconds]
    result['images_per_s'] = round(args.batch_size / step, 3)
    result['loss_after'] = round(loss, 3)
    result.update(peak_memory())
    return result


def worker_infer(args):
    """Times model_fn's PREDICT graph on one fixed eval batch: network only, network +
    post-processing, and post-processing alone on the network's output."""
    from utility import ssd_model
    from utility import drivers
    config = session_config(args)
    batch = args.infer_batch_size
    params = ssd_model.make_params(data_dir=args.data_dir, batch_size=batch,
                                   data_format='channels_last', checkpoint_path=None,
                                   backbone=args.backbone)
    result = collections.OrderedDict(batch_size=batch)
    with tf.Graph().as_default() as graph:
        tf.compat.v1.set_random_seed(SAMPLE_SEED)
        images = ssd_model.make_input_fn(params, is_training=False)().unbatch().map(
            lambda f: {'image': f['image'], 'shape': f['shape']}).repeat().batch(batch)
        features, init_features, feed = variable_batch(draw_batch(images, config))
        spec = ssd_model.model_fn(features, None, drivers.ModeKeys.PREDICT, params)
        scope = params['model_scope']
        try:
            network = [graph.get_tensor_by_name('%s/multibox_head/%s:0' % (scope, name))
                       for name in ('cls_logits', 'loc_preds')]
        except KeyError:
            raise RuntimeError('The PREDICT graph has no %s/multibox_head/cls_logits or '
                               'loc_preds tensor; update worker_infer to the network\'s '
                               'output names.' % scope) from None
        detections = {k: spec.predictions[k]
                      for k in ('boxes', 'scores', 'classes', 'num_detections')}
        with tf.compat.v1.Session(config=config) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            sess.run(init_features, feed_dict=feed)
            logits, codes = sess.run(network)
            # Post-processing alone, on the network's output held in variables.
            outputs, init_outputs, out_feed = variable_batch({'cls': logits, 'loc': codes})
            alone = ssd_model.postprocess(outputs['cls'], outputs['loc'], params)
            sess.run(init_outputs, feed_dict=out_feed)
            fetches = collections.OrderedDict([
                ('network', [t.op for t in network]),
                ('network_postprocess', detections),
                ('postprocess_alone', alone)])
            seconds = time_runs(sess, fetches, args.infer_warmup, args.infer_steps)
            found = sess.run(detections['num_detections'])
            if args.trace_dir:
                result['trace_top_ops_ms'] = trace(sess, detections, os.path.join(
                    args.trace_dir, 'infer_b%d.json' % batch))
    probabilities = _softmax(logits)[..., 1:]
    med = {k: statistics.median(v) for k, v in seconds.items()}
    result['network_seconds'] = round(med['network'], 4)
    result['network_postprocess_seconds'] = round(med['network_postprocess'], 4)
    result['postprocess_alone_seconds'] = round(med['postprocess_alone'], 4)
    result['images_per_s'] = round(batch / med['network_postprocess'], 3)
    result['network_only_images_per_s'] = round(batch / med['network'], 3)
    # Two ways to the share of time after the network: the difference of the fastest
    # network+post-processing and network-only runs (both ~seconds, so machine noise of a
    # few % shows in it), and post-processing alone on the same network output (direct).
    best = {k: min(v) for k, v in seconds.items()}
    result['share_after_network'] = round(
        max(0., best['network_postprocess'] - best['network']) / best['network_postprocess'],
        4)
    result['share_postprocess_alone'] = round(
        med['postprocess_alone'] / med['network_postprocess'], 4)
    # How hard the post-processing worked: untrained weights put every class near 1/21,
    # above the 0.01 select threshold at every anchor -- the worst case for NMS.
    result['candidates_per_image_class_mean'] = round(float(
        (probabilities > params['select_threshold']).sum(axis=1).mean()), 1)
    result['detections_per_image_mean'] = round(float(found.mean()), 1)
    result.update(peak_memory())
    return result


def _softmax(logits):
    import numpy as np
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


WORKERS = {'kernels': worker_kernels, 'train': worker_train, 'infer': worker_infer}


# Arguments a worker needs from the parent (the rest are the parent's business).
WORKER_ARGS = ('threads', 'intra_op', 'inter_op', 'xla', 'bf16', 'train_warmup',
                'train_steps', 'kernel_repeats', 'infer_batch_size', 'infer_warmup',
                'infer_steps', 'trace_dir', 'backbone')


def run_worker(name, args, data_dir=None, batch_size=None):
    """Runs worker `name` in a fresh Python subprocess; returns its JSON result.

    The worker gets the WORKER_ARGS of `args`, `data_dir` and `batch_size`.
    """
    settings = {key: getattr(args, key) for key in WORKER_ARGS}
    settings.update(data_dir=data_dir, batch_size=batch_size)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), name,
                           json.dumps(settings)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=args.worker_timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError('benchmark worker %r failed (exit %d); its error output ends '
                           'with:\n%s\nRerun with --stages of that stage alone to see it.'
                           % (name, proc.returncode, proc.stderr[-3000:]))
    return json.loads(lines[-1])


def quiet_layer_warnings():
    """tf_slim's layers call a deprecated Keras method on every layer; say it once, not 40x."""
    warnings.filterwarnings('ignore', message='`layer.apply` is deprecated')


def main(argv):
    """The worker process: `workers.py NAME SETTINGS_JSON` prints WORKERS[NAME]'s result."""
    name, settings = argv
    quiet_layer_warnings()
    print(json.dumps(WORKERS[name](argparse.Namespace(**json.loads(settings)))))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
