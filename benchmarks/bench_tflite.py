"""Batch-1 latency and file size of exported SSD300 models: SavedModel fp32 beside TFLite files.

    python3 benchmarks/bench_tflite.py --saved_model logs/export/1700000000 \\
        --tflite logs/tflite/model.tflite --tflite logs/tflite/model_int8.tflite --threads 1,2

Each (model, thread count) runs in its own process (TensorFlow's thread pools are fixed at
start-up) on one 300x300 image: the SavedModel on its JPEG bytes (decode, resize and
post-processing included, as served), a TFLite model on the resized image it takes
(utility/tflite_runner.py; post-processing included). Median of --runs calls after 2 warm-ups.
"""
import argparse
import glob
import os
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def model_size(path):
    """Bytes of a file, or of every file under a SavedModel folder."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(path, '**'), recursive=True)
               if os.path.isfile(p))


def time_one(path, threads, runs):
    """Median and min seconds of one call of the model at `path` with `threads` threads."""
    import numpy as np
    sys.path.insert(0, REPO_ROOT)
    image = np.random.RandomState(0).randint(0, 256, (300, 300, 3)).astype(np.uint8)
    if path.endswith('.tflite'):
        from utility import tflite_runner
        detector = tflite_runner.Detector(path, threads)
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--saved_model', default='', help='SavedModel folder (export_ssd.py).')
    parser.add_argument('--tflite', action='append', default=[],
                        help='A .tflite file (export_ssd.py --format tflite); repeat for more.')
    parser.add_argument('--threads', default='1,2', help='Comma list of thread counts.')
    parser.add_argument('--runs', type=int, default=7, help='Timed calls per measurement.')
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
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
    print('load average %.2f; median (min) ms per image, batch 1' % os.getloadavg()[0])
    print('%-40s %9s %s' % ('model', 'MB', '  '.join('%d thread(s)' % t for t in threads)))
    for path in models:
        cells = []
        for n in threads:
            proc = subprocess.run([sys.executable, __file__, '--_one', path, str(n),
                                   '--runs', str(args.runs)], capture_output=True, text=True,
                                  env=env)
            if proc.returncode != 0:
                sys.exit('error: %s with %d thread(s) failed: %s'
                         % (path, n, (proc.stderr.strip().splitlines() or ['?'])[-1]))
            median, best = (float(v) for v in proc.stdout.split()[-2:])
            cells.append('%7.1f (%6.1f)' % (1000 * median, 1000 * best))
        print('%-40s %9.1f %s' % (os.path.basename(path.rstrip('/')) or path,
                                  model_size(path) / 1e6, '  '.join(cells)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
