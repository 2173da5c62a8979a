r"""SSD300 benchmarks: a table of stages, each measured on its own.

    python3 benchmarks/bench_ssd.py                       # every stage, printed as a table
    python3 benchmarks/bench_ssd.py --stages input --json # one JSON object on stdout

Stages (add one by writing `def bench_<name>(args, context) -> dict` and registering it
in `STAGES`):

  input         the training input pipeline exactly as training builds it
                (`net.ssd_model.make_input_fn`): read the sample TFRecords, decode, full
                training augmentation, target encoding against the 8732 anchors, batch
                (--batch_size), prefetch.  Reports images/s after warm-up (median
                of --repeats runs), in total and per core.  With --breakdown it also
                measures each part alone on the same data: read + parse + decode,
                augmentation (on decoded images held in memory), target encoding (on
                augmented boxes held in memory).

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
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
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


def machine_info():
    return {
        'cores': cpu_count(),
        'cpu_model': cpu_model(),
        'tensorflow': tf.__version__,
        'python': platform.python_version(),
        'platform': platform.platform(),
        'gpus': len(tf.config.list_physical_devices('GPU')),
        'load_average_1_5_15min': load_average(),
    }


# ----------------------------------------------------------------------------- data


class Context(object):
    """What stages share: parsed arguments and the (lazily made) TFRecord folder."""

    def __init__(self, args):
        self.args = args
        self._data_dir = args.data_dir
        self._temp_dir = None

    def data_dir(self):
        """Folder with train-* shards; generates and converts the sample if needed."""
        if self._data_dir is None:
            if self.args.cache_dir:
                root = os.path.abspath(self.args.cache_dir)
            else:
                root = self._temp_dir = tempfile.mkdtemp(prefix='bench_ssd_')
            self._data_dir = prepare_sample(root, self.args.num_images)
        if not tf.io.gfile.glob(os.path.join(self._data_dir, 'train-*')):
            raise SystemExit('ERROR: no train-* TFRecord shards in %s; convert data with '
                             'dataset/convert_voc_sample_tfrecords.py or drop --data_dir to '
                             'let the benchmark make the sample.' % self._data_dir)
        return self._data_dir

    def close(self):
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)


def prepare_sample(root, num_images):
    """Generates the VOC-format sample under `root` and converts it (once per root).

    Returns the TFRecord folder `<root>/tfrecords_<num_images>`.
    """
    from dataset import make_voc_sample, voc_to_tfrecords
    out = os.path.join(root, 'tfrecords_%d' % num_images)
    if os.path.exists(os.path.join(out, 'manifest.json')):
        return out
    voc_root = os.path.join(root, 'voc_%d' % num_images)
    make_voc_sample.make_voc_sample(voc_root, num_images=num_images, seed=SAMPLE_SEED,
                                    name=SAMPLE_NAME)
    quiet = voc_to_tfrecords.Reporter(out=_Null(), err=sys.stderr)
    voc_to_tfrecords.convert_dataset(voc_root, out, [SAMPLE_NAME], [SAMPLE_NAME],
                                     train_shards=4, validation_shards=1, num_threads=2,
                                     train_list='train', validation_list='val',
                                     reporter=quiet)
    return out


class _Null(object):
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
    """The training input pipeline of net.ssd_model.make_input_fn, and its parts alone."""
    from net import ssd_model
    cores = cpu_count()
    params = ssd_model.make_params(data_dir=context.data_dir(), batch_size=args.batch_size)
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
    from dataset import dataset_common
    from preprocessing import ssd_preprocessing
    from utility import anchor_manipulator, anchors as anchor_lib

    autotune = tf.data.AUTOTUNE
    files = dataset_common.list_shards(os.path.join(data_dir, 'train-*'))
    records = tf.data.TFRecordDataset(files).cache().repeat()

    def decoded_only(serialized):
        parsed = dataset_common.parse_example(serialized)
        # Depend on the pixels so the decode cannot be pruned.
        return tf.reduce_max(parsed['image'][0])

    yield 'part_read_parse_decode', (records.map(decoded_only, autotune)
                                     .batch(batch_size).prefetch(autotune))

    # Decoded examples held in memory: augmentation alone.
    decoded = [dataset_common.parse_example(s) for s in tf.data.TFRecordDataset(files)]
    examples = _in_memory([(d['image'].numpy(), d['boxes'].numpy(), d['labels'].numpy())
                           for d in decoded],
                          (tf.TensorSpec([None, None, 3], tf.uint8),
                           tf.TensorSpec([None, 4], tf.float32),
                           tf.TensorSpec([None], tf.int32)))
    size = params['train_image_size']
    order = params['channel_order']

    def augment(image, b, l):
        return ssd_preprocessing.preprocess_for_train(image, b, l, out_size=size,
                                                      channel_order=order)[0]

    yield 'part_augmentation', (examples.repeat().map(augment, autotune)
                                .batch(batch_size).prefetch(autotune))

    # Augmented boxes held in memory: target encoding alone.
    anchors = tf.constant(anchor_lib.generate_anchors(params['anchor_spec']))
    augmented = examples.map(lambda i, b, l: tuple(ssd_preprocessing.preprocess_for_train(
        i, b, l, out_size=size, seed=SAMPLE_SEED)[1:]))
    encoder_input = _in_memory([(b.numpy(), l.numpy()) for b, l in augmented],
                               (tf.TensorSpec([None, 4], tf.float32),
                                tf.TensorSpec([None], tf.int32)))

    def encode(b, l):
        loc, cls, _ = anchor_manipulator.encode_targets(
            b, l, anchors, match_threshold=params['match_threshold'],
            neg_threshold=params['neg_threshold'],
            prior_scaling=params['anchor_spec']['prior_scaling'])
        return loc, cls

    yield 'part_target_encoding', (encoder_input.repeat().map(encode, autotune)
                                   .batch(batch_size).prefetch(autotune))


def _in_memory(elements, signature):
    """A cached dataset over a list of numpy tuples (read once, then served from memory)."""
    dataset = tf.data.Dataset.from_generator(lambda: iter(elements), output_signature=signature)
    return dataset.cache()


# name -> (function, one-line description). Other stages are added here.
STAGES = collections.OrderedDict([
    ('input', (bench_input, 'training input pipeline: TFRecords -> decode -> augment -> '
                            'encode targets -> batch -> prefetch')),
])


# ----------------------------------------------------------------------------- output


def _flatten(prefix, value, rows):
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten('%s.%s' % (prefix, k) if prefix else k, v, rows)
    else:
        rows.append((prefix, value))


def format_table(report):
    machine = report['machine']
    lines = ['machine: %d cores, %s, TensorFlow %s, Python %s, load average %s -> %s'
             % (machine['cores'], machine['cpu_model'], machine['tensorflow'],
                machine['python'], machine['load_average_1_5_15min'],
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
    return '\n'.join(lines)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog='stages:\n' + '\n'.join(
                                         '  %-12s %s' % (k, v[1]) for k, v in STAGES.items()))
    parser.add_argument('--stages', default=','.join(STAGES),
                        help='comma-separated stages to run (default: %(default)s)')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object instead of the table')
    parser.add_argument('--data_dir', default=None,
                        help='folder with train-* TFRecord shards; default: generate and '
                             'convert the sample into a temporary folder')
    parser.add_argument('--cache_dir', default=None,
                        help='keep the generated sample here (reused when present)')
    parser.add_argument('--num_images', type=int, default=64,
                        help='images in the generated sample (default: %(default)s)')
    parser.add_argument('--batch_size', type=int, default=16)
    parser.add_argument('--warmup', type=int, default=10, help='untimed batches')
    parser.add_argument('--batches', type=int, default=40, help='timed batches per run')
    parser.add_argument('--repeats', type=int, default=3,
                        help='timed runs; the median is reported (default: %(default)s)')
    parser.add_argument('--threadpool', type=int, default=0,
                        help='experiment: tf.data private thread pool size on top of the '
                             'pipeline (0: as built)')
    parser.add_argument('--max_intra_op', type=int, default=0,
                        help='experiment: tf.data max_intra_op_parallelism (0: as built)')
    parser.add_argument('--breakdown', action='store_true',
                        help='input stage: also time decode, augmentation and encoding alone')
    parser.add_argument('--target', type=float, default=200.,
                        help='input stage: images/s the pipeline should reach')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    names = [n.strip() for n in args.stages.split(',') if n.strip()]
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        print('ERROR: unknown stage(s) %s; choose from %s.'
              % (', '.join(unknown), ', '.join(STAGES)), file=sys.stderr)
        return 2
    context = Context(args)
    report = collections.OrderedDict()
    report['machine'] = machine_info()
    report['settings'] = {k: getattr(args, k) for k in
                          ('batch_size', 'warmup', 'batches', 'repeats', 'num_images',
                           'breakdown', 'threadpool', 'max_intra_op')}
    report['stages'] = collections.OrderedDict()
    try:
        for name in names:
            report['stages'][name] = STAGES[name][0](args, context)
    finally:
        context.close()
    report['load_average_after'] = load_average()
    if args.json:
        print(json.dumps(report))
    else:
        print(format_table(report))
    return 0


if __name__ == '__main__':
    sys.exit(main())
