"""Checks of the converted shards: cheap ones the drivers run before training or evaluation
(record headers with TFRecord's own CRC-32C, first records, counts against the manifest, an
unfinished conversion, labels against --num_classes), and the helper that turns a
tf.errors.DataLossError raised while reading into a one-line error naming the shard."""

import json
import os

import tensorflow as tf

from dataset.labels import VOC_LABELS
from dataset.manifest import MANIFEST_NAME, manifest_split, read_manifest, split_name
from dataset.pipeline import describe_files, list_shards
from dataset.shard_writer import INCOMPLETE_NAME

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
                         'read; %s.' % (len(files), describe_files(files), CONVERTER_FIX))
    return counts



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
    name = split_name(split)
    files = list_shards(os.path.join(data_dir, name + '-*'))
    entry = manifest_split(data_dir, name)
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
            raise shard_checks.explain_data_loss(files, e) or e
    """
    bad = find_bad_shard(files)
    if bad is None:
        return None
    return ValueError('TFRecord shard %s is damaged (%s); %s.' % (bad[0], bad[1], CONVERTER_FIX))


def count_against_manifest(data_dir, split, found):
    """(expected, found): the image count the manifest in `data_dir` records for `split`
    (None when there is no manifest or no such split) and `found`, the number of records
    actually read. The caller reports a difference, e.g. `count_mismatch_message`."""
    entry = manifest_split(data_dir, split)
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
        entry = manifest_split(data_dir, split)
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
