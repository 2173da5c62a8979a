"""The metric stages, on random data of a real test set's size (no network involved):

  metric       evaluation/voc_metric.evaluate on a random VOC07-test-sized set (4952 images,
               200 detections each), best of --metric_repeats.
  coco_metric  evaluation/coco_metric (pycocotools) on a random val2017-sized set
               (--coco_images 5000, ~36,000 gt boxes, 100 detections each); faster-coco-eval
               beside it when installed (speed-up, largest difference over the 12 figures).
"""
import collections
import time

# The sizes of the test sets the random data stands in for (the flags' defaults too).
VOC07_TEST_IMAGES = 4952
VAL2017_IMAGES = 5000


def make_benchmark_data(num_images=VOC07_TEST_IMAGES, num_classes=21, objects_per_image=3,
                        detections_per_image=200, seed=0):
    """Random VOC07-test-sized data: (detections, ground_truth) in voc_metric.evaluate's layout.

    About num_images * objects_per_image gt boxes (10% difficult), detections_per_image
    detections per image: half jittered copies of the image's gt boxes (their class), half
    random boxes of random classes.
    """
    import numpy as np
    from evaluation import voc_metric
    rng = np.random.RandomState(seed)
    ground_truth = []
    image_ids, labels, scores, boxes = [], [], [], []
    for index in range(num_images):
        n = rng.randint(1, 2 * objects_per_image)
        xy = rng.uniform(0, 300, size=(n, 2))
        wh = rng.uniform(20, 200, size=(n, 2))
        gt = np.concatenate([xy, xy + wh], axis=1)
        gt_labels = rng.randint(1, num_classes, size=n)
        ground_truth.append({'boxes_pixels': gt, 'labels': gt_labels,
                             'difficult': rng.uniform(size=n) < 0.1})
        half = detections_per_image // 2
        pick = rng.randint(0, n, size=half)
        near = gt[pick] + rng.normal(0, 15, size=(half, 4))
        far_xy = rng.uniform(0, 400, size=(detections_per_image - half, 2))
        far = np.concatenate([far_xy, far_xy + rng.uniform(10, 200, size=far_xy.shape)], axis=1)
        image_ids.append(np.full(detections_per_image, index))
        labels.append(np.concatenate([gt_labels[pick],
                                      rng.randint(1, num_classes, size=len(far))]))
        scores.append(rng.uniform(size=detections_per_image))
        boxes.append(np.concatenate([near, far]))
    detections = voc_metric.detections_by_class(
        np.concatenate(image_ids), np.concatenate(labels), np.concatenate(scores),
        np.concatenate(boxes), num_classes)
    return detections, ground_truth


def time_metric(repeats=3, **kwargs):
    """Times voc_metric.evaluate on `make_benchmark_data(**kwargs)`; returns (best seconds,
    result, detections, ground_truth)."""
    from evaluation import voc_metric
    detections, ground_truth = make_benchmark_data(**kwargs)
    best, result = float('inf'), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = voc_metric.evaluate(detections, ground_truth, len(detections))
        best = min(best, time.perf_counter() - start)
    return best, result, detections, ground_truth


def bench_metric(args, context):
    """evaluation/voc_metric.evaluate on a random VOC07-test-sized set."""
    seconds, result, detections, ground_truth = time_metric(
        repeats=args.metric_repeats, num_images=args.metric_images)
    out = collections.OrderedDict()
    out['images'] = len(ground_truth)
    out['gt_boxes'] = int(sum(len(g['labels']) for g in ground_truth))
    out['detections'] = int(sum(len(d) for d in detections))
    out['seconds_best'] = round(seconds, 3)
    out['map_07'] = round(float(result['map_07']), 4)
    out['target_seconds'] = args.metric_target_s
    out['meets_target'] = seconds < args.metric_target_s
    return out


def make_coco_benchmark_data(num_images=VAL2017_IMAGES, num_classes=81, gt_per_image=7.2,
                             detections_per_image=100, seed=0):
    """Random val2017-sized data for the COCO metric: (Collection, ground truth).

    About num_images * gt_per_image gt boxes (1% crowd) on 640x480 images, exactly
    detections_per_image detections per image: half jittered copies of the image's gt boxes
    (their class), half random boxes of random classes; integer source ids (COCO image ids).
    """
    import numpy as np
    from evaluation.detections import Collection
    rng = np.random.RandomState(seed)
    ground_truth, det_image, labels, scores, boxes = [], [], [], [], []
    for index in range(num_images):
        n = rng.poisson(gt_per_image)
        xy = rng.uniform(0, 500, size=(n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(4, 300, size=(n, 2))], axis=1)
        gt_labels = rng.randint(1, num_classes, size=n)
        ground_truth.append({'boxes_pixels': gt, 'labels': gt_labels,
                             'iscrowd': rng.uniform(size=n) < 0.01,
                             'difficult': np.zeros(n, bool)})
        half = detections_per_image // 2 if n else 0
        pick = rng.randint(0, max(n, 1), size=half)
        near = gt[pick] + rng.normal(0, 8, size=(half, 4)) if n else np.zeros([0, 4])
        far_xy = rng.uniform(0, 600, size=(detections_per_image - half, 2))
        far = np.concatenate([far_xy, far_xy + rng.uniform(4, 300, size=far_xy.shape)], axis=1)
        det_image.append(np.full(detections_per_image, index))
        labels.append(np.concatenate([gt_labels[pick] if n else np.zeros(0, int),
                                      rng.randint(1, num_classes, size=len(far))]))
        scores.append(rng.uniform(size=detections_per_image))
        boxes.append(np.concatenate([near, far]))
    collection = Collection(
        ['%012d' % (139 + i) for i in range(num_images)], np.full(num_images, 480),
        np.full(num_images, 640), np.concatenate(det_image), np.concatenate(labels),
        np.concatenate(scores), np.concatenate(boxes), ground_truth,
        [str(139 + i) for i in range(num_images)])
    return collection, ground_truth


def _faster_coco_eval(gt_document, results):
    """faster-coco-eval's COCOeval_faster on the same documents: (seconds, stats) or None
    when the package is not installed."""
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        return None
    import contextlib
    import io
    import json
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json.loads(json.dumps(gt_document)))
        evaluator = COCOeval_faster(gt, gt.loadRes(json.loads(json.dumps(results))), 'bbox')
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return time.perf_counter() - start, [float(v) for v in evaluator.stats[:12]]


def bench_coco_metric(args, context):
    """evaluation/coco_metric (pycocotools) on a random val2017-sized set; faster-coco-eval
    beside it when installed (its speed-up and largest difference on the 12 figures)."""
    from evaluation import coco_metric
    collection, ground_truth = make_coco_benchmark_data(num_images=args.coco_images)
    start = time.perf_counter()
    gt_document = coco_metric.ground_truth_json(collection, ground_truth,
                                                ['none'] + ['c%d' % k for k in range(1, 81)])
    results = coco_metric.results_json(collection, 81)
    build = time.perf_counter() - start
    start = time.perf_counter()
    scored = coco_metric.evaluate(gt_document, results)
    seconds = time.perf_counter() - start
    out = collections.OrderedDict([
        ('images', args.coco_images), ('gt_boxes', len(gt_document['annotations'])),
        ('detections', len(results)), ('build_json_seconds', round(build, 3)),
        ('pycocotools_seconds', round(seconds, 3)), ('AP', round(scored['stats']['AP'], 4))])
    faster = _faster_coco_eval(gt_document, results)
    if faster is None:
        out['faster_coco_eval'] = 'not installed'
    else:
        ours = [scored['stats'][name] for name in coco_metric.STAT_NAMES]
        diff = max(abs(a - b) for a, b in zip(faster[1], ours))
        out['faster_coco_eval_seconds'] = round(faster[0], 3)
        out['faster_speedup'] = round(seconds / faster[0], 2)
        out['faster_max_abs_difference'] = diff
    return out
