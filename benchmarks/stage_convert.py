"""The convert stage: dataset/voc_to_tfrecords.convert_dataset on the generated VOC sample
(--num_images), median of --repeats conversions into fresh folders; images/s in total and per
core."""
import collections
import shutil
import statistics
import tempfile
import time

from benchmarks import machine
from benchmarks.sample_data import convert_sample


def bench_convert(args, context):
    """dataset/voc_to_tfrecords.convert_dataset on the generated VOC sample."""
    voc_root = context.voc_root()
    rates, seconds_all, images = [], [], 0
    for _ in range(args.repeats):
        out = tempfile.mkdtemp(prefix='bench_ssd_convert_')
        try:
            start = time.perf_counter()
            manifest = convert_sample(voc_root, out, train_shards=args.convert_shards,
                                      validation_shards=args.convert_shards,
                                      num_threads=args.convert_threads)
            seconds = time.perf_counter() - start
        finally:
            shutil.rmtree(out, ignore_errors=True)
        images = sum(int(s['images']) for s in manifest['splits'].values())
        rates.append(images / seconds)
        seconds_all.append(seconds)
    cores = machine.cpu_count()
    rate = statistics.median(rates)
    return collections.OrderedDict([
        ('images_per_run', images), ('threads', args.convert_threads),
        ('shards_per_split', args.convert_shards),
        ('images_per_s', round(rate, 1)), ('images_per_s_per_core', round(rate / cores, 1)),
        ('runs_images_per_s', [round(r, 1) for r in rates]),
        ('seconds', round(sum(seconds_all), 2))])
