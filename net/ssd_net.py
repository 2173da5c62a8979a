"""SSD300 network: a backbone + SSD extra layers + multibox heads (tf_slim).

Graph-mode (tf.compat.v1) building blocks; importing this module has no side effects.

The backbone (net/backbones.py, chosen by name: 'vgg16' (default), 'resnet18', 'resnet34',
'resnet50', 'resnet101') gives two source maps, at strides 8 and 16; the extra layers
conv8..conv11 (on the stride-16 map) and the six multibox heads are the same for every
backbone; the backbones themselves (VGG-16 reduced-fc, the ResNets) are built in
net/backbones.py. The exception is 'mobilenet_v2' (SSDLite): its maps are at strides 16 and
32, its registry entry asks for SSDLite's extra layers (ssdlite_extra_layers: 1x1 -> 3x3
depthwise/2 -> 1x1, batch norm, ReLU6) and, by default, SSDLite's depthwise-separable heads
(``head='ssdlite'``; ``HEADS``). Layout of the variables under the model scope (default ``ssd300``) for VGG-16::

    ssd300/conv1/conv1_1/{weights,biases} ... ssd300/conv5/conv5_3/{weights,biases}
    ssd300/fc6/{weights [3,3,512,1024], biases}      (3x3, dilation 6)
    ssd300/fc7/{weights [1,1,1024,1024], biases}
    ssd300/conv4_3_scale/weights [512]                (L2-norm scale, initialised to 20)
    ssd300/additional_layers/conv8/conv8_1 ... conv11/conv11_2/{weights,biases}
    ssd300/multibox_head/loc_{0..5}/{weights,biases}, ssd300/multibox_head/cls_{0..5}/{...}

The backbone names are the public ImageNet checkpoint's names with its scope (``vgg_16``,
``resnet_v1_50``, ...) replaced by the model scope (see ``backbones.VGG_REDUCED_FC_SHAPES``), so
restoring the backbone is a prefix remap (``utility/checkpoints/restore.py``). The new SSD layers
live under ``new_layer_scopes(backbone)``, the default ``--checkpoint_exclude_scopes``
(``default_exclude_scopes``).
"""

import collections

import tensorflow as tf
import tf_slim as slim

from common import defaults
from net import backbones

# Variable names are the model scope (common/defaults.MODEL_SCOPE) + the checkpoint name minus
# its scope.

# Scopes (under the model scope) of the variables SSD adds to every backbone.
SSD_LAYER_SCOPES = ('multibox_head', 'additional_layers')

# The extra layers' source maps (heads 2..5).
EXTRA_SOURCE_LAYERS = ('conv8', 'conv9', 'conv10', 'conv11')


# Multibox heads (--head; a backbone's entry names its default): 'conv' SSD's 3x3 convolutions,
# 'ssdlite' SSDLite's depthwise-separable ones (3x3 depthwise + batch norm + ReLU6, then a 1x1
# convolution with biases).
HEADS = ('conv', 'ssdlite')


def resolve_head(head, backbone=defaults.BACKBONE):
    """`head` if given (one of HEADS, else ValueError), else the backbone's default."""
    if head is None:
        return backbones.get_backbone(backbone).head
    if head not in HEADS:
        raise ValueError('Unknown head %r; use one of %s (--head).' % (head, ', '.join(HEADS)))
    return head


def source_layers(backbone=defaults.BACKBONE):
    """end_points names of the six source maps, in anchor order (backbone's two + conv8..11)."""
    return tuple(backbones.get_backbone(backbone).source_layers) + EXTRA_SOURCE_LAYERS


def new_layer_scopes(backbone=defaults.BACKBONE):
    """Scopes (under the model scope) that no ImageNet checkpoint of `backbone` has."""
    return SSD_LAYER_SCOPES + tuple(backbones.get_backbone(backbone).added_scopes)


def default_exclude_scopes(backbone=defaults.BACKBONE, model_scope=defaults.MODEL_SCOPE):
    """The default --checkpoint_exclude_scopes for `backbone`: its new layers, comma-separated
    ('ssd300/multibox_head, ssd300/additional_layers, ssd300/conv4_3_scale' for VGG-16)."""
    return ', '.join('%s/%s' % (model_scope, s) for s in new_layer_scopes(backbone))


def feature_shapes(backbone=defaults.BACKBONE, image_size=300):
    """Sides (cells) of the six source maps for a square `image_size` input, computed without
    building the graph: the backbone's stride-8 and stride-16 maps, then conv8 and conv9
    (3x3/2 SAME: ceil(n / 2)), conv10 and conv11 (3x3 VALID: n - 2). 300 -> [38, 19, 10, 5,
    3, 1] for every registered backbone. ValueError when the input is too small."""
    sizes = list(backbones.source_map_sizes(backbone, image_size))
    size = sizes[-1]
    for _, _, _, stride, padding in extra_layer_table(backbone):
        size = (size + stride - 1) // stride if padding == 'SAME' else (size - 3) // stride + 1
        sizes.append(size)
    if min(sizes) < 1:
        raise ValueError('A %dx%d input is too small for SSD\'s six source maps (%s); use '
                         '--train_image_size=300.' % (image_size, image_size, sizes))
    return sizes


def extra_layer_table(backbone=defaults.BACKBONE):
    """The extra layers' (block, 1x1 filters, 3x3 filters, stride, padding) for `backbone`:
    _EXTRA_LAYERS (SSD) or _SSDLITE_EXTRA_LAYERS, as its registry entry says."""
    kind = backbones.get_backbone(backbone).extra_layers
    return _SSDLITE_EXTRA_LAYERS if kind == 'ssdlite' else _EXTRA_LAYERS


# Extra layers: (block, 1x1 filters, 3x3 filters, 3x3 stride, 3x3 padding), as the original
# SSD.TensorFlow code builds them (its trained weights depend on it). The 1x1 convs are SAME
# (no padding either way). Stride-2 3x3 convs are TensorFlow SAME, which pads
# (out - 1) * 2 + 3 - in pixels, the odd one at the bottom/right: conv8_2 on 19x19 pads 1 on
# every side (-> 10x10, like Caffe's pad 1), conv9_2 on 10x10 pads 0 at the top/left and 1 at
# the bottom/right (-> 5x5; Caffe would pad 1 on every side). conv10_2 / conv11_2 are VALID
# (5 -> 3 -> 1).
_EXTRA_LAYERS = (('conv8', 256, 512, 2, 'SAME'), ('conv9', 128, 256, 2, 'SAME'),
                 ('conv10', 128, 256, 1, 'VALID'), ('conv11', 128, 256, 1, 'VALID'))
# SSDLite's extra layers (the TF Object Detection API's ssd_mobilenet_v2 depths 512, 256, 256,
# 128, each after a 1x1 of half as many): 1x1 -> 3x3 depthwise stride 2 SAME -> 1x1, batch norm
# and ReLU6 after each: 10 -> 5 -> 3 -> 2 -> 1 on MobileNetV2's 10x10 map.
_SSDLITE_EXTRA_LAYERS = (('conv8', 256, 512, 2, 'SAME'), ('conv9', 128, 256, 2, 'SAME'),
                         ('conv10', 128, 256, 2, 'SAME'), ('conv11', 64, 128, 2, 'SAME'))


def resolve_data_format(requested=defaults.AUTO):
    """Returns the data format to build the model with: 'channels_first' or 'channels_last'.

    'auto': 'channels_first' when a GPU is visible (faster in cuDNN), else 'channels_last'.
    'channels_first' needs a GPU: TF's CPU kernels do not support NCHW reliably (TF 2.15's
    oneDNN build runs NCHW max-pooling but returns wrong values). When it is requested and no
    GPU is visible, logs a notice and returns 'channels_last'.
    Raises ValueError for anything but 'auto' / 'channels_first' / 'channels_last'.
    """
    has_gpu = bool(tf.config.list_physical_devices('GPU'))
    if requested == defaults.AUTO:
        return 'channels_first' if has_gpu else 'channels_last'
    backbones.check_data_format(requested)
    if requested == 'channels_first' and not has_gpu:
        tf.compat.v1.logging.warning(
            "data_format='channels_first' was requested but no GPU is visible; using "
            "'channels_last' (NHWC): TensorFlow's CPU kernels do not support NCHW reliably.")
        return 'channels_last'
    return requested


def ssd_arg_scope(data_format='channels_last'):
    """arg_scope shared by every SSD conv/pool: SAME, ReLU, Xavier weights, zero biases."""
    backbones.check_data_format(data_format)
    fmt = backbones.DATA_FORMATS[data_format]
    with slim.arg_scope([slim.conv2d],
                        activation_fn=tf.nn.relu,
                        padding='SAME',
                        weights_initializer=tf.compat.v1.glorot_uniform_initializer(),
                        biases_initializer=tf.compat.v1.zeros_initializer(),
                        data_format=fmt):
        with slim.arg_scope([slim.max_pool2d], padding='SAME', data_format=fmt) as sc:
            return sc


def ssdlite_extra_layers(net, data_format='channels_last', batch_norm_scope=None):
    """SSDLite's extra layers (_SSDLITE_EXTRA_LAYERS) on the backbone's last map.

    Args:
      net: MobileNetV2's Conv_1, [B, 10, 10, 1280] (or NCHW) for a 300x300 input.
      batch_norm_scope: backbones.mobilenet_arg_scope(...) (batch norm + ReLU6).
    Returns:
      the four block outputs: 5x5x512, 3x3x256, 2x2x256, 1x1x128 for 300x300.
    Variables: additional_layers/convN/convN_1 (1x1), convN_2_depthwise (3x3 depthwise
      weights), convN_2 (1x1), each with BatchNorm.
    """
    del data_format  # in batch_norm_scope
    outputs = []
    with tf.compat.v1.variable_scope('additional_layers'), slim.arg_scope(batch_norm_scope):
        for block, filters_1x1, filters_3x3, stride, _ in _SSDLITE_EXTRA_LAYERS:
            with tf.compat.v1.variable_scope(block):
                net = slim.conv2d(net, filters_1x1, [1, 1], scope=block + '_1')
                net = backbones.depthwise_conv2d(net, stride, block + '_2_depthwise')
                net = slim.conv2d(net, filters_3x3, [1, 1], scope=block + '_2')
            outputs.append(net)
    return outputs


def extra_layers(net, data_format='channels_last'):
    """SSD's extra feature layers conv8..conv11 on top of the backbone's stride-16 map.

    Args:
      net: the stride-16 map (VGG-16: fc7), [B, 19, 19, C] (or NCHW) for a 300x300 input.
    Returns:
      list of the four block outputs: 10x10x512, 5x5x256, 3x3x256, 1x1x256 for 300x300
      (padding: see _EXTRA_LAYERS; conv9_2 pads only at the bottom/right).
    Variables: additional_layers/convN/convN_1 (1x1) and convN_2 (3x3).
    """
    outputs = []
    with tf.compat.v1.variable_scope('additional_layers'):
        for block, filters_1x1, filters_3x3, stride, padding in _EXTRA_LAYERS:
            with tf.compat.v1.variable_scope(block):
                net = slim.conv2d(net, filters_1x1, [1, 1], scope=block + '_1')
                net = slim.conv2d(net, filters_3x3, [3, 3], stride=stride, padding=padding,
                                  scope=block + '_2')
            outputs.append(net)
    return outputs


def multibox_head(feature_maps, num_classes, anchors_per_location, data_format='channels_last',
                  head='conv', batch_norm_scope=None):
    """One 3x3 loc conv (k*4) and one 3x3 cls conv (k*num_classes) per source map, no activation.

    head='ssdlite': each of them is instead a 3x3 depthwise convolution with batch norm and
    ReLU6 (under `batch_norm_scope`, backbones.mobilenet_arg_scope; variables loc_i_depthwise,
    cls_i_depthwise) followed by a 1x1 convolution loc_i / cls_i with biases, no activation.

    Args:
      feature_maps: list of source maps in `data_format`, [B, H_i, W_i, C_i] (or NCHW).
      num_classes: classes including background (21 for VOC).
      anchors_per_location: k_i per source map, e.g. [4, 6, 6, 6, 4, 4].
    Returns:
      (cls_logits [B, A, num_classes], loc_preds [B, A, 4]), A = sum_i H_i*W_i*k_i, anchors
      ordered (layer, y, x, anchor type) as net/anchors.generate_anchors.
    Variables: multibox_head/loc_i, multibox_head/cls_i.
    """
    cls_list, loc_list = [], []
    with tf.compat.v1.variable_scope('multibox_head'):
        for i, (feature, k) in enumerate(zip(feature_maps, anchors_per_location)):
            if head == 'ssdlite':
                loc = _separable_predictor(feature, k * 4, 'loc_%d' % i, batch_norm_scope)
                cls = _separable_predictor(feature, k * num_classes, 'cls_%d' % i,
                                           batch_norm_scope)
            else:
                loc = slim.conv2d(feature, k * 4, [3, 3], activation_fn=None,
                                  scope='loc_%d' % i)
                cls = slim.conv2d(feature, k * num_classes, [3, 3], activation_fn=None,
                                  scope='cls_%d' % i)
            if data_format == 'channels_first':  # back to NHWC so anchors are (y, x, k)
                loc = tf.transpose(loc, [0, 2, 3, 1])
                cls = tf.transpose(cls, [0, 2, 3, 1])
            height, width = loc.get_shape().as_list()[1:3]
            if height is None or width is None:
                raise ValueError('Feature map %d has unknown spatial size; give the input a '
                                 'static height and width (300x300 for SSD300).' % i)
            num_anchors = height * width * k
            loc_list.append(tf.reshape(loc, [-1, num_anchors, 4]))
            cls_list.append(tf.reshape(cls, [-1, num_anchors, num_classes]))
        cls_logits = tf.concat(cls_list, axis=1, name='cls_logits')
        loc_preds = tf.concat(loc_list, axis=1, name='loc_preds')
    return cls_logits, loc_preds


def _separable_predictor(feature, filters, scope, batch_norm_scope):
    """SSDLite's box / class predictor: 3x3 depthwise (BN, ReLU6) -> 1x1 with biases."""
    with slim.arg_scope(batch_norm_scope):
        net = backbones.depthwise_conv2d(feature, 1, scope + '_depthwise')
        return slim.conv2d(net, filters, [1, 1], activation_fn=None, normalizer_fn=None,
                           biases_initializer=tf.compat.v1.zeros_initializer(), scope=scope)


def ssd300(inputs, num_classes, anchors_per_location, is_training=False,
           data_format='channels_last', scope=defaults.MODEL_SCOPE, backbone=defaults.BACKBONE,
           freeze_batch_norm=False, batch_norm_decay=None, head=None):
    """Builds SSD300 (a backbone + extra layers + multibox heads).

    Args:
      inputs: float32 [B, 300, 300, 3], NHWC, normalized as the backbone expects
        (backbones.get_backbone(backbone).channel_order / mean_rgb; VGG-16: mean-subtracted
        BGR). Always NHWC; with data_format='channels_first' the network transposes to NCHW.
      num_classes: classes including background (21 for VOC).
      anchors_per_location: anchors per cell for the six source maps, [4, 6, 6, 6, 4, 4]
        (net/anchors.anchors_per_location(spec)).
      is_training: batch norm (ResNets) uses batch statistics and adds its moving-average
        updates to UPDATE_OPS; VGG-16 has no train-only layers (same graph either way).
      data_format: 'channels_last' or 'channels_first' (GPU only; see resolve_data_format).
      scope: model variable scope; backbone variables are scope + checkpoint name minus the
        checkpoint's scope ('vgg_16', 'resnet_v1_50', ...).
      backbone: a net/backbones.py name: 'vgg16', 'resnet18', 'resnet34', 'resnet50',
        'resnet101'.
      freeze_batch_norm: ResNets: moving statistics in training too, gamma/beta frozen.
      batch_norm_decay: ResNets: decay of the batch-norm moving averages (None: the
        backbone's default, defaults.BATCH_NORM_DECAY).
      head: one of HEADS, None: the backbone's ('ssdlite' for mobilenet_v2, else 'conv').
        The SSDLite extra layers and heads have batch norm with the backbone's settings.
    Returns:
      cls_logits: float32 [B, 8732, num_classes], unnormalized class scores.
      loc_preds: float32 [B, 8732, 4], encoded box offsets; anchor order (layer, y, x, anchor
        type) as net/anchors.generate_anchors.
      end_points: dict: every slim layer output keyed by its scope path, the six source maps
        under source_layers(backbone) names (VGG-16: 'conv4_3_norm', 'fc7', 'conv8', ...,
        'conv11') in `data_format` (38, 19, 10, 5, 3, 1 pixels for 300x300), 'feature_maps'
        (the same six as a list), 'cls_logits' and 'loc_preds'.
    """
    backbones.check_data_format(data_format)
    spec = backbones.get_backbone(backbone)
    names = source_layers(backbone)
    anchors_per_location = list(anchors_per_location)
    if len(anchors_per_location) != len(names):
        raise ValueError('anchors_per_location has %d entries but SSD300 has %d source layers; '
                         'pass net.anchors.anchors_per_location(spec) (6 numbers).'
                         % (len(anchors_per_location), len(names)))
    inputs = tf.convert_to_tensor(inputs, dtype=tf.float32)
    shape = inputs.get_shape()
    if shape.rank is not None and (shape.rank != 4 or shape.as_list()[3] != 3):
        raise ValueError('ssd300 expects NHWC images [batch, 300, 300, 3], got shape %s; '
                         'pass images in channels_last layout (the model transposes itself).'
                         % (shape,))

    with tf.compat.v1.variable_scope(scope, defaults.MODEL_SCOPE, [inputs]) as sc:
        collection = sc.original_name_scope + '_end_points'
        with slim.arg_scope(ssd_arg_scope(data_format)), \
                slim.arg_scope([slim.conv2d, slim.max_pool2d, backbones.dilated_conv2d],
                               outputs_collections=collection):
            net = inputs
            if data_format == 'channels_first':
                net = tf.transpose(net, [0, 3, 1, 2], name='to_nchw')
            sources = spec.build(net, is_training=is_training, data_format=data_format,
                                 freeze_batch_norm=freeze_batch_norm,
                                 batch_norm_decay=batch_norm_decay)
            head = resolve_head(head, backbone)
            batch_norm_scope = backbones.mobilenet_arg_scope(
                is_training, freeze_batch_norm, data_format, batch_norm_decay)
            if spec.extra_layers == 'ssdlite':
                extras = ssdlite_extra_layers(sources[-1], data_format, batch_norm_scope)
            else:
                extras = extra_layers(sources[-1], data_format)
            feature_maps = list(sources) + extras
            cls_logits, loc_preds = multibox_head(feature_maps, num_classes,
                                                  anchors_per_location, data_format, head,
                                                  batch_norm_scope)
        end_points = collections.OrderedDict(slim.utils.convert_collection_to_dict(collection))
        for name, feature in zip(names, feature_maps):
            end_points[name] = feature
        end_points['feature_maps'] = feature_maps
        end_points['cls_logits'] = cls_logits
        end_points['loc_preds'] = loc_preds
    return cls_logits, loc_preds, end_points
