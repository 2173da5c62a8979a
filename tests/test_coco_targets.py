"""Crowd boxes (COCO iscrowd=1) never become training positives: the real training input_fn
drops them from the targets (utility/ssd_model.make_input_fn), and evaluation keeps them."""
import io

import numpy as np
import tensorflow as tf
from PIL import Image

from dataset.shard_writer import make_example
from utility import ssd_model


def _record(path):
    buffer = io.BytesIO()
    Image.new('RGB', (300, 300), (120, 120, 120)).save(buffer, format='JPEG')
    objects = [  # label 1: a normal box on the left; label 2: a crowd region on the right
        {'bbox': (0.1, 0.05, 0.5, 0.45), 'label': 1, 'name': 'a', 'difficult': 0,
         'truncated': 0, 'iscrowd': 0},
        {'bbox': (0.4, 0.55, 0.9, 0.95), 'label': 2, 'name': 'b', 'difficult': 0,
         'truncated': 0, 'iscrowd': 1}]
    example = make_example('x.jpg', buffer.getvalue(), 300, 300, objects, source_id=17)
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(example.SerializeToString())


def test_crowd_boxes_are_not_training_positives_but_reach_evaluation(tmp_path):
    _record(str(tmp_path / 'train-00000-of-00001'))
    _record(str(tmp_path / 'val-00000-of-00001'))
    params = ssd_model.make_params(data_dir=str(tmp_path), batch_size=1, num_classes=3,
                                   augment=False, num_readers=1, num_preprocessing_threads=1,
                                   data_format='channels_last')
    features, labels = next(iter(ssd_model.make_input_fn(params, is_training=True)()))
    targets = labels['cls_targets'].numpy().reshape(-1)
    assert (targets == 1).sum() > 0          # the normal box is matched
    assert (targets == 2).sum() == 0         # the crowd region never is
    eval_features = next(iter(ssd_model.make_input_fn(params, is_training=False)()))
    np.testing.assert_array_equal(eval_features['gt_labels'].numpy(), [[1, 2]])
    np.testing.assert_array_equal(eval_features['gt_iscrowd'].numpy(), [[0, 1]])
    assert eval_features['source_id'].numpy().tolist() == [b'17']
