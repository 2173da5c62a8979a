"""Pascal VOC detection metric (numpy only, vectorised): per-class AP and mAP.

Semantics of the devkit's `voc_eval` (py-faster-rcnn / VOCevaldet):
  * boxes are pixel boxes [xmin, ymin, xmax, ymax] with inclusive (+1) widths and heights;
  * per class, detections are taken by descending score (a stable sort: equal scores keep
    their input order); each looks at the gt box of its image and class with the highest
    IoU (the first one in annotation order on ties);
  * if that IoU > iou_threshold (0.5): a difficult gt makes the detection neither TP nor FP;
    a not yet matched gt makes it a TP and marks the gt; an already matched gt makes it a FP;
    otherwise (no gt, or IoU too low) the detection is a FP;
  * recall = TP / (non-difficult gt boxes of the class), precision = TP / (TP + FP);
  * AP: VOC2007 11-point (max precision at recall >= t, t in 0, 0.1, ..., 1, averaged) and
    VOC2010+ area under the monotone precision envelope.
A class without non-difficult gt boxes has AP nan and is left out of the mAP (nanmean);
background (class 0) is always nan.

Its timing on a random VOC07-test-sized set: `python3 benchmarks/bench_ssd.py --stages metric`.
"""
import numpy as np

# The devkit's 11 recall thresholds, exactly as it computes them (np.arange rounding included).
_RECALL_POINTS_07 = np.arange(0.0, 1.1, 0.1)


def voc_ap(recall, precision, use_07_metric=False):
    """Average precision of one class from its recall/precision curve.

    Args:
      recall: float [D], non-decreasing (detections sorted by descending score).
      precision: float [D].
      use_07_metric: True for the VOC2007 11-point AP, False for the VOC2010+ area.
    Returns:
      float AP in [0, 1] (0 for an empty curve).
    """
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    # envelope[i] = max(precision[i:]), with a 0 after the end.
    envelope = np.concatenate([np.maximum.accumulate(precision[::-1])[::-1], [0.0]])
    if use_07_metric:
        first = np.searchsorted(recall, _RECALL_POINTS_07, side='left')  # first recall >= t
        return float(np.sum(envelope[first]) / 11.0)
    steps = np.diff(np.concatenate([[0.0], recall, [1.0]]))
    return float(np.sum(steps * envelope))


def normalized_to_pixels(boxes, height, width):
    """[..., 4] normalized [ymin, xmin, ymax, xmax] -> [..., 4] pixel [xmin, ymin, xmax, ymax].

    Inverse of the converter's `v / width`, `v / height` (1-based VOC pixel coordinates).
    """
    boxes = np.asarray(boxes, np.float64)
    return np.stack([boxes[..., 1] * width, boxes[..., 0] * height,
                     boxes[..., 3] * width, boxes[..., 2] * height], axis=-1)


def detections_by_class(image_indices, labels, scores, boxes_pixels, num_classes):
    """Groups flat detections into the per-class layout `evaluate` takes.

    Args:
      image_indices: int [D]; labels: int [D] in 1..num_classes-1 (others are dropped);
      scores: float [D]; boxes_pixels: float [D, 4] [xmin, ymin, xmax, ymax].
    Returns:
      list of num_classes float64 arrays [n_c, 6]: (image_index, score, xmin, ymin, xmax, ymax).
    """
    labels = np.asarray(labels, np.int64).reshape(-1)
    rows = np.concatenate([np.asarray(image_indices, np.float64).reshape(-1, 1),
                           np.asarray(scores, np.float64).reshape(-1, 1),
                           np.asarray(boxes_pixels, np.float64).reshape(-1, 4)], axis=1)
    return [rows[labels == c] if c > 0 else np.zeros([0, 6]) for c in range(num_classes)]


def _flatten_ground_truth(ground_truth):
    """List of per-image dicts -> (image [G], label [G], boxes [G, 4], difficult [G])."""
    images, labels, boxes, difficult = [], [], [], []
    for index, record in enumerate(ground_truth):
        record_boxes = np.asarray(record['boxes_pixels'], np.float64).reshape(-1, 4)
        record_labels = np.asarray(record['labels'], np.int64).reshape(-1)
        if len(record_labels) != len(record_boxes):
            raise ValueError('ground_truth[%d] has %d boxes but %d labels; give one label per '
                             'box.' % (index, len(record_boxes), len(record_labels)))
        record_difficult = record.get('difficult')
        if record_difficult is None:
            record_difficult = np.zeros(len(record_labels), bool)
        record_difficult = np.asarray(record_difficult).astype(bool).reshape(-1)
        if len(record_difficult) != len(record_labels):
            raise ValueError('ground_truth[%d] has %d difficult flags for %d boxes; give one '
                             'flag per box.' % (index, len(record_difficult), len(record_labels)))
        images.append(np.full(len(record_labels), index, np.int64))
        labels.append(record_labels)
        boxes.append(record_boxes)
        difficult.append(record_difficult)
    if not images:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros([0, 4]),
                np.zeros(0, bool))
    return (np.concatenate(images), np.concatenate(labels), np.concatenate(boxes),
            np.concatenate(difficult))


def _flatten_detections(detections, num_classes, num_images):
    """Per-class [n_c, 6] arrays -> (class [D], image [D], score [D], boxes [4][D]).

    Sorted by class, then descending score (stable); boxes are 4 contiguous columns
    (xmin, ymin, xmax, ymax), which gather much faster than a [D, 4] array.
    """
    if len(detections) != num_classes:
        raise ValueError('detections has %d entries but num_classes is %d; pass one array per '
                         'class, background first (it is ignored).'
                         % (len(detections), num_classes))
    classes, rows = [], []
    for c in range(1, num_classes):
        if detections[c] is None:
            continue
        class_rows = np.asarray(detections[c], np.float64).reshape(-1, 6)
        class_rows = class_rows[np.argsort(-class_rows[:, 1], kind='stable')]
        classes.append(np.full(len(class_rows), c, np.int64))
        rows.append(class_rows)
    rows = np.concatenate(rows) if rows else np.zeros([0, 6])
    classes = np.concatenate(classes) if classes else np.zeros(0, np.int64)
    columns = np.ascontiguousarray(rows.T)
    images = columns[0].astype(np.int64)
    if len(images) and (images.min() < 0 or images.max() >= num_images
                        or np.any(images != columns[0])):
        raise ValueError('detections hold image indices outside 0..%d (or not integers); '
                         'index images as ground_truth is ordered.' % (num_images - 1))
    return classes, images, columns[1], columns[2:6]


def evaluate(detections, ground_truth, num_classes, iou_threshold=0.5,
             return_curves=False):
    """VOC AP of every class and the mAP, in both the 2007 11-point and 2010+ area metrics.

    Args:
      detections: sequence of num_classes arrays; detections[c] is float [n_c, 6] with rows
        (image_index, score, xmin, ymin, xmax, ymax), pixel boxes; detections[0] (background)
        is ignored. See `detections_by_class`.
      ground_truth: sequence (one per image, indexed by image_index) of dicts with
        'boxes_pixels' float [n, 4] [xmin, ymin, xmax, ymax], 'labels' int [n], and
        optionally 'difficult' bool/int [n] (default all 0). Rows whose label is outside
        1..C-1 (e.g. padding with label -1) are ignored.
      num_classes: C, background included (21 for VOC).
      iou_threshold: a detection needs IoU > this with its gt box.
      return_curves: also return the precision-recall curves the APs are computed from
        (for plotting), under 'curves'.
    Returns:
      dict with
        ap_07, ap_area: float64 [C] per-class AP (nan for class 0 and classes without
          non-difficult gt),
        map_07, map_area: float, mean AP over classes with non-difficult gt (nan if none),
        num_gt: int64 [C] non-difficult gt boxes per class,
        num_detections: int64 [C],
        curves (only with return_curves): list of C entries, None for class 0 and classes
          without non-difficult gt, else (recall float64 [n], precision float64 [n]): one
          point per TP or FP detection of the class by descending score (detections matched
          to a difficult gt count as neither and give no point); voc_ap of it is the AP.
    """
    num_images = len(ground_truth)
    gt_image, gt_label, gt_boxes, gt_difficult = _flatten_ground_truth(ground_truth)
    det_class, det_image, det_score, det_boxes = _flatten_detections(
        detections, num_classes, num_images)

    # Ground truth grouped by key = class * num_images + image, annotation order kept.
    gt_key = gt_label * num_images + gt_image
    in_range = (gt_label > 0) & (gt_label < num_classes)
    gt_order = np.flatnonzero(in_range)[np.argsort(gt_key[in_range], kind='stable')]
    gt_key, gt_difficult = gt_key[gt_order], gt_difficult[gt_order]
    gt_boxes = np.ascontiguousarray(gt_boxes[gt_order].T)  # 4 columns
    gt_label = gt_label[gt_order]
    key_count = np.bincount(gt_key, minlength=num_classes * num_images)
    key_start = np.cumsum(key_count) - key_count

    num_det = len(det_class)  # sorted by class, then descending score

    # Every (detection, gt of its image and class) pair, pairs of one detection contiguous.
    det_key = det_class * num_images + det_image
    pair_count = key_count[det_key] if num_det else np.zeros(0, np.int64)
    num_pairs = int(pair_count.sum())
    pair_det = np.repeat(np.arange(num_det), pair_count)
    pair_first = np.cumsum(pair_count) - pair_count  # first pair of each detection
    pair_gt = key_start[det_key][pair_det] + (np.arange(num_pairs) - pair_first[pair_det])

    # IoU as the devkit computes it: pixel boxes, inclusive (+1) widths and heights; not
    # net/anchor_manipulator.iou_matrix, the IoU of normalized boxes that matching and the
    # crop sampler use.
    d = [column[pair_det] for column in det_boxes]
    g = [column[pair_gt] for column in gt_boxes]
    inter_w = np.maximum(np.minimum(d[2], g[2]) - np.maximum(d[0], g[0]) + 1.0, 0.0)
    inter_h = np.maximum(np.minimum(d[3], g[3]) - np.maximum(d[1], g[1]) + 1.0, 0.0)
    inter = inter_w * inter_h
    union = ((d[2] - d[0] + 1.0) * (d[3] - d[1] + 1.0)
             + (g[2] - g[0] + 1.0) * (g[3] - g[1] + 1.0) - inter)
    iou = inter / np.maximum(union, np.finfo(np.float64).tiny)  # no 0/0 on degenerate boxes

    # Best IoU per detection and its first gt (devkit's np.argmax).
    best_iou = np.full(num_det, -np.inf)
    best_gt = np.full(num_det, -1, np.int64)
    has_pairs = pair_count > 0
    if num_pairs:  # then every detection with pairs has at least one entry in at_max
        best_iou[has_pairs] = np.maximum.reduceat(iou, pair_first[has_pairs])
        at_max = np.flatnonzero(iou == best_iou[pair_det])
        first = np.concatenate([[True], pair_det[at_max[1:]] != pair_det[at_max[:-1]]])
        best_gt[pair_det[at_max[first]]] = pair_gt[at_max[first]]

    hit = best_iou > iou_threshold
    hit_difficult = np.zeros(num_det, bool)
    hit_difficult[hit] = gt_difficult[best_gt[hit]]
    claim = np.flatnonzero(hit & ~hit_difficult)
    # The first (highest-scored) claim of each gt is a TP, later ones are duplicates (FP).
    _, first_claim = np.unique(best_gt[claim], return_index=True)
    tp = np.zeros(num_det)
    tp[claim[first_claim]] = 1.0
    fp = (~hit).astype(np.float64)
    fp[claim] = 1.0
    fp[claim[first_claim]] = 0.0

    num_gt = np.bincount(gt_label[~gt_difficult], minlength=num_classes)[:num_classes]
    num_gt[0] = 0
    class_bounds = np.searchsorted(det_class, np.arange(num_classes + 1), side='left')
    ap_07 = np.full(num_classes, np.nan)
    ap_area = np.full(num_classes, np.nan)
    curves = [None] * num_classes
    for c in range(1, num_classes):
        if num_gt[c] == 0:
            continue
        lo, hi = class_bounds[c], class_bounds[c + 1]
        tp_cum = np.cumsum(tp[lo:hi])
        fp_cum = np.cumsum(fp[lo:hi])
        recall = tp_cum / float(num_gt[c])
        precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        ap_07[c] = voc_ap(recall, precision, use_07_metric=True)
        ap_area[c] = voc_ap(recall, precision, use_07_metric=False)
        if return_curves:
            counted = (tp[lo:hi] + fp[lo:hi]) > 0  # drop the difficult matches' repeat points
            curves[c] = (recall[counted], precision[counted])
    has_gt = num_gt > 0
    result = {
        'ap_07': ap_07,
        'ap_area': ap_area,
        'map_07': float(np.mean(ap_07[has_gt])) if has_gt.any() else float('nan'),
        'map_area': float(np.mean(ap_area[has_gt])) if has_gt.any() else float('nan'),
        'num_gt': num_gt.astype(np.int64),
        'num_detections': np.diff(class_bounds).astype(np.int64),
    }
    if return_curves:
        result['curves'] = curves
    return result
