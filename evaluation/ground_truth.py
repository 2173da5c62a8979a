"""Ground truth for the VOC metric: from the TFRecords (without decoding images) or from VOC
XML annotations, matched by image id.

* `image_id`: '2012_000011.jpg' -> '2012_000011' (the results files' and the XML's key);
* `scan_records`: ground truth of every record of a file pattern;
* `ground_truth_from_annotations`: '<annotations_dir>/<image id>.xml' files, parsed by the
  converter's own parser (dataset/voc_xml.py);
* `count_objects`, `check_has_ground_truth`: what there is to score.

Records come back with normalized `[ymin, xmin, ymax, xmax]` boxes (the TFRecord layout);
XML ground truth in voc_metric's layout (VOC pixel boxes, docs/INTERFACES.md).
"""
import os

import numpy as np
import tensorflow as tf

from dataset.pipeline import list_shards
from dataset.records import parse_ground_truth
from dataset.shard_checks import explain_data_loss
from dataset import voc_xml
from common.console import notify


def image_id(filename):
    """'2012_000011.jpg' (str or bytes, with or without folders) -> '2012_000011'."""
    if isinstance(filename, bytes):
        filename = filename.decode('utf-8', 'replace')
    return os.path.splitext(os.path.basename(str(filename)))[0]


def _run_dataset(make_dataset):
    """All elements of `make_dataset()` as numpy, in a private graph (works eager or not)."""
    elements = []
    with tf.Graph().as_default():
        get_next = tf.compat.v1.data.make_one_shot_iterator(make_dataset()).get_next()
        with tf.compat.v1.Session() as sess:
            while True:
                try:
                    elements.append(sess.run(get_next))
                except tf.errors.OutOfRangeError:
                    return elements


def scan_records(file_pattern, limit=None):
    """Ground truth of every record matched by `file_pattern`, without decoding the images.

    Args:
      file_pattern: glob of TFRecord shards (e.g. 'dataset/tfrecords/val-*').
      limit: read only the first `limit` records (shard order); None: all.
    Returns:
      list (shard order, sorted file names) of dicts: 'image_id' str, 'filename' str,
      'height'/'width' int (0 when the record lacks them), 'boxes' float32 [N, 4]
      normalized [ymin, xmin, ymax, xmax], 'labels' int32 [N], 'difficult' int32 [N],
      'iscrowd' int32 [N] (COCO crowd regions), 'source_id' str ('' for VOC records).
    Raises:
      ValueError: no file matches (from list_shards), or a shard is
        truncated or corrupt (the message names it).
    """
    files = list_shards(file_pattern)
    records = []
    try:
        elements = _run_dataset(
            lambda: tf.data.TFRecordDataset(files).take(-1 if limit is None else limit)
            .map(parse_ground_truth))
    except tf.errors.DataLossError as e:  # name the damaged shard in one line
        raise explain_data_loss(files, e) or e
    for element in elements:
        filename = element['filename'].decode('utf-8', 'replace')
        records.append({'image_id': image_id(filename), 'filename': filename,
                        'height': int(element['height']), 'width': int(element['width']),
                        'boxes': element['boxes'], 'labels': element['labels'],
                        'difficult': element['difficult'], 'iscrowd': element['iscrowd'],
                        'source_id': element['source_id'].decode('utf-8', 'replace')})
    return records


def count_objects(ground_truth, num_classes):
    """(objects, difficult objects) with a label in 1..num_classes-1 in `voc_metric` records."""
    objects = difficult = 0
    for record in ground_truth:
        labels = np.asarray(record['labels']).reshape(-1)
        valid = (labels > 0) & (labels < num_classes)
        flags = record.get('difficult')
        flags = np.zeros(len(labels), bool) if flags is None else np.asarray(flags, bool)
        objects += int(valid.sum())
        difficult += int((valid & flags.reshape(-1)).sum())
    return objects, difficult


def check_has_ground_truth(ground_truth, num_classes, where):
    """Raises ValueError when no image of `where` (a split / folder name) has a gt box."""
    objects, difficult = count_objects(ground_truth, num_classes)
    if objects - difficult == 0:
        raise ValueError('%s has no ground-truth boxes%s (%d images), so there is nothing to '
                         'score; evaluate a split converted from annotated images or pass '
                         '--annotations_dir.' % (where, ' that are not difficult' if objects
                                                 else '', len(ground_truth)))


def ground_truth_from_annotations(image_ids, annotations_dir, class_names, log=None):
    """VOC ground truth for `image_ids` from '<annotations_dir>/<image id>.xml'.

    Boxes are the XML's 1-based pixel boxes as written (the devkit's ground truth).
    `class_names` are the evaluated data's (index = label id, 'none' first: eval_ssd.py takes
    them from dataset/class_names.class_names_of); objects of other classes are skipped with one
    notice.

    Returns:
      list, in `image_ids` order, of dicts 'boxes_pixels' float64 [N, 4]
      [xmin, ymin, xmax, ymax], 'labels' int64 [N], 'difficult' bool [N] (voc_metric layout).
    Raises:
      ValueError: a file is missing or unreadable; the message names it.
    """
    class_names = list(class_names)
    label_ids = {name: index for index, name in enumerate(class_names) if index > 0}
    ground_truth, unknown = [], {}
    for name in image_ids:
        path = os.path.join(annotations_dir, name + '.xml')
        if not os.path.isfile(path):
            raise ValueError('No annotation %s for image %s; --annotations_dir must hold '
                             '<image id>.xml for every evaluated image.' % (path, name))
        try:
            annotation = voc_xml.parse_annotation(path)
        except voc_xml.AnnotationError as err:
            raise ValueError('Annotation %s is unusable (%s); fix or regenerate it.'
                             % (path, err)) from None
        boxes, labels, difficult = [], [], []
        for obj in annotation['objects']:
            if obj['name'] not in label_ids:
                unknown[obj['name']] = unknown.get(obj['name'], 0) + 1
                continue
            boxes.append(obj['bbox_pixels'])
            labels.append(label_ids[obj['name']])
            difficult.append(bool(obj['difficult']))
        ground_truth.append({'boxes_pixels': np.asarray(boxes, np.float64).reshape(-1, 4),
                             'labels': np.asarray(labels, np.int64),
                             'difficult': np.asarray(difficult, bool)})
    if unknown:
        notify(log, 'Skipped %d annotated objects of unknown classes: %s.' % (
            sum(unknown.values()), ', '.join('%s (%d)' % kv for kv in sorted(unknown.items()))))
    return ground_truth
