"""Tests of dataset/records.py: parse_example and parse_ground_truth of hand-built records."""
import io

import numpy as np
import tensorflow as tf
from PIL import Image

from dataset import records


def _jpeg(width, height, colour):
    buffer = io.BytesIO()
    Image.new('RGB', (width, height), colour).save(buffer, 'JPEG', quality=95)
    return buffer.getvalue()


def _example(feature_lists):
    """tf.train.Example from {key: ('bytes'|'int'|'float', [values])}."""
    feature = {}
    for key, (kind, values) in feature_lists.items():
        if kind == 'bytes':
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        elif kind == 'int':
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _hand_built_features():
    """A 40 x 20 (width x height) image with boxes given by the original's convention."""
    return {
        'image/encoded': ('bytes', [_jpeg(40, 20, (250, 10, 10))]),
        'image/format': ('bytes', [b'jpeg']),
        'image/filename': ('bytes', [b'img_1.jpg']),
        'image/height': ('int', [20]), 'image/width': ('int', [40]),
        'image/channels': ('int', [3]), 'image/shape': ('int', [20, 40, 3]),
        'image/object/bbox/xmin': ('float', [0.25, 0.025]),
        'image/object/bbox/ymin': ('float', [0.5, 0.05]),
        'image/object/bbox/xmax': ('float', [0.75, 1.0]),
        'image/object/bbox/ymax': ('float', [1.0, 0.5]),
        'image/object/bbox/label': ('int', [12, 1]),
        'image/object/bbox/label_text': ('bytes', [b'dog', b'aeroplane']),
        'image/object/bbox/difficult': ('int', [0, 1]),
        'image/object/bbox/truncated': ('int', [1, 0]),
    }


def test_parse_example_hand_built_record():
    serialized = _example(_hand_built_features())
    with tf.Graph().as_default():
        placeholder = tf.compat.v1.placeholder(tf.string, [])
        parsed = records.parse_example(placeholder)
        assert parsed['image'].dtype == tf.uint8
        assert parsed['image'].shape.as_list() == [None, None, 3]
        assert parsed['boxes'].shape.as_list() == [None, 4]
        assert parsed['labels'].dtype == tf.int32 and parsed['shape'].dtype == tf.int32
        with tf.compat.v1.Session() as sess:
            out = sess.run(parsed, feed_dict={placeholder: serialized})
    assert out['image'].shape == (20, 40, 3)
    assert abs(int(out['image'][10, 20, 0]) - 250) <= 3 and out['image'][10, 20, 1] <= 15
    assert out['filename'] == b'img_1.jpg'
    np.testing.assert_array_equal(out['shape'], [20, 40, 3])
    np.testing.assert_allclose(out['boxes'], [[0.5, 0.25, 1.0, 0.75],      # ymin, xmin, ymax, xmax
                                              [0.05, 0.025, 0.5, 1.0]])
    np.testing.assert_array_equal(out['labels'], [12, 1])
    np.testing.assert_array_equal(out['difficult'], [0, 1])
    np.testing.assert_array_equal(out['truncated'], [1, 0])


def test_parse_example_old_style_record_and_background_image():
    # Records of the original scripts: format 'JPEG', grayscale JPEG data, no
    # difficult/truncated lists; and an image without objects.
    buffer = io.BytesIO()
    Image.new('L', (8, 6), 120).save(buffer, 'JPEG', quality=95)
    old = _example({
        'image/encoded': ('bytes', [buffer.getvalue()]),
        'image/format': ('bytes', [b'JPEG']),
        'image/filename': ('bytes', [b'000005.jpg']),
        'image/shape': ('int', [6, 8, 1]),
        'image/object/bbox/xmin': ('float', [0.125]), 'image/object/bbox/ymin': ('float', [0.5]),
        'image/object/bbox/xmax': ('float', [1.0]), 'image/object/bbox/ymax': ('float', [1.0]),
        'image/object/bbox/label': ('int', [9]),
    })
    empty = _example({'image/encoded': ('bytes', [_jpeg(5, 4, (0, 0, 255))])})
    outs = [{k: v.numpy() for k, v in records.parse_example(tf.constant(s)).items()}
            for s in (old, empty)]
    assert outs[0]['image'].shape == (6, 8, 3)
    np.testing.assert_array_equal(outs[0]['shape'], [6, 8, 3])
    np.testing.assert_allclose(outs[0]['boxes'], [[0.5, 0.125, 1.0, 1.0]])
    np.testing.assert_array_equal(outs[0]['labels'], [9])
    np.testing.assert_array_equal(outs[0]['difficult'], [0])
    np.testing.assert_array_equal(outs[0]['truncated'], [0])
    np.testing.assert_array_equal(outs[0]['iscrowd'], [0])  # records without the key
    assert outs[0]['source_id'] == b''
    assert outs[1]['boxes'].shape == (0, 4) and outs[1]['labels'].shape == (0,)
    assert outs[1]['filename'] == b''


def test_parse_ground_truth_reads_annotations_and_stored_size_without_the_image():
    features = _hand_built_features()
    features['image/encoded'] = ('bytes', [b'not a jpeg'])    # never decoded
    with tf.Graph().as_default():
        placeholder = tf.compat.v1.placeholder(tf.string, [])
        parsed = records.parse_ground_truth(placeholder)
        assert sorted(parsed) == ['boxes', 'difficult', 'filename', 'height', 'iscrowd',
                                  'labels', 'source_id', 'truncated', 'width']
        assert parsed['boxes'].shape.as_list() == [None, 4]
        assert parsed['labels'].dtype == tf.int32 and parsed['height'].dtype == tf.int32
        with tf.compat.v1.Session() as sess:
            out = sess.run(parsed, feed_dict={placeholder: _example(features)})
    assert out['filename'] == b'img_1.jpg'
    assert (out['height'], out['width']) == (20, 40)
    np.testing.assert_allclose(out['boxes'], [[0.5, 0.25, 1.0, 0.75],
                                              [0.05, 0.025, 0.5, 1.0]])
    np.testing.assert_array_equal(out['labels'], [12, 1])
    np.testing.assert_array_equal(out['difficult'], [0, 1])
    np.testing.assert_array_equal(out['truncated'], [1, 0])

    # No image at all, no size, no difficult/truncated lists (the original's older records).
    old = _example({'image/filename': ('bytes', [b'000005.jpg']),
                    'image/object/bbox/xmin': ('float', [0.125]),
                    'image/object/bbox/ymin': ('float', [0.5]),
                    'image/object/bbox/xmax': ('float', [1.0]),
                    'image/object/bbox/ymax': ('float', [1.0]),
                    'image/object/bbox/label': ('int', [9])})
    out = {k: v.numpy() for k, v in records.parse_ground_truth(tf.constant(old)).items()}
    assert (out['height'], out['width']) == (0, 0)
    np.testing.assert_allclose(out['boxes'], [[0.5, 0.125, 1.0, 1.0]])
    np.testing.assert_array_equal(out['labels'], [9])
    np.testing.assert_array_equal(out['difficult'], [0])
    np.testing.assert_array_equal(out['truncated'], [0])
