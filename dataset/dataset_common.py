"""The VOC label table (the default label map), label files and the tf.data reader for the converter's TFRecords.

Record format (one ``tf.train.Example`` per image, written by
``dataset/voc_to_tfrecords.py``; records of the original scripts use the same
keys and load too):

    image/encoded                 bytes   JPEG, RGB
    image/format                  bytes   b'jpeg'
    image/filename                bytes   '<image id>.jpg'
    image/height, image/width, image/channels    int64
    image/shape                   int64 [3]  (height, width, channels)
    image/object/bbox/{xmin,ymin,xmax,ymax}      float [N], normalized
    image/object/bbox/label       int64 [N]  label map index (1..C-1; VOC: VOC_LABELS, 1..20)
    image/object/bbox/label_text  bytes [N]  class name
    image/object/bbox/difficult   int64 [N]
    image/object/bbox/truncated   int64 [N]
    image/object/bbox/iscrowd     int64 [N]  1: a COCO crowd region (never a training positive;
                                  the metrics ignore detections on it); absent reads as 0
    image/source_id               bytes      the source's image id (COCO: its image_id); optional

Pixel conventions (each converter records its own in the manifest's 'pixel_convention'):
  * VOC (the original's): a 1-based pixel coordinate ``v`` is stored as ``v / width`` (x) or
    ``v / height`` (y); back to pixels is ``normalized * width``.
  * COCO: ``bbox [x, y, w, h]`` in 0-based continuous pixels is stored exactly as
    ``x / width``, ``(x + w) / width`` (and likewise for y), no 1-pixel shift; back to COCO's
    ``[x, y, w, h]`` is ``[xmin * width, ymin * height, (xmax - xmin) * width, ...]``.
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
# Present in a converter's output folder while a conversion runs; removed when every split is
# written. Still there: the conversion was killed and the splits may come from two runs.
INCOMPLETE_NAME = 'conversion.incomplete'


class LabelMapError(ValueError):
    """A label file that cannot be used; the message is one line naming the file."""


def read_label_map(path):
    """Class names of a label file: one name per line, index = line order + 1.

    Blank lines and surrounding whitespace are ignored; the background 'none' is implied at
    index 0 (a 'none' line in the file is an error, as is any name listed twice).

    Returns:
      tuple ('none', name1, name2, ...): index = label id, like VOC_LABELS.
    Raises:
      LabelMapError (a ValueError): unreadable or empty file, a duplicate or a 'none' line;
        one line naming the file.
    """
    try:
        with open(path, 'r', encoding='utf-8-sig') as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LabelMapError('cannot read the label file %s (%s); pass a text file with one '
                            'class name per line' % (path, getattr(e, 'strerror', None) or e))
    names, seen = [], {}
    for number, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            continue
        if name == VOC_LABELS[0]:
            raise LabelMapError('label file %s line %d: %r is the implied background (label '
                                '0); list only the object classes' % (path, number, name))
        if name in seen:
            raise LabelMapError('label file %s lists class %r twice (lines %d and %d); list '
                                'each class once' % (path, name, seen[name], number))
        seen[name] = number
        names.append(name)
    if not names:
        raise LabelMapError('label file %s has no class names; write one class name per line'
                            % path)
    return (VOC_LABELS[0],) + tuple(names)


def source_from_manifest(data_dir):
    """What ``<data_dir>/manifest.json`` says about where the records came from:
    {'source': 'voc' | 'coco', 'category_ids': [the source's category id of label 1, 2, ...]
    or None, 'anchor_preset': the preset the converter suggests or None}. Without a manifest
    (or for a manifest of an older converter) the source is 'voc'."""
    try:
        manifest = read_manifest(data_dir)
    except (FileNotFoundError, ValueError):
        manifest = {}
    ids = manifest.get('category_ids')
    return {'source': manifest.get('source') or 'voc',
            'category_ids': [int(i) for i in ids] if isinstance(ids, list) else None,
            'anchor_preset': manifest.get('anchor_preset')}


def labels_from_manifest(data_dir):
    """The class names (index = label id, 'none' first) recorded in ``<data_dir>/manifest.json``
    by the converter, or None when there is no manifest or it has no 'labels' list (records
    of the original scripts: VOC names)."""
    try:
        manifest = read_manifest(data_dir)
    except FileNotFoundError:
        return None
    labels = manifest.get('labels')
    if not isinstance(labels, list) or len(labels) < 2 or not all(
            isinstance(name, str) for name in labels):
        return None
    return tuple(labels)
def labels_in_records(files):
    """{label id: class name} that the records of `files` carry (image/object/bbox/label with
    image/object/bbox/label_text, object by object), read through tf.data in a private
    graph without decoding images. Records without label_text add nothing.

    Raises:
      ValueError: one label carries two names, or one name two labels (one line).
    """
    features = {'image/object/bbox/label': tf.io.VarLenFeature(tf.int64),
                'image/object/bbox/label_text': tf.io.VarLenFeature(tf.string)}

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, features)
        labels, texts = (parsed['image/object/bbox/label'],
                         parsed['image/object/bbox/label_text'])
        # Objects whose record has as many names as labels, in the same order.
        per_record = tf.math.bincount(tf.cast(labels.indices[:, 0], tf.int32),
                                      minlength=tf.shape(serialized)[0])
        named = tf.math.bincount(tf.cast(texts.indices[:, 0], tf.int32),
                                 minlength=tf.shape(serialized)[0])
        same = tf.gather(tf.equal(per_record, named), tf.cast(labels.indices[:, 0], tf.int32))
        texts_dense = tf.sparse.to_dense(texts, default_value='')
        text_of_label = tf.gather_nd(
            texts_dense, tf.boolean_mask(labels.indices, same))
        return tf.boolean_mask(labels.values, same), text_of_label

    names, labels_of = {}, {}
    with tf.Graph().as_default():
        dataset = tf.data.TFRecordDataset(list(files)).batch(256).map(parse)
        next_batch = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
        with tf.compat.v1.Session() as sess:
            while True:
                try:
                    labels, texts = sess.run(next_batch)
                except tf.errors.OutOfRangeError:
                    break
                for label, text in set(zip(labels.tolist(), texts.tolist())):
                    text = text.decode('utf-8', 'replace')
                    if not text:
                        continue
                    if names.setdefault(label, text) != text:
                        raise ValueError('The records in %s name label %d both %r and %r; '
                                         'reconvert them with one label file (--labels).'
                                         % (_describe_files(files), label, names[label], text))
                    if labels_of.setdefault(text, label) != label:
                        raise ValueError('The records in %s give class %r two labels, %d and %d; '
                                         'reconvert them with one label file (--labels).'
                                         % (_describe_files(files), text, labels_of[text],
                                            label))
    return names


def class_names_of(data_dir, split='train', known=None, log=None):
    """The class names (index = label id, 'none' first) of the records in `data_dir`, and
    where they come from: never a table that disagrees with the names the records carry.

    1. the converter's manifest.json ('labels');
    2. without one, the names the `split` records carry (`labels_in_records`): `known` (e.g.
       the class names a trained model recorded) or the VOC table when every record's
       (label, name) agrees with it, else the records' own names when they name every label
       from 1 up to the largest;
    3. records that carry no names: the VOC table.

    Returns:
      (names tuple, source): source is the manifest's path, 'params.json'-like text given by
      the caller through `known` = (names, source), the records' description, or None for
      the VOC table.
    Raises:
      ValueError: the records' names disagree with VOC (and `known`) and leave labels unnamed,
        or are inconsistent; one line naming them and the fix.
    """
    from common.console import notify
    recorded = labels_from_manifest(data_dir)
    if recorded is not None:
        return recorded, os.path.join(data_dir, MANIFEST_NAME)
    pattern = os.path.join(data_dir, _SPLIT_ALIASES.get(split, split) + '-*')
    files = list_shards(pattern)
    notify(log, 'No class names in %s: reading them from the label_text of %s.'
           % (os.path.join(data_dir, MANIFEST_NAME), pattern))
    named = labels_in_records(files)
    tables = ([tuple(known[0])] if known and known[0] else []) + [VOC_LABELS]
    sources = ([known[1]] if known and known[0] else []) + [None]
    for table, source in zip(tables, sources):
        if all(0 < label < len(table) and table[label] == name for label, name in named.items()):
            return table, source
    largest = max(named)
    unnamed = [k for k in range(1, largest + 1) if k not in named]
    if unnamed or min(named) < 1:
        raise ValueError('The records in %s name classes (%s) that are not the VOC classes and '
                         'leave label(s) %s unnamed, and %s is missing; reconvert them with '
                         '--labels <your label file> to write it.'
                         % (pattern, ', '.join('%d %s' % kv for kv in sorted(named.items())),
                            ', '.join(str(k) for k in unnamed) or '0',
                            os.path.join(data_dir, MANIFEST_NAME)))
    return ((VOC_LABELS[0],) + tuple(named[k] for k in range(1, largest + 1)),
            'the label_text of the records %s' % pattern)


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
    'image/object/bbox/iscrowd': tf.io.VarLenFeature(tf.int64),
    'image/source_id': tf.io.FixedLenFeature((), tf.string, default_value=''),
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
        'iscrowd': flags('image/object/bbox/iscrowd'),
        'source_id': parsed['image/source_id'],
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
      iscrowd:   int32 [N], 1 for COCO crowd regions
      source_id: string scalar, the source's image id ('' when the record has none)
    Missing difficult/truncated/iscrowd lists (or lists of the wrong length) read as 0.
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
      boxes, labels, difficult, truncated, iscrowd, source_id: as ``parse_example``.
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


# ----------------------------------------------------------------------------- shard checks
#
# Cheap checks the drivers run before training or evaluation, and the helper that turns a
# tf.errors.DataLossError raised while reading into a one-line error naming the shard.

CONVERTER_FIX = ('re-run the converter (dataset/convert_voc_sample_tfrecords.py or '
                 'dataset/convert_tfrecords.py) with the same flags to rewrite the shards')


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def _masked_crc32c(data):
    """TFRecord's masked CRC-32C (Castagnoli) of `data` (bytes); pure Python, for
    short inputs such as the 8-byte record length."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def count_shard_records(path):
    """Number of records in the uncompressed TFRecord file `path`, read from the record
    headers only (12 bytes per record; the payloads are skipped, not read).

    Checks every record's length checksum and that the last record ends exactly at the
    end of the file, which catches truncated files and files that are not TFRecords.
    Payload checksums are not verified here (tf.data verifies them while reading).

    Raises:
      ValueError: one line naming the file, the record and the fix.
    """
    size = tf.io.gfile.stat(path).length
    count = offset = 0
    with tf.io.gfile.GFile(path, 'rb') as f:
        while offset < size:
            header = f.read(12)
            if len(header) < 12:
                raise ValueError('TFRecord shard %s is truncated: record %d at byte %d is cut '
                                 'off (the file ends at byte %d); %s.'
                                 % (path, count, offset, size, CONVERTER_FIX))
            length = int.from_bytes(header[:8], 'little')
            if int.from_bytes(header[8:], 'little') != _masked_crc32c(header[:8]):
                raise ValueError('TFRecord shard %s is corrupt: the header of record %d at byte '
                                 '%d fails its checksum%s; %s.'
                                 % (path, count, offset,
                                    ' (is it a TFRecord file at all?)' if count == 0 else '',
                                    CONVERTER_FIX))
            end = offset + 12 + length + 4
            if end > size:
                raise ValueError('TFRecord shard %s is truncated: record %d at byte %d needs %d '
                                 'bytes but the file ends at byte %d; %s.'
                                 % (path, count, offset, end - offset, size, CONVERTER_FIX))
            f.seek(end)
            offset = end
            count += 1
    return count


def _first_record(paths):
    """{path: first serialized record or None (empty file)} read through tf.data, so the
    payload checksum is verified; runs in a private graph (works eager or not).

    Raises:
      ValueError: a payload fails its checksum; the message names the file.
    """
    records = {}
    with tf.Graph().as_default():
        name = tf.compat.v1.placeholder(tf.string, [])
        iterator = tf.compat.v1.data.make_initializable_iterator(
            tf.data.TFRecordDataset(name).take(1))
        get_next = iterator.get_next()
        with tf.compat.v1.Session() as sess:
            for path in paths:
                sess.run(iterator.initializer, {name: path})
                try:
                    records[path] = sess.run(get_next)
                except tf.errors.OutOfRangeError:
                    records[path] = None
                except tf.errors.DataLossError as e:
                    raise ValueError('TFRecord shard %s is corrupt: its first record cannot be '
                                     'read (%s); %s.' % (path, _first_line(e), CONVERTER_FIX))
    return records


def _first_line(error):
    """The line of a TF error message that says what went wrong (e.g. 'truncated record at
    1016'), without the node names and op tracebacks TF adds."""
    text = getattr(error, 'message', None) or str(error)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    pick = [line for line in lines if 'record' in line.lower()] or lines[-1:] or [
        type(error).__name__]
    line = pick[0]
    if '}}' in line:  # drop TF's '{{function_node ...}}' prefix
        line = line.split('}}', 1)[1].strip()
    line = line.replace("' failed with ", ': ')
    return line.split(' [Op:')[0].split('\t [[')[0].strip()


def _manifest_split(data_dir, split):
    """The manifest entry of `split`, or None when there is no readable manifest or no
    such split in it."""
    try:
        splits = read_manifest(data_dir)['splits']
    except (FileNotFoundError, ValueError):
        return None
    name = split if split in splits else _SPLIT_ALIASES.get(split, split)
    entry = splits.get(name)
    return entry if isinstance(entry, dict) else None


def validate_shards(files, expected_counts=None, manifest_path=None):
    """Cheap start-up check of TFRecord shards (headers only, plus each first record).

    Args:
      files: shard paths (e.g. from `list_shards`).
      expected_counts: optional {shard base name: records} (the manifest's
        'shard_files' / 'images_per_shard'); a shard that holds another number of records,
        or a listed shard that is missing from `files`, is an error.
      manifest_path: the manifest's path, only for the messages.
    Returns:
      {path: records} for every file.
    Raises:
      ValueError (one line naming the file and the fix): a truncated or corrupt shard, a
        first record that is not a tf.train.Example with 'image/encoded', a count that
        disagrees with the manifest, a missing shard, or no records in any file.
    """
    files = list(files)
    counts = {path: count_shard_records(path) for path in files}
    where = manifest_path or 'manifest.json'
    if expected_counts:
        present = {os.path.basename(path): path for path in files}
        for name, expected in sorted(expected_counts.items()):
            if name not in present:
                raise ValueError('TFRecord shard %s is missing: %s lists it with %d records; %s.'
                                 % (name, where, expected, CONVERTER_FIX))
            found = counts[present[name]]
            if found != int(expected):
                raise ValueError('TFRecord shard %s holds %d records but %s says %d; %s.'
                                 % (present[name], found, where, expected, CONVERTER_FIX))
    for path, record in _first_record([p for p in files if counts[p]]).items():
        try:
            example = tf.train.Example.FromString(record)
        except Exception:  # protobuf raises DecodeError and friends
            example = None
        if example is None or 'image/encoded' not in example.features.feature:
            raise ValueError('TFRecord shard %s does not hold images: its first record is not a '
                             'tf.train.Example with image/encoded; %s.' % (path, CONVERTER_FIX))
    if files and not any(counts.values()):
        raise ValueError('The %d TFRecord shard(s) %s hold no records, so there is nothing to '
                         'read; %s.' % (len(files), _describe_files(files), CONVERTER_FIX))
    return counts


def _describe_files(files):
    if len(files) == 1:
        return files[0]
    return '%s ... %s' % (files[0], os.path.basename(files[-1]))


def check_conversion_complete(data_dir):
    """Raises ValueError (one line) when a conversion into `data_dir` started and never
    finished (`INCOMPLETE_NAME` is there): its splits may mix old and new shards."""
    path = os.path.join(data_dir, INCOMPLETE_NAME)
    if not tf.io.gfile.exists(path):
        return
    try:
        with tf.io.gfile.GFile(path, 'r') as f:
            started = json.loads(f.read()).get('started', 'an unknown time')
    except (ValueError, AttributeError, tf.errors.OpError):
        started = 'an unknown time'
    raise ValueError('%s is incomplete: the conversion started at %s did not finish (%s is '
                     'still there), so its splits may come from different runs; %s, and let it '
                     'finish.' % (data_dir, started, path, CONVERTER_FIX))


def check_shards(data_dir, split):
    """Lists and validates the shards of `split` ('train' or 'val') in `data_dir`.

    Checks that no conversion into `data_dir` was left unfinished
    (`check_conversion_complete`), every shard's record headers and first record
    (`validate_shards`), and, when
    `data_dir` has a manifest.json that records this split's shards, that each shard holds
    the number of records the manifest lists.

    Returns:
      The sorted list of shard paths (`<data_dir>/<split>-*`).
    Raises:
      ValueError: one line naming the problem, the file and the fix (see
        `list_shards` and `validate_shards`).
    """
    check_conversion_complete(data_dir)
    name = _SPLIT_ALIASES.get(split, split)
    files = list_shards(os.path.join(data_dir, name + '-*'))
    entry = _manifest_split(data_dir, name)
    expected = None
    if entry and isinstance(entry.get('shard_files'), list) and isinstance(
            entry.get('images_per_shard'), list):
        expected = dict(zip(entry['shard_files'], entry['images_per_shard']))
    validate_shards(files, expected, os.path.join(data_dir, MANIFEST_NAME))
    return files


def find_bad_shard(files):
    """Reads every record of every shard (tf.data, checksums verified) until one fails.

    Returns:
      (path, reason) of the first unreadable shard, or None if all read cleanly.
    """
    @tf.autograph.experimental.do_not_convert
    def add_one(n, _record):
        return n + 1

    with tf.Graph().as_default():
        name = tf.compat.v1.placeholder(tf.string, [])
        count = tf.data.TFRecordDataset(name).reduce(tf.constant(0, tf.int64), add_one)
        with tf.compat.v1.Session() as sess:
            for path in files:
                try:
                    sess.run(count, {name: path})
                except (tf.errors.DataLossError, tf.errors.NotFoundError) as e:
                    return path, _first_line(e)
    return None


def explain_data_loss(files, error=None):
    """Turns a read error met while reading `files` into a one-line ValueError naming the
    shard (found by `find_bad_shard`), or None when every shard reads cleanly now (the
    caller then re-raises `error`).

    Usage in a driver::

        except tf.errors.DataLossError as e:
            raise dataset_common.explain_data_loss(files, e) or e
    """
    bad = find_bad_shard(files)
    if bad is None:
        return None
    return ValueError('TFRecord shard %s is damaged (%s); %s.' % (bad[0], bad[1], CONVERTER_FIX))


def count_against_manifest(data_dir, split, found):
    """(expected, found): the image count the manifest in `data_dir` records for `split`
    (None when there is no manifest or no such split) and `found`, the number of records
    actually read. The caller reports a difference, e.g. `count_mismatch_message`."""
    entry = _manifest_split(data_dir, split)
    expected = None
    if entry is not None and entry.get('images') is not None:
        expected = int(entry['images'])
    return expected, int(found)


def count_mismatch_message(data_dir, split, found):
    """A one-line warning when the records read for `split` differ from the manifest's
    image count, else None."""
    expected, found = count_against_manifest(data_dir, split, found)
    if expected is None or expected == found:
        return None
    return ('%d images were read from the %s shards in %s but %s says %d; a shard is missing, '
            'empty or damaged: %s.' % (found, split, data_dir,
                                        os.path.join(data_dir, MANIFEST_NAME), expected,
                                        CONVERTER_FIX))


def check_labels_fit(data_dir, num_classes, splits=('train',)):
    """Checks, before any graph is built, that every class the manifest counts objects for
    has a label below `num_classes` (background included).

    Args:
      data_dir: folder with manifest.json (its 'labels' table and each split's
        'objects_per_class').
      num_classes: the model's class count, background included (VOC: 21).
      splits: the manifest splits to check.
    Returns:
      The largest label with objects in those splits, or None when the manifest does not
      record the classes (no manifest, an older manifest, or no such split).
    Raises:
      ValueError: one line naming the class, its label, the manifest and --num_classes.
    """
    try:
        manifest = read_manifest(data_dir)
    except FileNotFoundError:
        return None
    labels = manifest.get('labels') or list(VOC_LABELS)
    index = {name: k for k, name in enumerate(labels)}
    largest = None
    for split in splits:
        entry = _manifest_split(data_dir, split)
        per_class = (entry or {}).get('objects_per_class')
        if not isinstance(per_class, dict):
            continue
        for name, count in per_class.items():
            if count and name in index and (largest is None or index[name] > largest[0]):
                largest = (index[name], name, split)
    if largest is None:
        return None
    label, name, split = largest
    if label >= num_classes:
        raise ValueError('The %s split in %s has objects of class %r (label %d), but '
                         '--num_classes %d only allows labels up to %d; pass --num_classes %d '
                         '(%d classes + background) or convert data with fewer classes.'
                         % (split, os.path.join(data_dir, MANIFEST_NAME), name, label,
                            num_classes, num_classes - 1, len(labels), len(labels) - 1))
    return label
