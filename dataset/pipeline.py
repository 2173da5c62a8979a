"""The tf.data input pipeline over the converter's TFRecord shards: the shard list, the
batched and padded dataset (records parsed by dataset/records.py)."""

import os

import tensorflow as tf

from dataset.manifest import CONVERTER_HINT
from dataset.records import parse_example


def _map_nested(fn, structure, key=None):
    """Applies fn(leaf, key_of_innermost_dict) over dicts, tuples and lists."""
    if isinstance(structure, dict):
        return type(structure)((k, _map_nested(fn, v, k)) for k, v in structure.items())
    if isinstance(structure, tuple) and hasattr(structure, '_fields'):
        return type(structure)(*[_map_nested(fn, v, k)
                                 for k, v in zip(structure._fields, structure)])
    if isinstance(structure, (tuple, list)):
        return type(structure)(_map_nested(fn, v, key) for v in structure)
    return fn(structure, key)


def default_padding_values(element_spec):
    """Padding values for ``padded_batch``: -1 for integer tensors whose dict key
    contains 'label', b'' for strings, 0 (False) for everything else.

    Args:
      element_spec: nested structure of ``tf.TensorSpec`` (``dataset.element_spec``).
    Returns:
      The same structure of scalar constants.
    """
    def pad(spec, key):
        dtype = spec.dtype
        if dtype == tf.string:
            return tf.constant('', dtype)
        if dtype.is_integer and key is not None and 'label' in str(key):
            return tf.constant(-1, dtype)
        return tf.constant(0, dtype) if dtype != tf.bool else tf.constant(False)
    return _map_nested(pad, element_spec)


def list_shards(file_pattern):
    """Sorted list of files matching ``file_pattern`` (a glob or list of globs).

    Raises:
      ValueError: nothing matches; the message names the pattern and the
        converter command that creates the shards.
    """
    patterns = [file_pattern] if isinstance(file_pattern, (str, bytes)) else list(file_pattern)
    files = []
    for pattern in patterns:
        files.extend(tf.io.gfile.glob(pattern))
    files = sorted(set(files))
    if not files:
        raise ValueError('No TFRecord files match %r; create them with: %s (or fix the '
                         'data directory).' % (file_pattern, CONVERTER_HINT))
    return files


def describe_files(files):
    """'<first path>' or '<first path> ... <base name of the last>' for messages."""
    if len(files) == 1:
        return files[0]
    return '%s ... %s' % (files[0], os.path.basename(files[-1]))


def build_dataset(file_pattern, map_fn, batch_size, is_training, num_readers=8,
                  num_parallel_calls=tf.data.AUTOTUNE, shuffle_buffer=1024, seed=None,
                  drop_remainder=False, padding_values=None, num_epochs=None,
                  num_shards=1, shard_index=0):
    """Batched ``tf.data.Dataset`` over the converter's TFRecord shards.

    Pipeline: shard list (shuffled when training) -> parallel interleave of
    ``num_readers`` TFRecord readers -> example shuffle (training) -> repeat
    (training; ``num_epochs`` times, None = forever) -> parallel map of
    ``map_fn(parse_example(record))`` -> ``padded_batch`` -> prefetch.

    Args:
      file_pattern: glob (or list of globs) of TFRecord shards, e.g.
        'dataset/tfrecords/train-*'.
      map_fn: takes the ``parse_example`` dict and returns any nested
        structure of tensors, usually a ``(features, labels)`` pair of dicts.
        ``None`` keeps the parsed dict.
      batch_size: examples per batch.
      is_training: shuffle and repeat when True; one ordered pass with the
        final partial batch kept when False (unless ``drop_remainder``).
      num_readers: files read in parallel.
      num_parallel_calls: parallelism of the map.
      shuffle_buffer: example shuffle buffer size (training only).
      seed: shuffle seed; with a seed (or when evaluating) the element order is
        deterministic.
      drop_remainder: drop the final partial batch (static batch dimension).
      padding_values: nested structure like the map_fn output; default
        ``default_padding_values`` (labels -1, boxes 0). Variable-length
        dimensions are padded to the longest in the batch.
      num_epochs: training epochs (None = repeat forever); ignored when
        evaluating.
      num_shards, shard_index: multi-worker training: this worker reads part
        ``shard_index`` of ``num_shards`` disjoint parts of the data. With at
        least as many files as parts, whole files are dealt out in sorted
        order (file i goes to part i % num_shards: no file is read twice);
        otherwise every worker reads all files in the same deterministic
        order and keeps record j if j % num_shards == shard_index (before
        shuffling and decoding).
    Returns:
      A ``tf.data.Dataset`` of batched, padded ``map_fn`` outputs.
    Raises:
      ValueError: no file matches ``file_pattern``.
    """
    files = list_shards(file_pattern)
    deterministic = (not is_training) or seed is not None
    num_shards, shard_index = int(num_shards), int(shard_index)
    if not 0 <= shard_index < num_shards:
        raise ValueError('shard_index %d is not in 0..%d (num_shards=%d).'
                         % (shard_index, num_shards - 1, num_shards))
    shard_records = num_shards > 1 and len(files) < num_shards
    if num_shards > 1 and not shard_records:
        files = files[shard_index::num_shards]
    if shard_records:
        deterministic = True  # every worker must see the records in the same order
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if is_training:
        dataset = dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=max(1, min(int(num_readers), len(files))),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic)
    if shard_records:
        dataset = dataset.shard(num_shards, shard_index)
    if is_training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.repeat(num_epochs)

    def parse_and_map(serialized):
        parsed = parse_example(serialized)
        return parsed if map_fn is None else map_fn(parsed)

    dataset = dataset.map(parse_and_map, num_parallel_calls=num_parallel_calls,
                          deterministic=deterministic)
    if padding_values is None:
        padding_values = default_padding_values(dataset.element_spec)
    dataset = dataset.padded_batch(batch_size, padding_values=padding_values,
                                   drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)
