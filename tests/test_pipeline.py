"""Tests of dataset/pipeline.py: build_dataset over the converted sample (batching, padding,
shuffling, graph mode) and the missing-files error."""
import os

import numpy as np
import pytest
import tensorflow as tf

from dataset import pipeline


def _identity_map(parsed):
    """map_fn for tests: fixed-size image plus the variable-length ground truth."""
    image = tf.image.resize(parsed['image'], [32, 32])
    features = {'image': image, 'filename': parsed['filename']}
    labels = {'boxes': parsed['boxes'], 'labels': parsed['labels'],
              'num_boxes': tf.shape(parsed['labels'])[0]}
    return features, labels


def _batches(dataset, limit=100):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset.take(limit)]


def test_eval_dataset_keeps_final_batch_and_pads(tfrecord_dir):
    pattern = os.path.join(tfrecord_dir, 'train-*')
    batches = _batches(pipeline.build_dataset(pattern, _identity_map, batch_size=4, is_training=False))
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
    again = _batches(pipeline.build_dataset(pattern, _identity_map, batch_size=4, is_training=False))
    assert [n for b in again for n in b[0]['filename']] == names


def test_drop_remainder_and_custom_padding(tfrecord_dir):
    pattern = os.path.join(tfrecord_dir, 'train-*')
    padding = ({'image': tf.constant(0.0), 'filename': tf.constant('')},
               {'boxes': tf.constant(0.0), 'labels': tf.constant(99), 'num_boxes': tf.constant(0)})
    dataset = pipeline.build_dataset(pattern, _identity_map, batch_size=4, is_training=False,
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
        dataset = pipeline.build_dataset(pattern, _identity_map, batch_size=4, is_training=True,
                                   seed=seed, num_readers=2)
        return [n for b in _batches(dataset, batches) for n in b[0]['filename']]

    first = names(seed=7)
    assert len(first) == 20                              # 5 batches from 10 images: repeats
    epoch = first[:10]
    assert len(set(epoch)) == 10                         # each epoch visits every image once
    eval_order = [n for b in _batches(pipeline.build_dataset(pattern, None, 10, False))
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

    finite = pipeline.build_dataset(pattern, None, batch_size=4, is_training=True, seed=1,
                              num_epochs=2)
    assert sum(b['labels'].shape[0] for b in _batches(finite)) == 20


def test_graph_mode_iterator(tfrecord_dir):
    with tf.Graph().as_default():
        dataset = pipeline.build_dataset(os.path.join(tfrecord_dir, 'val-*'), _identity_map,
                                   batch_size=2, is_training=False)
        features, labels = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
        with tf.compat.v1.Session() as sess:
            image, boxes = sess.run([features['image'], labels['boxes']])
    assert image.shape == (2, 32, 32, 3) and boxes.shape[0] == 2 and boxes.shape[2] == 4


def test_missing_files_error_names_pattern_and_converter(tmp_path):
    pattern = str(tmp_path / 'train-*')
    with pytest.raises(ValueError) as info:
        pipeline.build_dataset(pattern, None, 2, True)
    assert pattern in str(info.value)
    assert 'convert_voc_sample_tfrecords.py' in str(info.value)
