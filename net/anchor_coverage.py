"""How well a set of default boxes (anchors) can match a data set's boxes, and anchor sizes fitted
to raise it. Pure numpy; no TensorFlow.

A ground-truth box is *covered* when at least one default box overlaps it at IoU >= 0.5 (the
matching threshold, net/anchor_manipulator.encode_targets): a box that no default box reaches
gets only the single anchor the matcher forces onto it, never the several threshold matches a
covered box gets, so an SSD learns it poorly. The coverage of a class is the fraction of its
boxes that are covered; the median best IoU says how close the rest come.

* `best_anchor_iou(boxes, anchors)`: each box's highest IoU with any anchor (brute force,
  chunked); `best_default_box_iou(boxes, spec)`: the same for an anchor spec, from the nearest
  cell of each layer (exact, a few ms for thousands of boxes);
* `coverage(best_iou, labels, ...)`: counts, coverage and median best IoU, overall and per class;
  `coverage_line`: the one-line summary training prints;
* `fit_preset(boxes, labels, base)`: SSD300 anchor sizes (and ratios) that raise the coverage of
  `boxes`, keeping the six feature maps and the boxes per location (the head's shape), and never
  lowering the overall or the mean per-class coverage.

Boxes are `[ymin, xmin, ymax, xmax]` normalized to the image, as the records store them; the
network sees the image resized to a square, so normalized IoU is the IoU at the training size.
"""
import math

import numpy as np

from net import anchors as anchor_lib

MATCH_IOU = 0.5


def _iou(boxes, anchors):
    """IoU of broadcast [..., 4] boxes and anchors: net/anchor_manipulator.iou_matrix's formula
    (normalized continuous boxes, 0 where the union is empty), in numpy."""
    b_ymin, b_xmin, b_ymax, b_xmax = np.moveaxis(boxes, -1, 0)
    a_ymin, a_xmin, a_ymax, a_xmax = np.moveaxis(anchors, -1, 0)
    inter = np.maximum(np.minimum(b_ymax, a_ymax) - np.maximum(b_ymin, a_ymin), 0)
    inter = inter * np.maximum(np.minimum(b_xmax, a_xmax) - np.maximum(b_xmin, a_xmin), 0)
    union = (np.maximum(b_ymax - b_ymin, 0) * np.maximum(b_xmax - b_xmin, 0) +
             np.maximum(a_ymax - a_ymin, 0) * np.maximum(a_xmax - a_xmin, 0) - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def best_anchor_iou(boxes, anchors, chunk_size=512):
    """Highest IoU of each box with any of `anchors` (any set of boxes), by brute force.

    Computed `chunk_size` boxes at a time ([chunk, A] arrays: tens of MB against SSD300's 8732
    anchors). `best_default_box_iou` gives the same numbers for an anchor spec's grid, faster.

    Args:
      boxes: [N, 4] normalized [ymin, xmin, ymax, xmax].
      anchors: [A, 4] in the same form (net/anchors.generate_anchors).
    Returns:
      float32 [N] (zeros when there are no anchors).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    anchors = np.asarray(anchors, np.float32).reshape(-1, 4)
    best = np.zeros(len(boxes), np.float32)
    if not len(boxes) or not len(anchors):
        return best
    for start in range(0, len(boxes), chunk_size):
        chunk = boxes[start:start + chunk_size]
        best[start:start + len(chunk)] = _iou(chunk[:, None, :], anchors[None, :, :]).max(axis=1)
    return best


def _nearest(centres, values):
    """Index of the nearest of the increasing `centres` [M] to each of `values` [N]."""
    above = np.clip(np.searchsorted(centres, values), 0, len(centres) - 1)
    below = np.clip(above - 1, 0, len(centres) - 1)
    return np.where(np.abs(values - centres[below]) <= np.abs(centres[above] - values),
                    below, above)


def layer_best_iou(boxes, spec, anchors=None):
    """Highest IoU of each box with the anchors of each layer of anchor spec `spec`: [L, N].

    Exact and O(N) per layer: within a layer every anchor type repeats on a grid of cells, and
    for two boxes of fixed sizes the overlap along y (and along x) only shrinks as their centres
    move apart, so each type's best anchor is the one in the cell nearest the box centre. The
    anchors and cell centres are net/anchors.generate_anchors' (`anchors`, if given, must be
    its output for `spec`).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    anchors = anchor_lib.generate_anchors(spec) if anchors is None else anchors
    per_location = anchor_lib.anchors_per_location(spec)
    bounds = np.cumsum([0] + anchor_lib.anchors_per_layer(spec))
    cy = (boxes[:, 0] + boxes[:, 2]) / 2
    cx = (boxes[:, 1] + boxes[:, 3]) / 2
    best = np.zeros((len(per_location), len(boxes)), np.float32)
    for layer, (size, k) in enumerate(zip(spec['feature_shapes'], per_location)):
        grid = anchors[bounds[layer]:bounds[layer + 1]].reshape(int(size), int(size), k, 4)
        rows = (grid[:, 0, 0, 0] + grid[:, 0, 0, 2]) / 2  # cell centres, increasing
        columns = (grid[0, :, 0, 1] + grid[0, :, 0, 3]) / 2
        nearest = grid[_nearest(rows, cy), _nearest(columns, cx)]  # [N, k, 4]
        if len(boxes):
            best[layer] = _iou(boxes[:, None, :], nearest).max(axis=1)
    return best


def best_default_box_iou(boxes, spec):
    """Highest IoU of each box ([N, 4]) with any default box of anchor spec `spec`: float32 [N],
    equal to best_anchor_iou(boxes, generate_anchors(spec)) (layer_best_iou)."""
    return layer_best_iou(boxes, spec).max(axis=0, initial=0.0)


def _stats(best, threshold):
    count = int(best.size)
    covered = int((best >= threshold).sum())
    return {'boxes': count, 'covered': covered,
            'coverage': covered / count if count else float('nan'),
            'median_best_iou': float(np.median(best)) if count else float('nan')}


def coverage(best_iou, labels, num_classes=None, threshold=MATCH_IOU):
    """Coverage summary of boxes whose best IoUs are `best_iou` ([N], best_anchor_iou).

    Args:
      labels: int [N], each box's label id (1..C-1).
      num_classes: C (background included): per-class entries for labels 1..C-1, also those
        without boxes; None: the labels present.
    Returns:
      dict 'boxes', 'covered', 'coverage' (covered / boxes; nan without boxes),
      'median_best_iou', and 'per_class' {label: the same four keys}, and 'mean_class_coverage'
      (the mean over the classes that have boxes: every class counts the same).
    """
    best = np.asarray(best_iou, np.float32).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    ids = (range(1, int(num_classes)) if num_classes is not None
           else sorted(set(labels.tolist())))
    summary = _stats(best, threshold)
    summary['per_class'] = {int(k): _stats(best[labels == k], threshold) for k in ids}
    present = [c['coverage'] for c in summary['per_class'].values() if c['boxes']]
    summary['mean_class_coverage'] = float(np.mean(present)) if present else float('nan')
    return summary


def box_coverage(boxes, labels, spec, num_classes=None, threshold=MATCH_IOU):
    """`coverage` of `boxes` ([N, 4]) with `labels` by the anchors of anchor spec `spec`."""
    return coverage(best_default_box_iou(boxes, spec), labels, num_classes, threshold)


def _percent(value):
    return 'n/a' if value != value else '%.1f%%' % (100.0 * value)


def coverage_line(summary, class_names, threshold=MATCH_IOU):
    """'RBC 99.1%, WBC 100.0%, Platelets 10.2% (all 3941 boxes: 91.0%)': the coverage at IoU >=
    `threshold` of each class of `summary` (`coverage`), named by `class_names` (index = label
    id, 'none' first)."""
    parts = []
    for label, stats in summary['per_class'].items():
        name = class_names[label] if label < len(class_names) else 'class_%d' % label
        parts.append('%s %s' % (name, _percent(stats['coverage']) if stats['boxes']
                                else 'no boxes'))
    return '%s (all %d boxes: %s)' % (', '.join(parts), summary['boxes'],
                                      _percent(summary['coverage']))


# ----------------------------------------------------------------------------- fitting


def preset_of_spec(spec):
    """The preset dict (net/anchors.check_fitted_preset's keys) that `spec` was built from."""
    return {'anchor_scales': [float(v) for v in spec['anchor_scales']],
            'anchor_scale_end': float(spec['anchor_scale_end']),
            'extra_anchor_scales': [float(v) for v in anchor_lib.extra_anchor_scales(spec)],
            'anchor_ratios': [[float(r) for r in ratios] for ratios in spec['anchor_ratios']]}


def _score(summary):
    return (summary['coverage'], summary['mean_class_coverage'])


def _better(new, old, new_iou, old_iou):
    """Neither coverage falls, and one rises (or, both equal, the mean best IoU rises)."""
    if any(n < o - 1e-12 for n, o in zip(new, old)):
        return False
    return any(n > o + 1e-12 for n, o in zip(new, old)) or new_iou > old_iou + 1e-6


def fit_preset(boxes, labels, base_spec, max_boxes=4000, rounds=4, fit_ratios=True, seed=0,
               threshold=MATCH_IOU, progress=None):
    """Anchor sizes fitted to `boxes`: a coordinate search from `base_spec`'s sizes.

    The parameters are SSD300's seven scales (s_1..s_6 and the notional s_7 that sizes the last
    extra square: extra squares are sqrt(s_k * s_k+1), except that those whose two scales are
    untouched keep `base_spec`'s values) and, with `fit_ratios`, each layer's aspect ratios. A
    step multiplies one of them by a factor and is kept when neither the overall coverage nor
    the mean per-class coverage (every class counts the same) falls and one of them (or the mean
    best IoU) rises. (So a class can lose a box or two where another gains many; the report
    prints every class's coverage before and after.) Scales stay
    increasing layer by layer; the feature maps, the ratios' count per layer, and so the boxes
    per location and the head's shape, are `base_spec`'s.

    Args:
      boxes: [N, 4] normalized; labels: [N] label ids.
      base_spec: the anchor spec training would use (net/anchors.ssd300_anchor_spec).
      max_boxes: the search runs on at most this many boxes (a seeded sample); the result is
        checked on all of them and is `base_spec`'s preset if it would lower either coverage.
      progress: callable(str) told about each round, or None.
    Returns:
      (preset dict for net/anchors.check_fitted_preset, fitted anchor spec).
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    base = preset_of_spec(base_spec)
    if len(boxes) == 0:
        return base, dict(base_spec)
    sample = np.arange(len(boxes))
    if len(boxes) > max_boxes:
        sample = np.sort(np.random.RandomState(seed).choice(len(boxes), max_boxes, replace=False))
    searched = boxes[sample]
    base_scales = base['anchor_scales'] + [base['anchor_scale_end']]
    scales = list(base_scales)
    ratios = [list(r) for r in base['anchor_ratios']]

    def build(scales, ratios):
        extras = [base['extra_anchor_scales'][k] if scales[k:k + 2] == base_scales[k:k + 2]
                  else round(math.sqrt(scales[k] * scales[k + 1]), 6)
                  for k in range(len(scales) - 1)]
        preset = {'anchor_scales': [round(s, 6) for s in scales[:-1]],
                  'anchor_scale_end': round(scales[-1], 6), 'extra_anchor_scales': extras,
                  'anchor_ratios': [[round(r, 4) for r in rs] for rs in ratios]}
        spec = dict(base_spec, anchor_scales=preset['anchor_scales'],
                    anchor_scale_end=preset['anchor_scale_end'],
                    extra_anchor_scales=extras, anchor_ratios=preset['anchor_ratios'])
        return preset, spec

    def evaluate(scales, ratios):
        best = best_default_box_iou(searched, build(scales, ratios)[1])
        return _score(coverage(best, labels[sample], threshold=threshold)), float(best.mean())

    current, current_iou = evaluate(scales, ratios)
    for round_index in range(rounds):
        improved = False
        for k in range(len(scales)):
            for factor in (0.5, 0.7, 0.85, 0.93, 1.07, 1.18, 1.4):
                trial = list(scales)
                trial[k] = scales[k] * factor
                if not (0.01 <= trial[k] <= 1.5) or any(
                        trial[j] >= trial[j + 1] for j in range(len(trial) - 1)):
                    continue
                score, mean_iou = evaluate(trial, ratios)
                if _better(score, current, mean_iou, current_iou):
                    scales, current, current_iou, improved = trial, score, mean_iou, True
        for layer in range(len(ratios) if fit_ratios else 0):
            for j in range(len(ratios[layer])):
                for factor in (0.75, 1.33):
                    trial = [list(r) for r in ratios]
                    trial[layer][j] = ratios[layer][j] * factor
                    if not 0.1 <= trial[layer][j] <= 10 or abs(trial[layer][j] - 1) < 0.15:
                        continue
                    score, mean_iou = evaluate(scales, trial)
                    if _better(score, current, mean_iou, current_iou):
                        ratios, current, current_iou, improved = trial, score, mean_iou, True
        if progress:
            progress('fit round %d of at most %d: coverage %s, mean per-class coverage %s '
                     '(%d boxes)' % (round_index + 1, rounds, _percent(current[0]),
                                     _percent(current[1]), len(sample)))
        if not improved:
            break
    preset, spec = build(scales, ratios)
    anchor_lib.check_fitted_preset(preset)
    everything = lambda s: coverage(best_default_box_iou(boxes, s), labels,  # noqa: E731
                                    threshold=threshold)
    if len(sample) < len(boxes) and not _better(_score(everything(spec)),
                                                _score(everything(base_spec)), 1, 0):
        return base, dict(base_spec)
    return preset, spec
