"""What SSD300 costs per image, counted from the built network.

FLOPs: forward multiply-accumulates of every convolution of the network, counted from the
built graph's layer shapes (output H x W x kernel h x kernel w x in x out channels, batch
1, 300x300 input; the dilated fc6 counted at its nominal 19x19 output), x 2 FLOPs per MAC,
x 3 for forward + backward (input and weight gradients): 31.37 GMAC -> 188.2 GFLOP per
training image, 62.7 GFLOP per inference image (VGG-16).  Pooling, L2-norm, loss and the
optimizer are not counted (under 1%).
"""
import collections

import tensorflow as tf


# Training costs forward + backward (input and weight gradients): 3 x the forward FLOPs.
TRAIN_FLOP_FACTOR = 3


def ssd300_conv_macs(params):
    """Forward multiply-accumulates per image of every convolution of SSD300 (with the
    backbone params['backbone']; batch-norm, pooling and additions are not counted).

    Builds the network (batch 1, params' image size) in a throwaway graph and counts, for
    each tf_slim convolution, output height x width x kernel height x width x in x out
    channels, from the layer's output shape and its `weights` variable.  The dilated fc6 is
    counted at its nominal 19x19 output (TF runs it as space-to-batch + a convolution on a
    padded 24x24 grid, a little more work than counted).
    Returns: OrderedDict layer scope -> MACs (python ints), in network order.
    """
    from net import ssd_net
    from net import anchors as anchor_lib
    size = int(params['train_image_size'])
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, size, size, 3])
        _, _, end_points = ssd_net.ssd300(
            images, params['num_classes'],
            anchor_lib.anchors_per_location(params['anchor_spec']),
            scope=params['model_scope'], backbone=params.get('backbone', 'vgg16'))
        kernels = {v.op.name: v.shape.as_list() for v in tf.compat.v1.global_variables()}
        macs = collections.OrderedDict()
        for name, output in end_points.items():
            kernel = kernels.get('%s/weights' % name)
            if kernel is None or len(kernel) != 4:
                continue  # pooling layers, the 1-D L2-norm scale, aliases
            _, height, width, _ = output.shape.as_list()
            kh, kw, cin, cout = kernel
            macs[name] = height * width * kh * kw * cin * cout
    return macs


def backbone_train_gflop(backbone):
    """(forward GMAC, training GFLOP) per 300x300 image of SSD300 with `backbone`."""
    from utility import ssd_model
    forward_gmac = sum(ssd300_conv_macs(ssd_model.make_params(backbone=backbone)).values()) / 1e9
    return forward_gmac, forward_gmac * 2 * TRAIN_FLOP_FACTOR
