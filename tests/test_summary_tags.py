"""TensorBoard's training tags read as the README names them (issue 24, item 8): a summary
named like an op of the graph would get TensorFlow's '_1' suffix ('total_loss_1')."""
import tensorflow as tf

from utility import drivers, ssd_model


def test_training_summaries_are_tagged_with_their_plain_names(tfrecord_dir):
    params = ssd_model.make_params(backbone='resnet18', data_dir=tfrecord_dir, batch_size=1,
                                   num_readers=1, num_preprocessing_threads=1,
                                   data_format='channels_last', checkpoint_path=None)
    with tf.Graph().as_default():
        drivers._build_train_graph(  # pylint: disable=protected-access
            ssd_model.model_fn, ssd_model.make_input_fn(params, is_training=True), params,
            strategy=None)
        tags = set()
        for op in tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.SUMMARIES):
            tag = tf.get_static_value(op.op.inputs[0])
            tags.add(tf.compat.as_str(tag.item() if hasattr(tag, 'item') else tag))
    assert {'total_loss', 'learning_rate', 'cls_loss', 'loc_loss', 'l2_loss',
            'accuracy'} <= tags, tags
    assert not any(t.endswith('_1') for t in tags), tags
