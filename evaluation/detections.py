"""Detections of an evaluation: Estimator.predict output turned into VOC pixel detections and
ground truth (`collect_predictions` -> `Collection`), and the VOC devkit results files
(`write_results_files`, `read_results_files`).

Box conventions (docs/INTERFACES.md): the model gives normalized `[ymin, xmin, ymax, xmax]`
boxes; pixel boxes are VOC `[xmin, ymin, xmax, ymax]`, 1-based and inclusive, obtained as
`normalized * width` / `normalized * height` (`voc_metric.normalized_to_pixels`).
"""
import os
import time

import numpy as np

from common.console import notify
from evaluation import voc_metric
from evaluation.ground_truth import image_id

RESULTS_PREFIX = 'comp4_det_test_'


def prediction_detections(prediction, score_threshold=None):
    """Pixel detections of one image from one Estimator.predict dict.

    Args:
      prediction: dict with 'boxes' [K, 4] normalized, 'scores' [K], 'classes' [K],
        'num_detections' scalar and 'shape' [3] (original height, width, channels).
      score_threshold: keep only scores >= this (None keeps all num_detections).
    Returns:
      (boxes_pixels float64 [n, 4] [xmin, ymin, xmax, ymax], labels int64 [n],
       scores float64 [n]), best first.
    """
    count = int(prediction['num_detections'])
    height, width = int(prediction['shape'][0]), int(prediction['shape'][1])
    boxes = voc_metric.normalized_to_pixels(prediction['boxes'][:count], height, width)
    labels = np.asarray(prediction['classes'][:count], np.int64)
    scores = np.asarray(prediction['scores'][:count], np.float64)
    if score_threshold is not None:
        keep = scores >= score_threshold
        boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
    return boxes.reshape(-1, 4), labels, scores


class Collection:
    """Detections and ground truth of an evaluation, images in prediction order.

    Attributes:
      image_ids: list of I str; heights, widths: int64 [I].
      det_image int64 [D] (index into image_ids), det_labels int64 [D], det_scores float64 [D],
      det_boxes float64 [D, 4]: VOC pixel boxes [xmin, ymin, xmax, ymax].
      ground_truth: list of I dicts in voc_metric layout ('boxes_pixels', 'labels',
        'difficult', and 'iscrowd'), from the predictions' gt_* features (empty dicts when
        absent). A COCO crowd region is also 'difficult', so the VOC metric ignores
        detections on it.
      source_ids: list of I str, the records' image/source_id (COCO image ids; '' for VOC).
    """

    def __init__(self, image_ids, heights, widths, det_image, det_labels, det_scores, det_boxes,
                 ground_truth, source_ids=None):
        self.image_ids = list(image_ids)
        self.heights = np.asarray(heights, np.int64)
        self.widths = np.asarray(widths, np.int64)
        self.det_image = np.asarray(det_image, np.int64).reshape(-1)
        self.det_labels = np.asarray(det_labels, np.int64).reshape(-1)
        self.det_scores = np.asarray(det_scores, np.float64).reshape(-1)
        self.det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
        self.ground_truth = list(ground_truth)
        self.source_ids = list(source_ids) if source_ids is not None else [''] * len(image_ids)

    @property
    def num_images(self):
        return len(self.image_ids)

    def detections(self, num_classes):
        """Per-class [n_c, 6] arrays for voc_metric.evaluate (see detections_by_class)."""
        return voc_metric.detections_by_class(self.det_image, self.det_labels, self.det_scores,
                                              self.det_boxes, num_classes)


def collect_predictions(predictions, total=None, log=None, log_every_secs=5.0,
                        clock=time.monotonic):
    """Consumes Estimator.predict output (yield_single_examples=True), one dict per image.

    Each dict holds 'boxes' [K, 4] normalized [ymin, xmin, ymax, xmax], 'scores' [K],
    'classes' [K], 'num_detections', 'filename', 'shape' [3] and, when evaluating on records,
    'gt_boxes' [N, 4] normalized, 'gt_labels' [N] (padding <= 0), 'gt_difficult' [N],
    'gt_iscrowd' [N] and 'source_id'.
    Logs 'images done, images/s' every `log_every_secs` seconds and once at the end.

    Returns:
      a Collection.
    """
    image_ids, heights, widths, ground_truth, source_ids = [], [], [], [], []
    det_image, det_labels, det_scores, det_boxes = [], [], [], []
    start = last = clock()
    for index, prediction in enumerate(predictions):
        height, width = int(prediction['shape'][0]), int(prediction['shape'][1])
        image_ids.append(image_id(prediction.get('filename', b'%d' % index)))
        source = prediction.get('source_id', b'')
        source_ids.append(source.decode('utf-8', 'replace') if isinstance(source, bytes)
                          else str(source))
        heights.append(height)
        widths.append(width)
        boxes, labels, scores = prediction_detections(prediction)
        det_image.append(np.full(len(labels), index, np.int64))
        det_labels.append(labels)
        det_scores.append(scores)
        det_boxes.append(boxes)
        if 'gt_labels' in prediction:
            gt_labels = np.asarray(prediction['gt_labels'], np.int64).reshape(-1)
            valid = gt_labels > 0
            gt_boxes = np.asarray(prediction['gt_boxes']).reshape(-1, 4)[valid]
            difficult = np.asarray(prediction.get('gt_difficult', np.zeros(len(gt_labels))))
            crowd = np.asarray(prediction.get('gt_iscrowd', np.zeros(len(gt_labels))))
            crowd = crowd.reshape(-1)[valid].astype(bool)
            ground_truth.append({
                'boxes_pixels': voc_metric.normalized_to_pixels(gt_boxes, height, width),
                'labels': gt_labels[valid],
                'difficult': difficult.reshape(-1)[valid].astype(bool) | crowd,
                'iscrowd': crowd})
        else:
            ground_truth.append({'boxes_pixels': np.zeros([0, 4]),
                                 'labels': np.zeros(0, np.int64)})
        now = clock()
        if log is not None and now - last >= log_every_secs:
            last = now
            done = index + 1
            notify(log, 'eval: %d%s images, %.2f images/s' % (
                done, '/%d' % total if total else '', done / max(now - start, 1e-9)))
    elapsed = clock() - start
    done = len(image_ids)
    notify(log, 'eval: %d images in %.1f s (%.2f images/s)'
         % (done, elapsed, done / max(elapsed, 1e-9)))
    if len(set(image_ids)) != len(image_ids):
        notify(log, 'Warning: some image ids repeat; the results files cannot tell them apart.')

    def join(parts, shape, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)
    return Collection(image_ids, heights, widths, join(det_image, [0], np.int64),
                      join(det_labels, [0], np.int64), join(det_scores, [0], np.float64),
                      join(det_boxes, [0, 4], np.float64), ground_truth, source_ids)



def results_file(output_dir, class_name, prefix=RESULTS_PREFIX):
    return os.path.join(output_dir, '%s%s.txt' % (prefix, class_name))


def write_results_files(output_dir, collection, class_names, prefix=RESULTS_PREFIX):
    """Writes the VOC devkit results files, one per class (also when empty).

    '<output_dir>/comp4_det_test_<class>.txt', one line per detection, best first:
    '<image id> <score> <xmin> <ymin> <xmax> <ymax>' in 1-based VOC pixels (the dataset's
    convention, normalized * width / height).
    Returns:
      list of the paths, class 1..C-1 order.
    """
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for c, rows in enumerate(collection.detections(len(class_names))):
        if c == 0:
            continue
        rows = rows[np.argsort(-rows[:, 1], kind='stable')]  # voc_metric's ranking
        path = results_file(output_dir, class_names[c], prefix)
        with open(path, 'w', encoding='utf-8') as f:
            for row in rows:
                f.write('%s %.6f %.3f %.3f %.3f %.3f\n' % (
                    collection.image_ids[int(row[0])], row[1], row[2], row[3], row[4], row[5]))
        paths.append(path)
    return paths


def read_results_files(output_dir, image_ids, class_names, prefix=RESULTS_PREFIX):
    """Reads devkit results files back into voc_metric.evaluate's per-class layout.

    Args:
      image_ids: the evaluated image ids; a line's image id becomes its index here.
    Returns:
      list of len(class_names) float64 arrays [n_c, 6] (image index, score, xmin, ymin, xmax,
      ymax); a missing file counts as no detections.
    Raises:
      ValueError: a line is malformed or names an image not in `image_ids`.
    """
    index = {name: i for i, name in enumerate(image_ids)}
    detections = [np.zeros([0, 6])]
    for c in range(1, len(class_names)):
        path = results_file(output_dir, class_names[c], prefix)
        rows = []
        if os.path.isfile(path):
            with open(path, 'r', encoding='utf-8') as f:
                for number, line in enumerate(f, 1):
                    fields = line.split()
                    if not fields:
                        continue
                    if len(fields) != 6 or fields[0] not in index:
                        raise ValueError('%s line %d is not "<image id> <score> <xmin> <ymin> '
                                         '<xmax> <ymax>" for an evaluated image: %r; rewrite '
                                         'the file.' % (path, number, line.strip()))
                    rows.append([index[fields[0]]] + [float(v) for v in fields[1:]])
        detections.append(np.asarray(rows, np.float64).reshape(-1, 6))
    return detections
