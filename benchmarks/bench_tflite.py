"""Batch-1 latency and file size of exported SSD300 models: SavedModel fp32 beside TFLite, ONNX
and OpenVINO files.

    python3 benchmarks/bench_tflite.py --saved_model logs/export/1700000000 \\
        --tflite logs/tflite/model.tflite --tflite logs/tflite/model_int8.tflite --threads 1,2

Each (model, thread count) runs in its own process (TensorFlow's thread pools are fixed at
start-up) on one 300x300 image: the SavedModel on its JPEG bytes (decode, resize and
post-processing included, as served), a TFLite model on the resized image it takes
(utility/inference/runner.py; post-processing included). Median of --runs calls after
2 warm-ups.

The tflite stage of bench_ssd.py (`--stages tflite`, function bench_tflite; not in the default
list): one checkpoint (--tflite_checkpoint; default a 1-step stand-in trained on the sample)
exported with export_ssd.py as a SavedModel (fp32), a TFLite fp32 and a TFLite int8 file
(calibrated on the sample records): sizes, batch-1 ms per image at each --tflite_threads (each
in its own process), int8's speed-ups and size share against the targets (2x the SavedModel,
1.5x TFLite fp32, 30% of its size).

The export stage (`--stages export`, function bench_exports): the same checkpoint also as ONNX
and OpenVINO IR (FP32), and beside each model's ms per image its VOC07 and VOC2010+ mAP on the
data's val records (eval_ssd.py; the SavedModel's row scores the checkpoint it was exported
from): one table of every format. A format whose optional packages (requirements-export.txt)
are missing gets a one-line note instead of its row.
"""
import argparse
import collections
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Thread counts and timed calls per measurement, of this script and of the stage alike.
DEFAULT_THREADS = '1,2'
DEFAULT_RUNS = 7


def model_size(path):
    """Bytes of a file (an OpenVINO .xml with its .bin), or of every file under a SavedModel
    folder."""
    if path.endswith('.xml'):
        return os.path.getsize(path) + os.path.getsize(path[:-len('.xml')] + '.bin')
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(path, '**'), recursive=True)
               if os.path.isfile(p))


def time_one(path, threads, runs):
    """Median and min seconds of one call of the model at `path` with `threads` threads."""
    import numpy as np
    sys.path.insert(0, REPO_ROOT)
    image = np.random.RandomState(0).randint(0, 256, (300, 300, 3)).astype(np.uint8)
    if os.path.isfile(path):  # .tflite, .onnx, .xml: utility/inference/runner.py
        from utility.inference import runner
        detector = runner.open_detector(path, threads)
        x = image[np.newaxis].astype(np.float32)

        def call():
            return detector.detect(x)
    else:
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        serve = tf.saved_model.load(path).signatures['serving_default']
        encoded = tf.constant([tf.io.encode_jpeg(image).numpy()])

        def call():
            return serve(encoded_image=encoded)
    call()
    call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(min(times))


def measure(path, threads, runs):
    """(median, min) seconds of one batch-1 call of the model at `path` with `threads` threads,
    timed in a fresh process (TensorFlow's thread pools are fixed at start-up)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), '--_one', path,
                           str(threads), '--runs', str(runs)], capture_output=True, text=True,
                          env=env)
    if proc.returncode != 0:
        raise RuntimeError('%s with %d thread(s) failed: %s' % (
            path, threads, (proc.stderr.strip().splitlines() or ['?'])[-1]))
    median, best = (float(v) for v in proc.stdout.split()[-2:])
    return median, best


# What the stage exports, in its table's order: name -> export_ssd.py flags.
EXPORTS = (('saved_model_fp32', ['--format=saved_model']),
           ('tflite_fp32', ['--format=tflite']),
           ('tflite_int8', ['--format=tflite', '--quantize=int8']))
# The export stage's: those and the formats of the optional packages.
ALL_EXPORTS = EXPORTS + (('onnx', ['--format=onnx']), ('openvino_fp32', ['--format=openvino']))


def export_models(checkpoint, export_dir, calibration_data, calibration_images, exports=EXPORTS,
                  unavailable=None):
    """Exports `checkpoint` as `exports` into `export_dir` with export_ssd.py; returns
    name -> path of the SavedModel folder or model file. With `unavailable` (a dict), a format
    whose optional package is missing is recorded there (name -> export_ssd.py's error line)
    instead of raising."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
    paths = {}
    for name, flags in exports:
        out = os.path.join(export_dir, name)
        command = [sys.executable, os.path.join(REPO_ROOT, 'export_ssd.py'),
                   '--checkpoint_path=' + checkpoint, '--export_dir=' + out] + flags
        if '--quantize=int8' in flags:
            command += ['--calibration_data=' + calibration_data,
                        '--calibration_images=%d' % calibration_images]
        proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
        last = (proc.stderr.strip().splitlines() or ['?'])[-1]
        if (proc.returncode == 2 and unavailable is not None
                and 'needs the optional package' in last):
            unavailable[name] = last
            continue
        if proc.returncode != 0:
            raise RuntimeError('export_ssd.py %s failed: %s' % (' '.join(flags), (
                proc.stderr.strip().splitlines() or ['?'])[-1]))
        # export_ssd.py's last line: '... written to <path>'
        found = proc.stdout.strip().splitlines()[-1].split(' written to ')[-1]
        if not os.path.exists(found):
            raise RuntimeError('export_ssd.py %s wrote no %s' % (' '.join(flags), found))
        paths[name] = found
    return paths


def voc_map(model, data_dir, checkpoint):
    """(VOC07, VOC2010+) mAP of eval_ssd.py on the val records of `data_dir`: of the exported
    model file `model` (--model), or of `checkpoint` where `model` is a SavedModel folder."""
    import json
    with tempfile.TemporaryDirectory() as out:
        source = (['--model=' + model] if os.path.isfile(model)
                  else ['--checkpoint_path=' + checkpoint, '--precision=fp32'])
        proc = subprocess.run(
            [sys.executable, os.path.join(REPO_ROOT, 'eval_ssd.py'), '--data_dir=' + data_dir,
             '--output_dir=' + out, '--batch_size=2'] + source, capture_output=True, text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'), cwd=REPO_ROOT)
        if proc.returncode != 0:
            raise RuntimeError('eval_ssd.py %s failed: %s' % (' '.join(source), (
                proc.stderr.strip().splitlines() or ['?'])[-1]))
        with open(os.path.join(out, 'metrics.json')) as f:
            metrics = json.load(f)
    return metrics['map_07'], metrics['map_area']


def compare(paths, threads, runs):
    """The stage's result: per model its size and median/min ms per image at each thread
    count; then int8's speed-ups and size share against the float models, with the targets
    (int8 >= 2x the SavedModel, >= 1.5x TFLite fp32, file <= 30% of TFLite fp32)."""
    result = collections.OrderedDict()
    for name, path in paths.items():
        entry = collections.OrderedDict(size_mb=round(model_size(path) / 1e6, 1))
        for n in threads:
            median, best = measure(path, n, runs)
            entry['ms_%d_threads' % n] = round(1000 * median, 1)
            entry['ms_min_%d_threads' % n] = round(1000 * best, 1)
        result[name] = entry
    if {'saved_model_fp32', 'tflite_fp32', 'tflite_int8'} <= set(result):
        n = max(threads)
        int8 = result['tflite_int8']['ms_%d_threads' % n]
        result['threads_compared'] = n
        result['int8_speedup_over_saved_model'] = round(
            result['saved_model_fp32']['ms_%d_threads' % n] / int8, 2)
        result['int8_speedup_over_tflite_fp32'] = round(
            result['tflite_fp32']['ms_%d_threads' % n] / int8, 2)
        result['int8_size_share_of_tflite_fp32'] = round(
            result['tflite_int8']['size_mb'] / result['tflite_fp32']['size_mb'], 3)
        result['meets_targets'] = (result['int8_speedup_over_saved_model'] >= 2
                                   and result['int8_speedup_over_tflite_fp32'] >= 1.5
                                   and result['int8_size_share_of_tflite_fp32'] <= 0.3)
    return result


def bench_tflite(args, context, exports=EXPORTS, with_map=False):
    """SavedModel fp32, TFLite fp32 and TFLite int8 exports of one checkpoint: file sizes and
    batch-1 ms per image at each --tflite_threads (export_models, compare); with `exports`
    ALL_EXPORTS and `with_map` the export stage (bench_exports)."""
    from common.console import parse_number_list
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
        unavailable = {}
        paths = export_models(checkpoint, work, context.data_dir(), args.calibration_images,
                              exports, unavailable)
        threads = parse_number_list(args.tflite_threads, int, '--tflite_threads')
        result.update(compare(paths, threads, args.tflite_runs))
        if with_map:
            for name, path in paths.items():
                result[name]['map_voc07'], result[name]['map_voc2010'] = (
                    round(v, 4) for v in voc_map(path, context.data_dir(), checkpoint))
        for name, line in unavailable.items():
            result[name] = 'not measured: %s' % line
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def bench_exports(args, context):
    """Every export format of one checkpoint (ALL_EXPORTS): size, batch-1 ms per image at each
    --tflite_threads and mAP on the val records, in one table."""
    return bench_tflite(args, context, exports=ALL_EXPORTS, with_map=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--saved_model', default='', help='SavedModel folder (export_ssd.py).')
    parser.add_argument('--tflite', action='append', default=[],
                        help='A .tflite, .onnx or .xml file (export_ssd.py --format '
                             'tflite|onnx|openvino); repeat for more.')
    parser.add_argument('--threads', default=DEFAULT_THREADS, help='Comma list of thread counts.')
    parser.add_argument('--runs', type=int, default=DEFAULT_RUNS,
                        help='Timed calls per measurement.')
    parser.add_argument('--_one', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._one:
        median, best = time_one(args._one[0], int(args._one[1]), args.runs)
        print('%.6f %.6f' % (median, best))
        return 0
    models = ([args.saved_model] if args.saved_model else []) + args.tflite
    if not models:
        parser.error('pass --saved_model and/or --tflite')
    threads = [int(t) for t in args.threads.split(',') if t.strip()]
    print('load average %.2f; median (min) ms per image, batch 1' % os.getloadavg()[0])
    print('%-40s %9s %s' % ('model', 'MB', '  '.join('%d thread(s)' % t for t in threads)))
    for path in models:
        cells = []
        for n in threads:
            try:
                median, best = measure(path, n, args.runs)
            except RuntimeError as err:
                sys.exit('error: %s' % err)
            cells.append('%7.1f (%6.1f)' % (1000 * median, 1000 * best))
        print('%-40s %9.1f %s' % (os.path.basename(path.rstrip('/')) or path,
                                  model_size(path) / 1e6, '  '.join(cells)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
