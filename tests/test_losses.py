"""net/losses.py: smooth L1, per-image hard negative mining, loss values, zero positives,
weight decay."""
import math

import numpy as np
import pytest
import tensorflow as tf

from net import losses


def approx(value):
    return pytest.approx(value, rel=1e-5)


def run(build):
    with tf.Graph().as_default():
        fetches = build()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return sess.run(fetches)


def two_class_logits(z):
    """[..] -> [.., 2] logits (0, z): background cross-entropy log(1 + e^z), rising with z."""
    z = np.asarray(z, np.float32)
    return np.stack([np.zeros_like(z), z], axis=-1)


def test_smooth_l1_both_sides_of_one():
    x = np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 0.99, 1.0, 2.0], np.float32)
    got = run(lambda: losses.smooth_l1(tf.constant(x)))
    np.testing.assert_allclose(got, [2.5, 0.5, 0.125, 0.0, 0.125, 0.5 * 0.99 ** 2, 0.5, 1.5],
                               rtol=1e-6)


def test_hard_negative_counts_at_ratio_three():
    # Image 0: 2 positives, 1 ignored, 9 negatives -> the 6 hardest negatives.
    # Image 1: 1 positive, only 2 negatives (rest ignored) -> min(3, 2) = 2.
    # Image 2: no positive -> no negative.
    targets = np.array([[1, 2, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                        [-1, -1, 3, -1, -1, 0, -1, 0, -1, -1, -1, -1],
                        [0, 0, 0, 0, 0, 0, 0, 0, 0, -1, 0, 0]], np.int32)
    z = np.array([[9, 9, 9, 0.5, 3, 1, 7, 2, 6, 4, 8, 5],
                  [9, 9, 9, 9, 9, 1, 9, 2, 9, 9, 9, 9],
                  [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]], np.float32)
    num_classes = 4
    logits = np.zeros([3, 12, num_classes], np.float32)
    logits[..., 1] = z

    def build():
        cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.maximum(targets, 0), logits=logits)
        mask = losses.hard_negative_mask(cross_entropy, targets == 0,
                                         np.sum(targets > 0, axis=1).astype(np.int32), 3.0)
        return mask, losses.ssd_losses(logits, np.zeros([3, 12, 4], np.float32), targets,
                                       np.zeros([3, 12, 4], np.float32))

    mask, parts = run(build)
    expected = np.zeros([3, 12], bool)
    expected[0, [4, 6, 8, 9, 10, 11]] = True  # z = 3, 7, 6, 4, 8, 5: the six largest
    expected[1, [5, 7]] = True
    np.testing.assert_array_equal(mask, expected)
    assert parts['num_positives'] == 3
    assert parts['num_negatives'] == 8


def test_equal_scores_select_exactly_the_budget():
    targets = np.array([[1, 0, 0, 0, 0, 0, 0]], np.int32)
    mask = run(lambda: losses.hard_negative_mask(
        tf.zeros([1, 7]), targets == 0, np.array([1], np.int32), 3.0))
    np.testing.assert_array_equal(mask, [[False, True, True, True, False, False, False]])


def test_cls_loss_value_by_hand():
    # 1 positive (class 1) with logits (1, 0): loss log(1 + e); negatives z = 0, 1, 2;
    # one ignored anchor with z = 5.
    targets = np.array([[1, 0, 0, 0, -1]], np.int32)
    logits = two_class_logits([[0, 0, 1, 2, 5]])
    logits[0, 0] = [1.0, 0.0]
    zeros = np.zeros([1, 5, 4], np.float32)
    ratio1, ratio3 = run(lambda: (losses.ssd_losses(logits, zeros, targets, zeros, 1.0),
                                  losses.ssd_losses(logits, zeros, targets, zeros, 3.0)))
    pos = math.log(1 + math.e)
    bg = [math.log(1 + math.exp(z)) for z in (0, 1, 2)]  # 0.6931, 1.3133, 2.1269
    # ratio 1: positive + hardest negative (z = 2); mean * 2.
    assert ratio1['cls_loss'] == approx((pos + bg[2]) / 2 * 2)
    # ratio 3: positive + all three negatives; mean * 4.
    assert ratio3['cls_loss'] == approx((pos + sum(bg)) / 4 * 4)
    assert ratio1['num_negatives'] == 1 and ratio3['num_negatives'] == 3
    # The positive's logits (1, 0) predict background: accuracy 0.
    assert ratio1['accuracy'] == 0.0


def test_loc_loss_and_accuracy():
    targets = np.array([[2, 1, 0, -1]], np.int32)
    loc_targets = np.zeros([1, 4, 4], np.float32)
    loc_preds = np.array([[[0.5, -2, 0, 1],  # 0.125 + 1.5 + 0 + 0.5 = 2.125
                           [0, 0, 0, 0],  # 0
                           [9, 9, 9, 9],  # not positive: no loc loss
                           [9, 9, 9, 9]]], np.float32)
    logits = np.zeros([1, 4, 3], np.float32)
    logits[0, 0, 2] = 5  # right
    logits[0, 1, 2] = 5  # wrong (target 1)
    parts = run(lambda: losses.ssd_losses(logits, loc_preds, targets, loc_targets))
    assert parts['loc_loss'] == approx(2.125 / 2)
    assert parts['accuracy'] == approx(0.5)
    assert parts['num_positives'] == 2


def test_zero_positives_is_finite_with_finite_gradients():
    def build():
        logits = tf.constant(np.random.RandomState(0).normal(size=[2, 6, 3]), tf.float32)
        loc = tf.constant(np.ones([2, 6, 4]), tf.float32)
        targets = tf.constant([[0, 0, 0, -1, 0, 0], [-1, -1, -1, -1, -1, -1]], tf.int32)
        parts = losses.ssd_losses(logits, loc, targets, tf.zeros([2, 6, 4]))
        grads = tf.gradients(parts['cls_loss'] + parts['loc_loss'], [logits, loc])
        return parts, grads

    parts, grads = run(build)
    assert parts['cls_loss'] == 0.0 and parts['loc_loss'] == 0.0
    assert parts['num_positives'] == 0 and parts['accuracy'] == 0.0
    for g in grads:
        assert np.all(np.isfinite(g)) and not g.any()


def test_losses_leave_no_collections_behind():
    with tf.Graph().as_default():
        losses.ssd_losses(tf.zeros([1, 3, 2]), tf.zeros([1, 3, 4]), tf.constant([[1, 0, 0]]),
                          tf.zeros([1, 3, 4]))
        assert tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.LOSSES) == []


def test_l2_regularization_skips_batch_norm_and_weights_conv4_3_scale():
    def build():
        variables = [
            tf.Variable([1.0, 2.0], name='ssd300/conv1/weights'),  # l2_loss 2.5
            tf.Variable([10.0, 10.0, 10.0], name='ssd300/conv4_3_scale'),  # 150 * 0.1
            tf.Variable([100.0], name='ssd300/block7_bn/gamma'),  # skipped
            tf.Variable([100.0], name='ssd300/head/BatchNorm/beta'),  # skipped
        ]
        return (losses.l2_regularization(variables, 0.01),
                losses.l2_regularization(variables[2:], 0.01))

    total, bn_only = run(build)
    assert total == approx(0.01 * (2.5 + 15.0))
    assert bn_only == 0.0
