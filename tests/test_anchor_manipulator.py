"""net/anchor_manipulator.py: IoU, matching with forced best anchors and ignore band,
encode/decode, padding and empty ground truth."""
import math

import numpy as np
import pytest
import tensorflow as tf

from net import anchor_manipulator as am
from net import anchors as anchor_lib

PRIOR = anchor_lib.SSD300_SPEC['prior_scaling']

# A 3 x 5 case on a 10 x 10 grid (divided by 10 to be normalized; IoU is scale-free),
# plus one padding row (label -1, zero area) that must change nothing.
GT = np.array([[0, 0, 2, 2],       # gt0, area 4
               [0, 4, 2, 8],       # gt1, area 8
               [6, 6, 7, 7],       # gt2, area 1
               [0, 0, 0, 0]],      # padding
              np.float32) / 10
GT_LABELS = np.array([3, 5, 7, -1], np.int32)
ANCHORS = np.array([[0, 0, 2, 2],      # a0 = gt0: IoU 1
                    [0, 1, 2, 3],      # a1: IoU 2/6 with gt0
                    [0, 4, 2, 7],      # a2: IoU 6/8 with gt1
                    [0, 5.5, 2, 9.5],  # a3: IoU 5/11 with gt1 (in a 0.4..0.5 ignore band)
                    [5, 5, 9, 9]],     # a4: IoU 1/16 with gt2, but gt2's best anchor
                   np.float32) / 10
EXPECTED_IOU = np.array([[1, 1 / 3, 0, 0, 0],
                         [0, 0, 0.75, 5 / 11, 0],
                         [0, 0, 0, 0, 1 / 16],
                         [0, 0, 0, 0, 0]])


def run(build):
    with tf.Graph().as_default():
        fetches = build()
        with tf.compat.v1.Session() as sess:
            return sess.run(fetches)


def test_iou_matrix_by_hand():
    iou = run(lambda: am.iou_matrix(GT, ANCHORS))
    assert iou.shape == (4, 5)
    np.testing.assert_allclose(iou, EXPECTED_IOU, atol=1e-6)


def test_matching_forced_best_anchor_and_ignore_band():
    (loc5, cls5), (loc4, cls4) = run(lambda: (
        am.encode_targets(GT, GT_LABELS, ANCHORS, 0.5, 0.5, PRIOR),
        am.encode_targets(GT, GT_LABELS, ANCHORS, 0.5, 0.4, PRIOR)))
    # a0 positive (IoU 1), a1 background (1/3), a2 positive (0.75), a3 5/11: background
    # without a band, ignored with neg_threshold 0.4; a4 forced to gt2 although IoU 1/16.
    np.testing.assert_array_equal(cls5, [3, 0, 5, 0, 7])
    np.testing.assert_array_equal(cls4, [3, 0, 5, -1, 7])
    # a2 vs gt1: centres (1, 5.5) vs (1, 6), sizes 2x3 vs 2x4.
    # a4 vs gt2: centres (7, 7) vs (6.5, 6.5), sizes 4x4 vs 1x1.
    expected = np.zeros([5, 4])
    expected[2] = [0, (6 - 5.5) / 3 / 0.1, 0, math.log(4 / 3) / 0.2]
    expected[4] = [-0.5 / 4 / 0.1, -0.5 / 4 / 0.1, math.log(1 / 4) / 0.2, math.log(1 / 4) / 0.2]
    np.testing.assert_allclose(loc5, expected, atol=1e-5)
    np.testing.assert_array_equal(loc4, loc5)


def test_claim_conflicts_and_ties():
    anchors = np.array([[0, 0, 4, 4], [10, 10, 11, 11], [20, 20, 21, 21]], np.float32) / 40
    # gtA (IoU 1/16) and gtB (IoU 4/16) both have a0 as best anchor: gtB, the higher IoU, wins.
    gt = np.array([[0, 0, 1, 1], [0, 0, 2, 2]], np.float32) / 40
    # Two identical gt boxes tie on every anchor: the lower gt index (label 4) wins.
    twins = np.array([[20, 20, 21, 21], [20, 20, 21, 21]], np.float32) / 40
    (_, cls), (_, cls_twins) = run(lambda: (
        am.encode_targets(gt, [1, 2], anchors),
        am.encode_targets(twins, [4, 9], anchors)))
    np.testing.assert_array_equal(cls, [2, 0, 0])
    np.testing.assert_array_equal(cls_twins, [0, 0, 4])


def test_padding_rows_are_ignored():
    anchors = np.array([[0, 0, 4, 4], [0, 4, 4, 8]], np.float32) / 10
    # label 0 with a real box; label 5 with zero height; label -1 filler.
    gt = np.array([[0, 0, 4, 4], [1, 4, 1, 8], [0, 0, 0, 0]], np.float32) / 10
    loc, cls = run(lambda: am.encode_targets(gt, [0, 5, -1], anchors))
    np.testing.assert_array_equal(cls, [0, 0])
    np.testing.assert_array_equal(loc, np.zeros([2, 4]))


def test_zero_gt_boxes_give_all_background():
    anchors = anchor_lib.generate_anchors(anchor_lib.SSD300_SPEC)
    loc, cls = run(lambda: am.encode_targets(
        tf.zeros([0, 4]), tf.zeros([0], tf.int32), anchors))
    assert loc.shape == (8732, 4) and cls.shape == (8732,)
    assert not loc.any() and not cls.any()


def test_neg_threshold_above_match_threshold_is_rejected():
    with pytest.raises(ValueError, match='neg_threshold'):
        am.encode_targets(GT, GT_LABELS, ANCHORS, match_threshold=0.4, neg_threshold=0.5)


def test_decode_by_hand():
    anchors = np.array([[0.1, 0.2, 0.3, 0.6]], np.float32)  # centre (0.2, 0.4), h 0.2, w 0.4
    codes = np.array([[[0, 0, 0, 0], [1, -1, 0, 0], [0, 0, 5 * math.log(2), -5 * math.log(2)]]],
                     np.float32)
    boxes = run(lambda: am.decode_boxes(codes, np.repeat(anchors, 3, 0), PRIOR))
    np.testing.assert_allclose(boxes[0], [[0.1, 0.2, 0.3, 0.6],
                                          [0.12, 0.16, 0.32, 0.56],  # cy + 0.1*0.2, cx - 0.1*0.4
                                          [0.0, 0.3, 0.4, 0.5]],  # h doubled, w halved
                               atol=1e-6)


def test_encode_decode_round_trip_on_ssd_anchors():
    rng = np.random.RandomState(0)
    anchors = anchor_lib.generate_anchors(anchor_lib.SSD300_SPEC)
    yx = rng.uniform(0, 0.7, size=(6, 2))
    hw = rng.uniform(0.05, 0.3, size=(6, 2))
    gt = np.concatenate([yx, yx + hw], axis=1).astype(np.float32)
    labels = np.arange(1, 7, dtype=np.int32)

    def build():
        loc, cls = am.encode_targets(gt, labels, anchors, 0.5, 0.5, PRIOR)
        return loc, cls, am.decode_boxes(loc[None], anchors, PRIOR)[0]

    loc, cls, decoded = run(build)
    positive = cls > 0
    assert set(cls[positive]) == set(labels)  # every gt has at least its forced anchor
    np.testing.assert_allclose(decoded[positive], gt[cls[positive] - 1], atol=2e-6)
    # Non-positive codes are 0, so they decode to the anchors themselves.
    np.testing.assert_allclose(decoded[~positive], anchors[~positive], atol=1e-6)


def test_runs_in_tf_data_with_varying_gt_counts():
    anchors = anchor_lib.generate_anchors(anchor_lib.SSD300_SPEC)
    boxes = [np.zeros([0, 4], np.float32), np.array([[0.1, 0.1, 0.5, 0.6]], np.float32)]

    def gen():
        for b in boxes:
            yield b, np.ones([len(b)], np.int32)

    ds = tf.data.Dataset.from_generator(
        gen, output_signature=(tf.TensorSpec([None, 4], tf.float32),
                               tf.TensorSpec([None], tf.int32)))
    ds = ds.map(lambda b, l: am.encode_targets(b, l, anchors)[1])
    counts = [int((c > 0).sum()) for c in ds.as_numpy_iterator()]
    assert counts[0] == 0 and counts[1] >= 1
