"""Tests of dataset/dataset_common.py: label table, parse_example, parse_ground_truth,
build_dataset, manifest."""
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from dataset import dataset_common as dc


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


def _identity_map(parsed):
    """map_fn for tests: fixed-size image plus the variable-length ground truth."""
    image = tf.image.resize(parsed['image'], [32, 32])
    features = {'image': image, 'filename': parsed['filename']}
    labels = {'boxes': parsed['boxes'], 'labels': parsed['labels'],
              'num_boxes': tf.shape(parsed['labels'])[0]}
    return features, labels


def test_label_table():
    assert len(dc.VOC_LABELS) == dc.NUM_CLASSES == 21
    assert dc.VOC_LABELS[0] == 'none'
    assert dc.VOC_LABELS[1] == 'aeroplane' and dc.VOC_LABELS[15] == 'person'
    assert dc.VOC_LABELS[20] == 'tvmonitor'
    assert list(dc.VOC_LABELS[1:]) == sorted(dc.VOC_LABELS[1:])
    assert dc.LABEL_IDS['dog'] == 12 and dc.LABEL_IDS['none'] == 0


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
        parsed = dc.parse_example(placeholder)
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
    outs = [{k: v.numpy() for k, v in dc.parse_example(tf.constant(s)).items()}
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
        parsed = dc.parse_ground_truth(placeholder)
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
    out = {k: v.numpy() for k, v in dc.parse_ground_truth(tf.constant(old)).items()}
    assert (out['height'], out['width']) == (0, 0)
    np.testing.assert_allclose(out['boxes'], [[0.5, 0.125, 1.0, 1.0]])
    np.testing.assert_array_equal(out['labels'], [9])
    np.testing.assert_array_equal(out['difficult'], [0])
    np.testing.assert_array_equal(out['truncated'], [0])


def _batches(dataset, limit=100):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset.take(limit)]


def test_eval_dataset_keeps_final_batch_and_pads(tfrecord_dir):
    pattern = os.path.join(tfrecord_dir, 'train-*')
    batches = _batches(dc.build_dataset(pattern, _identity_map, batch_size=4, is_training=False))
    assert [b[0]['image'].shape for b in batches] == [(4, 32, 32, 3), (4, 32, 32, 3),
                                                     (2, 32, 32, 3)]
    names = [n for b in batches for n in b[0]['filename']]
    assert len(names) == len(set(names)) == 10          # one pass, every image once
    for _features, labels in batches:
        width = labels['labels'].shape[1]
        assert width == labels['num_boxes'].max()       # padded to the longest in the batch
        for row in range(labels['labels'].shape[0]):
            n = labels['num_boxes'][row]
            assert (labels['labels'][row, :n] >= 1).all()
            assert (labels['labels'][row, n:] == -1).all()     # labels padded with -1
            assert (labels['boxes'][row, n:] == 0).all()       # boxes padded with 0
            assert (labels['boxes'][row, :n, 2] > labels['boxes'][row, :n, 0]).all()
    # Evaluation order is deterministic.
    again = _batches(dc.build_dataset(pattern, _identity_map, batch_size=4, is_training=False))
    assert [n for b in again for n in b[0]['filename']] == names


def test_drop_remainder_and_custom_padding(tfrecord_dir):
    pattern = os.path.join(tfrecord_dir, 'train-*')
    padding = ({'image': tf.constant(0.0), 'filename': tf.constant('')},
               {'boxes': tf.constant(0.0), 'labels': tf.constant(99), 'num_boxes': tf.constant(0)})
    dataset = dc.build_dataset(pattern, _identity_map, batch_size=4, is_training=False,
                               drop_remainder=True, padding_values=padding)
    assert dataset.element_spec[0]['image'].shape.as_list() == [4, 32, 32, 3]
    batches = _batches(dataset)
    assert len(batches) == 2
    labels = np.concatenate([b[1]['labels'].ravel() for b in batches])
    counts = np.concatenate([b[1]['num_boxes'] for b in batches])
    assert (labels == 99).sum() == sum(b[1]['labels'].size for b in batches) - counts.sum()


def test_training_dataset_shuffles_examples_and_repeats(tfrecord_dir):
    pattern = os.path.join(tfrecord_dir, 'train-*')

    def names(seed, batches=5):
        dataset = dc.build_dataset(pattern, _identity_map, batch_size=4, is_training=True,
                                   seed=seed, num_readers=2)
        return [n for b in _batches(dataset, batches) for n in b[0]['filename']]

    first = names(seed=7)
    assert len(first) == 20                              # 5 batches from 10 images: repeats
    epoch = first[:10]
    assert len(set(epoch)) == 10                         # each epoch visits every image once
    eval_order = [n for b in _batches(dc.build_dataset(pattern, None, 10, False))
                  for n in b['filename']]
    assert epoch != eval_order                           # examples are shuffled
    assert names(seed=7) == first                        # a seed fixes the order
    # With shuffled files only, the two shards' images would stay interleaved in
    # file order; an example-level shuffle breaks at least one shard's order.
    shard_a = [n for n in eval_order[0::2]]
    positions = [epoch.index(n) for n in shard_a]
    shard_b = [n for n in eval_order[1::2]]
    positions_b = [epoch.index(n) for n in shard_b]
    assert positions != sorted(positions) or positions_b != sorted(positions_b)

    finite = dc.build_dataset(pattern, None, batch_size=4, is_training=True, seed=1,
                              num_epochs=2)
    assert sum(b['labels'].shape[0] for b in _batches(finite)) == 20


def test_graph_mode_iterator(tfrecord_dir):
    with tf.Graph().as_default():
        dataset = dc.build_dataset(os.path.join(tfrecord_dir, 'val-*'), _identity_map,
                                   batch_size=2, is_training=False)
        features, labels = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
        with tf.compat.v1.Session() as sess:
            image, boxes = sess.run([features['image'], labels['boxes']])
    assert image.shape == (2, 32, 32, 3) and boxes.shape[0] == 2 and boxes.shape[2] == 4


def test_missing_files_error_names_pattern_and_converter(tmp_path):
    pattern = str(tmp_path / 'train-*')
    with pytest.raises(ValueError) as info:
        dc.build_dataset(pattern, None, 2, True)
    assert pattern in str(info.value)
    assert 'convert_voc_sample_tfrecords.py' in str(info.value)


def test_manifest_reading(tfrecord_dir, tmp_path):
    assert dc.count_against_manifest(tfrecord_dir, 'train', 0)[0] == 10
    assert dc.count_against_manifest(tfrecord_dir, 'val', 0)[0] == 2
    assert dc.count_against_manifest(tfrecord_dir, 'validation', 0)[0] == 2
    assert set(dc.read_manifest(tfrecord_dir)['splits']) == {'train', 'val'}
    assert dc.count_against_manifest(tfrecord_dir, 'bogus', 5) == (None, 5)
    with pytest.raises(FileNotFoundError, match='No manifest.json in .*convert_voc_sample'):
        dc.read_manifest(str(tmp_path))
    (tmp_path / 'manifest.json').write_text('{"splits": ')
    with pytest.raises(ValueError, match='not valid JSON'):
        dc.read_manifest(str(tmp_path))
    (tmp_path / 'manifest.json').write_text(json.dumps({'splits': {'train': {'images': 3}}}))
    assert dc.count_against_manifest(str(tmp_path), 'train', 0)[0] == 3
