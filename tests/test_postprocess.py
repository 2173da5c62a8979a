"""net/postprocess.py: decode, thresholds, min size, per-class NMS, caps, clipping, padding."""
import numpy as np
import pytest
import tensorflow as tf

from common import defaults
from net import postprocess as pp

PRIOR = [0.1, 0.1, 0.2, 0.2]


def run(cls_probs, anchors, loc=None, **kwargs):
    """cls_probs [B, A, C] probabilities (logits = log p, so softmax gives them back)."""
    cls_probs = np.asarray(cls_probs, np.float32)
    anchors = np.asarray(anchors, np.float32)
    if loc is None:
        loc = np.zeros(cls_probs.shape[:2] + (4,), np.float32)
    with tf.Graph().as_default():
        logits = np.log(np.maximum(cls_probs, 1e-12))
        out = pp.postprocess(logits, np.asarray(loc, np.float32), anchors, PRIOR, **kwargs)
        with tf.compat.v1.Session() as sess:
            return sess.run(out)


def probs(*rows):
    """Rows of foreground probabilities; background takes the rest."""
    rows = np.asarray(rows, np.float64)
    return np.concatenate([1.0 - rows.sum(-1, keepdims=True), rows], axis=-1)


A_OVERLAP = [[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.6, 0.6, 0.9, 0.9]]


def test_nms_keeps_one_of_two_overlapping_boxes():
    # a0 and a1 overlap with IoU 0.152 / 0.168 = 0.905, both class 1; a2 is class 2.
    out = run([probs([0.9, 0.005], [0.8, 0.005], [0.005, 0.7])], A_OVERLAP)
    assert out['boxes'].shape == (1, 200, 4)
    assert out['num_detections'].tolist() == [2]
    np.testing.assert_allclose(out['scores'][0, :3], [0.9, 0.7, 0.0], rtol=1e-5)
    np.testing.assert_array_equal(out['classes'][0, :3], [1, 2, 0])
    np.testing.assert_allclose(out['boxes'][0, :2], [A_OVERLAP[0], A_OVERLAP[2]], atol=1e-6)
    assert not out['boxes'][0, 2:].any() and not out['classes'][0, 2:].any()


def test_overlapping_boxes_of_different_classes_are_both_kept():
    out = run([probs([0.9, 0.005], [0.005, 0.8], [0.005, 0.005])], A_OVERLAP)
    assert out['num_detections'].tolist() == [2]
    np.testing.assert_array_equal(out['classes'][0, :2], [1, 2])


def test_nms_threshold_is_respected():
    # IoU 0.905 > 0.95 is false: with nms_threshold 0.95 both boxes stay.
    out = run([probs([0.9, 0.005], [0.8, 0.005], [0.005, 0.005])], A_OVERLAP,
              nms_threshold=0.95)
    assert out['num_detections'].tolist() == [2]


def test_select_threshold_and_min_size():
    anchors = [[0.1, 0.1, 0.5, 0.5],
               [0.6, 0.6, 0.9, 0.9],
               [0.2, 0.7, 0.22, 0.9]]  # 0.02 high: too small for min_size 0.03
    p = [probs([0.011, 0.0], [0.009, 0.0], [0.9, 0.0])]
    out = run(p, anchors)
    assert out['num_detections'].tolist() == [1]
    np.testing.assert_allclose(out['scores'][0, 0], 0.011, rtol=1e-4)
    out = run(p, anchors, min_size=0.0)
    assert out['num_detections'].tolist() == [2]
    np.testing.assert_allclose(out['scores'][0, :2], [0.9, 0.011], rtol=1e-4)


def test_decodes_and_clips():
    anchors = [[-0.1, -0.1, 0.3, 0.3], [0.4, 0.4, 0.6, 0.8]]
    loc = [[[0, 0, 0, 0], [1, 0, 0, 0]]]  # second: cy + 0.1 * 0.2
    out = run([probs([0.9], [0.8])], anchors, loc=loc)
    np.testing.assert_allclose(out['boxes'][0, :2], [[0, 0, 0.3, 0.3], [0.42, 0.4, 0.62, 0.8]],
                               atol=1e-6)


def test_keep_topk_and_nms_topk_caps():
    anchors = [[0.0, 0.0, 0.2, 0.2], [0.3, 0.3, 0.5, 0.5], [0.6, 0.6, 0.8, 0.8]]
    p = [probs([0.9, 0.0, 0.0], [0.8, 0.0, 0.0], [0.0, 0.0, 0.7])]
    # keep_topk 1: only the best class-1 candidate enters NMS.
    out = run(p, anchors, keep_topk=1)
    assert out['num_detections'].tolist() == [2]
    np.testing.assert_array_equal(out['classes'][0, :2], [1, 3])
    # nms_topk 2: the best two detections across classes, K = 2.
    out = run(p, anchors, nms_topk=2)
    assert out['scores'].shape == (1, 2)
    np.testing.assert_allclose(out['scores'][0], [0.9, 0.8], rtol=1e-5)
    np.testing.assert_array_equal(out['classes'][0], [1, 1])


def test_batch_with_an_empty_image():
    anchors = A_OVERLAP
    p = [probs([0.9, 0.0], [0.0, 0.0], [0.0, 0.6]), probs([0.0, 0.0], [0.0, 0.0], [0.0, 0.0])]
    out = run(p, anchors)
    assert out['num_detections'].tolist() == [2, 0]
    assert out['classes'].dtype == np.int32 and out['num_detections'].dtype == np.int32
    assert not out['scores'][1].any() and not out['classes'][1].any()


def test_bad_counts_are_named():
    with pytest.raises(ValueError, match='nms_topk'):
        pp.postprocess(tf.zeros([1, 3, 2]), tf.zeros([1, 3, 4]), np.zeros([3, 4], np.float32),
                       PRIOR, nms_topk=0)


def test_keep_per_class_keeps_nms_topk_of_every_class():
    # Four separate boxes; class 1 scores 0.9, 0.8, 0.3, class 2 scores 0.6, 0.5 (one box
    # each scoring for both classes is fine: NMS is per class). nms_topk 2:
    anchors = [[0.0, 0.0, 0.2, 0.2], [0.3, 0.3, 0.5, 0.5], [0.6, 0.6, 0.8, 0.8],
               [0.0, 0.6, 0.2, 0.8]]
    p = [probs([0.9, 0.0], [0.8, 0.0], [0.3, 0.6], [0.0, 0.5])]
    # per image (default): the best 2 of the image, both class 1.
    out = run(p, anchors, nms_topk=2)
    assert out['scores'].shape == (1, 2)
    np.testing.assert_allclose(out['scores'][0], [0.9, 0.8], rtol=1e-5)
    # per class (the original's selection): 2 of class 1 and 2 of class 2, best first;
    # class 1's third box (0.3) is cut by its per-class cap. K = 2 * (C - 1) = 4.
    out = run(p, anchors, nms_topk=2, keep_per='class')
    assert out['scores'].shape == (1, 4)
    assert out['num_detections'].tolist() == [4]
    np.testing.assert_allclose(out['scores'][0], [0.9, 0.8, 0.6, 0.5], rtol=1e-5)
    np.testing.assert_array_equal(out['classes'][0], [1, 1, 2, 2])
    np.testing.assert_allclose(out['boxes'][0, 2:], [anchors[2], anchors[3]], atol=1e-6)
    assert pp.max_detections(21, 200, 'class') == 4000
    assert pp.max_detections(21, 200, 'image') == 200
    with pytest.raises(ValueError, match="keep_per='images'.*'class'"):
        run(p, anchors, keep_per='images')


@pytest.mark.parametrize('keep_per,nms_topk', [('image', 20), ('class', 5)])
def test_per_class_nms_ops_select_what_combined_nms_selects(keep_per, nms_topk):
    # Random anchors, codes and logits of 2 images, 4 foreground classes: the TFLite-builtin
    # path (one NonMaxSuppressionV4 per class) gives the detections of the combined op.
    rng = np.random.RandomState(3)
    centers = rng.uniform(0.1, 0.9, size=(300, 2))
    sizes = rng.uniform(0.05, 0.4, size=(300, 2))
    anchors = np.concatenate([centers - sizes / 2, centers + sizes / 2], 1).astype(np.float32)
    logits = rng.normal(0, 2, size=(2, 300, 5)).astype(np.float32)
    logits[:, :, 4] -= 7.0  # class 4: fewer survivors than nms_topk, so NMS output is padded
    loc = rng.normal(0, 0.5, size=(2, 300, 4)).astype(np.float32)
    outs = {}
    for ops in defaults.NMS_OPS:
        with tf.Graph().as_default():
            out = pp.postprocess(logits, loc, anchors, PRIOR, nms_topk=nms_topk,
                                 keep_per=keep_per, nms_ops=ops, select_threshold=0.05)
            with tf.compat.v1.Session() as sess:
                outs[ops] = sess.run(out)
    combined, per_class = outs['combined'], outs['per_class']
    assert combined['num_detections'].min() >= nms_topk  # the caps are exercised
    if keep_per == 'class':  # ... and the padding of a class with few survivors
        assert 0 < np.sum(combined['classes'] == 4) < 2 * nms_topk
    np.testing.assert_array_equal(per_class['num_detections'], combined['num_detections'])
    for key in ('boxes', 'scores', 'classes'):
        assert per_class[key].shape == combined[key].shape
        np.testing.assert_allclose(per_class[key], combined[key], atol=1e-6, err_msg=key)


def test_unknown_nms_ops_is_named():
    with pytest.raises(ValueError, match='nms_ops'):
        run([probs([0.9])], [[0.1, 0.1, 0.5, 0.5]], nms_ops='fast')
