"""The oracle: encoded ground truth fed back as the network's prediction must score mAP 1.0.

Proves that anchors, matching/encoding, decoding, post-processing (thresholds, min size,
NMS) and the VOC metric (pixel convention included) agree with each other.
"""
import numpy as np
import pytest
import tensorflow as tf

from net import anchor_manipulator as am
from net import anchors as anchor_lib
from net import postprocess as pp
from evaluation import voc_metric as vm

NUM_CLASSES = 21
SPEC = anchor_lib.SSD300_SPEC

# (width, height, [(xmin, ymin, xmax, ymax, label, difficult)]) in 1-based VOC pixels.
# Boxes of the same class in one image overlap by less than the NMS threshold.
IMAGES = [
    (500, 375, [(48, 240, 195, 371, 12, 0), (8, 12, 352, 370, 15, 0)]),
    (500, 333, [(156, 97, 351, 270, 7, 0), (1, 1, 120, 100, 7, 0), (400, 200, 500, 333, 9, 1)]),
    (353, 500, [(139, 200, 207, 301, 1, 0), (11, 1, 336, 498, 2, 0)]),
    (480, 640, [(30, 30, 90, 100, 20, 0), (300, 400, 470, 630, 20, 0),
                (100, 200, 250, 380, 5, 0)]),
]


def ground_truth_records():
    records = []
    for _, _, objects in IMAGES:
        objects = np.array(objects, np.float64)
        records.append({'boxes_pixels': objects[:, :4], 'labels': objects[:, 4].astype(int),
                        'difficult': objects[:, 5].astype(bool)})
    return records


def normalized_boxes(width, height, objects):
    """Pixels -> [ymin, xmin, ymax, xmax] / size, as the dataset converter stores them."""
    objects = np.array(objects, np.float64)
    return np.stack([objects[:, 1] / height, objects[:, 0] / width,
                     objects[:, 3] / height, objects[:, 2] / width], axis=1).astype(np.float32)


@pytest.mark.parametrize('neg_threshold', [0.5, 0.4])
def test_encoded_ground_truth_scores_map_one(neg_threshold):
    anchors = anchor_lib.generate_anchors(SPEC)
    with tf.Graph().as_default():
        loc_list, cls_list = [], []
        for width, height, objects in IMAGES:
            labels = np.array([o[4] for o in objects], np.int32)
            loc, cls = am.encode_targets(normalized_boxes(width, height, objects), labels,
                                         anchors, 0.5, neg_threshold, SPEC['prior_scaling'])
            loc_list.append(loc)
            cls_list.append(cls)
        loc_targets = tf.stack(loc_list)  # [4, 8732, 4]
        cls_targets = tf.stack(cls_list)  # [4, 8732]
        # Large logit on the target class; background for negative and ignored anchors.
        logits = 20.0 * tf.one_hot(tf.maximum(cls_targets, 0), NUM_CLASSES)
        detections = pp.postprocess(logits, loc_targets, anchors, SPEC['prior_scaling'])
        with tf.compat.v1.Session() as sess:
            out, cls_np = sess.run((detections, cls_targets))

    assert (cls_np > 0).sum(axis=1).min() >= 2  # every image has positives
    # One detection per gt box: all positive anchors of a box decode to it and NMS merges them.
    assert out['num_detections'].tolist() == [len(objects) for _, _, objects in IMAGES]

    image_ids, labels, scores, boxes = [], [], [], []
    for i, (width, height, _) in enumerate(IMAGES):
        n = out['num_detections'][i]
        image_ids.append(np.full(n, i))
        labels.append(out['classes'][i, :n])
        scores.append(out['scores'][i, :n])
        boxes.append(vm.normalized_to_pixels(out['boxes'][i, :n], height, width))
    detections_per_class = vm.detections_by_class(
        np.concatenate(image_ids), np.concatenate(labels), np.concatenate(scores),
        np.concatenate(boxes), NUM_CLASSES)
    records = ground_truth_records()
    # Decoded boxes come back to the annotated pixels.
    for i, record in enumerate(records):
        n = out['num_detections'][i]
        got = sorted(map(tuple, np.round(boxes[i]).astype(int)))
        want = sorted(map(tuple, record['boxes_pixels'].astype(int)))
        assert got == want and n == len(want)

    result = vm.evaluate(detections_per_class, records, NUM_CLASSES)
    assert result['map_07'] == 1.0
    assert result['map_area'] == 1.0
    assert sorted(np.flatnonzero(result['num_gt'])) == [1, 2, 5, 7, 12, 15, 20]
