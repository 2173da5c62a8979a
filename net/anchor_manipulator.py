"""Anchor matching, box encoding and decoding (TensorFlow ops, graph- and tf.data-safe).

Boxes are `[ymin, xmin, ymax, xmax]` normalized to [0, 1]. The box code of a box against an
anchor is `[ty, tx, th, tw]`:

    ty = (cy - anchor_cy) / anchor_h / prior_scaling[0]
    tx = (cx - anchor_cx) / anchor_w / prior_scaling[1]
    th = log(h / anchor_h) / prior_scaling[2]
    tw = log(w / anchor_w) / prior_scaling[3]

`decode_boxes` is its exact inverse.

Matching (`encode_targets`), per image:
  * every anchor takes the valid gt box of highest IoU (lowest gt index on ties);
    positive if that IoU >= match_threshold, background (0) if < neg_threshold, ignored (-1)
    in between (an empty band when neg_threshold == match_threshold);
  * then every valid gt box claims its single best anchor (lowest anchor index on ties) as
    positive whatever the IoU, provided the IoU is > 0. When several gt boxes claim the same
    anchor, the one with the higher IoU with it wins (lowest gt index on ties), and the others
    get no forced anchor (as the original SSD.TensorFlow `do_dual_max_match`). A forced claim
    overrides the anchor's own threshold match.
  * gt boxes with label <= 0 or zero area (padding in batched data) take part in nothing.
"""
import tensorflow as tf

from net import anchors as anchor_lib

# SSD300's box-code variances (cy, cx, h, w), the spec's: the keyword default below.
DEFAULT_PRIOR_SCALING = tuple(anchor_lib.SSD300_SPEC['prior_scaling'])


def _center_form(boxes):
    """[..., 4] corners -> (cy, cx, h, w), each [...]."""
    ymin, xmin, ymax, xmax = tf.unstack(boxes, 4, axis=-1)
    return (ymin + ymax) * 0.5, (xmin + xmax) * 0.5, ymax - ymin, xmax - xmin


def _check_prior_scaling(prior_scaling):
    prior_scaling = [float(v) for v in prior_scaling]
    if len(prior_scaling) != 4:
        raise ValueError('prior_scaling has %d values; pass 4 (cy, cx, h, w), e.g. '
                         "spec['prior_scaling']." % len(prior_scaling))
    return prior_scaling


def iou_matrix(boxes_a, boxes_b):
    """Intersection over union of every box in `boxes_a` with every box in `boxes_b`.

    The one IoU of normalized (continuous) boxes, used by target matching and by the
    training crop sampler (preprocessing/ssd_preprocessing.py). The VOC metric has its own
    numpy IoU on pixel boxes with the devkit's inclusive +1 widths (evaluation/voc_metric.py).

    Args:
      boxes_a: float32 [N, 4], boxes_b: float32 [M, 4], [ymin, xmin, ymax, xmax].
    Returns:
      float32 [N, M]; 0 where the union is empty (degenerate boxes).
    """
    boxes_a = tf.convert_to_tensor(boxes_a, tf.float32)
    boxes_b = tf.convert_to_tensor(boxes_b, tf.float32)
    a_ymin, a_xmin, a_ymax, a_xmax = [t[:, None] for t in tf.unstack(boxes_a, 4, axis=-1)]
    b_ymin, b_xmin, b_ymax, b_xmax = [t[None, :] for t in tf.unstack(boxes_b, 4, axis=-1)]
    inter_h = tf.maximum(tf.minimum(a_ymax, b_ymax) - tf.maximum(a_ymin, b_ymin), 0.0)
    inter_w = tf.maximum(tf.minimum(a_xmax, b_xmax) - tf.maximum(a_xmin, b_xmin), 0.0)
    inter = inter_h * inter_w
    area_a = tf.maximum(a_ymax - a_ymin, 0.0) * tf.maximum(a_xmax - a_xmin, 0.0)
    area_b = tf.maximum(b_ymax - b_ymin, 0.0) * tf.maximum(b_xmax - b_xmin, 0.0)
    return tf.math.divide_no_nan(inter, area_a + area_b - inter)


def encode_boxes(boxes, anchors, prior_scaling=DEFAULT_PRIOR_SCALING):
    """Box codes of `boxes` against `anchors` (same leading shape or broadcastable).

    Args:
      boxes: float32 [..., A, 4] [ymin, xmin, ymax, xmax] (positive height and width).
      anchors: float32 [A, 4] [ymin, xmin, ymax, xmax].
      prior_scaling: 4 floats (cy, cx, h, w).
    Returns:
      float32 [..., A, 4] codes [ty, tx, th, tw] (see module docstring).
    """
    ps = _check_prior_scaling(prior_scaling)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    cy, cx, h, w = _center_form(boxes)
    acy, acx, ah, aw = _center_form(anchors)
    return tf.stack([(cy - acy) / ah / ps[0],
                     (cx - acx) / aw / ps[1],
                     tf.math.log(h / ah) / ps[2],
                     tf.math.log(w / aw) / ps[3]], axis=-1)


def decode_boxes(loc_preds, anchors, prior_scaling=DEFAULT_PRIOR_SCALING):
    """Inverse of `encode_boxes`: box codes -> boxes.

    Args:
      loc_preds: float32 [..., A, 4] codes [ty, tx, th, tw] (e.g. [B, 8732, 4]).
      anchors: float32 [A, 4] [ymin, xmin, ymax, xmax].
      prior_scaling: 4 floats (cy, cx, h, w).
    Returns:
      float32 [..., A, 4] boxes [ymin, xmin, ymax, xmax], not clipped.
    """
    ps = _check_prior_scaling(prior_scaling)
    loc_preds = tf.convert_to_tensor(loc_preds, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    acy, acx, ah, aw = _center_form(anchors)
    ty, tx, th, tw = tf.unstack(loc_preds, 4, axis=-1)
    cy = ty * ps[0] * ah + acy
    cx = tx * ps[1] * aw + acx
    half_h = tf.exp(th * ps[2]) * ah * 0.5
    half_w = tf.exp(tw * ps[3]) * aw * 0.5
    return tf.stack([cy - half_h, cx - half_w, cy + half_h, cx + half_w], axis=-1)


def _first_index_of_max(values, axis):
    """(max, index of its first occurrence) along `axis` of a 2-D tensor; deterministic ties."""
    best = tf.reduce_max(values, axis=axis, keepdims=True)
    size = tf.shape(values, out_type=tf.int32)[axis]
    positions = tf.range(size, dtype=tf.int32)
    positions = positions[:, None] if axis == 0 else positions[None, :]
    index = tf.reduce_min(tf.where(values >= best, positions, size), axis=axis)
    return tf.squeeze(best, axis), index


def encode_targets(gt_boxes, gt_labels, anchors, match_threshold=0.5, neg_threshold=0.5,
                   prior_scaling=DEFAULT_PRIOR_SCALING):
    """Matches one image's ground truth to the anchors and encodes the training targets.

    Args:
      gt_boxes: float32 [N, 4] [ymin, xmin, ymax, xmax]; N may be 0. Rows with label <= 0
        or zero area (padding) are ignored.
      gt_labels: int [N], 1..C-1 (0 / -1 = padding).
      anchors: float32 [A, 4] [ymin, xmin, ymax, xmax] (net.anchors.generate_anchors).
      match_threshold: IoU at or above which an anchor is positive.
      neg_threshold: IoU below which an anchor is background; anchors with
        neg_threshold <= IoU < match_threshold are ignored (-1). Must be <= match_threshold.
      prior_scaling: 4 floats (cy, cx, h, w).
    Returns:
      loc_targets: float32 [A, 4], codes [ty, tx, th, tw] of the matched gt box for positive
        anchors, 0 elsewhere.
      cls_targets: int32 [A], matched gt label (> 0) for positives, 0 background, -1 ignored.
    See the module docstring for the matching rules and their tie-breaking.
    """
    if float(neg_threshold) > float(match_threshold):
        raise ValueError('neg_threshold %g is above match_threshold %g; set neg_threshold <= '
                         'match_threshold (equal means no ignore band).'
                         % (neg_threshold, match_threshold))
    with tf.name_scope('encode_targets'):
        anchors = tf.convert_to_tensor(anchors, tf.float32)
        gt_boxes = tf.reshape(tf.cast(gt_boxes, tf.float32), [-1, 4])
        gt_labels = tf.reshape(tf.cast(gt_labels, tf.int32), [-1])
        # A trailing invalid dummy row keeps every reduction over the gt axis non-empty.
        boxes = tf.concat([gt_boxes, tf.zeros([1, 4], tf.float32)], axis=0)  # [N+1, 4]
        labels = tf.concat([gt_labels, tf.zeros([1], tf.int32)], axis=0)  # [N+1]
        ymin, xmin, ymax, xmax = tf.unstack(boxes, 4, axis=-1)
        valid = tf.logical_and(labels > 0, tf.logical_and(ymax > ymin, xmax > xmin))
        iou = tf.where(valid[:, None], iou_matrix(boxes, anchors), -1.0)  # [N+1, A]

        # Anchor side: best valid gt per anchor.
        anchor_iou, anchor_gt = _first_index_of_max(iou, axis=0)  # [A], [A]
        # Gt side: each valid gt claims its best anchor (if IoU > 0); of several gts claiming
        # one anchor, the highest IoU wins (lowest gt index on ties).
        gt_iou, gt_anchor = _first_index_of_max(iou, axis=1)  # [N+1], [N+1]
        claims = tf.logical_and(tf.logical_and(valid, gt_iou > 0.0)[:, None],
                                tf.one_hot(gt_anchor, tf.shape(anchors)[0], on_value=True,
                                           off_value=False, dtype=tf.bool))  # [N+1, A]
        claimed = tf.reduce_any(claims, axis=0)  # [A]
        _, claim_gt = _first_index_of_max(tf.where(claims, iou, -2.0), axis=0)

        matched_gt = tf.where(claimed, claim_gt, anchor_gt)
        positive = tf.logical_or(claimed, anchor_iou >= match_threshold)
        negative = tf.logical_and(tf.logical_not(positive), anchor_iou < neg_threshold)

        cls_targets = tf.where(positive, tf.gather(labels, matched_gt),
                               tf.where(negative, 0, -1))
        # Non-positive anchors are encoded against themselves (finite codes, no log(0)), then
        # zeroed.
        target_boxes = tf.where(positive[:, None], tf.gather(boxes, matched_gt), anchors)
        codes = encode_boxes(target_boxes, anchors, prior_scaling)
        loc_targets = tf.where(positive[:, None], codes, 0.0)
        return loc_targets, cls_targets
