"""The VOC label table and the tf.data reader for the converter's TFRecords.

Record format (one ``tf.train.Example`` per image, written by
``dataset/voc_to_tfrecords.py``; records of the original scripts use the same
keys and load too):

    image/encoded                 bytes   JPEG, RGB
    image/format                  bytes   b'jpeg'
    image/filename                bytes   '<image id>.jpg'
    image/height, image/width, image/channels    int64
    image/shape                   int64 [3]  (height, width, channels)
    image/object/bbox/{xmin,ymin,xmax,ymax}      float [N], normalized
    image/object/bbox/label       int64 [N]  VOC_LABELS index (1..20)
    image/object/bbox/label_text  bytes [N]  class name
    image/object/bbox/difficult   int64 [N]
    image/object/bbox/truncated   int64 [N]

Pixel convention (the seed's): a VOC 1-based pixel coordinate ``v`` is stored as
``v / width`` (x) or ``v / height`` (y); back to pixels is ``normalized * width``.
"""

import json
import os

import tensorflow as tf

# Index = label id. 0 is background; 1..20 are the VOC classes in the
# standard (alphabetical) VOC order.
VOC_LABELS = (
    'none',
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle',
    'bus', 'car', 'cat', 'chair', 'cow',
    'diningtable', 'dog', 'horse', 'motorbike', 'person',
    'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor',
)
LABEL_IDS = {name: index for index, name in enumerate(VOC_LABELS)}
NUM_CLASSES = len(VOC_LABELS)  # 21, background included

MANIFEST_NAME = 'manifest.json'
CONVERTER_HINT = ('python3 dataset/convert_voc_sample_tfrecords.py --dataset_directory=dataset/ '
                  '--output_directory=dataset/tfrecords --train_splits VOC2012_sample '
                  '--validation_splits VOC2012_sample')

# The annotation keys both parsers read; parse_example adds the image bytes,
# parse_ground_truth the stored image size.
_GROUND_TRUTH_FEATURES = {
    'image/filename': tf.io.FixedLenFeature((), tf.string, default_value=''),
    'image/object/bbox/xmin': tf.io.VarLenFeature(tf.float32),
    'image/object/bbox/ymin': tf.io.VarLenFeature(tf.float32),
    'image/object/bbox/xmax': tf.io.VarLenFeature(tf.float32),
    'image/object/bbox/ymax': tf.io.VarLenFeature(tf.float32),
    'image/object/bbox/label': tf.io.VarLenFeature(tf.int64),
    'image/object/bbox/difficult': tf.io.VarLenFeature(tf.int64),
    'image/object/bbox/truncated': tf.io.VarLenFeature(tf.int64),
}
_IMAGE_FEATURES = {
    **_GROUND_TRUTH_FEATURES,
    'image/encoded': tf.io.FixedLenFeature((), tf.string),
}
_SIZE_FEATURES = {
    **_GROUND_TRUTH_FEATURES,
    'image/height': tf.io.FixedLenFeature((), tf.int64, default_value=0),
    'image/width': tf.io.FixedLenFeature((), tf.int64, default_value=0),
}


def _annotations(parsed):
    """filename, boxes, labels, difficult, truncated from a parse of _GROUND_TRUTH_FEATURES."""
    def dense(key, dtype):
        return tf.cast(tf.sparse.to_dense(parsed[key]), dtype)

    boxes = tf.stack([dense('image/object/bbox/ymin', tf.float32),
                      dense('image/object/bbox/xmin', tf.float32),
                      dense('image/object/bbox/ymax', tf.float32),
                      dense('image/object/bbox/xmax', tf.float32)], axis=1)
    labels = dense('image/object/bbox/label', tf.int32)
    num_boxes = tf.shape(labels)[0]

    def flags(key):
        values = dense(key, tf.int32)
        return tf.cond(tf.equal(tf.shape(values)[0], num_boxes),
                       lambda: values, lambda: tf.zeros([num_boxes], tf.int32))

    return {
        'filename': parsed['image/filename'],
        'boxes': tf.reshape(boxes, [-1, 4]),
        'labels': labels,
        'difficult': flags('image/object/bbox/difficult'),
        'truncated': flags('image/object/bbox/truncated'),
    }


def parse_example(serialized):
    """Parses one serialized ``tf.train.Example`` (a string scalar tensor).

    Returns a dict:
      image:     uint8 [H, W, 3], RGB (decoded from image/encoded)
      filename:  string scalar
      shape:     int32 [3], (height, width, 3) of the decoded image
      boxes:     float32 [N, 4], [ymin, xmin, ymax, xmax] normalized (see the
                 module docstring for the pixel convention)
      labels:    int32 [N], 1..20 (VOC_LABELS index)
      difficult: int32 [N]
      truncated: int32 [N]
    Missing difficult/truncated lists (or lists of the wrong length) read as 0.
    """
    parsed = tf.io.parse_single_example(serialized, _IMAGE_FEATURES)
    image = tf.io.decode_jpeg(parsed['image/encoded'], channels=3)
    image.set_shape([None, None, 3])
    annotations = _annotations(parsed)
    return {
        'image': image,
        'filename': annotations.pop('filename'),
        'shape': tf.shape(image, out_type=tf.int32),
        **annotations,
    }


def parse_ground_truth(serialized):
    """Parses the annotations of one serialized ``tf.train.Example`` without
    reading or decoding the image (fast: for scoring, not for training).

    Returns a dict:
      filename:  string scalar
      height, width: int32 scalars, the stored image/height and image/width
                 (0 when the record lacks them)
      boxes, labels, difficult, truncated: as ``parse_example``.
    """
    parsed = tf.io.parse_single_example(serialized, _SIZE_FEATURES)
    annotations = _annotations(parsed)
    return {
        'filename': annotations.pop('filename'),
        'height': tf.cast(parsed['image/height'], tf.int32),
        'width': tf.cast(parsed['image/width'], tf.int32),
        **annotations,
    }


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


def read_manifest(data_dir):
    """Loads ``<data_dir>/manifest.json`` written by the converter.

    Returns:
      dict with 'splits' -> {'train': {...}, 'val': {...}} (images, objects per
      class, difficult, truncated, skipped images, dropped boxes, shards, ...)
      and 'pixel_convention'.
    Raises:
      FileNotFoundError / ValueError: the manifest is missing or unreadable; the
        message says to run the converter.
    """
    path = os.path.join(data_dir, MANIFEST_NAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError('No %s in %s; convert the data first with: %s'
                                % (MANIFEST_NAME, data_dir, CONVERTER_HINT))
    with tf.io.gfile.GFile(path, 'r') as f:
        text = f.read()
    try:
        manifest = json.loads(text)
    except ValueError as e:
        raise ValueError('%s is not valid JSON (%s); rerun the converter to rewrite it.'
                         % (path, e))
    if not isinstance(manifest, dict) or not isinstance(manifest.get('splits'), dict):
        raise ValueError('%s has no "splits" table; rerun the converter to rewrite it.' % path)
    return manifest


_SPLIT_ALIASES = {'validation': 'val', 'eval': 'val', 'test': 'val'}


def num_examples(data_dir, split):
    """Number of images written for ``split`` ('train' or 'val'; 'validation'
    and 'eval' mean 'val') according to the manifest in ``data_dir``."""
    splits = read_manifest(data_dir)['splits']
    name = split if split in splits else _SPLIT_ALIASES.get(split, split)
    if name not in splits:
        raise ValueError('Split %r is not in %s (it has: %s); convert it with the '
                         'converter\'s --%s_splits flag.'
                         % (split, os.path.join(data_dir, MANIFEST_NAME),
                            ', '.join(sorted(splits)) or 'nothing',
                            'train' if name == 'train' else 'validation'))
    return int(splits[name]['images'])
