"""The one SSD300 model_fn and input_fn, shared by training, evaluation, the demo and export.

Everything the model needs arrives through `params` (see `make_params`): the anchor spec,
thresholds, optimizer settings. The input pipeline and the model rebuild the same anchors
from `params['anchor_spec']` as constants, so nothing is passed between them through globals.

Features produced by the input_fn (per replica batch B):
  features['image']     float32 [B, 300, 300, 3]  mean-subtracted, channel order per params
  features['filename']  string  [B]
  features['shape']     int32   [B, 3]            original (height, width, channels)
  eval/predict only:
  features['gt_boxes'] float32 [B, N, 4], features['gt_labels'] int32 [B, N] (-1 = padding),
  features['gt_difficult'] int32 [B, N], features['gt_iscrowd'] int32 [B, N],
  features['source_id'] string [B] (the source's image id, '' for VOC records)
Crowd boxes (COCO iscrowd=1) are dropped from the training targets before augmentation (as
the TF Object Detection API does): they are never positives, and the anchors on them are
matched like any other background anchor. Evaluation keeps them (gt_iscrowd) so the metrics
ignore detections on crowd regions.
Labels (training only):
  labels['loc_targets'] float32 [B, 8732, 4], labels['cls_targets'] int32 [B, 8732] (-1 ignored)
"""
import json
import os

import numpy as np
import tensorflow as tf

from common import defaults
from dataset.pipeline import build_dataset
from net import backbones
from net import ssd_net
from preprocessing import ssd_preprocessing
from net import anchor_manipulator
from net import anchors as anchor_lib
from utility.checkpoints import restore
from utility.drivers import ModeKeys, ModelSpec
from net import losses as loss_lib
from net import postprocess as postprocess_lib
from utility.training import hooks
from utility.training import schedule


def make_params(**overrides):
    """Returns a complete params dict: defaults, the anchor spec, then `overrides`.

    data_format is resolved for this machine (ssd_net.resolve_data_format). Keys left at None that
    follow the backbone (net/backbones.py) get its values: channel_order, mean_rgb,
    checkpoint_model_scope and checkpoint_exclude_scopes (SSD's new layers under the model scope).
    Without an 'anchor_spec' override the spec is SSD300's for the feature-map sizes the backbone
    gives at train_image_size, with the anchor sizes of params['anchor_preset'] (net/anchors).
    Unknown keys are an error so that a misspelt flag cannot be silently ignored.
    """
    unknown = sorted(set(overrides) - set(defaults.DEFAULT_PARAMS) - {'anchor_spec'})
    if unknown:
        raise ValueError('Unknown model parameter(s): %s.' % ', '.join(unknown))
    params = dict(defaults.DEFAULT_PARAMS)
    params.update({k: v for k, v in overrides.items() if k != 'anchor_spec'})
    params['data_format'] = ssd_net.resolve_data_format(params['data_format'])
    backbone = backbones.get_backbone(params['backbone'])
    derived = {'channel_order': backbone.channel_order,
               'mean_rgb': list(backbone.mean_rgb),
               'checkpoint_model_scope': backbone.checkpoint_model_scope,
               'checkpoint_exclude_scopes': ssd_net.default_exclude_scopes(
                   backbone.name, params['model_scope'])}
    for key, value in derived.items():
        if params[key] is None:
            params[key] = value
    params['head'] = ssd_net.resolve_head(params['head'], backbone.name)
    if 'anchor_preset' not in overrides and backbone.anchor_preset:
        params['anchor_preset'] = backbone.anchor_preset
    params['anchor_spec'] = overrides.get('anchor_spec') or anchor_lib.ssd300_anchor_spec(
        ssd_net.feature_shapes(backbone.name, int(params['train_image_size'])),
        image_size=int(params['train_image_size']),
        preset=anchor_lib.check_preset(params['anchor_preset']))
    params['anchor_spec'] = json.loads(json.dumps(params['anchor_spec']))
    return params


def _anchors(params):
    return anchor_lib.generate_anchors(params['anchor_spec'])


# ----------------------------------------------------------------------------- input


def preprocess_train(image, boxes, labels, params, seed=None):
    """One training example as the input_fn prepares it: (image [S, S, 3] float32, boxes,
    labels). preprocess_for_train's augmentation, or with params['augment'] False the eval
    preprocessing (resize + mean only; normalized boxes are unchanged by a plain resize)."""
    out_size = int(params['train_image_size'])
    order, mean = params['channel_order'], params['mean_rgb']
    if params.get('augment', True):
        return ssd_preprocessing.preprocess_for_train(
            image, boxes, labels, out_size=out_size, channel_order=order, mean_rgb=mean,
            seed=seed)
    image = ssd_preprocessing.preprocess_for_eval(image, out_size=out_size,
                                                  channel_order=order, mean_rgb=mean)
    return image, boxes, labels


def preprocess_eval(image, params, normalize=True):
    """uint8 [H, W, 3] RGB image -> the network's float32 [S, S, 3] input: preprocess_for_eval
    with the params' image size, channel order and mean. Every inference path goes through
    here: the eval records (make_input_fn), image files (demo) and the SavedModel's bytes.
    normalize=False stops after the resize (float32 RGB 0-255, resize_for_eval): the input of
    the TFLite models, which do the rest (normalize_for_network) inside."""
    if not normalize:
        resized = ssd_preprocessing.resize_for_eval(
            image[tf.newaxis], int(params['train_image_size']))[0]
        resized.set_shape([int(params['train_image_size'])] * 2 + [3])
        return resized
    return ssd_preprocessing.preprocess_for_eval(
        image, out_size=int(params['train_image_size']), channel_order=params['channel_order'],
        mean_rgb=params['mean_rgb'])


def apply_exif_orientation(image, orientation):
    """Turns a decoded image [H, W, C] upright as its EXIF orientation tag says (1..8, the
    TIFF/EXIF values; anything else: unchanged), the way viewers and PIL's
    ImageOps.exif_transpose show it: 2 mirrored, 3 rotated 180, 4 flipped, 5 transposed,
    6 turned 90 degrees clockwise, 7 transversed, 8 turned 90 degrees counter-clockwise."""
    orientation = tf.cast(orientation, tf.int32)
    transposed = lambda: tf.transpose(image, [1, 0, 2])  # noqa: E731
    branches = {
        2: lambda: tf.reverse(image, [1]),
        3: lambda: tf.reverse(image, [0, 1]),
        4: lambda: tf.reverse(image, [0]),
        5: transposed,
        6: lambda: tf.reverse(transposed(), [1]),
        7: lambda: tf.reverse(transposed(), [0, 1]),
        8: lambda: tf.reverse(transposed(), [0]),
    }
    index = tf.where((orientation >= 2) & (orientation <= 8), orientation - 1, 0)
    return tf.switch_case(index, [lambda: tf.identity(image)] + [branches[k]
                                                                 for k in range(2, 9)])


def decode_for_network(data, params, orientation=None, normalize=True):
    """Encoded JPEG/PNG/BMP/GIF bytes (string scalar) -> (network input [S, S, 3] float32,
    shape int32 [3] of the image as shown): tf.io.decode_image (first frame of a GIF), turned
    upright by `orientation` (an EXIF orientation, `apply_exif_orientation`; None: as stored,
    which is what the SavedModel does: its graph cannot read EXIF), then preprocess_eval
    (`normalize` passed on: False stops after the resize, the TFLite models' input)."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    if orientation is not None:
        image = apply_exif_orientation(image, orientation)
    return preprocess_eval(image, params, normalize), tf.shape(image, out_type=tf.int32)


def encode_labels(boxes, labels, params, anchors=None):
    """The training labels of one image's (preprocessed) boxes and labels: {'loc_targets'
    [A, 4], 'cls_targets' [A]} (anchor_manipulator.encode_targets with the params' anchors,
    match_threshold, neg_threshold and prior scaling). `anchors`: the params' anchors
    (float32 [A, 4] array or tensor), to generate them once for many calls."""
    if anchors is None:
        anchors = _anchors(params)
    loc_targets, cls_targets = anchor_manipulator.encode_targets(
        boxes, labels, anchors, match_threshold=params['match_threshold'],
        neg_threshold=params['neg_threshold'],
        prior_scaling=params['anchor_spec']['prior_scaling'])
    return {'loc_targets': loc_targets, 'cls_targets': cls_targets}


def make_input_fn(params, is_training, file_pattern=None, normalize=True):
    """Returns an Estimator input_fn over the `train-*` or `val-*` shards of params['data_dir'].

    The dataset is batched per replica: under MirroredStrategy the Estimator draws one batch
    for each replica, so each batch holds batch_size / num_replicas images. In multi-worker
    training each worker reads its own part of the training data (params 'num_workers',
    'worker_index'; see build_dataset). Training uses the augmentation of
    preprocess_for_train unless params['augment'] is False, in which case it uses the eval
    preprocessing (still shuffled and repeated). normalize=False (eval only): images resized
    but not normalized, the TFLite models' input (preprocess_eval).
    """
    if file_pattern is None:
        prefix = 'train-*' if is_training else 'val-*'
        file_pattern = os.path.join(params['data_dir'], prefix)
    batch = int(params['batch_size']) // int(params.get('num_replicas', 1))
    anchors = _anchors(params)  # numpy: a constant in each graph the map function is built in

    def train_map(parsed):
        not_crowd = tf.equal(parsed['iscrowd'], 0)  # crowd regions are never positives
        image, boxes, labels = preprocess_train(
            parsed['image'], tf.boolean_mask(parsed['boxes'], not_crowd),
            tf.boolean_mask(parsed['labels'], not_crowd), params)
        features = {'image': image, 'filename': parsed['filename'], 'shape': parsed['shape']}
        return features, encode_labels(boxes, labels, params, anchors)

    def eval_map(parsed):
        image = preprocess_eval(parsed['image'], params, normalize)
        return {'image': image, 'filename': parsed['filename'], 'shape': parsed['shape'],
                'gt_boxes': parsed['boxes'], 'gt_labels': parsed['labels'],
                'gt_difficult': parsed['difficult'], 'gt_iscrowd': parsed['iscrowd'],
                'source_id': parsed['source_id']}

    def input_fn():
        return build_dataset(
            file_pattern, train_map if is_training else eval_map, batch_size=batch,
            is_training=is_training, num_readers=params['num_readers'],
            num_parallel_calls=params['num_preprocessing_threads'] or tf.data.AUTOTUNE,
            seed=params.get('tf_random_seed'), drop_remainder=is_training,
            num_epochs=params.get('train_epochs') if is_training else 1,
            num_shards=params.get('num_workers', 1) if is_training else 1,
            shard_index=params.get('worker_index', 0) if is_training else 0)

    return input_fn


def serving_inputs(params):
    """The serving graph's inputs: encoded JPEG/PNG/BMP/GIF bytes -> preprocessed images.

    Returns:
      (features {'image' [B, S, S, 3], 'shape' [B, 3]}, receivers {'encoded_image' string [B]}),
      what `drivers.export_saved_model` expects of its `serving_inputs_fn`.
    """
    encoded = tf.compat.v1.placeholder(tf.string, [None], name='encoded_image')
    images, shapes = tf.map_fn(lambda data: decode_for_network(data, params), encoded,
                               fn_output_signature=(tf.float32, tf.int32))
    return {'image': images, 'shape': shapes}, {'encoded_image': encoded}


# ----------------------------------------------------------------------------- model


def _summary_image(features, labels, params, anchors):
    """First training image with its matched ground-truth boxes drawn, for TensorBoard."""
    image = tf.image.convert_image_dtype(ssd_preprocessing.denormalize_image(
        features['image'][:1], params['channel_order'], params['mean_rgb']), tf.float32)
    decoded = anchor_manipulator.decode_boxes(
        labels['loc_targets'][:1], anchors, params['anchor_spec']['prior_scaling'])
    positive = tf.cast(labels['cls_targets'][:1] > 0, tf.float32)
    # Non-positive anchors become zero boxes; keep the 50 positives with the largest area.
    boxes = decoded * positive[..., None]
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    _, idx = tf.nn.top_k(area, k=50)
    boxes = tf.gather(boxes, idx, batch_dims=1)
    return tf.image.draw_bounding_boxes(image, boxes, colors=np.array([[1., 0., 0., 1.]]))


def postprocess(cls_logits, loc_preds, params, anchors=None):
    """net/postprocess.postprocess with the params' anchors, prior scaling and settings
    (select_threshold, min_size, keep_topk, nms_threshold, nms_topk, keep_per, nms_ops)."""
    if anchors is None:
        anchors = _anchors(params)
    settings = {key: params[key] for key in defaults.POSTPROCESS}
    return postprocess_lib.postprocess(cls_logits, loc_preds, anchors,
                                       params['anchor_spec']['prior_scaling'],
                                       nms_ops=params.get('nms_ops', 'combined'), **settings)


def model_fn(features, labels, mode, params):
    """SSD300 model_fn: TRAIN, EVAL (losses) and PREDICT (detections) -> drivers.ModelSpec.

    Driver-neutral: `utility/drivers.py` runs it under tf.estimator or a session loop.
    `mode` is a `drivers.ModeKeys` value (the same strings as tf.estimator.ModeKeys).
    """
    is_training = mode == ModeKeys.TRAIN
    spec = params['anchor_spec']
    anchors = tf.constant(_anchors(params), name='anchors')
    images = features['image']

    cls_logits, loc_preds, _ = ssd_net.ssd300(
        images, num_classes=params['num_classes'],
        anchors_per_location=anchor_lib.anchors_per_location(spec),
        is_training=is_training, data_format=params['data_format'],
        scope=params['model_scope'], backbone=params['backbone'],
        freeze_batch_norm=params['freeze_batch_norm'],
        batch_norm_decay=params['batch_norm_decay'], head=params.get('head'))

    if mode == ModeKeys.PREDICT:
        detections = postprocess(cls_logits, loc_preds, params, anchors)
        predictions = dict(detections)
        for key in ('filename', 'shape', 'gt_boxes', 'gt_labels', 'gt_difficult', 'gt_iscrowd',
                    'source_id'):
            if key in features:
                predictions[key] = features[key]
        serving = {k: detections[k] for k in ('boxes', 'scores', 'classes', 'num_detections')}
        return ModelSpec(mode, predictions=predictions, export_outputs=serving)

    parts = loss_lib.ssd_losses(
        cls_logits, loc_preds, labels['cls_targets'], labels['loc_targets'],
        negative_ratio=params['negative_ratio'])
    l2_loss = loss_lib.l2_regularization(
        tf.compat.v1.trainable_variables(), params['weight_decay'])
    # Not named 'total_loss': a summary takes its tag from a graph-unique name, and an op of
    # the same name would turn the TensorBoard tag into 'total_loss_1'.
    total_loss = tf.add_n([parts['cls_loss'], parts['loc_loss'], l2_loss],
                          name='total_loss_value')

    if mode == ModeKeys.EVAL:
        metrics = {
            'cls_loss': tf.compat.v1.metrics.mean(parts['cls_loss']),
            'loc_loss': tf.compat.v1.metrics.mean(parts['loc_loss']),
            'accuracy': tf.compat.v1.metrics.mean(parts['accuracy']),
        }
        return ModelSpec(mode, loss=total_loss, eval_metric_ops=metrics)

    global_step = tf.compat.v1.train.get_or_create_global_step()
    learning_rate = schedule.learning_rate_schedule(
        global_step, params['learning_rate'], params['decay_boundaries'],
        params['lr_decay_factors'], params['end_learning_rate'])

    for name, value in (('cls_loss', parts['cls_loss']), ('loc_loss', parts['loc_loss']),
                        ('l2_loss', l2_loss), ('total_loss', total_loss),
                        ('learning_rate', learning_rate), ('accuracy', parts['accuracy'])):
        tf.compat.v1.summary.scalar(name, value)
    tf.compat.v1.summary.image('ground_truth', _summary_image(features, labels, params, anchors))

    optimizer = tf.compat.v1.train.MomentumOptimizer(learning_rate, momentum=params['momentum'])
    if params.get('use_amp'):
        optimizer = tf.compat.v1.mixed_precision.enable_mixed_precision_graph_rewrite(optimizer)
    update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
    finite_check = schedule.assert_finite_loss(total_loss, global_step)
    with tf.control_dependencies(update_ops + [finite_check]):
        train_op = optimizer.minimize(total_loss, global_step=global_step)

    scaffold = None
    if params.get('checkpoint_path'):
        init_fn, _ = restore.build_restore_fn(
            params['checkpoint_path'], model_scope=params['model_scope'],
            checkpoint_model_scope=params['checkpoint_model_scope'],
            exclude_scopes=params['checkpoint_exclude_scopes'],
            ignore_missing_vars=params['ignore_missing_vars'])
        scaffold = tf.compat.v1.train.Scaffold(init_fn=init_fn)

    logger = hooks.TrainingLoggerHook(
        {'loss': total_loss, 'cls_loss': parts['cls_loss'], 'loc_loss': parts['loc_loss'],
         'l2_loss': l2_loss, 'lr': learning_rate, 'acc': parts['accuracy']},
        global_step, images_per_step=int(params['batch_size']),
        every_n_steps=params['log_every_n_steps'])
    return ModelSpec(mode, loss=total_loss, train_op=train_op, scaffold=scaffold,
                     training_hooks=[logger])
