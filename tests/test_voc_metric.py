"""evaluation/voc_metric.py: AP and precision-recall curves on a case worked out on paper, the +1
pixel convention, and agreement with a plain loop implementation of the devkit's voc_eval on
random data."""
import numpy as np
import pytest

from evaluation import voc_metric as vm


# ----------------------------------------------------------------------------- reference


def reference_voc_eval(detections, ground_truth, class_id, threshold=0.5, curve=False):
    """The devkit's voc_eval for one class, written as a straightforward loop.

    Returns (ap_07, ap_area), or (nan, nan) without non-difficult gt; with curve=True also
    (recall, precision) over the TP/FP detections (difficult matches left out), or None.
    """
    records = {}
    npos = 0
    for image, record in enumerate(ground_truth):
        keep = np.asarray(record['labels']) == class_id
        boxes = np.asarray(record['boxes_pixels'], float).reshape(-1, 4)[keep]
        difficult = np.asarray(record['difficult'], bool)[keep]
        records[image] = {'boxes': boxes, 'difficult': difficult, 'seen': [False] * len(boxes)}
        npos += int((~difficult).sum())
    rows = np.asarray(detections[class_id], float).reshape(-1, 6)
    order = sorted(range(len(rows)), key=lambda i: -rows[i, 1])  # Python's sort is stable
    tp, fp = [], []
    for i in order:
        record = records[int(rows[i, 0])]
        box = rows[i, 2:]
        best, best_j = -np.inf, -1
        for j, gt in enumerate(record['boxes']):
            iw = min(box[2], gt[2]) - max(box[0], gt[0]) + 1.0
            ih = min(box[3], gt[3]) - max(box[1], gt[1]) + 1.0
            iw, ih = max(iw, 0.0), max(ih, 0.0)
            inter = iw * ih
            union = ((box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
                     + (gt[2] - gt[0] + 1.0) * (gt[3] - gt[1] + 1.0) - inter)
            overlap = inter / union
            if overlap > best:
                best, best_j = overlap, j
        if best > threshold:
            if record['difficult'][best_j]:
                tp.append(0.0)
                fp.append(0.0)
            elif not record['seen'][best_j]:
                record['seen'][best_j] = True
                tp.append(1.0)
                fp.append(0.0)
            else:
                tp.append(0.0)
                fp.append(1.0)
        else:
            tp.append(0.0)
            fp.append(1.0)
    if npos == 0:
        return (float('nan'), float('nan')) + ((None,) if curve else ())
    counted = [t + f > 0 for t, f in zip(tp, fp)]
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap07 = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        p = 0.0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
        ap07 += p / 11.0
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    area = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    if curve:
        counted = np.asarray(counted, bool)
        return ap07, area, (rec[counted], prec[counted])
    return ap07, area


def random_case(seed, num_images=30, num_classes=5):
    rng = np.random.RandomState(seed)
    ground_truth = []
    image_ids, labels, scores, boxes = [], [], [], []
    for image in range(num_images):
        n = rng.randint(0, 6)  # some images without objects
        xy = rng.uniform(0, 200, size=(n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(5, 120, size=(n, 2))], axis=1).round()
        # Odd seeds: the last class has detections but no gt (AP nan).
        gt_labels = rng.randint(1, num_classes - seed % 2, size=n)
        ground_truth.append({'boxes_pixels': gt, 'labels': gt_labels,
                             'difficult': rng.uniform(size=n) < 0.2})
        m = rng.randint(0, 25)
        if n:  # detections near gt boxes: TPs, duplicates, low-IoU misses, wrong classes
            pick = rng.randint(0, n, size=m)
            det = gt[pick] + rng.normal(0, rng.choice([2.0, 10.0, 30.0]), size=(m, 4))
            det_labels = np.where(rng.uniform(size=m) < 0.8, gt_labels[pick],
                                  rng.randint(1, num_classes, size=m))
        else:
            xy = rng.uniform(0, 200, size=(m, 2))
            det = np.concatenate([xy, xy + rng.uniform(5, 80, size=(m, 2))], axis=1)
            det_labels = rng.randint(1, num_classes, size=m)
        image_ids.append(np.full(m, image))
        labels.append(det_labels)
        scores.append(rng.uniform(size=m))
        boxes.append(det)
    detections = vm.detections_by_class(np.concatenate(image_ids), np.concatenate(labels),
                                        np.concatenate(scores), np.concatenate(boxes),
                                        num_classes)
    return detections, ground_truth


# ----------------------------------------------------------------------------- tests


def test_paper_case_with_difficult_box_and_duplicate():
    ground_truth = [
        {'boxes_pixels': [[1, 1, 10, 10], [21, 21, 30, 30]], 'labels': [1, 1],
         'difficult': [0, 1]},
        {'boxes_pixels': [[1, 1, 10, 10], [41, 41, 60, 60]], 'labels': [1, 3],
         'difficult': [0, 0]},
    ]
    detections = [
        np.zeros([0, 6]),
        np.array([[0, 0.9, 1, 1, 10, 10],  # TP
                  [0, 0.8, 1, 1, 10, 10],  # duplicate of a matched gt: FP
                  [0, 0.7, 21, 21, 30, 30],  # difficult gt: neither
                  [1, 0.6, 50, 50, 59, 59],  # nothing there: FP
                  [1, 0.5, 1, 1, 10, 10]]),  # TP
        np.array([[1, 0.9, 41, 41, 60, 60]]),  # class 2 has no gt: AP nan
        np.zeros([0, 6]),  # class 3 has a gt and no detection: AP 0
    ]
    result = vm.evaluate(detections, ground_truth, num_classes=4)
    # npos 2; in score order TP, FP, -, FP, TP: recall .5 .5 .5 .5 1,
    # precision 1 1/2 1/2 1/3 1/2. Area: .5 * 1 + .5 * .5 = .75.
    # 11-point: t = 0 .. 0.5 (6 points) -> 1; t = 0.6 .. 1 (5 points) -> .5; 8.5 / 11.
    assert result['ap_area'][1] == pytest.approx(0.75)
    assert result['ap_07'][1] == pytest.approx(8.5 / 11)
    assert np.isnan(result['ap_area'][2]) and np.isnan(result['ap_07'][2])
    assert result['ap_area'][3] == 0.0 and result['ap_07'][3] == 0.0
    assert np.isnan(result['ap_area'][0])
    assert result['map_area'] == pytest.approx(0.75 / 2)
    assert result['map_07'] == pytest.approx(8.5 / 22)
    assert result['num_gt'].tolist() == [0, 2, 0, 1]
    assert result['num_detections'].tolist() == [0, 5, 1, 0]
    assert 'curves' not in result

    # The curves behind those APs: the difficult match (score 0.7) gives no point.
    with_curves = vm.evaluate(detections, ground_truth, num_classes=4, return_curves=True)
    curves = with_curves['curves']
    assert len(curves) == 4 and curves[0] is None and curves[2] is None
    np.testing.assert_allclose(curves[1][0], [.5, .5, .5, 1])
    np.testing.assert_allclose(curves[1][1], [1, .5, 1 / 3, .5])
    assert curves[3][0].shape == (0,) and curves[3][1].shape == (0,)
    for key in ('ap_07', 'ap_area', 'num_gt', 'num_detections'):
        np.testing.assert_array_equal(with_curves[key], result[key])
    assert vm.voc_ap(*curves[1]) == pytest.approx(0.75)
    assert vm.voc_ap(*curves[1], use_07_metric=True) == pytest.approx(8.5 / 11)


def test_iou_uses_inclusive_pixels_and_strict_threshold():
    ground_truth = [{'boxes_pixels': [[1, 1, 10, 10]], 'labels': [1], 'difficult': [0]}]
    # +1 areas: gt 10 x 10 = 100. det 10 x 20 = 200 covers it: IoU exactly 0.5, not > 0.5,
    # a miss. det 10 x 19 = 190: IoU 100 / 190 = 0.526, a hit (without the +1 it would be
    # 81 / 162 = 0.5, a miss).
    miss = vm.evaluate([None, np.array([[0, 0.9, 1, 1, 10, 20]])], ground_truth, 2)
    hit = vm.evaluate([None, np.array([[0, 0.9, 1, 1, 10, 19]])], ground_truth, 2)
    assert miss['ap_area'][1] == 0.0
    assert hit['ap_area'][1] == 1.0 and hit['ap_07'][1] == 1.0


def test_difficult_gt_matched_first_hides_easy_gt():
    # The detection's best gt is the difficult one, so it is ignored even though it also
    # overlaps the easy gt by more than 0.5 (devkit behaviour).
    ground_truth = [{'boxes_pixels': [[1, 1, 10, 10], [1, 1, 10, 11]], 'labels': [1, 1],
                     'difficult': [1, 0]}]
    result = vm.evaluate([None, np.array([[0, 0.9, 1, 1, 10, 10]])], ground_truth, 2)
    assert result['ap_area'][1] == 0.0


@pytest.mark.parametrize('seed', range(6))
def test_agrees_with_loop_reference(seed):
    num_classes = 5
    detections, ground_truth = random_case(seed, num_classes=num_classes)
    result = vm.evaluate(detections, ground_truth, num_classes, return_curves=True)
    for c in range(1, num_classes):
        ap07, area, curve = reference_voc_eval(detections, ground_truth, c, curve=True)
        np.testing.assert_allclose(result['ap_07'][c], ap07, atol=1e-6, equal_nan=True)
        np.testing.assert_allclose(result['ap_area'][c], area, atol=1e-6, equal_nan=True)
        if curve is None:
            assert result['curves'][c] is None
        else:
            np.testing.assert_allclose(result['curves'][c][0], curve[0], atol=1e-12)
            np.testing.assert_allclose(result['curves'][c][1], curve[1], atol=1e-12)


def test_curves_give_back_the_aps_on_voc07_sized_classes():
    from benchmarks.stage_metric import make_benchmark_data  # random VOC07-like data
    detections, ground_truth = make_benchmark_data(num_images=60, seed=3)
    result = vm.evaluate(detections, ground_truth, 21, return_curves=True)
    checked = 0
    for c in range(1, 21):
        if np.isnan(result['ap_07'][c]):
            assert result['curves'][c] is None
            continue
        recall, precision = result['curves'][c]
        assert vm.voc_ap(recall, precision, True) == pytest.approx(result['ap_07'][c])
        assert vm.voc_ap(recall, precision, False) == pytest.approx(result['ap_area'][c])
        checked += 1
    assert checked == 20


def test_voc_ap_curves():
    # Perfect detector: recall 0.5 then 1 at precision 1.
    assert vm.voc_ap([0.5, 1.0], [1.0, 1.0]) == pytest.approx(1.0)
    assert vm.voc_ap([0.5, 1.0], [1.0, 1.0], use_07_metric=True) == pytest.approx(1.0)
    # Half the gt found, all at precision 1: area .5; 11-point: t <= .5 -> 6/11.
    assert vm.voc_ap([0.5], [1.0]) == pytest.approx(0.5)
    assert vm.voc_ap([0.5], [1.0], use_07_metric=True) == pytest.approx(6 / 11)
    assert vm.voc_ap([], []) == 0.0


def test_helpers_and_errors():
    pixels = vm.normalized_to_pixels([[0.1, 0.2, 0.5, 1.0]], height=200, width=300)
    np.testing.assert_allclose(pixels, [[60, 20, 300, 100]])
    grouped = vm.detections_by_class([0, 1], [2, 0], [0.5, 0.9], [[1, 2, 3, 4], [5, 6, 7, 8]], 3)
    assert [len(g) for g in grouped] == [0, 0, 1]
    np.testing.assert_allclose(grouped[2], [[0, 0.5, 1, 2, 3, 4]])
    # Padding rows (label -1) are ignored; 'difficult' defaults to 0.
    ground_truth = [{'boxes_pixels': [[1, 1, 10, 10], [0, 0, 0, 0]], 'labels': [1, -1]}]
    result = vm.evaluate([None, np.array([[0, 0.9, 1, 1, 10, 10]])], ground_truth, 2)
    assert result['num_gt'].tolist() == [0, 1] and result['map_area'] == 1.0
    with pytest.raises(ValueError, match='num_classes'):
        vm.evaluate([None, None, None], ground_truth, 2)
    with pytest.raises(ValueError, match='image indices'):
        vm.evaluate([None, np.array([[3, 0.9, 1, 1, 10, 10]])], ground_truth, 2)
