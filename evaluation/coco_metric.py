"""The COCO detection metric through pycocotools: AP@[.5:.95], AP50, AP75, AP/AR by size, AR@1/10/100.

Reads the detections and ground truth collected once by evaluation/detections.py (a
`Collection`, voc_metric's pixel layout) and builds the two COCO json documents pycocotools
scores:

* ground truth (`ground_truth_json`): every evaluated image (also those without boxes), each
  gt box as ``bbox [x, y, w, h]`` with ``area = w * h`` (the records keep no segmentation
  area, so COCO's small/medium/large split uses box areas here; official COCO numbers use
  the mask area). A crowd box (COCO ``iscrowd=1``) keeps ``iscrowd=1``; a VOC 'difficult'
  box becomes ``iscrowd=1`` too, as mmdetection's VOC-to-COCO converter does, so detections
  on it are neither true nor false positives (pycocotools matches crowd regions by the
  detection's intersection over its own area, and several detections may match one);
* results (`results_json`): per image at most `max_detections` (100, COCO's maxDets) of the
  post-processed detections, best first, as ``{'image_id', 'category_id', 'bbox', 'score'}``.

Ids: an image's COCO id is the record's 'image/source_id' (what the COCO converter stores)
when every evaluated record has a distinct integer one, else its 1-based position; a label's
category id is the manifest's 'category_ids' entry (COCO's own ids) when given, else the
label id itself.

Pixels: boxes are ``normalized * width`` (evaluation/detections.py), which for COCO records
is exactly COCO's 0-based continuous frame; ``[x, y, w, h] = [xmin, ymin, xmax - xmin, ymax -
ymin]`` with no +1. On VOC records the same formula applies to the stored 1-based coordinates
(ground truth and detections alike, so IoUs are unchanged; the +1 of VOC's inclusive widths
is not added, which is COCO's convention).
"""
import contextlib
import io
import json
import os

import numpy as np

RESULTS_FILE = 'coco_results.json'
GROUND_TRUTH_FILE = 'coco_ground_truth.json'
MAX_DETECTIONS = 100
# pycocotools' COCOeval.stats, in its order.
STAT_NAMES = ('AP', 'AP50', 'AP75', 'AP_small', 'AP_medium', 'AP_large',
              'AR1', 'AR10', 'AR100', 'AR_small', 'AR_medium', 'AR_large')


def coco_image_ids(source_ids):
    """COCO image ids of the evaluated images: the records' source ids as integers when every
    one is a distinct integer, else 1, 2, ... in evaluation order."""
    try:
        ids = [int(s) for s in source_ids]
    except (TypeError, ValueError):
        ids = None
    if ids is None or len(set(ids)) != len(ids):
        return list(range(1, len(source_ids) + 1))
    return ids


def label_category_ids(num_classes, category_ids=None):
    """[category id of label 0 (unused), label 1, ...]: `category_ids` (the manifest's, for
    labels 1..num_classes-1) or the label ids themselves."""
    if category_ids is None:
        return list(range(num_classes))
    ids = [int(c) for c in category_ids]
    if len(ids) != num_classes - 1:
        raise ValueError('the manifest lists %d category ids for %d classes; convert the data '
                         'again so that each class has its COCO category id.'
                         % (len(ids), num_classes - 1))
    return [0] + ids


def _xywh(boxes_pixels):
    boxes = np.asarray(boxes_pixels, np.float64).reshape(-1, 4)
    return np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0],
                     boxes[:, 3] - boxes[:, 1]], axis=1)


def ground_truth_json(collection, ground_truth, class_names, category_ids=None):
    """The COCO ground-truth document of an evaluation (see the module docstring).

    Args:
      collection: evaluation/detections.Collection (image ids, sizes, source ids).
      ground_truth: list of per-image dicts in voc_metric layout ('boxes_pixels', 'labels',
        optional 'difficult' and 'iscrowd').
      class_names: names, index = label id ('none' first).
      category_ids: the COCO category id of label 1, 2, ... (None: the label ids).
    Returns:
      dict with 'images', 'annotations', 'categories'.
    """
    cat = label_category_ids(len(class_names), category_ids)
    image_ids = coco_image_ids(collection.source_ids)
    images, annotations = [], []
    for index, record in enumerate(ground_truth):
        images.append({'id': image_ids[index], 'file_name': collection.image_ids[index],
                       'width': int(collection.widths[index]),
                       'height': int(collection.heights[index])})
        labels = np.asarray(record['labels'], np.int64).reshape(-1)
        boxes = _xywh(record['boxes_pixels'])
        ignore = np.zeros(len(labels), bool)
        for key in ('difficult', 'iscrowd'):
            if record.get(key) is not None:
                ignore |= np.asarray(record[key], bool).reshape(-1)
        for k in range(len(labels)):
            if not 0 < labels[k] < len(class_names):
                continue
            box = [float(v) for v in boxes[k]]
            annotations.append({'id': len(annotations) + 1, 'image_id': image_ids[index],
                                'category_id': cat[labels[k]], 'bbox': box,
                                'area': box[2] * box[3], 'iscrowd': int(ignore[k])})
    categories = [{'id': cat[k], 'name': class_names[k]} for k in range(1, len(class_names))]
    return {'images': images, 'annotations': annotations, 'categories': categories}


def results_json(collection, num_classes, category_ids=None, max_detections=MAX_DETECTIONS):
    """The COCO results list: per image at most `max_detections` detections (highest scores;
    ties keep the post-processing's order), each {'image_id', 'category_id', 'bbox' [x, y, w,
    h] pixels, 'score'}."""
    cat = label_category_ids(num_classes, category_ids)
    image_ids = coco_image_ids(collection.source_ids)
    valid = (collection.det_labels > 0) & (collection.det_labels < num_classes)
    order = np.lexsort((np.arange(len(valid)), -collection.det_scores, collection.det_image))
    order = order[valid[order]]
    images = collection.det_image[order]
    starts = np.searchsorted(images, images, side='left')  # first row of each image's run
    order = order[np.arange(len(order)) - starts < max_detections]
    boxes = np.round(_xywh(collection.det_boxes[order]), 3).tolist()
    ids = np.asarray(image_ids, np.int64)[collection.det_image[order]].tolist()
    categories = np.asarray(cat, np.int64)[collection.det_labels[order]].tolist()
    scores = np.round(collection.det_scores[order], 6).tolist()
    return [{'image_id': i, 'category_id': c, 'bbox': b, 'score': v}
            for i, c, b, v in zip(ids, categories, boxes, scores)]


def _quiet(fn, *args):
    """fn(*args) with pycocotools' prints captured; returns (result, printed text)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = fn(*args)
    return result, buffer.getvalue()


BACKENDS = ('pycocotools', 'faster-coco-eval')


def _backend(name):
    """(COCO, COCOeval class, extra COCOeval kwargs) of a backend of BACKENDS."""
    if name == 'pycocotools':
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
        return COCO, COCOeval, {}
    if name == 'faster-coco-eval':
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError:
            raise ValueError('--coco_backend faster-coco-eval needs the faster-coco-eval package; '
                             'pip install faster-coco-eval, or use --coco_backend pycocotools.')
        return COCO, COCOeval_faster, {'print_function': print}
    raise ValueError('unknown COCO metric backend %r; use one of %s (--coco_backend).'
                     % (name, ', '.join(BACKENDS)))


def evaluate(gt_document, results, backend='pycocotools'):
    """Scores `results` against `gt_document` with pycocotools' COCOeval (bbox), or with
    faster-coco-eval's COCOeval_faster (backend 'faster-coco-eval': the same 12 figures,
    measured 5x faster and equal to pycocotools on `bench_ssd.py --stages coco_metric`).

    Returns:
      dict: 'stats' {STAT_NAMES: float} (-1 where pycocotools has nothing to score),
      'summary_text' (pycocotools' own 12 summary lines, exactly as it prints them),
      'per_class' {category id: AP@[.5:.95] or None without gt}, 'num_detections'.
    """
    COCO, COCOeval, options = _backend(backend)

    def build():
        gt = COCO()
        gt.dataset = json.loads(json.dumps(gt_document))
        gt.createIndex()
        if results:
            dt = gt.loadRes(json.loads(json.dumps(results)))
        else:  # loadRes refuses an empty list; an empty result set scores 0
            dt = COCO()
            dt.dataset = {'images': list(gt.dataset['images']), 'annotations': [],
                          'categories': list(gt.dataset['categories'])}
            dt.createIndex()
        evaluator = COCOeval(gt, dt, 'bbox', **options)
        evaluator.evaluate()
        evaluator.accumulate()
        return evaluator

    evaluator, _ = _quiet(build)
    _, text = _quiet(evaluator.summarize)
    precision = evaluator.eval['precision']  # [T, R, K, A, M]
    per_class = {}
    for k, cid in enumerate(evaluator.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        per_class[int(cid)] = float(np.mean(values)) if values.size else None
    return {'stats': {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats[:12])},
            'summary_text': text.rstrip('\n'), 'per_class': per_class,
            'num_detections': len(results)}


def format_table(coco, class_names, category_ids=None, num_images=None):
    """The printed COCO table: pycocotools' summary lines, AP per class, then one line that
    begins 'COCO AP@[.5:.95]:'."""
    cat = label_category_ids(len(class_names), category_ids)
    stats = coco['stats']
    lines = ['COCO detection metric (pycocotools, bbox, at most %d detections per image)%s:'
             % (MAX_DETECTIONS, ' on %d images' % num_images if num_images is not None else ''),
             coco['summary_text'],
             '%-13s %8s %14s' % ('class', 'cat id', 'AP@[.5:.95]')]
    for label in range(1, len(class_names)):
        ap = coco['per_class'].get(cat[label])
        lines.append('%-13s %8d %14s' % (class_names[label], cat[label],
                                         'n/a' if ap is None else '%.4f' % ap))
    lines.append('COCO AP@[.5:.95]: %.4f   AP50: %.4f   AP75: %.4f   AP small/medium/large: '
                 '%.4f/%.4f/%.4f   AR@100: %.4f   (%d detections; -1 = nothing to score)'
                 % (stats['AP'], stats['AP50'], stats['AP75'], stats['AP_small'],
                    stats['AP_medium'], stats['AP_large'], stats['AR100'],
                    coco['num_detections']))
    return '\n'.join(lines)


def summarize(coco, class_names, category_ids=None):
    """The 'coco' entry of metrics.json: the 12 stats, AP per class by name (null without
    gt), and the detections scored."""
    cat = label_category_ids(len(class_names), category_ids)
    return {
        'max_detections': MAX_DETECTIONS,
        **{name: coco['stats'][name] for name in STAT_NAMES},
        'ap_per_class': {class_names[k]: coco['per_class'].get(cat[k])
                         for k in range(1, len(class_names))},
        'category_ids': {class_names[k]: cat[k] for k in range(1, len(class_names))},
        'num_detections': coco['num_detections'],
    }


def write_json(path, document):
    """Writes `document` as JSON to `path` (folder created); returns the path."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(document, f)
        f.write('\n')
    return path
