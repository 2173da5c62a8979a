"""SSD300 backbones: images -> the two source feature maps the first two multibox heads read.

A backbone is registered by name in ``BACKBONES`` (``get_backbone(name)``). Each entry says:

* ``build(images, is_training, data_format, freeze_batch_norm)`` -> [stride-8 map, stride-16
  map]: the first feeds head 0 (38x38 for a 300x300 input), the second head 1 (19x19) and the
  SSD extra layers conv8..conv11 (net/ssd_net.py, shared by every backbone) that feed heads 2-5.
  It runs inside the model's variable scope and ``ssd_net.ssd_arg_scope``.
* its input convention: ``channel_order`` ('bgr' / 'rgb') and ``mean_rgb`` (subtracted on the
  0-255 scale, no further scaling), what its pretrained weights were trained with; the input
  pipeline, demo and export take them from params (utility/ssd_model.make_params fills them in).
* ``checkpoint_model_scope``: the scope of its variables in the public ImageNet checkpoint. The
  model calls them ``<model scope>/<name in the checkpoint minus that scope>``, so restoring
  is a prefix swap (utility/checkpoints/restore.build_restore_fn), as for VGG-16.
* ``added_scopes``: scopes (under the model scope) the backbone adds that no ImageNet
  checkpoint has (VGG-16: the conv4_3 L2-norm scale).

Registered backbones and what feeds the heads (300x300 input):

=========  ==========================================  =================  ================
name       layout                                      stride 8 (38x38)   stride 16 (19x19)
=========  ==========================================  =================  ================
vgg16      reduced-fc VGG-16 (fc6 3x3 dilated 6, fc7   conv4_3, L2-norm   fc7 (1024)
           1x1), no batch norm; BGR, Caffe mean        x scale (512)
resnet18   ResNet v1, basic blocks [2, 2, 2(, 2)]      block2 (128)       block3 (256)
resnet34   ResNet v1, basic blocks [3, 4, 6(, 3)]      block2 (128)       block3 (256)
resnet50   ResNet v1, bottlenecks [3, 4, 6(, 3)],      block2/unit_3      block3/unit_5
           TF-slim resnet_v1_50 layout                 (512)              (1024)
resnet101  ResNet v1, bottlenecks [3, 4, 23(, 3)],     block2/unit_3      block3/unit_22
           TF-slim resnet_v1_101 layout                (512)              (1024)
=========  ==========================================  =================  ================

mobilenet_v2 (SSDLite) is the exception to the stride-8/16 pair: its two maps are at strides 16
and 32 (19x19 and 10x10 at 300: ``expanded_conv_13/expand`` (576) and ``Conv_1`` (1280)), and
its entry names its own extra layers ('ssdlite': four 1x1 -> 3x3 depthwise/2 -> 1x1 blocks,
10 -> 5 -> 3 -> 2 -> 1), head ('ssdlite': depthwise-separable) and anchor preset ('ssdlite'),
so its six maps are 19, 10, 5, 3, 2, 1. It is TF-slim's MobilenetV2 1.0 (``mobilenet_v2_layers``:
variable names as TF-slim's under the model scope, BatchNorm epsilon 0.001, ReLU6, SAME padding),
input RGB in [-1, 1] (mean 127.5, then x 1/127.5 inside the network). Its ImageNet weights come
from a MobileNetV2 TFLite file (tools/convert_backbone_weights.py) or TF-slim's
mobilenet_v2_1.0_224.ckpt (restored by name, checkpoint scope ``MobilenetV2``).

As in the original SSD.TensorFlow code (its ``SSDBackbone``): the ResNet's stride-8 and
stride-16 stages feed the first two heads, the SSD extra layers start from the stride-16 stage,
and the stride-32 stage (block4) feeds nothing. Unlike the original, the unused stride-32 stage
is not built at all (no unused variables, no unused compute), and the stride-8 map is not
L2-normalized (batch norm keeps it in range; the original does not normalize it either).

ResNet details (v1: batch norm after every convolution, ReLU after the sum):

* root: 7x7/2 convolution ``conv1`` (explicit symmetric padding 3) + 3x3/2 max pool ``pool1``
  (SAME): 300 -> 150 -> 75.
* resnet50/101 are TF-slim's ``resnet_v1_50`` / ``resnet_v1_101`` exactly (variable names,
  shapes, padding), so TF-slim's published ImageNet checkpoints restore into them by name:
  bottleneck units ``block{b}/unit_{u}/bottleneck_v1/{shortcut,conv1,conv2,conv3}`` (1x1,
  3x3, 1x1; depth 4 x base), and, slim's convention, a block's stride sits in its LAST unit
  (on the 3x3 conv; the shortcut is then a 1x1/2 max pool). So the stride-8 map is block2
  before its strided last unit, the stride-16 map block3 before its strided last unit; that
  unit and block4 are not built.
* resnet18/34 follow the canonical (He et al. 2016, torchvision, the original code's) layout:
  basic units ``block{b}/unit_{u}/basic_v1/{shortcut,conv1,conv2}`` (3x3, 3x3), the stride in
  a block's FIRST unit (3x3 conv with explicit padding 1, 1x1/2 projection shortcut + BN).
  The stride-8 and stride-16 maps are the outputs of block2 and block3. TF-slim publishes no
  ImageNet checkpoint for them; their checkpoint scope is ``resnet_v1_18`` / ``resnet_v1_34``.
* convolutions: no biases, He (variance scaling) initialization; ``BatchNorm`` with
  gamma and beta, decay 0.997, epsilon 1e-5 (TF-slim's resnet_arg_scope). In training the
  moving averages update through the UPDATE_OPS collection (utility/ssd_model.model_fn runs them).
  ``freeze_batch_norm=True`` (params 'freeze_batch_norm') uses the moving statistics in
  training too, with gamma/beta not trained and no update ops: for fine-tuning from ImageNet
  weights with a few images per replica, where batch statistics are too noisy.

Importing this module has no side effects.
"""

import collections

import tensorflow as tf
import tf_slim as slim

from common import defaults

DATA_FORMATS = {'channels_last': 'NHWC', 'channels_first': 'NCHW'}

# The ImageNet mean of the VGG-16 and TF-slim ResNet weights (0-255 scale, R, G, B order).
IMAGENET_MEAN_RGB = (123.68, 116.78, 103.94)


def check_data_format(data_format):
    if data_format not in DATA_FORMATS:
        raise ValueError("data_format=%r is not supported; use 'channels_last' (NHWC) or "
                         "'channels_first' (NCHW)." % (data_format,))


def channel_axis(data_format):
    return 3 if data_format == 'channels_last' else 1


# ============================================================================ VGG-16 reduced-fc



# (number of 3x3 convs, filters) of the five VGG-16 blocks conv1..conv5.
_VGG_BLOCKS = (('conv1', 2, 64), ('conv2', 2, 128), ('conv3', 3, 256),
               ('conv4', 3, 512), ('conv5', 3, 512))


def _vgg_reduced_fc_shapes():
    shapes = []
    in_channels = 3
    for block, repeat, filters in _VGG_BLOCKS:
        for i in range(1, repeat + 1):
            prefix = '%s/%s/%s_%d/' % (defaults.VGG16_CHECKPOINT_SCOPE, block, block, i)
            shapes.append((prefix + 'weights', (3, 3, in_channels, filters)))
            shapes.append((prefix + 'biases', (filters,)))
            in_channels = filters
    shapes += [
        (defaults.VGG16_CHECKPOINT_SCOPE + '/fc6/weights', (3, 3, 512, 1024)),
        (defaults.VGG16_CHECKPOINT_SCOPE + '/fc6/biases', (1024,)),
        (defaults.VGG16_CHECKPOINT_SCOPE + '/fc7/weights', (1, 1, 1024, 1024)),
        (defaults.VGG16_CHECKPOINT_SCOPE + '/fc7/biases', (1024,)),
    ]
    return tuple(shapes)


# The 30 backbone variables of the reduced-fc VGG-16 checkpoint, (name, shape) in checkpoint
# naming ('vgg_16/...'), HWIO conv kernels. Used by the network test, the checkpoint converters
# and model/README.md. In the model they are named 'ssd300/...' instead of 'vgg_16/...'.
VGG_REDUCED_FC_SHAPES = _vgg_reduced_fc_shapes()


def native_dilation_supported():
    """True when a dilated convolution can run as one dilated Conv2D, forward and backward.

    cuDNN (GPU) and TensorFlow's oneDNN CPU kernels (on by default in x86 Linux builds)
    support it. TensorFlow's plain CPU kernels (TF_ENABLE_ONEDNN_OPTS=0) have no dilated
    backprop, so there the convolution runs as space-to-batch + Conv2D, as tf.nn.convolution
    builds it.
    """
    if tf.config.list_physical_devices('GPU'):
        return True
    try:
        from tensorflow.python.util import _pywrap_util_port  # reads TF_ENABLE_ONEDNN_OPTS
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return False


@slim.add_arg_scope
def dilated_conv2d(net, filters, rate, scope, data_format='channels_last',
                   outputs_collections=None):
    """3x3 SAME convolution with dilation `rate`, + biases + ReLU (SSD's fc6).

    The same layer as slim.conv2d(net, filters, [3, 3], rate=rate, scope=scope) under
    ssd_arg_scope: variables scope/weights [3, 3, in, filters] (Xavier) and scope/biases
    [filters] (zeros), model variables, output collected under the scope name. Where
    native_dilation_supported() it runs as one dilated Conv2D (on 2 CPU cores, fc6's forward
    and backward take a quarter of the space-to-batch time: 19x19 is not padded to 24x24 and
    cut into 36 tiny 4x4 images); otherwise it is slim.conv2d itself.
    """
    if not native_dilation_supported():
        kwargs = {} if outputs_collections is None else {
            'outputs_collections': outputs_collections}
        return slim.conv2d(net, filters, [3, 3], rate=rate, scope=scope, **kwargs)
    check_data_format(data_format)
    fmt = DATA_FORMATS[data_format]
    in_channels = net.get_shape().as_list()[channel_axis(data_format)]
    with tf.compat.v1.variable_scope(scope, values=[net]) as sc:
        weights = slim.model_variable(
            'weights', shape=[3, 3, in_channels, filters],
            initializer=tf.compat.v1.glorot_uniform_initializer())
        biases = slim.model_variable('biases', shape=[filters],
                                     initializer=tf.compat.v1.zeros_initializer())
        out = tf.nn.conv2d(net, weights, strides=1, padding='SAME', dilations=rate,
                           data_format=fmt)
        out = tf.nn.relu(tf.nn.bias_add(out, biases, data_format=fmt))
        return slim.utils.collect_named_outputs(outputs_collections, sc.name, out)


def _l2_normalize_scaled(net, data_format, init_scale=20.):
    """L2-normalizes over channels and multiplies by a learnable per-channel scale.

    The scale is the model variable 'conv4_3_scale/weights' [channels], initialised to 20.
    """
    channels = net.get_shape().as_list()[channel_axis(data_format)]
    with tf.compat.v1.variable_scope('conv4_3_scale'):
        scale = slim.model_variable(
            'weights', shape=[channels],
            initializer=tf.compat.v1.constant_initializer(init_scale))
        shape = [1, 1, 1, channels] if data_format == 'channels_last' else [1, channels, 1, 1]
        # x / sqrt(max(sum x^2, 1e-10)), the original's epsilon.
        normed = tf.math.l2_normalize(net, axis=channel_axis(data_format), epsilon=1e-10)
        return tf.multiply(normed, tf.reshape(scale, shape), name='conv4_3_norm')


def vgg16_reduced_fc(inputs, data_format='channels_last'):
    """VGG-16 with fc6/fc7 as (dilated) convolutions, as used by SSD.

    Args:
      inputs: float32 [B, H, W, 3] ('channels_last') or [B, 3, H, W] ('channels_first').
      data_format: layout of `inputs` and of every op.
    Returns:
      (conv4_3, fc7): the ReLU outputs of conv4_3 (38x38x512 for 300x300) and
      fc7 (19x19x1024), in `data_format`.
    Variables: conv1/conv1_1 ... conv5/conv5_3, fc6, fc7 under the current variable scope.
    """
    net = inputs
    conv4_3 = None
    for index, (block, repeat, filters) in enumerate(_VGG_BLOCKS):
        net = slim.repeat(net, repeat, slim.conv2d, filters, [3, 3], scope=block)
        if block == 'conv4':
            conv4_3 = net
        if index < 4:  # pool1..pool4: 300 -> 150 -> 75 -> 38 -> 19
            net = slim.max_pool2d(net, [2, 2], stride=2, scope='pool%d' % (index + 1))
    net = slim.max_pool2d(net, [3, 3], stride=1, scope='pool5')
    net = dilated_conv2d(net, 1024, rate=6, scope='fc6', data_format=data_format)
    net = slim.conv2d(net, 1024, [1, 1], scope='fc7')
    return conv4_3, net


def vgg16_source_maps(images, is_training=False, data_format='channels_last',
                      freeze_batch_norm=False, batch_norm_decay=None):
    """[conv4_3 L2-normalized x conv4_3_scale (stride 8, 512), fc7 (stride 16, 1024)]."""
    del is_training, freeze_batch_norm, batch_norm_decay  # no dropout, no batch norm
    conv4_3, fc7 = vgg16_reduced_fc(images, data_format)
    return [_l2_normalize_scaled(conv4_3, data_format), fc7]


# ============================================================================ ResNet v1

BATCH_NORM_EPSILON = 1e-5


def _pad_spatial(net, before, after, data_format):
    if data_format == 'channels_last':
        paddings = [[0, 0], [before, after], [before, after], [0, 0]]
    else:
        paddings = [[0, 0], [0, 0], [before, after], [before, after]]
    return tf.pad(net, paddings)


def conv2d_same(net, filters, kernel, stride, scope, data_format):
    """k x k convolution whose output is ceil(in / stride) with padding independent of the
    input size: stride 1 is SAME; stride > 1 pads (k - 1) // 2 before and the rest after,
    then VALID (TF-slim's resnet_utils.conv2d_same; its checkpoints were trained so)."""
    if stride == 1:
        return slim.conv2d(net, filters, [kernel, kernel], stride=1, padding='SAME',
                           scope=scope)
    total = kernel - 1
    net = _pad_spatial(net, total // 2, total - total // 2, data_format)
    return slim.conv2d(net, filters, [kernel, kernel], stride=stride, padding='VALID',
                       scope=scope)


def bottleneck_unit(net, depth, depth_bottleneck, stride, data_format):
    """TF-slim's bottleneck_v1: 1x1 -> 3x3 (stride) -> 1x1 (no ReLU) + shortcut, ReLU."""
    with tf.compat.v1.variable_scope('bottleneck_v1', values=[net]):
        depth_in = net.get_shape().as_list()[channel_axis(data_format)]
        if depth == depth_in:
            shortcut = net if stride == 1 else slim.max_pool2d(net, [1, 1], stride=stride,
                                                                 scope='shortcut')
        else:
            shortcut = slim.conv2d(net, depth, [1, 1], stride=stride, activation_fn=None,
                                   scope='shortcut')
        residual = slim.conv2d(net, depth_bottleneck, [1, 1], stride=1, scope='conv1')
        residual = conv2d_same(residual, depth_bottleneck, 3, stride, 'conv2', data_format)
        residual = slim.conv2d(residual, depth, [1, 1], stride=1, activation_fn=None,
                               scope='conv3')
        return tf.nn.relu(shortcut + residual)


def basic_unit(net, depth, stride, data_format):
    """Basic residual unit v1: 3x3 (stride) -> 3x3 (no ReLU) + shortcut, ReLU; the shortcut
    is a 1x1 projection + BN when the stride or the depth changes."""
    with tf.compat.v1.variable_scope('basic_v1', values=[net]):
        depth_in = net.get_shape().as_list()[channel_axis(data_format)]
        if depth == depth_in and stride == 1:
            shortcut = net
        else:
            shortcut = slim.conv2d(net, depth, [1, 1], stride=stride, activation_fn=None,
                                   scope='shortcut')
        residual = conv2d_same(net, depth, 3, stride, 'conv1', data_format)
        residual = slim.conv2d(residual, depth, [3, 3], stride=1, activation_fn=None,
                               scope='conv2')
        return tf.nn.relu(shortcut + residual)


def _slim_bottleneck_block(base_depth, num_units, stride):
    """Units (depth, depth_bottleneck, stride) of a TF-slim resnet_v1_block."""
    return [(base_depth * 4, base_depth, 1)] * (num_units - 1) + [
        (base_depth * 4, base_depth, stride)]


def _basic_block(depth, num_units, stride):
    return [(depth, None, stride)] + [(depth, None, 1)] * (num_units - 1)


def resnet_layout(depth):
    """The blocks built for a ResNet of `depth` (18, 34, 50, 101) and where the maps come from.

    Returns:
      (blocks, sources): blocks = [(block name, [(depth, depth_bottleneck or None for basic
      units, stride), ...]), ...] in build order; sources = (scope of the stride-8 map, scope
      of the stride-16 map), relative to the model scope (unit scopes end in
      '/bottleneck_v1' or '/basic_v1'; block scopes name the block's output).
    """
    if depth in (50, 101):
        block3_units = {50: 6, 101: 23}[depth]
        blocks = [('block1', _slim_bottleneck_block(64, 3, 2)),
                  ('block2', _slim_bottleneck_block(128, 4, 2)),
                  # slim's block3 minus its strided last unit (stride 32 feeds nothing).
                  ('block3', _slim_bottleneck_block(256, block3_units, 2)[:-1])]
        sources = ('block2/unit_3/bottleneck_v1',
                   'block3/unit_%d/bottleneck_v1' % (block3_units - 1))
        return blocks, sources
    if depth in (18, 34):
        units = {18: (2, 2, 2), 34: (3, 4, 6)}[depth]
        blocks = [('block1', _basic_block(64, units[0], 1)),
                  ('block2', _basic_block(128, units[1], 2)),
                  ('block3', _basic_block(256, units[2], 2))]
        return blocks, ('block2', 'block3')
    raise ValueError('No ResNet-%s layout; use 18, 34, 50 or 101.' % (depth,))


@slim.add_arg_scope
def batch_norm(inputs, decay=defaults.BATCH_NORM_DECAY, epsilon=BATCH_NORM_EPSILON,
               is_training=False, trainable=True, data_format='channels_last', scope=None):
    """Batch norm with TF-slim's variable names, on tf.nn.fused_batch_norm.

    Variables (model variables, under scope 'BatchNorm'): gamma, beta (trainable unless
    `trainable` is False), moving_mean, moving_variance (never trainable; aggregation MEAN,
    so under MirroredStrategy the replicas' updates are averaged). In training (is_training)
    the batch statistics normalize and the moving averages
    v <- v - (1 - decay) (v - batch value) are added to UPDATE_OPS; otherwise the moving
    statistics normalize. (slim.batch_norm itself fails on TF 2.15+: its fused path uses
    ops.Tensor, its other path tf_keras.)
    """
    fmt = DATA_FORMATS[data_format]
    channels = inputs.get_shape().as_list()[channel_axis(data_format)]
    collections_ = [tf.compat.v1.GraphKeys.GLOBAL_VARIABLES,
                    tf.compat.v1.GraphKeys.MODEL_VARIABLES]
    with tf.compat.v1.variable_scope(scope, 'BatchNorm', [inputs]):
        def variable(name, initializer, train):
            return tf.compat.v1.get_variable(
                name, shape=[channels], dtype=tf.float32, initializer=initializer,
                trainable=train, collections=collections_ + (
                    [tf.compat.v1.GraphKeys.TRAINABLE_VARIABLES] if train else []),
                aggregation=tf.VariableAggregation.MEAN)
        beta = variable('beta', tf.compat.v1.zeros_initializer(), trainable)
        gamma = variable('gamma', tf.compat.v1.ones_initializer(), trainable)
        moving_mean = variable('moving_mean', tf.compat.v1.zeros_initializer(), False)
        moving_variance = variable('moving_variance', tf.compat.v1.ones_initializer(), False)
        if not is_training:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, mean=moving_mean, variance=moving_variance,
                epsilon=epsilon, data_format=fmt, is_training=False)
            return outputs
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, gamma, beta, epsilon=epsilon, data_format=fmt, is_training=True)
        for moving, value in ((moving_mean, mean), (moving_variance, variance)):
            update = tf.compat.v1.assign_sub(
                moving, (moving - tf.stop_gradient(value)) * (1.0 - decay))
            tf.compat.v1.add_to_collection(tf.compat.v1.GraphKeys.UPDATE_OPS, update)
        return outputs


def resnet_arg_scope(is_training, freeze_batch_norm=False, data_format='channels_last',
                     batch_norm_decay=None):
    """slim.conv2d with batch norm and He initialization, as TF-slim's resnet_arg_scope
    (weight decay is applied by the SSD loss, not here). batch_norm_decay: the moving
    averages' decay (None: defaults.BATCH_NORM_DECAY)."""
    batch_norm_params = {'is_training': bool(is_training) and not freeze_batch_norm,
                         'trainable': not freeze_batch_norm, 'data_format': data_format,
                         'decay': defaults.BATCH_NORM_DECAY if batch_norm_decay is None
                         else float(batch_norm_decay)}
    with slim.arg_scope([slim.conv2d],
                        weights_initializer=slim.variance_scaling_initializer(),
                        activation_fn=tf.nn.relu,
                        normalizer_fn=batch_norm,
                        normalizer_params=batch_norm_params):
        with slim.arg_scope([slim.max_pool2d], padding='SAME') as sc:
            return sc


def resnet_v1_source_maps(images, depth, is_training=False, data_format='channels_last',
                          freeze_batch_norm=False, batch_norm_decay=None):
    """ResNet-`depth` v1 up to its stride-16 stage (see the module docstring).

    Args:
      images: float32 [B, H, W, 3] or [B, 3, H, W] in `data_format`.
      is_training: batch norm uses batch statistics and adds its moving-average updates to
        UPDATE_OPS (unless freeze_batch_norm).
      freeze_batch_norm: moving statistics in training too; gamma/beta not trainable.
      batch_norm_decay: decay of the moving averages (None: defaults.BATCH_NORM_DECAY, TF-slim's).
    Returns:
      [stride-8 map, stride-16 map] in `data_format`: for 300x300, 38x38 and 19x19 with
      128/256 (resnet18/34) or 512/1024 (resnet50/101) channels.
    Variables: conv1 and block*/unit_*/{bottleneck_v1,basic_v1}/..., each convolution's
      'weights' and 'BatchNorm/{gamma,beta,moving_mean,moving_variance}', under the current
      variable scope (TF-slim's names without the 'resnet_v1_<depth>' scope).
    """
    check_data_format(data_format)
    blocks, sources = resnet_layout(depth)
    outputs = {}
    with slim.arg_scope(resnet_arg_scope(is_training, freeze_batch_norm, data_format,
                                         batch_norm_decay)):
        net = conv2d_same(images, 64, 7, 2, 'conv1', data_format)
        net = slim.max_pool2d(net, [3, 3], stride=2, scope='pool1')
        for block, units in blocks:
            with tf.compat.v1.variable_scope(block, values=[net]):
                for index, (unit_depth, unit_bottleneck, stride) in enumerate(units):
                    with tf.compat.v1.variable_scope('unit_%d' % (index + 1), values=[net]):
                        if unit_bottleneck is None:
                            net = basic_unit(net, unit_depth, stride, data_format)
                            name = '%s/unit_%d/basic_v1' % (block, index + 1)
                        else:
                            net = bottleneck_unit(net, unit_depth, unit_bottleneck, stride,
                                                  data_format)
                            name = '%s/unit_%d/bottleneck_v1' % (block, index + 1)
                    outputs[name] = net
            outputs[block] = net
    return [outputs[sources[0]], outputs[sources[1]]]


def _resnet_builder(depth):
    def build(images, is_training=False, data_format='channels_last', freeze_batch_norm=False,
              batch_norm_decay=None):
        return resnet_v1_source_maps(images, depth, is_training, data_format, freeze_batch_norm,
                                     batch_norm_decay)
    build.__name__ = 'resnet%d_source_maps' % depth
    build.__doc__ = 'ResNet-%d v1 source maps; see resnet_v1_source_maps.' % depth
    return build


# ============================================================================ MobileNetV2

# TF-slim MobileNetV2's batch norm (its training_scope): decay 0.997 (the --batch_norm_decay
# default), epsilon 0.001, gamma and beta.
MOBILENET_BATCH_NORM_EPSILON = 1e-3
# MobileNetV2's input convention: RGB scaled to [-1, 1]. The pipeline subtracts the mean (127.5
# on the 0-255 scale); the backbone's first op multiplies by 1 / 127.5.
MOBILENET_MEAN_RGB = (127.5, 127.5, 127.5)
MOBILENET_INPUT_SCALE = 1.0 / 127.5
# Checkpoint scope of TF-slim's MobilenetV2 (mobilenet_v2_1.0_224.ckpt, its TFLite files).
MOBILENET_V2_SCOPE = 'MobilenetV2'
MOBILENET_V2_EXPANSION = 6


def _mobilenet_v2_blocks():
    """TF-slim MobilenetV2 1.0's inverted-residual blocks as (scope, expansion, output
    channels, stride): 'expanded_conv' (expansion 1, no expand layer), then expanded_conv_1
    .. expanded_conv_16 with expansion 6; the stride sits on the depthwise convolution."""
    layout = ((1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 32, 1),
              (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1), (6, 96, 1), (6, 96, 1),
              (6, 96, 1), (6, 160, 2), (6, 160, 1), (6, 160, 1), (6, 320, 1))
    return tuple(('expanded_conv' + ('_%d' % i if i else ''), t, c, s)
                 for i, (t, c, s) in enumerate(layout))


MOBILENET_V2_BLOCKS = _mobilenet_v2_blocks()
# Stem and last layer (TF-slim names): 3x3/2 'Conv' with 32 filters, 1x1 'Conv_1' with 1280.
MOBILENET_V2_STEM_DEPTH = 32
MOBILENET_V2_LAST_DEPTH = 1280


def mobilenet_v2_layers():
    """Every convolution of MobileNetV2 1.0 (no classifier) in graph order, as (scope, kind,
    weight shape in TF-slim layout): kind 'conv' ([kh, kw, in, out]) or 'depthwise' ([kh, kw,
    in, 1], variable 'depthwise_weights'). Scopes relative to 'MobilenetV2'. Each layer has
    BatchNorm; the one list the network, its checkpoint names and the converters follow."""
    layers = [('Conv', 'conv', (3, 3, 3, MOBILENET_V2_STEM_DEPTH))]
    channels = MOBILENET_V2_STEM_DEPTH
    for scope, expansion, depth, _ in MOBILENET_V2_BLOCKS:
        inner = channels * expansion
        if expansion != 1:
            layers.append((scope + '/expand', 'conv', (1, 1, channels, inner)))
        layers.append((scope + '/depthwise', 'depthwise', (3, 3, inner, 1)))
        layers.append((scope + '/project', 'conv', (1, 1, inner, depth)))
        channels = depth
    layers.append(('Conv_1', 'conv', (1, 1, channels, MOBILENET_V2_LAST_DEPTH)))
    return tuple(layers)


def mobilenet_v2_variable_shapes(scope=MOBILENET_V2_SCOPE):
    """{checkpoint name: shape} of the backbone's variables, TF-slim names under `scope`:
    '<layer>/weights' or '<layer>/depthwise_weights' and '<layer>/BatchNorm/{gamma, beta,
    moving_mean, moving_variance}' for every layer of mobilenet_v2_layers()."""
    shapes = {}
    for layer, kind, shape in mobilenet_v2_layers():
        prefix = '%s/%s/' % (scope, layer)
        shapes[prefix + ('weights' if kind == 'conv' else 'depthwise_weights')] = tuple(shape)
        channels = shape[3] if kind == 'conv' else shape[2]
        for name in ('gamma', 'beta', 'moving_mean', 'moving_variance'):
            shapes[prefix + 'BatchNorm/' + name] = (channels,)
    return shapes


def mobilenet_arg_scope(is_training, freeze_batch_norm=False, data_format='channels_last',
                        batch_norm_decay=None):
    """slim.conv2d / depthwise_conv2d with batch norm (TF-slim MobilenetV2's epsilon
    0.001) and ReLU6, no biases, as TF-slim's mobilenet training_scope (weight decay is the
    SSD loss's). Used by MobileNetV2 and by SSDLite's extra layers and heads."""
    batch_norm_params = {'is_training': bool(is_training) and not freeze_batch_norm,
                         'trainable': not freeze_batch_norm, 'data_format': data_format,
                         'epsilon': MOBILENET_BATCH_NORM_EPSILON,
                         'decay': defaults.BATCH_NORM_DECAY if batch_norm_decay is None
                         else float(batch_norm_decay)}
    with slim.arg_scope([slim.conv2d, depthwise_conv2d],
                        weights_initializer=tf.compat.v1.truncated_normal_initializer(
                            stddev=0.09),
                        activation_fn=tf.nn.relu6,
                        normalizer_fn=batch_norm,
                        normalizer_params=batch_norm_params,
                        padding='SAME',
                        data_format=DATA_FORMATS[data_format]) as sc:
        return sc


@slim.add_arg_scope
def depthwise_conv2d(net, stride, scope, padding='SAME', activation_fn=tf.nn.relu6,
                     normalizer_fn=None, normalizer_params=None, weights_initializer=None,
                     data_format='NHWC', outputs_collections=None):
    """3x3 depthwise convolution (multiplier 1) -> normalizer_fn -> activation_fn, the layer
    slim.separable_conv2d(net, None, [3, 3], depth_multiplier=1) builds (variable
    '<scope>/depthwise_weights' [3, 3, channels, 1], a model variable; biases only without a
    normalizer), on tf.nn.depthwise_conv2d (slim's goes through tf.compat.v1.layers, which
    TF 2.21 no longer has)."""
    channel = 3 if data_format == 'NHWC' else 1
    channels = net.get_shape().as_list()[channel]
    strides = [1, stride, stride, 1] if data_format == 'NHWC' else [1, 1, stride, stride]
    with tf.compat.v1.variable_scope(scope, values=[net]) as sc:
        weights = slim.model_variable(
            'depthwise_weights', shape=[3, 3, channels, 1],
            initializer=weights_initializer or tf.compat.v1.glorot_uniform_initializer())
        out = tf.nn.depthwise_conv2d(net, weights, strides, padding, data_format=data_format)
        if normalizer_fn is not None:
            out = normalizer_fn(out, **dict(normalizer_params or {}))
        else:
            biases = slim.model_variable('biases', shape=[channels],
                                         initializer=tf.compat.v1.zeros_initializer())
            out = tf.nn.bias_add(out, biases, data_format=data_format)
        if activation_fn is not None:
            out = activation_fn(out)
        return slim.utils.collect_named_outputs(outputs_collections, sc.name, out)


def _inverted_residual(net, scope, expansion, depth, stride, data_format, end_points):
    """TF-slim's expanded_conv: 1x1 expand (ReLU6; absent for expansion 1) -> 3x3 depthwise
    (stride, ReLU6) -> 1x1 project (linear), + the input when the stride is 1 and the depth
    unchanged."""
    channels = net.get_shape().as_list()[channel_axis(data_format)]
    with tf.compat.v1.variable_scope(scope, values=[net]):
        out = net
        if expansion != 1:
            out = slim.conv2d(out, channels * expansion, [1, 1], scope='expand')
            end_points[scope + '/expand'] = out
        out = depthwise_conv2d(out, stride, 'depthwise')
        out = slim.conv2d(out, depth, [1, 1], activation_fn=None, scope='project')
        if stride == 1 and depth == channels:
            out = tf.add(out, net, name='add')
    return out


def mobilenet_v2_base(images, is_training=False, data_format='channels_last',
                      freeze_batch_norm=False, batch_norm_decay=None,
                      input_scale=MOBILENET_INPUT_SCALE):
    """MobileNetV2 1.0 up to Conv_1 (see mobilenet_v2_layers), SAME padding everywhere.

    Args:
      images: float32 [B, H, W, 3] (or NCHW), RGB minus 127.5 (0-255 scale); scaled here by
        1 / 127.5 to MobileNetV2's [-1, 1] (`input_scale`; None: images are already in
        [-1, 1], as the TFLite classifier files take them).
    Returns:
      (net, end_points): Conv_1's output (stride 32: 10x10x1280 for 300x300, 7x7 for 224)
      and {layer scope: output} ('expanded_conv_13/expand': stride 16, 19x19x576 at 300).
    """
    check_data_format(data_format)
    end_points = {}
    with slim.arg_scope(mobilenet_arg_scope(is_training, freeze_batch_norm, data_format,
                                            batch_norm_decay)):
        net = images if input_scale is None else tf.multiply(images, input_scale,
                                                             name='input_scale')
        net = slim.conv2d(net, MOBILENET_V2_STEM_DEPTH, [3, 3], stride=2, scope='Conv')
        for scope, expansion, depth, stride in MOBILENET_V2_BLOCKS:
            net = _inverted_residual(net, scope, expansion, depth, stride, data_format,
                                     end_points)
            end_points[scope] = net
        net = slim.conv2d(net, MOBILENET_V2_LAST_DEPTH, [1, 1], scope='Conv_1')
        end_points['Conv_1'] = net
    return net, end_points


def mobilenet_v2_source_maps(images, is_training=False, data_format='channels_last',
                             freeze_batch_norm=False, batch_norm_decay=None):
    """[expanded_conv_13/expand (stride 16, 576), Conv_1 (stride 32, 1280)]: SSDLite's two
    MobileNetV2 maps (19x19 and 10x10 for 300x300)."""
    net, end_points = mobilenet_v2_base(images, is_training, data_format, freeze_batch_norm,
                                        batch_norm_decay)
    return [end_points['expanded_conv_13/expand'], net]


def mobilenet_v2_classifier(images, num_classes=1001, data_format='channels_last',
                            input_scale=MOBILENET_INPUT_SCALE):
    """MobileNetV2 1.0 with TF-slim's ImageNet classifier, inference mode: mobilenet_v2_base,
    global average pool, 1x1 conv 'Logits/Conv2d_1c_1x1' (weights + biases) -> logits [B,
    num_classes] (class 0 = background in the 1001-class files). For checking converted
    weights against their source (tools/check_mobilenet_conversion.py, the tests)."""
    net, _ = mobilenet_v2_base(images, False, data_format, input_scale=input_scale)
    axes = [1, 2] if data_format == 'channels_last' else [2, 3]
    net = tf.reduce_mean(net, axes, keepdims=True, name='Logits/AvgPool')
    net = slim.conv2d(net, num_classes, [1, 1], activation_fn=None, normalizer_fn=None,
                      biases_initializer=tf.compat.v1.zeros_initializer(),
                      data_format=DATA_FORMATS[data_format], scope='Logits/Conv2d_1c_1x1')
    return tf.reshape(net, [-1, num_classes])


# ============================================================================ registry

Backbone = collections.namedtuple('Backbone', [
    'name',                    # registry key, the --backbone value
    'build',                   # (images, is_training, data_format, freeze_batch_norm,
                               #  batch_norm_decay) -> 2 maps
    'source_layers',           # end_points names of the two maps
    'source_strides',          # (8, 16)
    'source_depths',           # channels of the two maps
    'channel_order',           # 'bgr' or 'rgb': what the pretrained weights expect
    'mean_rgb',                # subtracted per channel (0-255 scale, R, G, B order)
    'checkpoint_model_scope',  # variable scope in the public ImageNet checkpoint
    'added_scopes',            # backbone scopes no ImageNet checkpoint has
    'batch_norm',              # True when the backbone has batch norm
    # Added later, with defaults (the SSD300 backbones'):
    'extra_layers',            # 'ssd' (conv8..conv11) or 'ssdlite' (net/ssd_net.py)
    'head',                    # default --head: 'conv' (SSD's 3x3) or 'ssdlite'
    'anchor_preset',           # default --anchor_preset (None: the data's / 'voc')
], defaults=('ssd', 'conv', None))


def _resnet_entry(depth):
    _, sources = resnet_layout(depth)
    wide = depth >= 50
    return Backbone(
        name='resnet%d' % depth, build=_resnet_builder(depth),
        source_layers=tuple(s.replace('/bottleneck_v1', '') for s in sources),
        source_strides=(8, 16), source_depths=(512, 1024) if wide else (128, 256),
        channel_order='rgb', mean_rgb=IMAGENET_MEAN_RGB,
        checkpoint_model_scope='resnet_v1_%d' % depth, added_scopes=(), batch_norm=True)


BACKBONES = collections.OrderedDict([
    ('vgg16', Backbone(
        name='vgg16', build=vgg16_source_maps, source_layers=('conv4_3_norm', 'fc7'),
        source_strides=(8, 16), source_depths=(512, 1024),
        # The reduced-fc VGG-16 weights come from Caffe: BGR input, ImageNet mean.
        channel_order='bgr', mean_rgb=IMAGENET_MEAN_RGB,
        checkpoint_model_scope=defaults.VGG16_CHECKPOINT_SCOPE, added_scopes=('conv4_3_scale',),
        batch_norm=False)),
    # TF-slim's ResNets were trained on RGB with the same mean (its vgg_preprocessing).
    ('resnet18', _resnet_entry(18)),
    ('resnet34', _resnet_entry(34)),
    ('resnet50', _resnet_entry(50)),
    ('resnet101', _resnet_entry(101)),
    # SSDLite (Sandler et al. 2018): MobileNetV2's stride-16 expanded layer and last layer,
    # then four SSDLite extra layers; depthwise-separable heads.
    ('mobilenet_v2', Backbone(
        name='mobilenet_v2', build=mobilenet_v2_source_maps,
        source_layers=('expanded_conv_13/expand', 'Conv_1'), source_strides=(16, 32),
        source_depths=(576, MOBILENET_V2_LAST_DEPTH), channel_order='rgb',
        mean_rgb=MOBILENET_MEAN_RGB, checkpoint_model_scope=MOBILENET_V2_SCOPE,
        added_scopes=(), batch_norm=True, extra_layers='ssdlite', head='ssdlite',
        anchor_preset='ssdlite')),
])



def get_backbone(name):
    """The registered Backbone called `name`; ValueError naming the choices otherwise."""
    if name not in BACKBONES:
        raise ValueError('Unknown backbone %r; use one of %s (--backbone).'
                         % (name, ', '.join(BACKBONES)))
    return BACKBONES[name]


def source_map_sizes(name, image_size):
    """Side in cells of the backbone's two maps for a square `image_size` input, computed
    without building the graph: every backbone here halves with ceil (SAME / symmetric
    padding) once per factor 2 of stride. 300 -> [38, 19]."""
    sizes = []
    for stride in get_backbone(name).source_strides:
        size = int(image_size)
        while stride > 1:
            size, stride = (size + 1) // 2, stride // 2
        sizes.append(size)
    return sizes


def layer_scopes(name):
    """The layer scopes (relative to the model scope) whose variables backbone `name` has,
    computed without building the graph: VGG-16 'conv1/conv1_1' ... 'fc7', a ResNet 'conv1'
    and 'block{b}/unit_{u}/{basic_v1,bottleneck_v1}'. None for a backbone registered without
    a known layout (it is then never recognised from a checkpoint)."""
    get_backbone(name)
    if name == 'vgg16':
        return tuple(weights.rsplit('/', 1)[0].split('/', 1)[1]
                     for weights, _ in VGG_REDUCED_FC_SHAPES if weights.endswith('/weights'))
    if name.startswith('resnet') and name[len('resnet'):].isdigit():
        blocks, _ = resnet_layout(int(name[len('resnet'):]))
        return ('conv1',) + tuple(
            '%s/unit_%d/%s' % (block, k + 1, 'basic_v1' if bottleneck is None else 'bottleneck_v1')
            for block, units in blocks for k, (_, bottleneck, _) in enumerate(units))
    if name == 'mobilenet_v2':
        return tuple(layer for layer, _, _ in mobilenet_v2_layers())
    return None


def identify_backbone(names, ignore_scopes=()):
    """The registered backbone whose layers are exactly those of the variable `names`.

    Args:
      names: variable names relative to the model scope ('block1/unit_1/basic_v1/conv1/
        weights', 'fc7/biases', ...), e.g. a checkpoint's.
      ignore_scopes: scopes whose variables are not the backbone's (SSD's extra layers and
        heads, VGG-16's conv4_3 scale).
    Returns:
      The registry name, or None when no registered layout, or more than one, fits.
    """
    names = [n for n in names if not any(n == s or n.startswith(s + '/') for s in ignore_scopes)]
    found = []
    for name in BACKBONES:
        scopes = layer_scopes(name)
        if not scopes or not names:
            continue
        under = lambda n: any(n.startswith(s + '/') for s in scopes)  # noqa: E731
        if all(under(n) for n in names) and all(
                any(n.startswith(s + '/') for n in names) for s in scopes):
            found.append(name)
    return found[0] if len(found) == 1 else None
