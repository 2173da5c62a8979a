"""The COCO metric plug-in (evaluation/coco_metric.py, pycocotools) on hand-made cases.

No TensorFlow, no network: Collections built by hand, scored through the same functions
eval_ssd.py --metric coco calls.
"""
import io
import json
import contextlib

import numpy as np
import pytest

from conftest import import_or_skip
from evaluation import coco_metric
from evaluation.detections import Collection
from evaluation.metrics import run_metrics

NAMES = ['none', 'circle', 'square']
CATEGORY_IDS = [7, 42]  # COCO-like: not contiguous, not the label ids


def _collection(detections, sizes=((400, 500),), source_ids=None):
    """detections: [(image index, label, score, [xmin, ymin, xmax, ymax])]."""
    rows = list(detections)
    return Collection(
        ['img%d' % i for i in range(len(sizes))], [h for h, _ in sizes], [w for _, w in sizes],
        [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
        np.asarray([r[3] for r in rows], np.float64).reshape(-1, 4), [],
        source_ids if source_ids is not None else [''] * len(sizes))


def _gt(boxes, labels, iscrowd=None, difficult=None):
    n = len(labels)
    return {'boxes_pixels': np.asarray(boxes, np.float64).reshape(-1, 4),
            'labels': np.asarray(labels, np.int64),
            'iscrowd': np.asarray(iscrowd or [0] * n, bool),
            'difficult': np.asarray(difficult or [0] * n, bool)}


def _score(collection, ground_truth, names=NAMES, category_ids=None):
    document = coco_metric.ground_truth_json(collection, ground_truth, names, category_ids)
    results = coco_metric.results_json(collection, len(names), category_ids)
    return coco_metric.evaluate(document, results)


# Two gt boxes A, B of one class in one 400x500 image; detections, best first:
#   d1 0.9 = A exactly (IoU 1), d2 0.8 on nothing, d3 0.7 inside B covering 72% of it (IoU 0.72).
A = [10, 10, 110, 110]
B = [200, 0, 300, 100]
D3 = [200, 0, 300, 72]
HAND = [(0, 1, 0.9, A), (0, 1, 0.8, [350, 300, 450, 380]), (0, 1, 0.7, D3)]


def test_hand_made_case_worked_out_on_paper():
    """COCO AP averages 10 IoU thresholds t = 0.50, 0.55, ..., 0.95; each AP is the mean of
    the precision envelope at 101 recall points r = 0, 0.01, ..., 1.

    t <= 0.70 (5 thresholds): d3 matches B. TP/FP in score order: TP, FP, TP; recall 0.5, 0.5,
      1.0; precision 1, 1/2, 2/3; envelope 1, 2/3, 2/3. r = 0 .. 0.50 (51 points) -> 1, r =
      0.51 .. 1 (50 points) -> 2/3: AP = (51 + 50 * 2/3) / 101 = 0.834983.
    t >= 0.75 (5 thresholds): d3 is a FP. Recall never passes 0.5: AP = 51 / 101 = 0.504950.
    AP@[.5:.95] = (5 * 0.834983 + 5 * 0.504950) / 10 = 0.669967; AP50 = 0.834983 (t = 0.5);
    AP75 = 0.504950. AR@100 = mean over t of the final recall = (5 * 1 + 5 * 0.5) / 10 = 0.75.
    """
    scored = _score(_collection(HAND), [_gt([A, B], [1, 1])])
    high = (51 + 50 * 2.0 / 3.0) / 101
    low = 51.0 / 101
    stats = scored['stats']
    assert stats['AP'] == pytest.approx((high + low) / 2, abs=1e-6)
    assert stats['AP50'] == pytest.approx(high, abs=1e-6)
    assert stats['AP75'] == pytest.approx(low, abs=1e-6)
    assert stats['AR100'] == pytest.approx(0.75, abs=1e-6)
    assert stats['AR1'] == pytest.approx(0.5, abs=1e-6)  # one detection per image: d1
    # Class 2 has no gt: pycocotools' -1, reported as n/a.
    assert scored['per_class'] == {1: pytest.approx((high + low) / 2, abs=1e-6), 2: None}


def test_oracle_ground_truth_as_detections_scores_one():
    """Every gt box submitted as a detection (ids mapped to COCO's, an image without gt, a
    crowd box and non-contiguous category ids) scores AP 1.0 and AR 1.0."""
    rng = np.random.default_rng(3)
    sizes = [(300, 400), (480, 360), (500, 500), (250, 300)]
    truth, detections = [], []
    for index, (h, w) in enumerate(sizes):
        n = [3, 1, 0, 5][index]
        x0 = rng.uniform(0, w / 2, n)
        y0 = rng.uniform(0, h / 2, n)
        boxes = np.stack([x0, y0, x0 + rng.uniform(20, w / 2, n),
                          y0 + rng.uniform(20, h / 2, n)], axis=1)
        labels = rng.integers(1, 3, n)
        crowd = [int(index == 0 and k == 0) for k in range(n)]
        truth.append(_gt(boxes, labels, crowd))
        detections += [(index, int(labels[k]), 0.5 + 0.05 * k, boxes[k]) for k in range(n)
                       if not crowd[k]]
    collection = _collection(detections, sizes, source_ids=['139', '285', '632', '724'])
    scored = _score(collection, truth, category_ids=CATEGORY_IDS)
    for name in ('AP', 'AP50', 'AP75', 'AR100'):
        assert scored['stats'][name] == pytest.approx(1.0), name
    results = coco_metric.results_json(collection, 3, CATEGORY_IDS)
    assert {r['image_id'] for r in results} == {139, 285, 724}
    assert {r['category_id'] for r in results} <= set(CATEGORY_IDS)


def test_detections_on_a_crowd_region_are_neither_true_nor_false_positives():
    """A crowd box C and a top-scoring detection inside it leave the hand-made AP unchanged;
    if C were dropped from the ground truth (the obvious wrong implementation) that detection
    would be a false positive ranked first and AP would fall."""
    crowd = [20, 200, 180, 380]
    on_crowd = (0, 1, 0.95, [40, 220, 120, 300])
    plain = _score(_collection(HAND), [_gt([A, B], [1, 1])])['stats']
    with_crowd = _score(_collection(HAND + [on_crowd]),
                        [_gt([A, B, crowd], [1, 1, 1], iscrowd=[0, 0, 1])])['stats']
    dropped = _score(_collection(HAND + [on_crowd]), [_gt([A, B], [1, 1])])['stats']
    assert with_crowd['AP'] == pytest.approx(plain['AP'], abs=1e-9)
    assert with_crowd['AP50'] == pytest.approx(plain['AP50'], abs=1e-9)
    assert dropped['AP'] < plain['AP'] - 0.05
    # A VOC 'difficult' box is an ignore region the same way (mmdetection's convention).
    difficult = _score(_collection(HAND + [on_crowd]),
                       [_gt([A, B, crowd], [1, 1, 1], difficult=[0, 0, 1])])['stats']
    assert difficult['AP'] == pytest.approx(plain['AP'], abs=1e-9)


def test_results_keep_at_most_100_detections_per_image_best_first_in_coco_pixels():
    scores = np.linspace(0.01, 0.99, 150)
    detections = [(0, 1, s, [10, 20, 60, 100]) for s in scores]
    detections += [(1, 2, 0.5, [0.5, 1.25, 10.5, 21.25])]
    collection = _collection(detections, sizes=((400, 500), (300, 300)),
                             source_ids=['5', '9'])
    results = coco_metric.results_json(collection, 3, CATEGORY_IDS)
    first = [r for r in results if r['image_id'] == 5]
    assert len(first) == 100
    assert [r['score'] for r in first] == [round(float(s), 6) for s in scores[::-1][:100]]
    assert first[0]['bbox'] == [10.0, 20.0, 50.0, 80.0] and first[0]['category_id'] == 7
    assert [r for r in results if r['image_id'] == 9] == [
        {'image_id': 9, 'category_id': 42, 'bbox': [0.5, 1.25, 10.0, 20.0], 'score': 0.5}]


def test_image_ids_fall_back_to_positions_without_integer_source_ids():
    assert coco_metric.coco_image_ids(['', '']) == [1, 2]
    assert coco_metric.coco_image_ids(['12', '12']) == [1, 2]  # not distinct
    assert coco_metric.coco_image_ids(['12', '3']) == [12, 3]


def test_printed_table_equals_pycocotools_on_the_written_files(tmp_path):
    """run_metrics writes coco_results.json and coco_ground_truth.json; pycocotools run on
    them directly prints the same summary lines that eval_ssd.py prints, and metrics.json holds
    the same figures."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    printed = []
    truth = [_gt([A, B], [1, 1]), _gt([[5, 5, 50, 60]], [2])]
    detections = HAND + [(1, 2, 0.6, [6, 5, 50, 58]), (1, 1, 0.3, [5, 5, 50, 60])]
    collection = _collection(detections, sizes=((400, 500), (100, 120)),
                             source_ids=['11', '12'])
    summary = run_metrics(['voc', 'coco'], collection, truth, NAMES, str(tmp_path),
                          category_ids=CATEGORY_IDS, log=printed.append)
    text = '\n'.join(printed)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / 'coco_ground_truth.json'))
        dt = gt.loadRes(str(tmp_path / 'coco_results.json'))
        evaluator = COCOeval(gt, dt, 'bbox')
        evaluator.evaluate()
        evaluator.accumulate()
    direct = io.StringIO()
    with contextlib.redirect_stdout(direct):
        evaluator.summarize()
    assert direct.getvalue().strip() in text
    lines = text.splitlines()
    assert any(line.startswith('COCO AP@[.5:.95]: %.4f' % evaluator.stats[0]) for line in lines)
    assert any(line.startswith('mAP VOC07 11-point') for line in lines)  # both tables
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    assert metrics['coco']['AP'] == pytest.approx(evaluator.stats[0])
    assert metrics['coco']['AP50'] == pytest.approx(evaluator.stats[1])
    assert metrics['map_07'] == summary['map_07'] and metrics['metrics_computed'] == ['voc',
                                                                                      'coco']
    assert metrics['coco']['category_ids'] == {'circle': 7, 'square': 42}


def test_faster_coco_eval_backend_gives_the_same_figures():
    import_or_skip('faster_coco_eval', 'eval_ssd.py --coco_backend faster-coco-eval; in '
                   'requirements-test.txt')
    truth = [_gt([A, B, [20, 200, 180, 380]], [1, 1, 1], iscrowd=[0, 0, 1]),
             _gt([[5, 5, 50, 60]], [2])]
    detections = HAND + [(0, 1, 0.95, [40, 220, 120, 300]), (1, 2, 0.6, [6, 5, 50, 58])]
    collection = _collection(detections, sizes=((400, 500), (100, 120)))
    document = coco_metric.ground_truth_json(collection, truth, NAMES)
    results = coco_metric.results_json(collection, 3)
    ours = coco_metric.evaluate(document, results)
    faster = coco_metric.evaluate(document, results, backend='faster-coco-eval')
    for name in coco_metric.STAT_NAMES:
        assert faster['stats'][name] == pytest.approx(ours['stats'][name], abs=1e-4), name
    assert faster['per_class'][1] == pytest.approx(ours['per_class'][1], abs=1e-4)


def test_unknown_backend_is_one_line_naming_the_choices():
    with pytest.raises(ValueError, match='unknown COCO metric backend .*pycocotools, '
                                         'faster-coco-eval'):
        coco_metric.evaluate({'images': [], 'annotations': [], 'categories': []}, [], 'x')
