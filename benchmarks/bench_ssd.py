r"""SSD300 benchmarks: a table of stages, each measured on its own.

    python3 benchmarks/bench_ssd.py                       # every stage, printed as a table
    python3 benchmarks/bench_ssd.py --stages input --json # one JSON object on stdout

This file is the runner: the flags, the choice of stages, calling them and the report.  The
stages live one family per module; each module's docstring says what its stages measure.  Add
a stage by writing `def bench_<name>(args, context) -> dict` in its family's module and
registering it in `STAGES` (or `EXTRA_STAGES`, not in the default list) below.

  input                               benchmarks/stage_input.py
  train, kernels, backbones, infer    benchmarks/stage_model.py (their TF graphs run in worker
                                      processes, benchmarks/workers.py; the FLOP count is
                                      benchmarks/flops.py)
  metric, coco_metric                 benchmarks/stage_metric.py
  convert                             benchmarks/stage_convert.py
  tflite, export                      benchmarks/bench_tflite.py (also a command of its own)

Beside them: context.py (what the stages of one run share), sample_data.py (the generated
sample), timing.py (how figures are taken), machine.py (the machine line), report.py (the table
and the summary with targets).

--backbone (default vgg16) picks the network of the input, train and infer stages.
--trace_dir writes one step's Chrome trace per TF worker (chrome://tracing) and adds the top op
types by time to the output.  Experiments: --inter_op / --intra_op (thread pools), --xla,
--bf16, and the environment (TF_ENABLE_ONEDNN_OPTS=0 turns oneDNN off; the machine line says
which was used).

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
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from benchmarks import (bench_tflite, machine, stage_convert, stage_input,  # noqa: E402
                        stage_metric, stage_model)
from benchmarks.context import Context  # noqa: E402
from benchmarks.report import format_table, summarize  # noqa: E402
from benchmarks.workers import quiet_layer_warnings  # noqa: E402
from common.console import parse_comma_list  # noqa: E402

# name -> (function, one-line description). Other stages are added here.
STAGES = collections.OrderedDict([
    ('input', (stage_input.bench_input,
               'training input pipeline: TFRecords -> decode -> augment -> encode targets -> '
               'batch -> prefetch')),
    ('train', (stage_model.bench_train,
               'model_fn TRAIN step at batch 8 and 16: images/s, GFLOP/s, ratio to a large '
               'conv, peak memory')),
    ('infer', (stage_model.bench_infer,
               'model_fn PREDICT: network vs network + post-processing')),
    ('metric', (stage_metric.bench_metric, 'VOC metric on a VOC07-test-sized random set')),
    ('convert', (stage_convert.bench_convert,
                 'VOC folders -> TFRecords (convert_dataset) on the sample')),
])
# Stages that can be asked for but are not in the default list (train reports them too).
EXTRA_STAGES = collections.OrderedDict([
    ('kernels', (stage_model.bench_kernels, 'large 3x3 conv and matmul GFLOP/s only')),
    ('backbones', (stage_model.bench_backbones,
                   'each --backbones: training GFLOP/image and images/s')),
    ('coco_metric', (stage_metric.bench_coco_metric,
                     'COCO metric (pycocotools) on a val2017-sized random set; '
                     'faster-coco-eval beside it when installed')),
    ('tflite', (bench_tflite.bench_tflite,
                'SavedModel fp32, TFLite fp32 and int8 of one checkpoint: sizes, batch-1 ms '
                'per image at each --tflite_threads')),
    ('export', (bench_tflite.bench_exports,
                'the tflite stage plus ONNX and OpenVINO of the same checkpoint, each with its '
                'VOC mAP on the val records: one table of every format')),
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
    group = parser.add_argument_group('tflite / export stages')
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
    group.add_argument('--metric_images', type=int, default=stage_metric.VOC07_TEST_IMAGES,
                       help='images in the metric\'s random set (VOC07 test: 4952)')
    group.add_argument('--metric_repeats', type=int, default=3,
                       help='timed runs; the best is reported')
    group.add_argument('--coco_images', type=int, default=stage_metric.VAL2017_IMAGES,
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
