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
import shutil
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import tensorflow as tf  # noqa: E402

from benchmarks import bench_tflite, machine  # noqa: E402
from benchmarks.flops import backbone_train_gflop  # noqa: E402
from benchmarks.workers import quiet_layer_warnings, run_worker  # noqa: E402
from benchmarks.stage_model import (bench_backbones, bench_infer, bench_kernels,  # noqa: E402
                                    bench_train)
from benchmarks.report import format_table, summarize  # noqa: E402
from benchmarks.sample_data import make_sample, prepare_sample  # noqa: E402
from benchmarks.stage_input import bench_input  # noqa: E402
from benchmarks.stage_metric import bench_coco_metric, bench_metric  # noqa: E402
from benchmarks.stage_convert import bench_convert  # noqa: E402
from dataset.helpers import parse_comma_list  # noqa: E402

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
        """Forward GMAC per image of SSD300 with --backbone, counted once per run."""
        if self._forward_gmac is None:
            self._forward_gmac = backbone_train_gflop(self.args.backbone)[0]
        return self._forward_gmac

    def close(self):
        if self._temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- stages (TF)


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
    ('tflite', (bench_tflite.bench_tflite, 'SavedModel fp32, TFLite fp32 and int8 of one '
                                           'checkpoint: sizes, batch-1 ms per image at each '
                                           '--tflite_threads')),
])


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
    group.add_argument('--tflite_threads', default=bench_tflite.DEFAULT_THREADS,
                       help='interpreter / TensorFlow thread counts to time')
    group.add_argument('--tflite_runs', type=int, default=bench_tflite.DEFAULT_RUNS,
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
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_layer_warnings()
    stages = _all_stages()
    names = parse_comma_list(args.stages)
    unknown = [n for n in names if n not in stages]
    if unknown:
        print('ERROR: unknown stage(s) %s; choose from %s.'
              % (', '.join(unknown), ', '.join(stages)), file=sys.stderr)
        return 2
    context = Context(args)
    report = collections.OrderedDict()
    report['machine'] = machine.machine_info()
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
            report['stages'][name]['load_average_after'] = machine.load_average()
    finally:
        context.close()
    report['load_average_after'] = machine.load_average()
    report['summary'] = collections.OrderedDict(
        (k, list(v) if isinstance(v, tuple) else v) for k, v in summarize(report).items())
    if args.json:
        print(json.dumps(report))
    else:
        print(format_table(report))
    return 0


if __name__ == '__main__':
    sys.exit(main())
