"""net/backbones.py: the registry, the ResNets (feature-map sizes, TF-slim names and numbers,
batch norm), the anchor spec derived from the backbone, the input convention through params,
pretrained TF-slim ResNet weights restored by name, params.json read back for inference, and
train -> eval -> export with a ResNet backbone."""
import ast
import json
import os
import re
import time
import types

import numpy as np
import pytest
import tensorflow as tf
import tf_slim as slim

from conftest import (REPO_ROOT, TRAIN_FAST_FLAGS, assert_finite_losses, run_script,
                      write_variables)
from common import defaults
from net import backbones, ssd_net
from preprocessing import ssd_preprocessing
from net import anchors as anchor_lib

NAMES = ['vgg16', 'resnet18', 'resnet34', 'resnet50', 'resnet101']
K = [4, 6, 6, 6, 4, 4]
# (stride-8 depth, stride-16 depth) of each backbone's maps.
DEPTHS = {'vgg16': (512, 1024), 'resnet18': (128, 256), 'resnet34': (128, 256),
          'resnet50': (512, 1024), 'resnet101': (512, 1024)}
# Model variables each ResNet's backbone has: conv1 (weights + 4 BN) + per unit convs x 5
# (+ a projection shortcut x 5 where the depth or stride changes).
RESNET_BACKBONE_VARIABLES = {
    # 18: units 2, 2, 2 of 2 convs; projections in block2/unit_1, block3/unit_1.
    'resnet18': 5 + 6 * 2 * 5 + 2 * 5,
    'resnet34': 5 + 13 * 2 * 5 + 2 * 5,
    # 50: units 3, 4, 5 (block3 minus its strided last unit) of 3 convs; projections in
    # the first unit of each block.
    'resnet50': 5 + 12 * 3 * 5 + 3 * 5,
    'resnet101': 5 + 29 * 3 * 5 + 3 * 5,
}


def _model_variables(scope='ssd300'):
    return {v.op.name: v.shape.as_list() for v in tf.compat.v1.model_variables()
            if v.op.name.startswith(scope + '/')}


def test_registry_matches_the_original_and_the_flag():
    # The SSD300 backbones, then SSDLite's (tests/test_mobilenet.py)
    assert list(backbones.BACKBONES) == NAMES + ['mobilenet_v2']
    assert defaults.BACKBONE == 'vgg16'
    # train_ssd.py's --backbone is a free string checked against this registry (check_flags),
    # so a new backbone is one registry entry: no list of names is written out there.
    tree = ast.parse(open(os.path.join(REPO_ROOT, 'train_ssd.py')).read())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and getattr(n.func, 'attr', '').startswith('DEFINE_')
             and n.args and isinstance(n.args[0], ast.Constant) and n.args[0].value == 'backbone']
    assert len(calls) == 1
    assert calls[0].func.attr == 'DEFINE_string'
    default = eval(compile(ast.Expression(calls[0].args[1]), 'train_ssd.py', 'eval'),
                   {'DEFAULTS': defaults.DEFAULT_PARAMS, 'defaults': defaults})
    assert default == defaults.BACKBONE
    with pytest.raises(ValueError, match=r"Unknown backbone 'resnet152'; use one of vgg16, "):
        backbones.get_backbone('resnet152')
    vgg, r50 = backbones.get_backbone('vgg16'), backbones.get_backbone('resnet50')
    assert (vgg.channel_order, vgg.checkpoint_model_scope) == ('bgr', 'vgg_16')
    assert (r50.channel_order, r50.checkpoint_model_scope) == ('rgb', 'resnet_v1_50')
    assert tuple(r50.mean_rgb) == tuple(vgg.mean_rgb) == ssd_preprocessing.MEAN_RGB


@pytest.mark.parametrize('name', NAMES)
def test_network_builds_at_300_with_ssd300_maps_and_8732_anchors(name):
    from utility import ssd_model
    params = ssd_model.make_params(backbone=name)
    # The anchor spec follows from the backbone's map sizes: the SSD300 spec for all of them.
    assert ssd_net.feature_shapes(name, 300) == [38, 19, 10, 5, 3, 1]
    assert params['anchor_spec'] == anchor_lib.SSD300_SPEC
    assert anchor_lib.anchors_per_location(params['anchor_spec']) == K
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [2, 300, 300, 3])
        cls_logits, loc_preds, end_points = ssd_net.ssd300(
            images, 21, K, is_training=True, backbone=name)
        variables = _model_variables()
        update_ops = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
    names = ssd_net.source_layers(name)
    sizes = [end_points[n].shape.as_list()[1] for n in names]
    assert sizes == ssd_net.feature_shapes(name, 300)
    depths = [end_points[n].shape.as_list()[3] for n in names]
    assert depths == list(DEPTHS[name]) + [512, 256, 256, 256]
    assert sum(s * s * k for s, k in zip(sizes, K)) == anchor_lib.num_anchors(
        params['anchor_spec']) == 8732
    assert cls_logits.shape.as_list() == [2, 8732, 21]
    assert loc_preds.shape.as_list() == [2, 8732, 4]
    # The SSD layers are the same for every backbone but conv8_1's input depth.
    extras = {n: s for n, s in variables.items() if '/additional_layers/' in n}
    assert len(extras) == 16
    assert extras['ssd300/additional_layers/conv8/conv8_1/weights'] == [1, 1, DEPTHS[name][1],
                                                                        256]
    backbone = {n: s for n, s in variables.items()
                if not n.startswith(tuple('ssd300/' + s for s in
                                          ssd_net.new_layer_scopes(name)))}
    if name == 'vgg16':
        assert len(backbone) == 30 and not update_ops
    else:
        assert len(backbone) == RESNET_BACKBONE_VARIABLES[name]
        batch_norms = [n for n in backbone if n.endswith('/BatchNorm/moving_mean')]
        assert len(update_ops) == 2 * len(batch_norms) == 2 * len(backbone) // 5
        assert not any('block4' in n for n in backbone)  # stride 32 feeds nothing: not built


@pytest.mark.parametrize('name,size', [('vgg16', 257), ('resnet18', 257), ('resnet50', 320)])
def test_feature_shapes_arithmetic_matches_the_graph_at_other_sizes(name, size):
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, size, size, 3])
        _, _, end_points = ssd_net.ssd300(images, 21, K, backbone=name)
    assert [end_points[n].shape.as_list()[1] for n in ssd_net.source_layers(name)] == \
        ssd_net.feature_shapes(name, size)
    spec = anchor_lib.ssd300_anchor_spec(ssd_net.feature_shapes(name, size), image_size=size)
    assert spec['layer_steps'][0] == pytest.approx(size / spec['feature_shapes'][0])
    with pytest.raises(ValueError, match='too small'):
        ssd_net.feature_shapes(name, 40)


def test_channels_first_builds_the_same_shapes_and_variables():
    """NCHW is a GPU layout (TF's CPU kernels are unreliable for it): checked statically."""
    shapes = {}
    for data_format in ('channels_last', 'channels_first'):
        with tf.Graph().as_default():
            images = tf.compat.v1.placeholder(tf.float32, [1, 300, 300, 3])
            cls_logits, _, end_points = ssd_net.ssd300(images, 21, K, is_training=True,
                                                       data_format=data_format,
                                                       backbone='resnet18')
            shapes[data_format] = (_model_variables(), cls_logits.shape.as_list())
            first = end_points['block2'].shape.as_list()
        assert first == ([1, 38, 38, 128] if data_format == 'channels_last'
                         else [1, 128, 38, 38])
    assert shapes['channels_last'] == shapes['channels_first']


def test_anchor_spec_is_derived_from_feature_shapes():
    assert anchor_lib.ssd300_anchor_spec() == anchor_lib.SSD300_SPEC
    assert anchor_lib.SSD300_SPEC['layer_steps'] == [8, 16, 32, 64, 100, 300]
    spec = anchor_lib.ssd300_anchor_spec([40, 20, 10, 5, 3, 1], image_size=300)
    assert spec['layer_steps'] == [7.5, 15.0, 32, 64, 100, 300]
    assert anchor_lib.num_anchors(spec) == 40 * 40 * 4 + 20 * 20 * 6 + 600 + 150 + 36 + 4
    with pytest.raises(ValueError, match='6 positive feature-map sizes'):
        anchor_lib.ssd300_anchor_spec([38, 19, 10, 5, 3])


# ----------------------------------------------------------------------------- TF-slim layout


def _slim_resnet(depth, images):
    """TF-slim's own resnet_v1_<depth> (with the classifier), normalized by our batch_norm
    (slim.batch_norm cannot run on TF 2.15+); returns its end_points."""
    from tf_slim.nets import resnet_v1
    net_fn = {50: resnet_v1.resnet_v1_50, 101: resnet_v1.resnet_v1_101}[depth]
    with slim.arg_scope(backbones.resnet_arg_scope(is_training=False)):
        _, end_points = net_fn(images, num_classes=1000, is_training=False,
                               scope='resnet_v1_%d' % depth)
    return end_points


@pytest.mark.parametrize('depth', [50, 101])
def test_resnet_variables_are_tf_slim_checkpoint_names(depth):
    """Every backbone variable is TF-slim's resnet_v1 variable with 'resnet_v1_<depth>'
    swapped for the model scope, same shape: its published checkpoint restores by name."""
    scope = 'resnet_v1_%d' % depth
    with tf.Graph().as_default():
        _slim_resnet(depth, tf.zeros([1, 224, 224, 3]))
        slim_shapes = {v.op.name: v.shape.as_list() for v in tf.compat.v1.global_variables()}
    with tf.Graph().as_default():
        ssd_net.ssd300(tf.zeros([1, 300, 300, 3]), 21, K, backbone='resnet%d' % depth)
        ours = {n: s for n, s in _model_variables().items()
                if not n.startswith(('ssd300/multibox_head', 'ssd300/additional_layers'))}
    last = {50: 6, 101: 23}[depth]
    expected = {n.replace(scope + '/', 'ssd300/', 1): s for n, s in slim_shapes.items()
                if not re.match(r'%s/(block4|logits|block3/unit_%d/)' % (scope, last), n)}
    assert ours == expected
    # A few names and shapes as the published checkpoint lists them.
    assert slim_shapes[scope + '/conv1/weights'] == [7, 7, 3, 64]
    assert slim_shapes[scope + '/conv1/BatchNorm/gamma'] == [64]
    assert slim_shapes[scope + '/block2/unit_4/bottleneck_v1/conv2/weights'] == [3, 3, 128, 128]
    assert slim_shapes[scope + '/block1/unit_1/bottleneck_v1/shortcut/weights'] == [1, 1, 64, 256]


def _randomize(session, variables, rng):
    for v in variables:
        shape = v.shape.as_list()
        if v.op.name.endswith('moving_variance'):
            value = rng.uniform(0.5, 1.5, shape)
        elif v.op.name.endswith(('gamma', 'moving_mean', 'beta')):
            value = rng.uniform(-0.5, 0.5, shape) + (1. if v.op.name.endswith('gamma') else 0.)
        else:
            continue
        session.run(v.initializer, {v.initial_value: value.astype(np.float32)})


def test_resnet50_restores_a_slim_checkpoint_and_computes_what_slim_computes(tmp_path):
    """A checkpoint written by TF-slim's resnet_v1_50 (its names and shapes, random values,
    batch-norm statistics included) goes through the --checkpoint_path machinery with the
    backbone's defaults; the two source maps equal slim's units' outputs."""
    from utility import ssd_model
    from utility.checkpoints import restore
    rng = np.random.RandomState(0)
    image = rng.uniform(-120., 130., (1, 300, 300, 3)).astype(np.float32)
    prefix = str(tmp_path / 'resnet_v1_50.ckpt')
    with tf.Graph().as_default():
        end_points = _slim_resnet(50, tf.constant(image))
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            _randomize(session, tf.compat.v1.global_variables(), rng)
            expected = session.run([end_points['resnet_v1_50/block2/unit_3/bottleneck_v1'],
                                    end_points['resnet_v1_50/block3/unit_5/bottleneck_v1']])
            tf.compat.v1.train.Saver().save(session, prefix, write_meta_graph=False)

    params = ssd_model.make_params(backbone='resnet50', checkpoint_path=prefix,
                                   ignore_missing_vars=False)
    assert params['checkpoint_model_scope'] == 'resnet_v1_50'
    assert params['checkpoint_exclude_scopes'] == \
        'ssd300/multibox_head, ssd300/additional_layers'
    with tf.Graph().as_default():
        _, _, ours = ssd_net.ssd300(tf.constant(image), 21, K, backbone='resnet50')
        init_fn, report = restore.build_restore_fn(
            params['checkpoint_path'], model_scope=params['model_scope'],
            checkpoint_model_scope=params['checkpoint_model_scope'],
            exclude_scopes=params['checkpoint_exclude_scopes'],
            ignore_missing_vars=params['ignore_missing_vars'])
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            init_fn(None, session)
            got = session.run([ours['block2/unit_3'], ours['block3/unit_5']])
    assert len(report['restored']) == RESNET_BACKBONE_VARIABLES['resnet50'] == 200
    assert report['missing'] == []
    assert report['name_map']['ssd300/block3/unit_5/bottleneck_v1/conv3/BatchNorm/beta'] == \
        'resnet_v1_50/block3/unit_5/bottleneck_v1/conv3/BatchNorm/beta'
    for ours_map, slim_map in zip(got, expected):
        assert ours_map.shape == slim_map.shape and np.abs(slim_map).max() > 0
        np.testing.assert_allclose(ours_map, slim_map, rtol=1e-4,
                                   atol=1e-4 * np.abs(slim_map).max())


# ----------------------------------------------------------------------------- batch norm


def _resnet18_maps(is_training, freeze=False, size=64):
    images = tf.compat.v1.placeholder(tf.float32, [4, size, size, 3])
    with tf.compat.v1.variable_scope('net'):
        maps = backbones.resnet_v1_source_maps(images, 18, is_training=is_training,
                                               freeze_batch_norm=freeze)
    return images, maps


def test_batch_norm_normalizes_with_batch_statistics_and_updates_moving_averages():
    rng = np.random.RandomState(1)
    x = rng.uniform(0., 4., (8, 5, 5, 3)).astype(np.float32)
    with tf.Graph().as_default():
        inputs = tf.constant(x)
        with tf.compat.v1.variable_scope('bn'):
            train = backbones.batch_norm(inputs, is_training=True)
        with tf.compat.v1.variable_scope('bn', reuse=True):
            infer = backbones.batch_norm(inputs, is_training=False)
        updates = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
        variables = {v.op.name: v for v in tf.compat.v1.global_variables()}
        assert sorted(variables) == ['bn/BatchNorm/beta', 'bn/BatchNorm/gamma',
                                     'bn/BatchNorm/moving_mean', 'bn/BatchNorm/moving_variance']
        assert sorted(v.op.name for v in tf.compat.v1.trainable_variables()) == \
            ['bn/BatchNorm/beta', 'bn/BatchNorm/gamma']
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            got_train, got_infer = session.run([train, infer])
            session.run(updates)
            moving_mean, moving_var = session.run([variables['bn/BatchNorm/moving_mean'],
                                                   variables['bn/BatchNorm/moving_variance']])
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(got_train, (x - mean) / np.sqrt(var + 1e-5), atol=1e-3)
    np.testing.assert_allclose(got_infer, x / np.sqrt(1. + 1e-5), atol=1e-4)  # mean 0, var 1
    n = x.size / 3
    np.testing.assert_allclose(moving_mean, 0.003 * mean, rtol=1e-4)
    np.testing.assert_allclose(moving_var, 0.997 + 0.003 * var * n / (n - 1), rtol=1e-4)


def test_frozen_batch_norm_uses_moving_statistics_and_trains_no_bn_variable():
    rng = np.random.RandomState(2)
    image = rng.uniform(-100., 100., (4, 64, 64, 3)).astype(np.float32)
    outputs = {}
    for mode, (is_training, freeze) in {'train': (True, False), 'frozen': (True, True),
                                        'infer': (False, False)}.items():
        with tf.Graph().as_default():
            tf.compat.v1.set_random_seed(3)
            images, maps = _resnet18_maps(is_training, freeze)
            updates = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
            trainable = [v.op.name for v in tf.compat.v1.trainable_variables()]
            with tf.compat.v1.Session() as session:
                session.run(tf.compat.v1.global_variables_initializer())
                _randomize(session, tf.compat.v1.global_variables(), np.random.RandomState(4))
                outputs[mode] = session.run(maps[1], {images: image})
        bn_trainable = [n for n in trainable if '/BatchNorm/' in n]
        if mode == 'train':
            # 15 batch norms (conv1, 12 unit convs, 2 projections): gamma/beta, 2 updates each.
            assert len(updates) == len(bn_trainable) == 2 * 15
        else:
            assert updates == []
            assert (bn_trainable == []) == freeze
    np.testing.assert_allclose(outputs['frozen'], outputs['infer'], rtol=1e-5, atol=1e-5)
    assert np.abs(outputs['train'] - outputs['infer']).max() > 1e-2 * np.abs(
        outputs['infer']).max()


def test_batch_norm_decay_reaches_every_resnet_batch_norm():
    """params' batch_norm_decay sets the moving averages' decay of the whole network: after one
    update from zero, moving_mean = (1 - decay) x batch mean, so two decays give that ratio."""
    image = np.random.RandomState(5).uniform(-100., 100., (1, 300, 300, 3)).astype(np.float32)
    moving = {}
    for decay in (0.5, 0.997):
        with tf.Graph().as_default():
            tf.compat.v1.set_random_seed(3)
            images = tf.compat.v1.placeholder(tf.float32, [1, 300, 300, 3])
            ssd_net.ssd300(images, 21, [4, 6, 6, 6, 4, 4], is_training=True,
                           backbone='resnet18', batch_norm_decay=decay)
            updates = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
            # every batch norm of the network (ResNet-18: 20), not a sample of them
            variables = {v.op.name: v for v in tf.compat.v1.global_variables()
                         if v.op.name.endswith('BatchNorm/moving_mean')}
            with tf.compat.v1.Session() as session:
                session.run(tf.compat.v1.global_variables_initializer())
                session.run(updates, {images: image})
                moving[decay] = session.run(variables)
    assert sorted(moving[0.5]) == sorted(moving[0.997]) and len(moving[0.5]) >= 15
    for name, slow in moving[0.997].items():
        fast = moving[0.5][name]
        big = np.abs(slow) > 1e-3 * np.abs(slow).max()
        assert big.any(), name
        np.testing.assert_allclose(fast[big] / slow[big], 0.5 / 0.003, rtol=1e-2, err_msg=name)


def test_young_batch_norm_statistics_are_warned_about(tmp_path):
    from utility.inference import checkpoint_params
    bn = 'ssd300/conv1/BatchNorm/moving_mean'
    prefix = write_variables(str(tmp_path / 'resnet' / 'model.ckpt-150'), {
        bn: np.zeros(64, np.float32), 'global_step': np.array(150, np.int64)})
    warning = checkpoint_params.young_batch_norm_warning(prefix, {})
    assert warning.startswith('warning: %s is at global step 150' % prefix), warning
    assert 'decay 0.997' in warning and 'hold 64% of their initial values' in warning
    assert '--batch_norm_decay=0.9' in warning and 'train past step 334' in warning
    # 0.9 ** 150: nothing left; frozen statistics are the restored ones
    assert checkpoint_params.young_batch_norm_warning(prefix, {'batch_norm_decay': 0.9}) is None
    assert checkpoint_params.young_batch_norm_warning(prefix, {'freeze_batch_norm': True}) is None
    old = write_variables(str(tmp_path / 'old' / 'model.ckpt-400'), {
        bn: np.zeros(64, np.float32), 'global_step': np.array(400, np.int64)})
    assert checkpoint_params.young_batch_norm_warning(old, {}) is None
    vgg = write_variables(str(tmp_path / 'vgg' / 'model.ckpt-3'), {
        'ssd300/conv1/conv1_1/weights': np.zeros((3, 3, 3, 64), np.float32),
        'global_step': np.array(3, np.int64)})
    assert checkpoint_params.young_batch_norm_warning(vgg, {}) is None  # no batch norm
    # eval, demo and export get it through inference_params
    values = types.SimpleNamespace(
        data_format='channels_last', num_classes=21, train_image_size=300,
        model_scope='ssd300', select_threshold=0.01, min_size=0.03, nms_threshold=0.45,
        nms_topk=200, keep_topk=400, keep_per='image')
    logged = []
    checkpoint_params.inference_params(values, log=logged.append, checkpoint=prefix)
    assert logged == [warning]


# ----------------------------------------------------------------------------- input convention


def test_input_convention_comes_from_the_backbone_through_params():
    from utility import ssd_model
    vgg = ssd_model.make_params()
    resnet = ssd_model.make_params(backbone='resnet18')
    assert (vgg['channel_order'], vgg['checkpoint_model_scope']) == ('bgr', 'vgg_16')
    assert vgg['checkpoint_exclude_scopes'] == \
        'ssd300/multibox_head, ssd300/additional_layers, ssd300/conv4_3_scale'
    assert (resnet['channel_order'], resnet['checkpoint_model_scope']) == ('rgb', 'resnet_v1_18')
    assert resnet['mean_rgb'] == list(ssd_preprocessing.MEAN_RGB)
    # Explicit values win over the backbone's (empty exclusions = restore everything).
    custom = ssd_model.make_params(backbone='resnet18', channel_order='bgr',
                                   mean_rgb=[1., 2., 3.], checkpoint_exclude_scopes='')
    assert (custom['channel_order'], custom['mean_rgb']) == ('bgr', [1., 2., 3.])
    assert custom['checkpoint_exclude_scopes'] == ''
    json.dumps(resnet)  # params.json stays writable

    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3) * 5
    out = ssd_preprocessing.preprocess_for_eval(tf.constant(image), out_size=4,
                                                channel_order='rgb', mean_rgb=(10., 20., 30.))
    np.testing.assert_allclose(out.numpy(), image - np.array([10., 20., 30.]), atol=1e-4)
    out = ssd_preprocessing.preprocess_for_eval(tf.constant(image), out_size=4,
                                                channel_order='bgr', mean_rgb=(10., 20., 30.))
    np.testing.assert_allclose(out.numpy(), (image - np.array([10., 20., 30.]))[..., ::-1],
                               atol=1e-4)
    np.testing.assert_array_equal(
        ssd_preprocessing.denormalize_image(out, 'bgr', (10., 20., 30.)).numpy(), image)
    train, _, _ = ssd_preprocessing.preprocess_for_train(
        tf.constant(image), tf.zeros([0, 4]), tf.zeros([0], tf.int32), out_size=4,
        channel_order='rgb', seed=[1, 2], mean_rgb=(10., 20., 30.))
    reference, _, _ = ssd_preprocessing.preprocess_for_train(
        tf.constant(image), tf.zeros([0, 4]), tf.zeros([0], tf.int32), out_size=4,
        channel_order='rgb', seed=[1, 2])
    # Same augmentation, another mean: outputs differ by the mean difference (inside the image).
    delta = np.array(ssd_preprocessing.MEAN_RGB) - np.array([10., 20., 30.])
    inside = np.abs(reference.numpy()).sum(-1) > 1e-3
    np.testing.assert_allclose((train.numpy() - reference.numpy())[inside],
                               np.broadcast_to(delta, train.shape)[inside], atol=1e-2)
    with pytest.raises(ValueError, match='mean_rgb must be 3 numbers'):
        ssd_preprocessing.channel_mean('rgb', (1., 2.))


def test_inference_params_read_the_backbone_from_params_json(tmp_path):
    from utility.inference import checkpoint_params
    values = types.SimpleNamespace(
        data_format='channels_last', num_classes=21, train_image_size=300,
        model_scope='ssd300', select_threshold=0.01, min_size=0.03, nms_threshold=0.45,
        nms_topk=200, keep_topk=400, keep_per='image')
    prefix = str(tmp_path / 'model.ckpt-2')
    assert checkpoint_params.model_dir_params(prefix) == {}
    assert checkpoint_params.inference_params(values, checkpoint=prefix)['backbone'] == 'vgg16'
    with open(tmp_path / 'params.json', 'w') as f:
        json.dump({'backbone': 'resnet50', 'num_classes': 5, 'batch_size': 64,
                   'anchor_spec': anchor_lib.SSD300_SPEC}, f)
    logged = []
    params = checkpoint_params.inference_params(values, log=logged.append, checkpoint=prefix,
                                                batch_size=1)
    assert (params['backbone'], params['num_classes'], params['batch_size']) == \
        ('resnet50', 5, 1)
    assert (params['channel_order'], params['checkpoint_model_scope']) == \
        ('rgb', 'resnet_v1_50')
    assert logged == ['Backbone resnet50 (from the params.json beside %s).' % prefix]
    with open(tmp_path / 'params.json', 'w') as f:
        f.write('{not json')
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / 'params.json'))):
        checkpoint_params.model_dir_params(prefix)


# ----------------------------------------------------------------------------- end to end


def _train(tfrecord_dir, model_dir, backbone, steps=2):
    start = time.time()
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                       '--max_number_of_steps=%d' % steps] + TRAIN_FAST_FLAGS
                      + ['--backbone=' + backbone], timeout=1800)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert_finite_losses(out, steps=range(1, steps + 1))
    with open(os.path.join(model_dir, 'params.json')) as f:
        assert json.load(f)['backbone'] == backbone
    return time.time() - start, out


@pytest.mark.slow
def test_resnet18_trains_from_scratch_with_batch_norm_updates(resnet18_model_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(resnet18_model_dir))
    assert reader.get_tensor('global_step') == 2
    names = reader.get_variable_to_shape_map()
    assert 'ssd300/block3/unit_2/basic_v1/conv2/BatchNorm/moving_variance' in names
    # Two update steps moved the moving averages away from their initial 0 / 1.
    moving_mean = reader.get_tensor('ssd300/conv1/BatchNorm/moving_mean')
    assert np.abs(moving_mean).max() > 1e-3


@pytest.mark.slow
def test_resnet18_eval_demo_and_export_read_the_backbone(resnet18_model_dir, tfrecord_dir,
                                                         voc_sample_dir, tmp_path):
    """No --backbone flag: eval, demo and export take it from params.json."""
    proc = run_script(['eval_ssd.py', '--data_dir=' + tfrecord_dir,
                       '--model_dir=' + resnet18_model_dir, '--output_dir=' + str(tmp_path / 'e'),
                       '--num_readers=2', '--batch_size=2'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'Backbone resnet18 (from the params.json' in proc.stdout
    assert 'mAP VOC07 11-point:' in proc.stdout

    image = os.path.join(voc_sample_dir, 'JPEGImages', '2012_000011.jpg')
    proc = run_script(['simple_ssd_demo.py', '--checkpoint_path=' + resnet18_model_dir,
                       '--input=' + image, '--output_dir=' + str(tmp_path / 'demo')])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert os.listdir(tmp_path / 'demo')

    export_base = str(tmp_path / 'export')
    proc = run_script(['export_ssd.py', '--model_dir=' + resnet18_model_dir,
                       '--export_dir=' + export_base])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exported = proc.stdout.strip().splitlines()[-1].split('SavedModel written to ')[1]
    with open(image, 'rb') as f:
        encoded = f.read()
    serve = tf.saved_model.load(exported).signatures['serving_default']
    served = serve(encoded_image=tf.constant([encoded]))
    assert served['boxes'].shape == (1, 200, 4)
    assert int(served['num_detections'][0]) > 0


@pytest.mark.slow
def test_resnet50_trains_two_steps_from_scratch(tfrecord_dir, tmp_path):
    model_dir = str(tmp_path / 'model')
    seconds, _ = _train(tfrecord_dir, model_dir, 'resnet50')
    print('resnet50: 2 training steps through train_ssd.py in %.0f s' % seconds)
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
    assert reader.get_tensor('global_step') == 2
    names = reader.get_variable_to_shape_map()
    # ResNet-50's bottleneck units (ResNet-18 has basic ones), with batch-norm statistics that
    # the two steps moved from their initial zeros
    assert 'ssd300/block3/unit_5/bottleneck_v1/conv3/weights' in names
    assert not [n for n in names if '/basic_v1/' in n]
    assert np.abs(reader.get_tensor('ssd300/conv1/BatchNorm/moving_mean')).max() > 1e-3


# ----------------------------------------------------------------------------- benchmark


def test_benchmark_counts_each_backbones_flops():
    """The benchmark (benchmarks/flops.py) counts the convolutions of whichever backbone params
    name; ResNet-18 + SSD layers counted by hand here."""
    from benchmarks import flops as bench
    from utility import ssd_model

    def conv(size, kernel, cin, cout):
        return size * size * kernel * kernel * cin * cout
    hand = conv(150, 7, 3, 64)                                        # conv1
    hand += 4 * conv(75, 3, 64, 64)                                   # block1: 2 units
    hand += conv(38, 3, 64, 128) + conv(38, 1, 64, 128) + 3 * conv(38, 3, 128, 128)
    hand += conv(19, 3, 128, 256) + conv(19, 1, 128, 256) + 3 * conv(19, 3, 256, 256)
    hand += conv(19, 1, 256, 256) + conv(10, 3, 256, 512)             # conv8
    hand += conv(10, 1, 512, 128) + conv(5, 3, 128, 256)              # conv9
    hand += conv(5, 1, 256, 128) + conv(3, 3, 128, 256)               # conv10
    hand += conv(3, 1, 256, 128) + conv(1, 3, 128, 256)               # conv11
    for size, depth, k in zip([38, 19, 10, 5, 3, 1], [128, 256, 512, 256, 256, 256], K):
        hand += conv(size, 3, depth, k * 4) + conv(size, 3, depth, k * 21)
    macs = bench.ssd300_conv_macs(ssd_model.make_params(backbone='resnet18'))
    assert sum(macs.values()) == hand
    assert macs['ssd300/conv1'] == conv(150, 7, 3, 64)
    # VGG-16's count is unchanged (31.37 GMAC); ResNet-50's lies between.
    gmac = {n: bench.backbone_train_gflop(n)[0] for n in ('vgg16', 'resnet50')}
    assert round(gmac['vgg16'] * 1e9) == 31373537792
    assert hand / 1e9 < gmac['resnet50'] < gmac['vgg16']
