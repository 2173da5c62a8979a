r"""SSD300 benchmarks: a table of stages, each measured on its own.

    python3 benchmarks/bench_ssd.py                       # every stage, printed as a table
    python3 benchmarks/bench_ssd.py --stages input --json # one JSON object on stdout

Stages (add one by writing `def bench_<name>(args, context) -> dict` and registering it
in `STAGES`):

  input         the training input pipeline exactly as training builds it
                (`utility.ssd_model.make_input_fn`): read the sample TFRecords, decode, full
                training augmentation, target encoding against the 8732 anchors, batch
                (--batch_size), prefetch.  Reports images/s after warm-up (median
                of --repeats runs), in total and per core.  With --breakdown it also
                measures each part alone on the same data: read + parse + decode,
                augmentation (on decoded images held in memory), target encoding (on
                augmented boxes held in memory).
  train         model_fn's TRAIN graph (net, loss, momentum update), built directly in a
                tf.compat.v1 Session (the same graph tf.estimator runs), timed as
                sess.run(train_op) on ONE fixed batch drawn from the real training
                input pipeline and held in variables (so the input pipeline is not
                counted).  For each --train_batch_sizes (8,16) and each
                --train_precisions (fp32,bf16: float32, and bfloat16 through the oneDNN
                rewrite that train_ssd.py --precision=bf16 applies, on CPUs that have it)
                in its own subprocess: images/s (median step after --train_warmup
                steps), achieved GFLOP/s, the peak resident memory of that process, and
                bf16's speed-up over fp32.  Beside it, in the same run:
                GFLOP/s of a large 3x3 convolution and of a large matmul, and the ratio
                training / convolution.
  infer         model_fn's PREDICT graph on a fixed eval batch (--infer_batch_size),
                interleaved runs of: network only, network + post-processing (decode,
                top-k, NMS) and post-processing alone on the network's output; images/s
                and the share of time after the network, both as (fastest net+post -
                fastest net) / net+post and, directly, post alone / net+post (the target
                is checked on the direct one).  The weights are untrained, so every
                anchor passes the 0.01 score threshold for every class: the worst case
                for NMS.
  metric        evaluation/voc_metric.evaluate on a random VOC07-test-sized set (4952 images,
                200 detections each), best of --metric_repeats.
  convert       dataset/voc_to_tfrecords.convert_dataset on the generated VOC sample
                (--num_images), median of --repeats conversions into fresh folders.
  kernels       (not in the default list; train reports it too) only the convolution and
                matmul GFLOP/s.
  backbones     (not in the default list) each of --backbones side by side: GFLOP per
                training image (counted as below) and training images/s at
                --backbones_batch_size (the train stage's worker, one subprocess each).
  tflite        (not in the default list) one checkpoint (--tflite_checkpoint; default a
                1-step stand-in) exported with export_ssd.py as a SavedModel (fp32), a
                TFLite fp32 and a TFLite int8 file (calibrated on the sample records):
                sizes, batch-1 ms per image at each --tflite_threads (each in its own
                process, benchmarks/bench_tflite.py), int8's speed-ups and size share
                against the targets (2x the SavedModel, 1.5x TFLite fp32, 30% of its size).
  coco_metric   (not in the default list) evaluation/coco_metric (pycocotools) on a random
                val2017-sized set (--coco_images 5000, ~36,000 gt boxes, 100 detections
                each); faster-coco-eval beside it when installed (speed-up, largest
                difference over the 12 figures).

--backbone (default vgg16) picks the network of the input, train and infer stages.

FLOPs: forward multiply-accumulates of every convolution of the network, counted from the
built graph's layer shapes (output H x W x kernel h x kernel w x in x out channels, batch
1, 300x300 input; the dilated fc6 counted at its nominal 19x19 output), x 2 FLOPs per MAC,
x 3 for forward + backward (input and weight gradients): 31.37 GMAC -> 188.2 GFLOP per
training image, 62.7 GFLOP per inference image.  Pooling, L2-norm, loss and the optimizer
are not counted (under 1%).

The large convolution is [16,75,75,256] x 3x3x256x256 (NHWC, SAME: 106.2 GFLOP), the
matmul 4096^3 (137.4 GFLOP), both float32, median of --kernel_repeats; the forward + both
gradients of the convolution is reported too (oneDNN's backward kernels are slower).

TF graph stages (train, kernels, infer) run in subprocesses so each gets a fresh TensorFlow
with the session config train_ssd.py uses (utility/train_utils.setup_replicas), and so
their peak memory is their own.  --trace_dir writes one step's Chrome trace per
TF worker (chrome://tracing) and adds the top op types by time to the output.
Experiments: --inter_op / --intra_op (thread pools), --xla, --bf16, and the environment
(TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN off; the machine line says which was used).

Without --data_dir the VOC-format sample is generated (dataset/make_voc_sample.py) and
converted (dataset/voc_to_tfrecords.py) into a temporary folder that is deleted at exit;
--cache_dir keeps it for later runs instead.

The machine (cores, CPU model, TF version, load average before and after) is part of the
output: other processes on the machine lower the figures, so read them with the load.
"""
import argparse
import collections
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from common.console import parse_comma_list  # noqa: E402
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402

SAMPLE_NAME = 'VOC2012_sample'
SAMPLE_SEED = 0


# ----------------------------------------------------------------------------- machine


def cpu_count():
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def onednn_state():
    """'on' / 'off' and why: TF 2.15 x86 Linux builds use oneDNN unless
    TF_ENABLE_ONEDNN_OPTS=0."""
    value = os.environ.get('TF_ENABLE_ONEDNN_OPTS')
    try:
        from tensorflow.python.util import _pywrap_util_port
        enabled = _pywrap_util_port.IsMklEnabled()
    except (ImportError, AttributeError):
        enabled = value != '0'
    return '%s (TF_ENABLE_ONEDNN_OPTS=%s)' % ('on' if enabled else 'off',
                                             value if value is not None else 'unset')


def machine_info():
    return {
        'cores': cpu_count(),
        'cpu_model': cpu_model(),
        'tensorflow': tf.__version__,
        'python': platform.python_version(),
        'platform': platform.platform(),
        'gpus': len(tf.config.list_physical_devices('GPU')),
        'onednn': onednn_state(),
        'load_average_1_5_15min': load_average(),
    }


# ----------------------------------------------------------------------------- data


class Context:
    """What stages share: parsed arguments, the (lazily made) sample folders and the
    kernel GFLOP/s (measured once per run)."""

    def __init__(self, args):
        self.args = args
        self._data_dir = args.data_dir
        self._root = None
        self._temp_dir = None
        self._kernels = None
        self._forward_gmac = None

    def _sample_root(self):
        if self._root is None:
            if self.args.cache_dir:
                self._root = os.path.abspath(self.args.cache_dir)
            else:
                self._root = self._temp_dir = tempfile.mkdtemp(prefix='bench_ssd_')
        return self._root

    def voc_root(self):
        """Folder holding the generated VOC-format sample split folder (SAMPLE_NAME)."""
        return make_sample(self._sample_root(), self.args.num_images)

    def data_dir(self):
        """Folder with train-* shards; generates and converts the sample if needed."""
        if self._data_dir is None:
            self._data_dir = prepare_sample(self._sample_root(), self.args.num_images)
        if not tf.io.gfile.glob(os.path.join(self._data_dir, 'train-*')):
            raise SystemExit('ERROR: no train-* TFRecord shards in %s; convert data with '
                             'dataset/convert_voc_sample_tfrecords.py or drop --data_dir to '
                             'let the benchmark make the sample.' % self._data_dir)
        return self._data_dir

    def kernels(self):
        """Large conv / matmul GFLOP/s (worker 'kernels'), measured once per run."""
        if self._kernels is None:
            self._kernels = run_worker('kernels', self.args)
        return self._kernels

    def forward_gmac(self):
        """Forward GMAC per image of SSD300 (ssd300_conv_macs), counted once per run."""
        if self._forward_gmac is None:
            from utility import ssd_model
            self._forward_gmac = sum(ssd300_conv_macs(
                ssd_model.make_params(backbone=self.args.backbone)).values()) / 1e9
        return self._forward_gmac

    def close(self):
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)


def make_sample(root, num_images):
    """Generates the VOC-format sample under `root`/voc_<num_images> (once per root);
    returns that folder (the converter's dataset directory)."""
    from dataset import make_voc_sample
    voc_root = os.path.join(root, 'voc_%d' % num_images)
    done = os.path.join(voc_root, '.complete')
    if not os.path.exists(done):
        make_voc_sample.make_voc_sample(voc_root, num_images=num_images, seed=SAMPLE_SEED,
                                        name=SAMPLE_NAME)
        open(done, 'w').close()
    return voc_root


def prepare_sample(root, num_images):
    """Generates the VOC-format sample under `root` and converts it (once per root).

    Returns the TFRecord folder `<root>/tfrecords_<num_images>`.
    """
    from dataset import voc_to_tfrecords
    out = os.path.join(root, 'tfrecords_%d' % num_images)
    if os.path.exists(os.path.join(out, 'manifest.json')):
        return out
    voc_root = make_sample(root, num_images)
    quiet = voc_to_tfrecords.Reporter(out=_Null(), err=sys.stderr)
    voc_to_tfrecords.convert_dataset(voc_root, out, [SAMPLE_NAME], [SAMPLE_NAME],
                                     train_shards=4, validation_shards=1, num_threads=2,
                                     train_list='train', validation_list='val',
                                     reporter=quiet)
    return out


class _Null:
    def write(self, _text):
        pass

    def flush(self):
        pass


# ----------------------------------------------------------------------------- timing


def time_batches(dataset, batch_size, warmup, batches, repeats=1):
    """Iterates `dataset`: `warmup` batches untimed, then `repeats` timed runs of `batches`.

    Returns dict(images_per_s (median over the runs), runs (images/s of each run),
    seconds (all runs), images (per run)).
    """
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    rates, total = [], 0.
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        seconds = time.perf_counter() - start
        total += seconds
        rates.append(batches * batch_size / seconds)
    return {'images_per_s': statistics.median(rates), 'runs': rates, 'seconds': total,
            'images': batches * batch_size}


def _rate_entry(result, cores):
    rate = result['images_per_s']
    return {'images_per_s': round(rate, 1),
            'images_per_s_per_core': round(rate / cores, 1),
            'ms_per_image_per_core': round(1000. * cores / rate, 3),
            'runs_images_per_s': [round(r, 1) for r in result['runs']],
            'images_per_run': result['images'],
            'seconds': round(result['seconds'], 2)}


def _with_threading(dataset, args):
    """Applies --threadpool / --max_intra_op on top of a pipeline (experiments)."""
    if not (args.threadpool or args.max_intra_op):
        return dataset
    options = tf.data.Options()
    if args.threadpool:
        options.threading.private_threadpool_size = args.threadpool
    if args.max_intra_op:
        options.threading.max_intra_op_parallelism = args.max_intra_op
    return dataset.with_options(options)


# ----------------------------------------------------------------------------- stages


def bench_input(args, context):
    """The training input pipeline of utility.ssd_model.make_input_fn, and its parts alone."""
    from utility import ssd_model
    cores = cpu_count()
    params = ssd_model.make_params(data_dir=context.data_dir(), batch_size=args.batch_size,
                                   backbone=args.backbone)
    dataset = _with_threading(ssd_model.make_input_fn(params, is_training=True)(), args)
    full = time_batches(dataset, args.batch_size, args.warmup, args.batches, args.repeats)
    result = collections.OrderedDict()
    result['pipeline'] = _rate_entry(full, cores)
    result['batch_size'] = args.batch_size
    result['target_images_per_s'] = args.target
    result['meets_target'] = full['images_per_s'] >= args.target
    if args.breakdown:
        for name, ds in _input_parts(params, context.data_dir(), args.batch_size):
            part = time_batches(_with_threading(ds, args), args.batch_size, args.warmup,
                                args.batches, args.repeats)
            result[name] = _rate_entry(part, cores)
    return result


def _input_parts(params, data_dir, batch_size):
    """(name, dataset) pairs measuring decode, augmentation and encoding each alone."""
    from dataset.pipeline import list_shards
    from dataset.records import parse_example
    from net import anchors as anchor_lib
    from utility import ssd_model

    autotune = tf.data.AUTOTUNE
    files = list_shards(os.path.join(data_dir, 'train-*'))
    records = tf.data.TFRecordDataset(files).cache().repeat()

    def decoded_only(serialized):
        parsed = parse_example(serialized)
        # Depend on the pixels so the decode cannot be pruned.
        return tf.reduce_max(parsed['image'][0])

    yield 'part_read_parse_decode', (records.map(decoded_only, autotune)
                                     .batch(batch_size).prefetch(autotune))

    # Decoded examples held in memory: augmentation alone.
    decoded = [parse_example(s) for s in tf.data.TFRecordDataset(files)]
    examples = _in_memory([(d['image'].numpy(), d['boxes'].numpy(), d['labels'].numpy())
                           for d in decoded],
                          (tf.TensorSpec([None, None, 3], tf.uint8),
                           tf.TensorSpec([None, 4], tf.float32),
                           tf.TensorSpec([None], tf.int32)))
    def augment(image, b, l):
        return ssd_model.preprocess_train(image, b, l, params)[0]

    yield 'part_augmentation', (examples.repeat().map(augment, autotune)
                                .batch(batch_size).prefetch(autotune))

    # Augmented boxes held in memory: target encoding alone.
    anchors = anchor_lib.generate_anchors(params['anchor_spec'])
    augmented = examples.map(lambda i, b, l: tuple(ssd_model.preprocess_train(
        i, b, l, params, seed=SAMPLE_SEED)[1:]))
    encoder_input = _in_memory([(b.numpy(), l.numpy()) for b, l in augmented],
                               (tf.TensorSpec([None, 4], tf.float32),
                                tf.TensorSpec([None], tf.int32)))

    def encode(b, l):
        targets = ssd_model.encode_labels(b, l, params, anchors)
        return targets['loc_targets'], targets['cls_targets']

    yield 'part_target_encoding', (encoder_input.repeat().map(encode, autotune)
                                   .batch(batch_size).prefetch(autotune))


def _in_memory(elements, signature):
    """A cached dataset over a list of numpy tuples (read once, then served from memory)."""
    dataset = tf.data.Dataset.from_generator(lambda: iter(elements), output_signature=signature)
    return dataset.cache()


# ----------------------------------------------------------------------------- TF workers
#
# The train, kernels and infer stages run in a subprocess each (`--_worker NAME`): a fresh
# TensorFlow whose thread pools follow the session config below, and whose peak memory is
# its own.  The worker prints one JSON object as its last stdout line.

# Large 3x3 convolution: input [batch, height, width, in channels], kernel 3x3 -> out channels.
CONV_INPUT = (16, 75, 75, 256)
CONV_OUT_CHANNELS = 256
MATMUL_SIZE = 4096
# Training costs forward + backward (input and weight gradients): 3 x the forward FLOPs.
TRAIN_FLOP_FACTOR = 3


def session_config(args):
    """The ConfigProto train_ssd.py trains with (train_utils.setup_replicas, one replica)
    plus the --intra_op / --inter_op / --xla experiment overrides."""
    from utility import train_utils
    _, _, config = train_utils.setup_replicas(multi_gpu=False, num_cpu_replicas=0,
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
        train_utils.apply_bf16(config)  # what train_ssd.py --precision=bf16 applies
    return config


def peak_memory():
    """Peak resident memory of this process: dict(peak_rss_gb, vm_hwm_gb) in 1e9 bytes."""
    import resource
    result = {'peak_rss_gb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                   * 1024 / 1e9, 3)}
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    result['vm_hwm_gb'] = round(int(line.split()[1]) * 1024 / 1e9, 3)
    except OSError:
        pass
    return result


def ssd300_conv_macs(params):
    """Forward multiply-accumulates per image of every convolution of SSD300 (with the
    backbone params['backbone']; batch-norm, pooling and additions are not counted).

    Builds the network (batch 1, params' image size) in a throwaway graph and counts, for
    each tf_slim convolution, output height x width x kernel height x width x in x out
    channels, from the layer's output shape and its `weights` variable.  The dilated fc6 is
    counted at its nominal 19x19 output (TF runs it as space-to-batch + a convolution on a
    padded 24x24 grid, a little more work than counted).
    Returns: OrderedDict layer scope -> MACs (python ints), in network order.
    """
    from net import ssd_net
    from net import anchors as anchor_lib
    size = int(params['train_image_size'])
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, size, size, 3])
        _, _, end_points = ssd_net.ssd300(
            images, params['num_classes'],
            anchor_lib.anchors_per_location(params['anchor_spec']),
            scope=params['model_scope'], backbone=params.get('backbone', 'vgg16'))
        kernels = {v.op.name: v.shape.as_list() for v in tf.compat.v1.global_variables()}
        macs = collections.OrderedDict()
        for name, output in end_points.items():
            kernel = kernels.get('%s/weights' % name)
            if kernel is None or len(kernel) != 4:
                continue  # pooling layers, the 1-D L2-norm scale, aliases
            _, height, width, _ = output.shape.as_list()
            kh, kw, cin, cout = kernel
            macs[name] = height * width * kh * kw * cin * cout
    return macs


def _variable_batch(values):
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


def _draw_batch(dataset, config):
    """The first element of `dataset` as numpy, drawn in a graph-mode session."""
    element = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
    with tf.compat.v1.Session(config=config) as sess:
        return sess.run(element)


def _time_runs(sess, fetches, warmup, steps):
    """Runs every fetch `warmup` times untimed, then `steps` rounds, one run of each fetch
    per round (interleaved, so a change of machine load hits all alike).

    Args: fetches: OrderedDict name -> fetch.  Returns dict name -> list of seconds.
    """
    for _ in range(warmup):
        for fetch in fetches.values():
            sess.run(fetch)
    seconds = {name: [] for name in fetches}
    for _ in range(steps):
        for name, fetch in fetches.items():
            start = time.perf_counter()
            sess.run(fetch)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def _trace(sess, fetch, path, top=12):
    """Runs `fetch` once with a full trace: writes a Chrome trace to `path` and returns
    the `top` op types by summed op time [(type, ms, share of the summed time)]."""
    from tensorflow.python.client import timeline
    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    metadata = tf.compat.v1.RunMetadata()
    sess.run(fetch, options=options, run_metadata=metadata)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write(timeline.Timeline(metadata.step_stats).generate_chrome_trace_format())
    by_type = collections.Counter()
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            label = node.timeline_label
            op_type = label.split(' = ', 1)[1].split('(', 1)[0] if ' = ' in label else (
                node.node_name.split(':')[0])
            by_type[op_type] += node.op_end_rel_micros - node.op_start_rel_micros
    total = float(sum(by_type.values())) or 1.
    return [(name, round(micros / 1000., 1), round(micros / total, 3))
            for name, micros in by_type.most_common(top)]


def _median(values):
    return statistics.median(values)


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
            seconds = _time_runs(sess, fetches, 1, args.kernel_repeats)
    flops = {'conv3x3': conv_flop, 'conv3x3_fwd_bwd': 3 * conv_flop, 'matmul': matmul_flop}
    result = collections.OrderedDict()
    for name in fetches:
        s = _median(seconds[name])
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
        features, labels = _draw_batch(ssd_model.make_input_fn(params, is_training=True)(),
                                       config)
        feature_tensors, init_features, feed = _variable_batch(features)
        label_tensors, init_labels, label_feed = _variable_batch(labels)
        feed.update(label_feed)
        spec = ssd_model.model_fn(feature_tensors, label_tensors, drivers.ModeKeys.TRAIN,
                                  params)
        init_model = tf.compat.v1.global_variables_initializer()
        graph.finalize()
        with tf.compat.v1.Session(config=config) as sess:
            sess.run(init_model)
            sess.run([init_features, init_labels], feed_dict=feed)
            seconds = _time_runs(sess, {'step': spec.train_op}, args.train_warmup,
                                 args.train_steps)['step']
            loss = float(sess.run(spec.loss))
            if args.trace_dir:
                result['trace_top_ops_ms'] = _trace(sess, spec.train_op, os.path.join(
                    args.trace_dir, 'train_b%d.json' % args.batch_size))
    step = _median(seconds)
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
        features, init_features, feed = _variable_batch(_draw_batch(images, config))
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
            outputs, init_outputs, out_feed = _variable_batch({'cls': logits, 'loc': codes})
            alone = ssd_model.postprocess(outputs['cls'], outputs['loc'], params)
            sess.run(init_outputs, feed_dict=out_feed)
            fetches = collections.OrderedDict([
                ('network', [t.op for t in network]),
                ('network_postprocess', detections),
                ('postprocess_alone', alone)])
            seconds = _time_runs(sess, fetches, args.infer_warmup, args.infer_steps)
            found = sess.run(detections['num_detections'])
            if args.trace_dir:
                result['trace_top_ops_ms'] = _trace(sess, detections, os.path.join(
                    args.trace_dir, 'infer_b%d.json' % batch))
    probabilities = _softmax(logits)[..., 1:]
    med = {k: _median(v) for k, v in seconds.items()}
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
_WORKER_ARGS = ('threads', 'intra_op', 'inter_op', 'xla', 'bf16', 'train_warmup',
                'train_steps', 'kernel_repeats', 'infer_batch_size', 'infer_warmup',
                'infer_steps', 'trace_dir', 'backbone')


def run_worker(name, args, data_dir=None, batch_size=None):
    """Runs worker `name` in a fresh Python subprocess; returns its JSON result."""
    command = [sys.executable, os.path.abspath(__file__), '--_worker', name]
    for key in _WORKER_ARGS:
        value = getattr(args, key)
        if isinstance(value, bool):
            command += ['--' + key] if value else []
        elif value is not None:
            command += ['--' + key, str(value)]
    if data_dir:
        command += ['--data_dir', data_dir]
    if batch_size:
        command += ['--batch_size', str(batch_size)]
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=args.worker_timeout)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError('benchmark worker %r failed (exit %d); its error output ends '
                           'with:\n%s\nRerun with --stages of that stage alone to see it.'
                           % (name, proc.returncode, proc.stderr[-3000:]))
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------- stages (TF)


def bench_kernels(args, context):
    """Large 3x3 convolution and matmul GFLOP/s: what this machine's TF can do at best."""
    return collections.OrderedDict(context.kernels())


def bench_train(args, context):
    """Training images/s and GFLOP/s at each --train_batch_sizes, peak memory, and the
    ratio to the large convolution's GFLOP/s measured in the same run."""
    from utility import ssd_model
    macs = ssd300_conv_macs(ssd_model.make_params(backbone=args.backbone))
    forward_gmac = sum(macs.values()) / 1e9
    train_gflop = forward_gmac * 2 * TRAIN_FLOP_FACTOR
    kernels = context.kernels()
    conv_rate = kernels['conv3x3']['gflop_per_s']
    result = collections.OrderedDict()
    result['method'] = 'sess.run(train_op), one fixed real batch in variables'
    result['backbone'] = args.backbone
    result['forward_gmac_per_image'] = round(forward_gmac, 2)
    result['train_gflop_per_image'] = round(train_gflop, 1)
    result['conv3x3_gflop_per_s'] = conv_rate
    result['conv3x3_fwd_bwd_gflop_per_s'] = kernels['conv3x3_fwd_bwd']['gflop_per_s']
    result['matmul_gflop_per_s'] = kernels['matmul']['gflop_per_s']
    cores = cpu_count()
    precisions = parse_comma_list(args.train_precisions)
    unknown = sorted(set(precisions) - {'fp32', 'bf16'})
    if unknown:
        raise ValueError('--train_precisions: unknown %s; use fp32 and/or bf16.'
                         % ', '.join(unknown))
    if 'bf16' in precisions and not _bf16_available():
        precisions.remove('bf16')
        result['bf16'] = 'not measured: this CPU has neither AVX512-BF16 nor AMX-BF16'
    for batch in parse_sizes(args.train_batch_sizes):
        for precision in precisions:
            worker = run_worker('train', argparse.Namespace(**dict(
                vars(args), bf16=precision == 'bf16')), data_dir=context.data_dir(),
                batch_size=batch)
            rate = worker['images_per_s']
            entry = collections.OrderedDict()
            entry['precision'] = precision
            entry['images_per_s'] = rate
            entry['images_per_s_per_core'] = round(rate / cores, 3)
            entry['step_seconds'] = worker['step_seconds']
            entry['gflop_per_s'] = round(rate * train_gflop, 1)
            entry['ratio_to_conv3x3'] = round(rate * train_gflop / conv_rate, 3)
            # The fairer ceiling: the same convolution forward + both gradients, as training
            # runs (both ratios are to the float32 kernels).
            entry['ratio_to_conv3x3_fwd_bwd'] = round(
                rate * train_gflop / kernels['conv3x3_fwd_bwd']['gflop_per_s'], 3)
            entry['peak_rss_gb'] = worker['peak_rss_gb']
            entry['loss_after'] = worker['loss_after']
            if 'trace_top_ops_ms' in worker:
                entry['trace_top_ops_ms'] = worker['trace_top_ops_ms']
            key = 'batch_%d' % batch + ('' if precision == 'fp32' else '_' + precision)
            if precision != 'fp32' and 'batch_%d' % batch in result:
                entry['speedup_over_fp32'] = round(
                    rate / result['batch_%d' % batch]['images_per_s'], 2)
            result[key] = entry
    check = result.get('batch_%d' % args.target_batch)
    if check:
        result['target_ratio_to_conv3x3'] = args.train_target_ratio
        result['meets_ratio_target'] = check['ratio_to_conv3x3'] >= args.train_target_ratio
        result['target_peak_rss_gb'] = args.memory_target_gb
        result['meets_memory_target'] = check['peak_rss_gb'] <= args.memory_target_gb
    return result


def _bf16_available():
    """True when the train stage can measure bf16 here (train_ssd.py's --precision=auto rule)."""
    from utility import train_utils
    return train_utils.resolve_precision(
        'auto', bool(tf.config.list_physical_devices('GPU')),
        train_utils.cpu_supports_bf16())[0] == 'bf16'


def backbone_train_gflop(backbone):
    """(forward GMAC, training GFLOP) per 300x300 image of SSD300 with `backbone`."""
    from utility import ssd_model
    forward_gmac = sum(ssd300_conv_macs(ssd_model.make_params(backbone=backbone)).values()) / 1e9
    return forward_gmac, forward_gmac * 2 * TRAIN_FLOP_FACTOR


def bench_backbones(args, context):
    """Each of --backbones side by side: counted GFLOP per training image, training
    images/s at --backbones_batch_size and the GFLOP/s that makes."""
    result = collections.OrderedDict()
    result['batch_size'] = args.backbones_batch_size
    for name in parse_comma_list(args.backbones):
        forward_gmac, train_gflop = backbone_train_gflop(name)
        worker = run_worker('train', argparse.Namespace(**dict(vars(args), backbone=name)),
                            data_dir=context.data_dir(), batch_size=args.backbones_batch_size)
        entry = collections.OrderedDict()
        entry['forward_gmac_per_image'] = round(forward_gmac, 2)
        entry['train_gflop_per_image'] = round(train_gflop, 1)
        entry['images_per_s'] = worker['images_per_s']
        entry['step_seconds'] = worker['step_seconds']
        entry['gflop_per_s'] = round(worker['images_per_s'] * train_gflop, 1)
        entry['peak_rss_gb'] = worker['peak_rss_gb']
        entry['loss_after'] = worker['loss_after']
        result[name] = entry
    return result


def bench_infer(args, context):
    """PREDICT graph images/s and the share of time spent after the network."""
    worker = run_worker('infer', args, data_dir=context.data_dir())
    result = collections.OrderedDict(worker)
    result['gflop_per_s_network'] = round(
        worker['network_only_images_per_s'] * 2 * context.forward_gmac(), 1)
    result['target_share_after_network'] = args.postprocess_target_share
    # Checked on the direct measurement (post-processing alone / network + post-processing).
    result['meets_target'] = worker['share_postprocess_alone'] < args.postprocess_target_share
    return result


def make_benchmark_data(num_images=4952, num_classes=21, objects_per_image=3,
                        detections_per_image=200, seed=0):
    """Random VOC07-test-sized data: (detections, ground_truth) in voc_metric.evaluate's layout.

    About num_images * objects_per_image gt boxes (10% difficult), detections_per_image
    detections per image: half jittered copies of the image's gt boxes (their class), half
    random boxes of random classes.
    """
    import numpy as np
    from evaluation import voc_metric
    rng = np.random.RandomState(seed)
    ground_truth = []
    image_ids, labels, scores, boxes = [], [], [], []
    for index in range(num_images):
        n = rng.randint(1, 2 * objects_per_image)
        xy = rng.uniform(0, 300, size=(n, 2))
        wh = rng.uniform(20, 200, size=(n, 2))
        gt = np.concatenate([xy, xy + wh], axis=1)
        gt_labels = rng.randint(1, num_classes, size=n)
        ground_truth.append({'boxes_pixels': gt, 'labels': gt_labels,
                             'difficult': rng.uniform(size=n) < 0.1})
        half = detections_per_image // 2
        pick = rng.randint(0, n, size=half)
        near = gt[pick] + rng.normal(0, 15, size=(half, 4))
        far_xy = rng.uniform(0, 400, size=(detections_per_image - half, 2))
        far = np.concatenate([far_xy, far_xy + rng.uniform(10, 200, size=far_xy.shape)], axis=1)
        image_ids.append(np.full(detections_per_image, index))
        labels.append(np.concatenate([gt_labels[pick],
                                      rng.randint(1, num_classes, size=len(far))]))
        scores.append(rng.uniform(size=detections_per_image))
        boxes.append(np.concatenate([near, far]))
    detections = voc_metric.detections_by_class(
        np.concatenate(image_ids), np.concatenate(labels), np.concatenate(scores),
        np.concatenate(boxes), num_classes)
    return detections, ground_truth


def time_metric(repeats=3, **kwargs):
    """Times voc_metric.evaluate on `make_benchmark_data(**kwargs)`; returns (best seconds,
    result, detections, ground_truth)."""
    from evaluation import voc_metric
    detections, ground_truth = make_benchmark_data(**kwargs)
    best, result = float('inf'), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = voc_metric.evaluate(detections, ground_truth, len(detections))
        best = min(best, time.perf_counter() - start)
    return best, result, detections, ground_truth


def bench_metric(args, context):
    """evaluation/voc_metric.evaluate on a random VOC07-test-sized set."""
    seconds, result, detections, ground_truth = time_metric(
        repeats=args.metric_repeats, num_images=args.metric_images)
    out = collections.OrderedDict()
    out['images'] = len(ground_truth)
    out['gt_boxes'] = int(sum(len(g['labels']) for g in ground_truth))
    out['detections'] = int(sum(len(d) for d in detections))
    out['seconds_best'] = round(seconds, 3)
    out['map_07'] = round(float(result['map_07']), 4)
    out['target_seconds'] = args.metric_target_s
    out['meets_target'] = seconds < args.metric_target_s
    return out


def make_coco_benchmark_data(num_images=5000, num_classes=81, gt_per_image=7.2,
                             detections_per_image=100, seed=0):
    """Random val2017-sized data for the COCO metric: (Collection, ground truth).

    About num_images * gt_per_image gt boxes (1% crowd) on 640x480 images, exactly
    detections_per_image detections per image: half jittered copies of the image's gt boxes
    (their class), half random boxes of random classes; integer source ids (COCO image ids).
    """
    import numpy as np
    from evaluation.detections import Collection
    rng = np.random.RandomState(seed)
    ground_truth, det_image, labels, scores, boxes = [], [], [], [], []
    for index in range(num_images):
        n = rng.poisson(gt_per_image)
        xy = rng.uniform(0, 500, size=(n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(4, 300, size=(n, 2))], axis=1)
        gt_labels = rng.randint(1, num_classes, size=n)
        ground_truth.append({'boxes_pixels': gt, 'labels': gt_labels,
                             'iscrowd': rng.uniform(size=n) < 0.01,
                             'difficult': np.zeros(n, bool)})
        half = detections_per_image // 2 if n else 0
        pick = rng.randint(0, max(n, 1), size=half)
        near = gt[pick] + rng.normal(0, 8, size=(half, 4)) if n else np.zeros([0, 4])
        far_xy = rng.uniform(0, 600, size=(detections_per_image - half, 2))
        far = np.concatenate([far_xy, far_xy + rng.uniform(4, 300, size=far_xy.shape)], axis=1)
        det_image.append(np.full(detections_per_image, index))
        labels.append(np.concatenate([gt_labels[pick] if n else np.zeros(0, int),
                                      rng.randint(1, num_classes, size=len(far))]))
        scores.append(rng.uniform(size=detections_per_image))
        boxes.append(np.concatenate([near, far]))
    collection = Collection(
        ['%012d' % (139 + i) for i in range(num_images)], np.full(num_images, 480),
        np.full(num_images, 640), np.concatenate(det_image), np.concatenate(labels),
        np.concatenate(scores), np.concatenate(boxes), ground_truth,
        [str(139 + i) for i in range(num_images)])
    return collection, ground_truth


def _faster_coco_eval(gt_document, results):
    """faster-coco-eval's COCOeval_faster on the same documents: (seconds, stats) or None
    when the package is not installed."""
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        return None
    import contextlib
    import io
    import json
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json.loads(json.dumps(gt_document)))
        evaluator = COCOeval_faster(gt, gt.loadRes(json.loads(json.dumps(results))), 'bbox')
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return time.perf_counter() - start, [float(v) for v in evaluator.stats[:12]]


def bench_coco_metric(args, context):
    """evaluation/coco_metric (pycocotools) on a random val2017-sized set; faster-coco-eval
    beside it when installed (its speed-up and largest difference on the 12 figures)."""
    from evaluation import coco_metric
    collection, ground_truth = make_coco_benchmark_data(num_images=args.coco_images)
    start = time.perf_counter()
    gt_document = coco_metric.ground_truth_json(collection, ground_truth,
                                                ['none'] + ['c%d' % k for k in range(1, 81)])
    results = coco_metric.results_json(collection, 81)
    build = time.perf_counter() - start
    start = time.perf_counter()
    scored = coco_metric.evaluate(gt_document, results)
    seconds = time.perf_counter() - start
    out = collections.OrderedDict([
        ('images', args.coco_images), ('gt_boxes', len(gt_document['annotations'])),
        ('detections', len(results)), ('build_json_seconds', round(build, 3)),
        ('pycocotools_seconds', round(seconds, 3)), ('AP', round(scored['stats']['AP'], 4))])
    faster = _faster_coco_eval(gt_document, results)
    if faster is None:
        out['faster_coco_eval'] = 'not installed'
    else:
        ours = [scored['stats'][name] for name in coco_metric.STAT_NAMES]
        diff = max(abs(a - b) for a, b in zip(faster[1], ours))
        out['faster_coco_eval_seconds'] = round(faster[0], 3)
        out['faster_speedup'] = round(seconds / faster[0], 2)
        out['faster_max_abs_difference'] = diff
    return out


def bench_convert(args, context):
    """dataset/voc_to_tfrecords.convert_dataset on the generated VOC sample."""
    from dataset import voc_to_tfrecords
    voc_root = context.voc_root()
    rates, seconds_all, images = [], [], 0
    for _ in range(args.repeats):
        out = tempfile.mkdtemp(prefix='bench_ssd_convert_')
        try:
            start = time.perf_counter()
            manifest = voc_to_tfrecords.convert_dataset(
                voc_root, out, [SAMPLE_NAME], [SAMPLE_NAME], train_shards=args.convert_shards,
                validation_shards=args.convert_shards, num_threads=args.convert_threads,
                train_list='train', validation_list='val',
                reporter=voc_to_tfrecords.Reporter(out=_Null(), err=sys.stderr))
            seconds = time.perf_counter() - start
        finally:
            shutil.rmtree(out, ignore_errors=True)
        images = sum(int(s['images']) for s in manifest['splits'].values())
        rates.append(images / seconds)
        seconds_all.append(seconds)
    cores = cpu_count()
    rate = statistics.median(rates)
    return collections.OrderedDict([
        ('images_per_run', images), ('threads', args.convert_threads),
        ('shards_per_split', args.convert_shards),
        ('images_per_s', round(rate, 1)), ('images_per_s_per_core', round(rate / cores, 1)),
        ('runs_images_per_s', [round(r, 1) for r in rates]),
        ('seconds', round(sum(seconds_all), 2))])


def bench_tflite(args, context):
    """SavedModel fp32, TFLite fp32 and TFLite int8 exports of one checkpoint: file sizes and
    batch-1 ms per image at each --tflite_threads (benchmarks/bench_tflite.py)."""
    from benchmarks import bench_tflite as tflite_bench
    work = tempfile.mkdtemp(prefix='bench_tflite_')
    try:
        checkpoint = args.tflite_checkpoint
        result = collections.OrderedDict()
        if not checkpoint:
            # Untrained weights pass every anchor through the 0.01 score threshold: the
            # post-processing's worst case, so pass a trained model for representative figures.
            checkpoint = os.path.join(work, 'model')
            proc = subprocess.run(
                [sys.executable, os.path.join(REPO_ROOT, 'train_ssd.py'),
                 '--data_dir=' + context.data_dir(), '--model_dir=' + checkpoint,
                 '--checkpoint_path=', '--backbone=' + args.backbone, '--batch_size=2',
                 '--max_number_of_steps=1', '--num_readers=1', '--precision=fp32',
                 # decay 0: batch-norm statistics of the step it took (with the initial
                 # ones, ResNet activations blow up and int8 conversion crashed)
                 '--batch_norm_decay=0'],
                capture_output=True, text=True, cwd=REPO_ROOT)
            if proc.returncode != 0:
                raise RuntimeError('training the stand-in checkpoint failed: %s' % (
                    proc.stderr.strip().splitlines() or ['?'])[-1])
            result['checkpoint'] = ('a 1-step %s from scratch (untrained: post-processing at '
                                    'its worst; pass --tflite_checkpoint)' % args.backbone)
        else:
            result['checkpoint'] = checkpoint
        paths = tflite_bench.export_models(checkpoint, work, context.data_dir(),
                                           args.calibration_images)
        result.update(tflite_bench.compare(paths, parse_sizes(args.tflite_threads),
                                           args.tflite_runs))
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def parse_sizes(text):
    return [int(t) for t in parse_comma_list(text)]


# name -> (function, one-line description). Other stages are added here.
STAGES = collections.OrderedDict([
    ('input', (bench_input, 'training input pipeline: TFRecords -> decode -> augment -> '
                            'encode targets -> batch -> prefetch')),
    ('train', (bench_train, 'model_fn TRAIN step at batch 8 and 16: images/s, GFLOP/s, '
                            'ratio to a large conv, peak memory')),
    ('infer', (bench_infer, 'model_fn PREDICT: network vs network + post-processing')),
    ('metric', (bench_metric, 'VOC metric on a VOC07-test-sized random set')),
    ('convert', (bench_convert, 'VOC folders -> TFRecords (convert_dataset) on the sample')),
])
# Stages that can be asked for but are not in the default list (train reports them too).
EXTRA_STAGES = collections.OrderedDict([
    ('kernels', (bench_kernels, 'large 3x3 conv and matmul GFLOP/s only')),
    ('backbones', (bench_backbones, 'each --backbones: training GFLOP/image and images/s')),
    ('coco_metric', (bench_coco_metric, 'COCO metric (pycocotools) on a val2017-sized random '
                                        'set; faster-coco-eval beside it when installed')),
    ('tflite', (bench_tflite, 'SavedModel fp32, TFLite fp32 and int8 of one checkpoint: sizes, '
                              'batch-1 ms per image at each --tflite_threads')),
])


# ----------------------------------------------------------------------------- output


def _flatten(prefix, value, rows):
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten('%s.%s' % (prefix, k) if prefix else k, v, rows)
    else:
        rows.append((prefix, value))


def summarize(report):
    """The headline figures of the stages that ran, with their targets: a flat dict
    figure -> value, or (value, 'target ...', met) where the issue sets a target."""
    stages = report['stages']
    summary = collections.OrderedDict()
    if 'input' in stages:
        s = stages['input']
        summary['input pipeline images/s (total, per core)'] = (
            '%.1f, %.1f' % (s['pipeline']['images_per_s'],
                            s['pipeline']['images_per_s_per_core']),
            '>= %g' % s['target_images_per_s'], s['meets_target'])
    if 'train' in stages:
        s = stages['train']
        summary['large conv 3x3 (fwd+bwd) / matmul GFLOP/s'] = '%.1f (%.1f) / %.1f' % (
            s['conv3x3_gflop_per_s'], s['conv3x3_fwd_bwd_gflop_per_s'],
            s['matmul_gflop_per_s'])
        for key, entry in s.items():
            if key.startswith('batch_'):
                summary['training %s images/s, GFLOP/s, ratio to conv (fwd+bwd)' % key] = (
                    '%.3f, %.1f, %.3f (%.3f)' % (
                        entry['images_per_s'], entry['gflop_per_s'],
                        entry['ratio_to_conv3x3'], entry['ratio_to_conv3x3_fwd_bwd']))
                if 'speedup_over_fp32' in entry:
                    summary['training %s speed-up over fp32' % key] = entry['speedup_over_fp32']
        if 'meets_ratio_target' in s:
            batch = 'batch_%d' % report['settings']['target_batch']
            summary['training %s ratio to conv' % batch] = (
                s[batch]['ratio_to_conv3x3'], '>= %g' % s['target_ratio_to_conv3x3'],
                s['meets_ratio_target'])
            summary['training %s peak resident GB' % batch] = (
                s[batch]['peak_rss_gb'], '<= %g' % s['target_peak_rss_gb'],
                s['meets_memory_target'])
    if 'infer' in stages:
        s = stages['infer']
        summary['inference images/s (network + post-processing, batch %d)'
                % s['batch_size']] = s['images_per_s']
        summary['inference share after the network: post-processing alone '
                '(difference net+post - net)'] = (
            '%.3f (%.3f)' % (s['share_postprocess_alone'], s['share_after_network']),
            '< %g' % s['target_share_after_network'], s['meets_target'])
    if 'backbones' in stages:
        s = stages['backbones']
        for name, entry in s.items():
            if isinstance(entry, dict):
                summary['%s: training GFLOP/image, images/s (batch %d), GFLOP/s' % (
                    name, s['batch_size'])] = '%.1f, %.3f, %.1f' % (
                        entry['train_gflop_per_image'], entry['images_per_s'],
                        entry['gflop_per_s'])
    if 'metric' in stages:
        s = stages['metric']
        summary['VOC metric seconds, %d images' % s['images']] = (
            s['seconds_best'], '< %g' % s['target_seconds'], s['meets_target'])
    if 'coco_metric' in stages:
        s = stages['coco_metric']
        summary['COCO metric seconds (pycocotools), %d images' % s['images']] = s[
            'pycocotools_seconds']
        if 'faster_speedup' in s:
            summary['faster-coco-eval speed-up, max difference'] = '%.2fx, %.2g' % (
                s['faster_speedup'], s['faster_max_abs_difference'])
    if 'tflite' in stages:
        s = stages['tflite']
        threads = parse_sizes(report['settings']['tflite_threads'])
        for name in ('saved_model_fp32', 'tflite_fp32', 'tflite_int8'):
            if name in s:
                summary['%s: MB, ms per image at %s thread(s)' % (
                    name, ', '.join(map(str, threads)))] = '%.1f, %s' % (
                        s[name]['size_mb'], ', '.join('%.1f' % s[name]['ms_%d_threads' % n]
                                                      for n in threads))
        if 'meets_targets' in s:
            summary['int8 speed-up over SavedModel / TFLite fp32, size share'] = (
                '%.2fx / %.2fx, %.2f' % (s['int8_speedup_over_saved_model'],
                                         s['int8_speedup_over_tflite_fp32'],
                                         s['int8_size_share_of_tflite_fp32']),
                '>= 2x / 1.5x, <= 0.3', s['meets_targets'])
    if 'convert' in stages:
        s = stages['convert']
        summary['conversion images/s (total, per core)'] = '%.1f, %.1f' % (
            s['images_per_s'], s['images_per_s_per_core'])
    return summary


def format_summary(summary):
    rows = []
    for name, value in summary.items():
        if isinstance(value, tuple):
            value, target, met = value
            rows.append((name, str(value), '%s: %s' % (target, 'met' if met else 'NOT met')))
        else:
            rows.append((name, str(value), ''))
    if not rows:
        return ''
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    fmt = '%%-%ds  %%%ds  %%s' % tuple(widths[:2])
    return '\n'.join(['summary:'] + [fmt % r for r in rows])


def format_table(report):
    machine = report['machine']
    lines = ['machine: %d cores, %s, TensorFlow %s (oneDNN %s), Python %s, load average '
             '(1, 5, 15 min) %s -> %s'
             % (machine['cores'], machine['cpu_model'], machine['tensorflow'],
                machine['onednn'], machine['python'], machine['load_average_1_5_15min'],
                report['load_average_after'])]
    rows = []
    for stage, result in report['stages'].items():
        flat = []
        _flatten('', result, flat)
        rows.extend((stage, k, v) for k, v in flat)
    widths = [max(len(str(r[i])) for r in rows + [('stage', 'metric', 'value')])
              for i in range(3)]
    fmt = '%%-%ds  %%-%ds  %%%ds' % tuple(widths)
    lines.append(fmt % ('stage', 'metric', 'value'))
    lines.append(fmt % tuple('-' * w for w in widths))
    lines.extend(fmt % (s, k, v) for s, k, v in rows)
    summary = format_summary(summarize(report))
    if summary:
        lines += ['', summary]
    return '\n'.join(lines)


def _all_stages():
    stages = collections.OrderedDict(STAGES)
    stages.update(EXTRA_STAGES)
    return stages


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='stages:\n' + '\n'.join(
                                         '  %-12s %s' % (k, v[1])
                                         for k, v in _all_stages().items()))
    parser.add_argument('--stages', default=','.join(STAGES),
                        help='comma-separated stages to run (default: %%(default)s; also: '
                             '%s)' % ', '.join(EXTRA_STAGES))
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object instead of the table')
    parser.add_argument('--data_dir', default=None,
                        help='folder with train-* (and val-*) TFRecord shards; default: '
                             'generate and convert the sample into a temporary folder')
    parser.add_argument('--cache_dir', default=None,
                        help='keep the generated sample here (reused when present)')
    parser.add_argument('--num_images', type=int, default=64,
                        help='images in the generated sample (default: %(default)s)')
    group = parser.add_argument_group('input stage')
    group.add_argument('--batch_size', type=int, default=16)
    group.add_argument('--warmup', type=int, default=10, help='untimed batches')
    group.add_argument('--batches', type=int, default=40, help='timed batches per run')
    group.add_argument('--repeats', type=int, default=3,
                       help='timed runs (input, convert); the median is reported '
                            '(default: %(default)s)')
    group.add_argument('--threadpool', type=int, default=0,
                       help='experiment: tf.data private thread pool size on top of the '
                            'pipeline (0: as built)')
    group.add_argument('--max_intra_op', type=int, default=0,
                       help='experiment: tf.data max_intra_op_parallelism (0: as built)')
    group.add_argument('--breakdown', action='store_true',
                       help='also time decode, augmentation and encoding alone')
    group.add_argument('--target', type=float, default=200.,
                       help='images/s the pipeline should reach (default: %(default)s)')
    group = parser.add_argument_group('train / kernels / infer stages (TF sessions)')
    group.add_argument('--train_batch_sizes', default='8,16',
                       help='training batch sizes, one subprocess each (default: %(default)s)')
    group.add_argument('--train_precisions', default='fp32,bf16',
                       help='train stage: each batch size in each of these, side by side '
                            '(bf16 is left out, with a note, on a CPU without AVX512-BF16 '
                            'or AMX)')
    group.add_argument('--train_warmup', type=int, default=1,
                       help='untimed training steps (default: %(default)s)')
    group.add_argument('--train_steps', type=int, default=3,
                       help='timed training steps; the median is reported '
                            '(default: %(default)s)')
    group.add_argument('--backbone', default='vgg16',
                       help='network of the input, train and infer stages (net/backbones.py; '
                            'default: %(default)s)')
    group.add_argument('--backbones', default='vgg16,resnet18,resnet34,resnet50,resnet101',
                       help='backbones stage: which, side by side (default: %(default)s)')
    group.add_argument('--backbones_batch_size', type=int, default=4,
                       help='backbones stage: training batch (default: %(default)s)')
    group.add_argument('--kernel_repeats', type=int, default=5,
                       help='timed runs of each kernel (default: %(default)s)')
    group.add_argument('--infer_batch_size', type=int, default=8)
    group.add_argument('--infer_warmup', type=int, default=1)
    group.add_argument('--infer_steps', type=int, default=4,
                       help='timed rounds of network / network+post / post alone')
    group.add_argument('--threads', type=int, default=0,
                       help='num_cpu_threads passed to setup_replicas, as train_ssd.py '
                            '--num_cpu_threads (0: one per core)')
    group.add_argument('--intra_op', type=int, default=0,
                       help='experiment: override intra_op_parallelism_threads')
    group.add_argument('--inter_op', type=int, default=0,
                       help='experiment: override inter_op_parallelism_threads')
    group.add_argument('--xla', action='store_true',
                       help='experiment: session global_jit_level ON_1 (XLA auto-clustering)')
    group.add_argument('--bf16', action='store_true',
                       help='experiment for the infer and backbones stages: grappler '
                            'auto_mixed_precision_onednn_bfloat16 (bfloat16 convolutions on '
                            'CPUs with AVX512_BF16/AMX; changes the numerics, the kernels '
                            'stay float32); the train stage measures --train_precisions')
    group.add_argument('--trace_dir', default=None,
                       help='write one traced step per TF worker here (Chrome trace JSON) '
                            'and report the top op types')
    group.add_argument('--worker_timeout', type=float, default=1800.,
                       help='seconds a TF worker subprocess may run')
    group = parser.add_argument_group('targets')
    group.add_argument('--target_batch', type=int, default=16,
                       help='training batch the ratio and memory targets apply to')
    group.add_argument('--train_target_ratio', type=float, default=0.8,
                       help='training GFLOP/s / large-conv GFLOP/s to reach')
    group.add_argument('--memory_target_gb', type=float, default=12.,
                       help='peak resident memory of training (1e9 bytes)')
    group.add_argument('--postprocess_target_share', type=float, default=0.10,
                       help='share of inference time after the network to stay under')
    group.add_argument('--metric_target_s', type=float, default=1.0)
    group = parser.add_argument_group('tflite stage')
    group.add_argument('--tflite_checkpoint', default='',
                       help='checkpoint (or model dir) to export and time; default: a 1-step '
                            'model trained from scratch on the sample (untrained weights: '
                            'post-processing at its worst case)')
    group.add_argument('--tflite_threads', default='1,2',
                       help='interpreter / TensorFlow thread counts to time')
    group.add_argument('--tflite_runs', type=int, default=7,
                       help='timed batch-1 calls per model and thread count (median)')
    group.add_argument('--calibration_images', type=int, default=64,
                       help='int8 calibration images from the sample (or --data_dir) train '
                            'records')
    group = parser.add_argument_group('metric / convert stages')
    group.add_argument('--metric_images', type=int, default=4952,
                       help='images in the metric\'s random set (VOC07 test: 4952)')
    group.add_argument('--metric_repeats', type=int, default=3,
                       help='timed runs; the best is reported')
    group.add_argument('--coco_images', type=int, default=5000,
                       help='images in the coco_metric stage\'s random set (val2017: 5000; '
                            'about 7.2 gt boxes and 100 detections each)')
    group.add_argument('--convert_threads', type=int, default=8,
                       help="converter threads (the converter's default)")
    group.add_argument('--convert_shards', type=int, default=4,
                       help='shards per split (the converter uses min(threads, shards) '
                            'threads per split; default: %(default)s for the 64-image sample)')
    parser.add_argument('--_worker', choices=sorted(WORKERS), help=argparse.SUPPRESS)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    # tf_slim's layers call a deprecated Keras method on every layer; say it once, not 40x.
    warnings.filterwarnings('ignore', message='`layer.apply` is deprecated')
    if args._worker:  # internal: one TF stage in this fresh process
        print(json.dumps(WORKERS[args._worker](args)))
        return 0
    stages = _all_stages()
    names = parse_comma_list(args.stages)
    unknown = [n for n in names if n not in stages]
    if unknown:
        print('ERROR: unknown stage(s) %s; choose from %s.'
              % (', '.join(unknown), ', '.join(stages)), file=sys.stderr)
        return 2
    context = Context(args)
    report = collections.OrderedDict()
    report['machine'] = machine_info()
    report['settings'] = {k: getattr(args, k) for k in
                          ('batch_size', 'warmup', 'batches', 'repeats', 'num_images',
                           'breakdown', 'threadpool', 'max_intra_op', 'train_batch_sizes',
                           'train_precisions', 'tflite_threads', 'tflite_checkpoint',
                           'train_warmup', 'train_steps', 'kernel_repeats',
                           'infer_batch_size', 'infer_steps', 'threads', 'intra_op',
                           'target_batch', 'backbone', 'backbones', 'backbones_batch_size',
                           'inter_op', 'xla', 'bf16', 'metric_images', 'convert_threads')}
    report['stages'] = collections.OrderedDict()
    try:
        for name in names:
            start = time.perf_counter()
            report['stages'][name] = stages[name][0](args, context)
            report['stages'][name]['stage_seconds'] = round(time.perf_counter() - start, 1)
            report['stages'][name]['load_average_after'] = load_average()
    finally:
        context.close()
    report['load_average_after'] = load_average()
    report['summary'] = collections.OrderedDict(
        (k, list(v) if isinstance(v, tuple) else v) for k, v in summarize(report).items())
    if args.json:
        print(json.dumps(report))
    else:
        print(format_table(report))
    return 0


if __name__ == '__main__':
    sys.exit(main())
