"""The input stage: the training input pipeline exactly as training builds it
(utility.ssd_model.make_input_fn): read the sample TFRecords, decode, full training
augmentation, target encoding against the 8732 anchors, batch (--batch_size), prefetch.
Reports images/s after warm-up (median of --repeats runs), in total and per core.  With
--breakdown it also measures each part alone on the same data: read + parse + decode,
augmentation (on decoded images held in memory), target encoding (on augmented boxes held in
memory)."""
import collections
import os

import tensorflow as tf

from benchmarks import machine
from benchmarks.sample_data import SAMPLE_SEED
from benchmarks.timing import time_batches


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


def bench_input(args, context):
    """The training input pipeline of utility.ssd_model.make_input_fn, and its parts alone."""
    from utility import ssd_model
    cores = machine.cpu_count()
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
