"""SSD post-processing: box codes and logits -> per-image detections (used by eval, demo, export).

Per image, following the original SSD.TensorFlow evaluation:
  1. decode the box codes against the anchors, clip the boxes to [0, 1];
  2. softmax over classes; for each class c in 1..C-1 keep the anchors with
     score > select_threshold and, if min_size > 0, clipped height and width > min_size;
  3. per class, the keep_topk best of those enter greedy NMS (IoU > nms_threshold
     suppresses), which keeps at most nms_topk per class;
  4. keep_per='image' (the default; every default is in common/defaults.POSTPROCESS): across
     classes, the nms_topk best detections of the image are returned, best first (Caffe SSD's
     keep_top_k);
     keep_per='class': every class keeps its nms_topk, so up to nms_topk * (C - 1) per image,
     best first: the original SSD.TensorFlow selection (its eval_ssd.py).
Steps 3 and 4 run in one tf.image.combined_non_max_suppression call (nms_ops='combined', the
default), or, for TFLite, which has no such op, as one NonMaxSuppressionV4 op per class and
image followed by a top-k (nms_ops='per_class': TFLite builtins, a static batch size needed);
the two select the same detections (tests/test_postprocess.py).
"""
import tensorflow as tf

from common import defaults
from net import anchor_manipulator


def clip_boxes(boxes):
    """Clips [..., 4] [ymin, xmin, ymax, xmax] boxes to [0, 1], keeping min <= max."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, 4, axis=-1)
    ymax = tf.clip_by_value(ymax, 0.0, 1.0)
    xmax = tf.clip_by_value(xmax, 0.0, 1.0)
    ymin = tf.minimum(tf.maximum(ymin, 0.0), ymax)
    xmin = tf.minimum(tf.maximum(xmin, 0.0), xmax)
    return tf.stack([ymin, xmin, ymax, xmax], axis=-1)


_DEFAULT = defaults.POSTPROCESS


def max_detections(num_classes, nms_topk=_DEFAULT['nms_topk'], keep_per=_DEFAULT['keep_per']):
    """K, the detections dimension of `postprocess`'s output: nms_topk for keep_per='image',
    nms_topk * (num_classes - 1) for keep_per='class'."""
    if keep_per not in defaults.KEEP_PER:
        raise ValueError("keep_per=%r is not one of %s; pass 'image' (nms_topk per image) or "
                         "'class' (nms_topk per class, as the original code)."
                         % (keep_per, defaults.KEEP_PER))
    return int(nms_topk) if keep_per == 'image' else int(nms_topk) * (int(num_classes) - 1)


def postprocess(cls_logits, loc_preds, anchors, prior_scaling,
                select_threshold=_DEFAULT['select_threshold'], min_size=_DEFAULT['min_size'],
                keep_topk=_DEFAULT['keep_topk'], nms_threshold=_DEFAULT['nms_threshold'],
                nms_topk=_DEFAULT['nms_topk'], keep_per=_DEFAULT['keep_per'],
                nms_ops='combined'):
    """Detections of a batch from the network outputs.

    Args:
      cls_logits: float [B, A, C] class logits, class 0 = background.
      loc_preds: float [B, A, 4] box codes [ty, tx, th, tw].
      anchors: float32 [A, 4] [ymin, xmin, ymax, xmax] (numpy or tensor).
      prior_scaling: 4 floats (spec['prior_scaling']).
      select_threshold: a class score must be above this to be considered.
      min_size: boxes whose clipped normalized height or width is not above this are
        dropped; 0 disables the check.
      keep_topk: candidates per class that enter NMS.
      nms_threshold: IoU above which NMS suppresses the lower-scored box of a class.
      nms_topk: detections kept per class by NMS (and per image with keep_per='image').
      keep_per: 'image': the output holds the nms_topk best of the image, K = nms_topk;
        'class': every class's nms_topk, K = nms_topk * (C - 1) (the original's selection).
      nms_ops: 'combined' (tf.image.combined_non_max_suppression) or 'per_class' (one
        NonMaxSuppressionV4 per class and image, TFLite builtins; needs a static batch size).
    Returns:
      dict with
        boxes: float32 [B, K, 4] [ymin, xmin, ymax, xmax] in [0, 1],
        scores: float32 [B, K], descending,
        classes: int32 [B, K] in 1..C-1,
        num_detections: int32 [B];
      entries from num_detections[b] on are padding (zeros, class 0).
    """
    nms_topk = int(nms_topk)
    keep_topk = int(keep_topk)
    if nms_topk < 1 or keep_topk < 1:
        raise ValueError('nms_topk=%d and keep_topk=%d must both be >= 1; pass positive counts.'
                         % (nms_topk, keep_topk))
    num_classes = tf.TensorShape(cls_logits.shape)[-1]
    if num_classes is None:
        raise ValueError('cls_logits has no static class dimension (shape %s); give the '
                         'logits a static last dimension (num_classes).' % (cls_logits.shape,))
    max_total = max_detections(num_classes, nms_topk, keep_per)
    with tf.name_scope('postprocess'):
        cls_logits = tf.cast(cls_logits, tf.float32)
        boxes = clip_boxes(anchor_manipulator.decode_boxes(
            tf.cast(loc_preds, tf.float32), anchors, prior_scaling))  # [B, A, 4]
        scores = tf.nn.softmax(cls_logits, axis=-1)[:, :, 1:]  # [B, A, C-1]
        keep = scores > select_threshold
        if min_size > 0:
            heights = boxes[:, :, 2] - boxes[:, :, 0]
            widths = boxes[:, :, 3] - boxes[:, :, 1]
            big_enough = tf.logical_and(heights > min_size, widths > min_size)  # [B, A]
            keep = tf.logical_and(keep, big_enough[:, :, None])
        scores = tf.where(keep, scores, 0.0)

        # Per-class top-k candidates: [B, C-1, k] scores and their boxes [B, C-1, k, 4].
        per_class = tf.transpose(scores, [0, 2, 1])
        k = tf.minimum(keep_topk, tf.shape(per_class)[2])
        top_scores, top_index = tf.nn.top_k(per_class, k=k, sorted=True)
        top_boxes = tf.gather(boxes, top_index, batch_dims=1)
        if nms_ops == 'per_class':
            nmsed = _per_class_nms(top_boxes, top_scores, nms_topk, max_total,
                                   float(nms_threshold), max(float(select_threshold), 0.0))
        elif nms_ops == 'combined':
            nmsed = tf.image.combined_non_max_suppression(
                boxes=tf.transpose(top_boxes, [0, 2, 1, 3]),  # [B, k, C-1, 4]
                scores=tf.transpose(top_scores, [0, 2, 1]),  # [B, k, C-1]
                max_output_size_per_class=nms_topk,
                max_total_size=max_total,
                iou_threshold=float(nms_threshold),
                # Filtered-out candidates carry score 0 <= select_threshold: they never enter.
                score_threshold=max(float(select_threshold), 0.0),
                pad_per_class=False,
                clip_boxes=False)
        else:
            raise ValueError('nms_ops=%r is not one of %s.' % (nms_ops, defaults.NMS_OPS))
        nmsed_boxes, nmsed_scores, nmsed_classes, num_detections = nmsed
        num_detections = tf.cast(num_detections, tf.int32)
        valid = tf.range(max_total)[None, :] < num_detections[:, None]  # [B, K]
        classes = tf.where(valid, tf.cast(nmsed_classes, tf.int32) + 1, 0)
        return {
            'boxes': tf.where(valid[:, :, None], nmsed_boxes, 0.0),
            'scores': tf.where(valid, nmsed_scores, 0.0),
            'classes': classes,
            'num_detections': num_detections,
        }


def _per_class_nms(top_boxes, top_scores, nms_topk, max_total, iou_threshold, score_threshold):
    """combined_non_max_suppression's selection from TFLite builtins: per image and class one
    NonMaxSuppressionV4 (padded to nms_topk), then the max_total best over the classes.

    top_boxes float32 [B, C-1, k, 4], top_scores [B, C-1, k] with static B and C-1.
    Returns (boxes [B, K, 4], scores [B, K], classes int32 [B, K] 0-based,
    num_detections int32 [B]), K = max_total, entries from num_detections on arbitrary.
    """
    batch, num_fg = top_scores.shape[0], top_scores.shape[1]
    if batch is None or num_fg is None:
        raise ValueError("nms_ops='per_class' needs a static batch size and class count "
                         '(got scores of shape %s); build the graph with a fixed batch.'
                         % (top_scores.shape,))
    outputs = []
    for b in range(batch):
        boxes, scores, classes = [], [], []
        for c in range(num_fg):
            index, count = tf.raw_ops.NonMaxSuppressionV4(
                boxes=top_boxes[b, c], scores=top_scores[b, c], max_output_size=nms_topk,
                iou_threshold=iou_threshold, score_threshold=score_threshold,
                pad_to_max_output_size=True)
            valid = tf.range(nms_topk) < count
            boxes.append(tf.gather(top_boxes[b, c], index))
            # Padding entries get score -1 so that the top-k below puts them last.
            scores.append(tf.where(valid, tf.gather(top_scores[b, c], index), -1.0))
            # int32, not float: an int8 model would quantize float class ids (14 -> 13.9).
            classes.append(tf.fill([nms_topk], c))
        scores = tf.concat(scores, 0)  # [(C-1) * nms_topk]
        best, order = tf.math.top_k(scores, k=max_total, sorted=True)
        outputs.append((tf.gather(tf.concat(boxes, 0), order), tf.maximum(best, 0.0),
                        tf.gather(tf.concat(classes, 0), order),
                        tf.reduce_sum(tf.cast(best >= 0.0, tf.int32))))
    return tuple(tf.stack(parts) for parts in zip(*outputs))
