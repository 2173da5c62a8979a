"""The class names of a converted data folder: the manifest's, else the names its records carry,
else VOC's (`class_names_of`, read by training, evaluation and tools/rebuild_params.py)."""

import os

import tensorflow as tf

from common.console import notify
from dataset.labels import VOC_LABELS
from dataset.manifest import MANIFEST_NAME, labels_from_manifest, split_name
from dataset.pipeline import describe_files, list_shards


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
                                         % (describe_files(files), label, names[label], text))
                    if labels_of.setdefault(text, label) != label:
                        raise ValueError('The records in %s give class %r two labels, %d and %d; '
                                         'reconvert them with one label file (--labels).'
                                         % (describe_files(files), text, labels_of[text],
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
    recorded = labels_from_manifest(data_dir)
    if recorded is not None:
        return recorded, os.path.join(data_dir, MANIFEST_NAME)
    pattern = os.path.join(data_dir, split_name(split) + '-*')
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
