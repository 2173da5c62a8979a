"""SSD300 network: variable names/shapes (checkpoint contract), output shapes, anchor order."""

import math

import numpy as np
import pytest
import tensorflow as tf

from net import backbones
from net import ssd_net

NUM_CLASSES = 21
ANCHORS_PER_LOCATION = [4, 6, 6, 6, 4, 4]
SEED_EXCLUDE_SCOPES = ('ssd300/multibox_head', 'ssd300/additional_layers',
                       'ssd300/conv4_3_scale')

# The public reduced-fc VGG-16 checkpoint, written out by hand.
EXPECTED_BACKBONE = {
    'conv1/conv1_1': (3, 3, 3, 64), 'conv1/conv1_2': (3, 3, 64, 64),
    'conv2/conv2_1': (3, 3, 64, 128), 'conv2/conv2_2': (3, 3, 128, 128),
    'conv3/conv3_1': (3, 3, 128, 256), 'conv3/conv3_2': (3, 3, 256, 256),
    'conv3/conv3_3': (3, 3, 256, 256),
    'conv4/conv4_1': (3, 3, 256, 512), 'conv4/conv4_2': (3, 3, 512, 512),
    'conv4/conv4_3': (3, 3, 512, 512),
    'conv5/conv5_1': (3, 3, 512, 512), 'conv5/conv5_2': (3, 3, 512, 512),
    'conv5/conv5_3': (3, 3, 512, 512),
    'fc6': (3, 3, 512, 1024), 'fc7': (1, 1, 1024, 1024),
}

# SSD's new layers: conv4_3 scale, extra layers, heads (k*4 loc, k*21 cls filters).
EXPECTED_NEW = {'ssd300/conv4_3_scale/weights': (512,)}
for _block, _in, _mid, _out in (('conv8', 1024, 256, 512), ('conv9', 512, 128, 256),
                                ('conv10', 256, 128, 256), ('conv11', 256, 128, 256)):
    _p = 'ssd300/additional_layers/%s/%s' % (_block, _block)
    EXPECTED_NEW[_p + '_1/weights'] = (1, 1, _in, _mid)
    EXPECTED_NEW[_p + '_1/biases'] = (_mid,)
    EXPECTED_NEW[_p + '_2/weights'] = (3, 3, _mid, _out)
    EXPECTED_NEW[_p + '_2/biases'] = (_out,)
for _i, (_c, _k) in enumerate(zip((512, 1024, 512, 256, 256, 256), ANCHORS_PER_LOCATION)):
    EXPECTED_NEW['ssd300/multibox_head/loc_%d/weights' % _i] = (3, 3, _c, _k * 4)
    EXPECTED_NEW['ssd300/multibox_head/loc_%d/biases' % _i] = (_k * 4,)
    EXPECTED_NEW['ssd300/multibox_head/cls_%d/weights' % _i] = (3, 3, _c, _k * 21)
    EXPECTED_NEW['ssd300/multibox_head/cls_%d/biases' % _i] = (_k * 21,)


def _variable_shapes():
    return {v.op.name: tuple(v.shape.as_list()) for v in tf.compat.v1.global_variables()}


def test_vgg_reduced_fc_shapes_constant_is_the_public_checkpoint():
    expected = {}
    for layer, shape in EXPECTED_BACKBONE.items():
        expected['vgg_16/%s/weights' % layer] = shape
        expected['vgg_16/%s/biases' % layer] = (shape[-1],)
    assert dict(backbones.VGG_REDUCED_FC_SHAPES) == expected
    assert len(backbones.VGG_REDUCED_FC_SHAPES) == 30
    total = sum(int(np.prod(s)) for _, s in backbones.VGG_REDUCED_FC_SHAPES)
    assert total == 20_483_904  # 14,714,688 (conv1-5) + 4,719,616 (fc6) + 1,049,600 (fc7)


@pytest.mark.parametrize('data_format', ['channels_last', 'channels_first'])
def test_variable_names_and_static_shapes(data_format):
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [2, 300, 300, 3])
        cls_logits, loc_preds, end_points = ssd_net.ssd300(
            images, NUM_CLASSES, ANCHORS_PER_LOCATION, is_training=True,
            data_format=data_format)
        shapes = _variable_shapes()
        model_variables = {v.op.name for v in tf.compat.v1.model_variables()}

    backbone = {name.replace('vgg_16/', 'ssd300/', 1): shape
                for name, shape in backbones.VGG_REDUCED_FC_SHAPES}
    new = {n: s for n, s in shapes.items() if not n.startswith(tuple(backbone))}
    assert {n: s for n, s in shapes.items() if n in backbone} == backbone
    assert new == EXPECTED_NEW
    assert len(shapes) == 30 + 41
    assert model_variables == set(shapes)  # the restore looks for model variables
    # The original's default exclude scopes cover exactly the new layers.
    assert all(n.startswith(SEED_EXCLUDE_SCOPES) for n in new)
    assert not any(n.startswith(SEED_EXCLUDE_SCOPES) for n in backbone)

    assert cls_logits.shape.as_list() == [2, 8732, NUM_CLASSES]
    assert loc_preds.shape.as_list() == [2, 8732, 4]
    sizes = [38, 19, 10, 5, 3, 1]
    depths = [512, 1024, 512, 256, 256, 256]
    for name, size, depth in zip(ssd_net.source_layers(), sizes, depths):
        expected = [2, size, size, depth] if data_format == 'channels_last' else \
            [2, depth, size, size]
        assert end_points[name].shape.as_list() == expected, name
    assert [f.shape.as_list() for f in end_points['feature_maps']] == \
        [end_points[n].shape.as_list() for n in ssd_net.source_layers()]
    # 38*38*4 + 19*19*6 + 10*10*6 + 5*5*6 + 3*3*4 + 1*1*4
    assert sum(s * s * k for s, k in zip(sizes, ANCHORS_PER_LOCATION)) == \
        5776 + 2166 + 600 + 150 + 36 + 4 == 8732


@pytest.fixture(scope='module')
def forward_pass():
    """One channels_last forward pass of a 1x300x300x3 image; returns the fetched arrays."""
    rng = np.random.RandomState(0)
    image = rng.uniform(-120., 130., size=(1, 300, 300, 3)).astype(np.float32)
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(1)
        images = tf.compat.v1.placeholder(tf.float32, [None, 300, 300, 3])
        cls_logits, loc_preds, end_points = ssd_net.ssd300(
            images, NUM_CLASSES, ANCHORS_PER_LOCATION, data_format='channels_last')
        variables = {v.op.name: v for v in tf.compat.v1.global_variables()}
        fetch = {
            'cls_logits': cls_logits, 'loc_preds': loc_preds,
            'conv4_3': end_points['ssd300/conv4/conv4_3'],
            'conv4_3_norm': end_points['conv4_3_norm'],
            'cls_1': end_points['ssd300/multibox_head/cls_1'],
            'loc_0': end_points['ssd300/multibox_head/loc_0'],
            'loc_5': end_points['ssd300/multibox_head/loc_5'],
            'scale': variables['ssd300/conv4_3_scale/weights'],
            'fc7_weights': variables['ssd300/fc7/weights'],
            'fc7_biases': variables['ssd300/fc7/biases'],
            'cls_3_weights': variables['ssd300/multibox_head/cls_3/weights'],
        }
        for block in ('conv8', 'conv9'):
            for part in ('_1', '_2'):
                scope = 'ssd300/additional_layers/%s/%s%s' % (block, block, part)
                fetch[block + part] = end_points[scope]
                fetch[block + part + '_weights'] = variables[scope + '/weights']
                fetch[block + part + '_biases'] = variables[scope + '/biases']
        fetch['variables'] = variables
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            out = session.run(fetch, {images: image})
    out['static_batch'] = cls_logits.shape.as_list()[0]
    out['image'] = image
    return out


def test_forward_shapes_and_finite(forward_pass):
    assert forward_pass['cls_logits'].shape == (1, 8732, 21)
    assert forward_pass['loc_preds'].shape == (1, 8732, 4)
    assert forward_pass['static_batch'] is None  # unknown batch stays unknown
    assert np.all(np.isfinite(forward_pass['cls_logits']))
    assert np.all(np.isfinite(forward_pass['loc_preds']))
    assert np.abs(forward_pass['cls_logits']).max() > 0  # heads are not dead


def test_head_reshape_matches_anchor_order(forward_pass):
    # Anchor index = layer offset + (y * W + x) * k + anchor_type, class/coord last.
    cls_1 = forward_pass['cls_1']  # [1, 19, 19, 6 * 21]
    y, x, k, c = 3, 7, 4, 11
    index = 5776 + (y * 19 + x) * 6 + k
    assert forward_pass['cls_logits'][0, index, c] == cls_1[0, y, x, k * 21 + c]
    np.testing.assert_array_equal(forward_pass['cls_logits'][0, 5776:5776 + 2166],
                                  cls_1.reshape(2166, 21))
    loc_0 = forward_pass['loc_0']  # [1, 38, 38, 16]
    assert forward_pass['loc_preds'][0, (5 * 38 + 9) * 4 + 2, 3] == loc_0[0, 5, 9, 2 * 4 + 3]
    np.testing.assert_array_equal(forward_pass['loc_preds'][0, 8728:],
                                  forward_pass['loc_5'].reshape(4, 4))


@pytest.mark.skipif(not tf.config.list_physical_devices('GPU'),
                    reason='NCHW needs a GPU: TF 2.15 CPU builds run NCHW max-pooling but return '
                           'wrong, run-to-run different values, so on the CPU channels_first is '
                           'only checked for static shapes')
def test_channels_first_computes_the_same_outputs(forward_pass):
    """Same weights, NCHW inside: identical logits/offsets in the same anchor order."""
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, 300, 300, 3])
        cls_logits, loc_preds, _ = ssd_net.ssd300(
            images, NUM_CLASSES, ANCHORS_PER_LOCATION, data_format='channels_first')
        variables = tf.compat.v1.global_variables()
        feeds = {v: tf.compat.v1.placeholder(v.dtype.base_dtype, v.shape) for v in variables}
        assign = tf.group(*[v.assign(p) for v, p in feeds.items()])
        with tf.compat.v1.Session() as session:
            session.run(assign, {p: forward_pass['variables'][v.op.name]
                                 for v, p in feeds.items()})
            cls_nchw, loc_nchw = session.run([cls_logits, loc_preds],
                                             {images: forward_pass['image']})
    scale = np.abs(forward_pass['cls_logits']).max()  # loose: GPUs may use TF32 convolutions
    np.testing.assert_allclose(cls_nchw, forward_pass['cls_logits'], atol=1e-2 * scale)
    np.testing.assert_allclose(loc_nchw, forward_pass['loc_preds'],
                               atol=1e-2 * np.abs(forward_pass['loc_preds']).max())


def _numpy_conv3x3_stride2(x, weights, biases, pad_before, pad_after):
    """ReLU(conv) of one HWC map with explicit zero padding, stride 2, in float64 NumPy."""
    x = np.pad(x.astype(np.float64), ((pad_before, pad_after), (pad_before, pad_after), (0, 0)))
    out_size = (x.shape[0] - 3) // 2 + 1
    out = np.zeros((out_size, out_size, weights.shape[-1]))
    for i in range(out_size):
        for j in range(out_size):
            patch = x[2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
            out[i, j] = np.tensordot(patch, weights, axes=3)
    return np.maximum(out + biases, 0.)


def test_stride_2_extra_convs_pad_as_tensorflow_same(forward_pass):
    """conv8_2: 19 -> 10 with 1 pixel on every side; conv9_2: 10 -> 5 with 0 pixels at the
    top/left and 1 at the bottom/right (the original's Keras 'same'; Caffe pads 1 all round)."""
    for block, size, before, after in (('conv8', 10, 1, 1), ('conv9', 5, 0, 1)):
        expected = _numpy_conv3x3_stride2(forward_pass[block + '_1'][0],
                                          forward_pass[block + '_2_weights'],
                                          forward_pass[block + '_2_biases'], before, after)
        got = forward_pass[block + '_2'][0]
        assert got.shape[:2] == (size, size)
        assert np.abs(got).max() > 0
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # The symmetric (Caffe) padding gives a different conv9_2: the test can tell them apart.
    caffe = _numpy_conv3x3_stride2(forward_pass['conv9_1'][0], forward_pass['conv9_2_weights'],
                                   forward_pass['conv9_2_biases'], 1, 1)
    assert np.abs(caffe - forward_pass['conv9_2'][0]).max() > 1e-2 * np.abs(caffe).max()


def test_conv4_3_is_l2_normalized_and_scaled_by_20(forward_pass):
    np.testing.assert_array_equal(forward_pass['scale'], np.full([512], 20., np.float32))
    conv4_3 = forward_pass['conv4_3'][0].astype(np.float64)  # [38, 38, 512]
    norms = np.sqrt((conv4_3 ** 2).sum(axis=-1, keepdims=True))
    expected = 20. * conv4_3 / np.maximum(norms, 1e-6)
    np.testing.assert_allclose(forward_pass['conv4_3_norm'][0], expected, rtol=1e-4, atol=1e-5)
    pixel_norms = np.linalg.norm(forward_pass['conv4_3_norm'][0], axis=-1)
    alive = norms[..., 0] > 1e-3
    assert alive.mean() > 0.5
    np.testing.assert_allclose(pixel_norms[alive], 20., rtol=1e-4)


def test_initializers_xavier_weights_zero_biases(forward_pass):
    limit = math.sqrt(6. / (1024 + 1024))  # glorot uniform, fc7 1x1x1024x1024
    weights = forward_pass['fc7_weights']
    assert np.abs(weights).max() <= limit
    assert np.abs(weights).max() > 0.99 * limit
    assert abs(weights.std() - limit / math.sqrt(3.)) < 0.01 * limit
    np.testing.assert_array_equal(forward_pass['fc7_biases'], np.zeros([1024], np.float32))
    limit = math.sqrt(6. / (9 * 256 + 9 * 6 * 21))  # cls_3: 3x3x256x126
    assert forward_pass['cls_3_weights'].max() <= limit


def test_two_models_in_one_graph_get_separate_scopes():
    with tf.Graph().as_default():
        images = tf.zeros([1, 300, 300, 3])
        ssd_net.ssd300(images, NUM_CLASSES, ANCHORS_PER_LOCATION, scope='ssd300')
        _, _, end_points = ssd_net.ssd300(images, 3, ANCHORS_PER_LOCATION, scope='other')
        names = {v.op.name for v in tf.compat.v1.global_variables()}
    assert 'other/fc6/weights' in names and 'ssd300/fc6/weights' in names
    assert len(names) == 2 * 71
    assert end_points['cls_logits'].shape.as_list() == [1, 8732, 3]
    assert 'other/fc7' in end_points and 'ssd300/fc7' not in end_points


def test_bad_arguments_name_the_fix():
    with tf.Graph().as_default():
        images = tf.zeros([1, 300, 300, 3])
        with pytest.raises(ValueError, match='anchors_per_location has 5 entries'):
            ssd_net.ssd300(images, NUM_CLASSES, [4, 6, 6, 6, 4])
        with pytest.raises(ValueError, match='channels_last layout'):
            ssd_net.ssd300(tf.zeros([1, 3, 300, 300]), NUM_CLASSES, ANCHORS_PER_LOCATION)
        with pytest.raises(ValueError, match="data_format='NCHW' is not supported"):
            ssd_net.ssd300(images, NUM_CLASSES, ANCHORS_PER_LOCATION, data_format='NCHW')


def test_resolve_data_format():
    has_gpu = bool(tf.config.list_physical_devices('GPU'))
    assert ssd_net.resolve_data_format('channels_last') == 'channels_last'
    expected = 'channels_first' if has_gpu else 'channels_last'
    assert ssd_net.resolve_data_format('channels_first') == expected
    assert ssd_net.resolve_data_format('auto') == expected
    with pytest.raises(ValueError, match="use 'channels_last'"):
        ssd_net.resolve_data_format('nhwc')
