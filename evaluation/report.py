"""The evaluation report: `summarize` (JSON-ready summary of voc_metric.evaluate's result),
`format_table` (the printed AP table) and `write_metrics_json` (metrics.json).
"""
import json
import math
import os

import numpy as np

from evaluation.ground_truth import count_objects

METRICS_FILE = 'metrics.json'
METRIC_NAMES = {'ap_07': 'VOC07 11-point', 'ap_area': 'VOC2010+ area'}


def _number(value):
    value = float(value)
    return None if math.isnan(value) else value


def summarize(result, ground_truth, num_images, class_names, extra=None):
    """JSON-ready summary of a voc_metric.evaluate `result`.

    Returns:
      dict: 'metrics' (the two metric names), 'num_images', 'num_objects',
      'num_difficult', 'num_detections', 'map_07', 'map_area', 'classes' (one dict per class
      1..C-1: 'label', 'name', 'num_gt' (not difficult), 'num_detections', 'ap_07',
      'ap_area'; AP null for a class without gt) and the entries of `extra`.
      NaN (no gt at all) becomes null.
    """
    num_classes = len(result['ap_07'])
    objects, difficult = count_objects(ground_truth, num_classes)
    summary = {
        'metrics': dict(METRIC_NAMES),
        'iou_threshold': 0.5,
        'num_images': int(num_images),
        'num_objects': objects,
        'num_difficult': difficult,
        'num_detections': int(np.sum(result['num_detections'])),
        'map_07': _number(result['map_07']),
        'map_area': _number(result['map_area']),
        'classes': [{'label': c, 'name': class_names[c], 'num_gt': int(result['num_gt'][c]),
                     'num_detections': int(result['num_detections'][c]),
                     'ap_07': _number(result['ap_07'][c]),
                     'ap_area': _number(result['ap_area'][c])}
                    for c in range(1, num_classes)],
    }
    summary.update(extra or {})
    return summary


def format_table(summary):
    """The printed table: AP per class and mAP in both metrics, with image and object counts."""
    def ap(value):
        return '%14s' % ('n/a' if value is None else '%.4f' % value)
    lines = [
        'Pascal VOC detection AP at IoU > %.1f: %d images, %d gt objects (%d difficult), '
        '%d detections' % (summary['iou_threshold'], summary['num_images'],
                           summary['num_objects'], summary['num_difficult'],
                           summary['num_detections']),
        '%-13s %6s %8s %14s %14s' % ('class', 'gt', 'dets', 'AP VOC07 11pt', 'AP VOC10 area'),
    ]
    for row in summary['classes']:
        lines.append('%-13s %6d %8d %s %s' % (row['name'], row['num_gt'], row['num_detections'],
                                             ap(row['ap_07']), ap(row['ap_area'])))
    lines.append('%-13s %6d %8d %s %s' % ('mAP', sum(r['num_gt'] for r in summary['classes']),
                                         summary['num_detections'], ap(summary['map_07']),
                                         ap(summary['map_area'])))
    lines.append('mAP VOC07 11-point: %s   mAP VOC2010+ area: %s   (mean over classes with '
                 'non-difficult gt; n/a = no gt)' % (ap(summary['map_07']).strip(),
                                                     ap(summary['map_area']).strip()))
    return '\n'.join(lines)


def write_metrics_json(path, summary):
    """Writes `summary` as indented JSON (null for n/a); returns the path."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=2, allow_nan=False)
        f.write('\n')
    return path
