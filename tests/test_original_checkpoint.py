"""Full SSD300 checkpoints of the original SSD.TensorFlow code: name mapping (TF1 and TF 2.x
layouts), restore for fine-tuning, conversion for eval/demo/export, and the network computed
from such a checkpoint checked against NumPy on the parts where the port used to differ
(anchor order in a cell, conv9_2 padding, the eval resize).

The checkpoints are written here with tf.compat.v1 variables named as the original names them;
the original code itself is not imported (tests/side_by_side_original.py runs it).
"""
import collections
import math
import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from net import backbones
from net import ssd_net
from preprocessing import ssd_preprocessing
from net import anchor_manipulator
from net import anchors as anchor_lib
from utility.checkpoints import original_layout, restore
from tools import convert_original_ssd
from utility.inference import checkpoint_params
from conftest import write_variables

NUM_CLASSES = 21
K = [4, 6, 6, 6, 4, 4]
HEAD_CHANNELS = [512, 1024, 512, 256, 256, 256]
_VGG = [('conv1', 2, 64), ('conv2', 2, 128), ('conv3', 3, 256), ('conv4', 3, 512),
        ('conv5', 3, 512)]
_EXTRA = [('conv8', 1024, 256, 512), ('conv9', 512, 128, 256), ('conv10', 256, 128, 256),
          ('conv11', 256, 128, 256)]


def original_shapes(layout):
    """{name: shape} of the original network's variables, written out from its net/ssd_net.py
    layer list: 'tf1' = its TF1 names, 'tf2' = the names TF 2.x gives the same code."""
    flat = layout == 'tf2'
    shapes = collections.OrderedDict()

    def conv(block_path, name, shape):
        path = name if flat else block_path + '/' + name
        shapes['ssd300/%s/kernel' % path] = shape
        shapes['ssd300/%s/bias' % path] = (shape[-1],)
    channels = 3
    for block, repeat, filters in _VGG:
        for i in range(1, repeat + 1):
            conv(block, '%s_%d' % (block, i), (3, 3, channels, filters))
            channels = filters
    shapes['ssd300/conv4_3_scale/weights'] = (512,)
    shapes['ssd300/fc6/kernel'], shapes['ssd300/fc6/bias'] = (3, 3, 512, 1024), (1024,)
    shapes['ssd300/fc7/kernel'], shapes['ssd300/fc7/bias'] = (1, 1, 1024, 1024), (1024,)
    for block, c_in, c_mid, c_out in _EXTRA:
        conv('additional_layers/' + block, block + '_1', (1, 1, c_in, c_mid))
        conv('additional_layers/' + block, block + '_2', (3, 3, c_mid, c_out))
    for i, (c, k) in enumerate(zip(HEAD_CHANNELS, K)):
        for head, depth in (('loc', 4), ('cls', NUM_CLASSES)):
            shapes['ssd300/multibox_head/%s_%d/kernel' % (head, i)] = (3, 3, c, k * depth)
            shapes['ssd300/multibox_head/%s_%d/bias' % (head, i)] = (k * depth,)
    return shapes


def seeded_values(shapes, seed=0):
    """He-scaled random kernels (activations keep their scale through the ReLUs; conv1_1 also
    divides by 100, the scale of mean-subtracted pixels, so features and box codes are O(1)),
    small random biases, conv4_3 scale 20 (its initial value)."""
    rng = np.random.RandomState(seed)
    values = collections.OrderedDict()
    for name, shape in shapes.items():
        if name.endswith('conv4_3_scale/weights'):
            values[name] = np.full(shape, 20., np.float32)
        elif name.endswith('/kernel'):
            fan_in = shape[0] * shape[1] * shape[2]
            gain = 0.5 if '/multibox_head/' in name else 2.
            if 'conv1_1/' in name:
                gain /= 100. ** 2
            values[name] = (rng.standard_normal(shape) * math.sqrt(gain / fan_in)).astype(
                np.float32)
        else:
            values[name] = (rng.standard_normal(shape) * 0.1).astype(np.float32)
    return values


def write_with_variables(prefix, tensors, global_step=None):
    """Saves {name: array} like a checkpoint of the original; optionally with a global_step and
    a Momentum slot, as training writes them."""
    if global_step is not None:
        tensors = dict(tensors)
        tensors['global_step'] = np.int64(global_step)
        tensors['ssd300/conv1_1/bias/Momentum'] = np.zeros(64, np.float32)
    return write_variables(prefix, tensors)


@pytest.fixture(scope='module')
def original_values():
    return {'tf2': seeded_values(original_shapes('tf2'))}


@pytest.fixture(scope='module')
def tf2_checkpoint(tmp_path_factory, original_values):
    prefix = str(tmp_path_factory.mktemp('original_tf2') / 'model.ckpt-120000')
    return write_with_variables(prefix, original_values['tf2'], global_step=120000)


def _project_variables():
    """{name: shape} of the project's SSD300 model variables (graph built, nothing run)."""
    with tf.Graph().as_default():
        ssd_net.ssd300(tf.zeros([1, 300, 300, 3]), NUM_CLASSES, K)
        return {v.op.name: tuple(v.shape.as_list()) for v in tf.compat.v1.model_variables()}


# ----------------------------------------------------------------------------- name mapping


def test_hand_written_names_in_both_layouts():
    tf1 = [('ssd300/conv1/conv1_1/kernel', 'ssd300/conv1/conv1_1/weights'),
           ('ssd300/conv5/conv5_3/bias', 'ssd300/conv5/conv5_3/biases'),
           ('ssd300/fc6/kernel', 'ssd300/fc6/weights'),
           ('ssd300/fc7/bias', 'ssd300/fc7/biases'),
           ('ssd300/conv4_3_scale/weights', 'ssd300/conv4_3_scale/weights'),
           ('ssd300/additional_layers/conv8/conv8_1/kernel',
            'ssd300/additional_layers/conv8/conv8_1/weights'),
           ('ssd300/additional_layers/conv11/conv11_2/bias',
            'ssd300/additional_layers/conv11/conv11_2/biases'),
           ('ssd300/multibox_head/loc_0/bias', 'ssd300/multibox_head/loc_0/biases'),
           ('ssd300/multibox_head/cls_5/kernel', 'ssd300/multibox_head/cls_5/weights'),
           ('global_step', None), ('ssd300/fc6/kernel/Momentum', None),
           ('ssd300/conv1_1/kernel', None)]       # a TF2 name is not read as TF1
    tf2 = [('ssd300/conv1_1/kernel', 'ssd300/conv1/conv1_1/weights'),
           ('ssd300/conv4_3/bias', 'ssd300/conv4/conv4_3/biases'),
           ('ssd300/conv8_1/kernel', 'ssd300/additional_layers/conv8/conv8_1/weights'),
           ('ssd300/conv10_2/bias', 'ssd300/additional_layers/conv10/conv10_2/biases'),
           ('ssd300/fc6/kernel', 'ssd300/fc6/weights'),
           ('ssd300/conv4_3_scale/weights', 'ssd300/conv4_3_scale/weights'),
           ('ssd300/multibox_head/cls_3/bias', 'ssd300/multibox_head/cls_3/biases'),
           ('ssd300/conv1_3/kernel', None), ('ssd300/conv8_3/kernel', None),
           ('ssd300/conv6_1/kernel', None), ('other/conv1_1/kernel', None),
           ('ssd300/conv8_1/kernel/ExponentialMovingAverage', None)]
    for layout, cases in (('original_tf1', tf1), ('original_tf2', tf2)):
        for original, project in cases:
            assert original_layout.original_to_project_name(original, layout) == project, (
                layout, original)
    # Another model scope on either side.
    assert original_layout.original_to_project_name(
        'ssd512/conv9_2/kernel', 'original_tf2', original_scope='ssd512',
        model_scope='mine') == 'mine/additional_layers/conv9/conv9_2/weights'
    with pytest.raises(ValueError, match='layout'):
        original_layout.original_to_project_name('ssd300/fc6/kernel', 'tf3')


@pytest.mark.parametrize('layout', ['tf1', 'tf2'])
def test_every_original_variable_maps_onto_every_project_variable(layout):
    shapes = original_shapes(layout)
    names = list(shapes) + ['global_step', 'ssd300/fc7/kernel/Momentum']
    found, scope, name_map = original_layout.original_name_map(names)
    assert (found, scope) == ('original_' + layout, 'ssd300')
    project = _project_variables()
    assert len(project) == 71
    assert set(name_map) == set(project)                         # every project variable
    assert sorted(name_map.values()) == sorted(shapes)            # from a distinct original one
    for project_name, original_name in name_map.items():
        assert project[project_name] == shapes[original_name], project_name


def test_layout_detection():
    detect = original_layout.detect_original_layout
    assert detect(original_shapes('tf1')) == ('original_tf1', 'ssd300')
    assert detect(original_shapes('tf2')) == ('original_tf2', 'ssd300')
    assert detect(_project_variables()) == (None, None)           # this project's checkpoints
    assert detect([n for n, _ in backbones.VGG_REDUCED_FC_SHAPES]) == (None, None)  # backbone
    assert detect(['model/fc6/kernel', 'model/conv1_1/kernel']) == ('original_tf2', 'model')
    assert detect(['ssd300/fc6/kernel']) == (None, None)


# ----------------------------------------------------------------------------- restore


def _restore_into_ssd300(checkpoint, **kwargs):
    """Builds the project's SSD300, restores with build_restore_fn; returns (report, values)."""
    with tf.Graph().as_default():
        ssd_net.ssd300(tf.zeros([1, 300, 300, 3]), NUM_CLASSES, K)
        variables = {v.op.name: v for v in tf.compat.v1.model_variables()}
        init_fn, report = restore.build_restore_fn(checkpoint, **kwargs)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            init_fn(None, session)
            return report, session.run(variables)


@pytest.mark.parametrize('layout', ['tf1', 'tf2'])
def test_fine_tuning_restores_every_variable_from_an_original_checkpoint(
        tmp_path, original_values, tf2_checkpoint, layout):
    if layout == 'tf2':
        checkpoint, values = tf2_checkpoint, original_values['tf2']
    else:  # the same numbers under the TF1 names
        tf2_to_tf1 = dict(zip(original_shapes('tf2'), original_shapes('tf1')))
        values = {tf2_to_tf1[n]: v for n, v in original_values['tf2'].items()}
        checkpoint = write_with_variables(str(tmp_path / 'tf1' / 'model.ckpt'), values)
    # train_ssd.py's defaults (checkpoint_model_scope 'vgg_16') with no excluded scope.
    report, restored = _restore_into_ssd300(checkpoint, checkpoint_model_scope='vgg_16',
                                            exclude_scopes='', ignore_missing_vars=False)
    assert len(report['restored']) == 71 and not report['not_restored']
    for project_name, original_name in report['name_map'].items():
        np.testing.assert_array_equal(restored[project_name], values[original_name])
    # The original's default exclusions: backbone only (30 variables), the rest listed.
    report, _ = _restore_into_ssd300(
        checkpoint, exclude_scopes='ssd300/multibox_head, ssd300/additional_layers, '
                                   'ssd300/conv4_3_scale', ignore_missing_vars=True)
    assert len(report['restored']) == 30 and len(report['excluded']) == 41


def test_original_checkpoint_that_restores_nothing_is_an_error(tmp_path):
    # Original layout (detected), but every variable it holds is excluded: nothing restored.
    values = {'ssd300/fc6/kernel': np.zeros((3, 3, 512, 1024), np.float32),
              'ssd300/conv1_1/kernel': np.zeros((3, 3, 3, 64), np.float32)}
    checkpoint = write_with_variables(str(tmp_path / 'x' / 'model.ckpt'), values)
    with pytest.raises(ValueError, match='No model variable'):
        _restore_into_ssd300(checkpoint, exclude_scopes='ssd300/fc6, ssd300/conv1',
                             ignore_missing_vars=True)
    with pytest.raises(ValueError, match='not in checkpoint'):
        _restore_into_ssd300(checkpoint, ignore_missing_vars=False)


# ----------------------------------------------------------------------------- conversion


def test_as_project_checkpoint_converts_once_and_passes_others_through(
        tmp_path, tf2_checkpoint, original_values):
    cache = str(tmp_path / 'cache')
    converted = original_layout.as_project_checkpoint(tf2_checkpoint, cache)
    assert converted.startswith(cache) and converted != tf2_checkpoint
    reader = tf.compat.v1.train.NewCheckpointReader(converted)
    shapes = reader.get_variable_to_shape_map()
    assert set(shapes) == set(_project_variables()) | {'global_step'}
    assert reader.get_tensor('global_step') == 120000
    np.testing.assert_array_equal(reader.get_tensor('ssd300/additional_layers/conv9/conv9_2/'
                                                    'weights'),
                                  original_values['tf2']['ssd300/conv9_2/kernel'])
    mtime = os.path.getmtime(converted + '.index')
    assert original_layout.as_project_checkpoint(tf2_checkpoint, cache) == converted  # cached
    assert os.path.getmtime(converted + '.index') == mtime
    assert len(os.listdir(cache)) == 1
    # A project-layout checkpoint comes back as it is.
    assert original_layout.as_project_checkpoint(converted, cache) == converted
    # A backbone in the original layout is not a full model.
    backbone = {n: v for n, v in original_values['tf2'].items()
                if '/multibox_head/' not in n}
    partial = write_with_variables(str(tmp_path / 'bb' / 'model.ckpt'), backbone)
    with pytest.raises(ValueError, match='train_ssd.py --checkpoint_path'):
        original_layout.as_project_checkpoint(partial, cache)


def test_find_checkpoint_hands_eval_demo_export_the_converted_copy(
        tmp_path, tf2_checkpoint, monkeypatch):
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    for path in (tf2_checkpoint, tf2_checkpoint + '.index', os.path.dirname(tf2_checkpoint)):
        prefix = checkpoint_params.find_checkpoint(path, None)
        assert prefix.startswith(str(tmp_path / 'ssd300_converted_checkpoints'))
        names = tf.compat.v1.train.NewCheckpointReader(prefix).get_variable_to_shape_map()
        assert 'ssd300/fc6/weights' in names


def test_convert_command(tmp_path, tf2_checkpoint, capsys):
    output = str(tmp_path / 'out' / 'ssd300_voc')
    assert convert_original_ssd.main(['--input', os.path.dirname(tf2_checkpoint),
                                      '--output', output]) == 0
    printed = capsys.readouterr().out
    assert 'Converted 71 variables (original_tf2 layout' in printed
    assert 'ssd300/conv1_1/bias/Momentum' in printed
    assert tf.train.latest_checkpoint(str(tmp_path / 'out')) == output
    assert convert_original_ssd.main(['--input', output, '--output', output + '2']) == 2
    assert 'needs no conversion' in capsys.readouterr().err


# ----------------------------------------------------------------------------- the network


def _numpy_conv(x, kernel, bias, stride, pad_before, pad_after):
    """Conv of one HWC map in float64, explicit zero padding, no activation."""
    x = np.pad(x.astype(np.float64), ((pad_before, pad_after), (pad_before, pad_after), (0, 0)))
    kh, kw = kernel.shape[:2]
    out_h = (x.shape[0] - kh) // stride + 1
    out_w = (x.shape[1] - kw) // stride + 1
    out = np.zeros((out_h, out_w, kernel.shape[-1]))
    for i in range(out_h):
        for j in range(out_w):
            patch = x[i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[i, j] = np.tensordot(patch, kernel, axes=3)
    return out + bias


def _numpy_resize_bgr(image, size):
    """The original's eval input: TF1 bilinear resize, no corner alignment, no half-pixel
    centres (source index = i * in / out, upper neighbour clamped), minus the mean, BGR."""
    image = image.astype(np.float64)

    def axis(out, n):
        src = np.arange(out) * n / out
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n - 1), src - lo
    y0, y1, fy = axis(size, image.shape[0])
    x0, x1, fx = axis(size, image.shape[1])
    rows = image[y0] * (1 - fy)[:, None, None] + image[y1] * fy[:, None, None]
    out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return (out - np.array([123.68, 116.78, 103.94]))[..., ::-1]


def _numpy_original_anchors(layer):
    """The original's anchors of one SSD300 layer, [H, W, k, 4], re-derived from its formula:
    per cell [extra square, s_k square, then ratios], centre (i + 0.5) * step / 300."""
    size = [38, 19, 10, 5, 3, 1][layer]
    step = [8, 16, 32, 64, 100, 300][layer]
    scale = [0.1, 0.2, 0.375, 0.55, 0.725, 0.9][layer]
    extra = [0.1414, 0.2739, 0.4541, 0.6315, 0.8078, 0.9836][layer]
    ratios = [1., 2., .5] if K[layer] == 4 else [1., 2., 3., .5, 0.3333]
    hw = [(extra, extra)] + [(scale / math.sqrt(r), scale * math.sqrt(r)) for r in ratios]
    anchors = np.zeros((size, size, len(hw), 4))
    for y in range(size):
        for x in range(size):
            cy, cx = (y + 0.5) * step / 300., (x + 0.5) * step / 300.
            for t, (h, w) in enumerate(hw):
                anchors[y, x, t] = [cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2]
    return anchors


def test_network_from_original_checkpoint_matches_numpy(tmp_path, tf2_checkpoint,
                                                       original_values):
    """Loads a TF 2.x-layout original checkpoint through find_checkpoint (the eval/demo/export
    path), runs preprocess_for_eval + SSD300 on a fixed 173x241 image, and checks against NumPy:
    the resized input, conv9_2 (padding 0 before, 1 after), the conv9 heads' logits/offsets
    in the head reshape order, and their boxes decoded against the original's anchors."""
    values = original_values['tf2']
    image = np.random.RandomState(5).randint(0, 256, (173, 241, 3)).astype(np.uint8)
    spec = anchor_lib.SSD300_SPEC
    with tf.Graph().as_default():
        prefix = original_layout.as_project_checkpoint(tf2_checkpoint, str(tmp_path / 'c'))
        net_input = ssd_preprocessing.preprocess_for_eval(tf.constant(image))
        cls_logits, loc_preds, end_points = ssd_net.ssd300(net_input[tf.newaxis], NUM_CLASSES, K)
        boxes = anchor_manipulator.decode_boxes(
            loc_preds, anchor_lib.generate_anchors(spec), spec['prior_scaling'])
        saver = tf.compat.v1.train.Saver(tf.compat.v1.model_variables())  # as the Estimator
        with tf.compat.v1.Session() as session:
            saver.restore(session, prefix)
            out = session.run({
                'input': net_input, 'cls': cls_logits, 'loc': loc_preds, 'boxes': boxes,
                'conv9_1': end_points['ssd300/additional_layers/conv9/conv9_1'],
                'conv9_2': end_points['conv9']})

    # 1. The resize: TF1 bilinear without aligned corners or half-pixel centres.
    # (TF computes the sampling positions in float32: up to ~4e-3 on 0-255 values.)
    np.testing.assert_allclose(out['input'], _numpy_resize_bgr(image, 300), atol=1e-2)

    # 2. conv9_2 = ReLU(3x3 stride-2 conv of conv9_1), 'same' on 10x10: 0 before, 1 after.
    conv9_1 = out['conv9_1'][0]
    conv9_2 = np.maximum(_numpy_conv(conv9_1, values['ssd300/conv9_2/kernel'],
                                     values['ssd300/conv9_2/bias'], 2, 0, 1), 0.)
    scale = np.abs(conv9_2).max()
    assert scale > 0
    np.testing.assert_allclose(out['conv9_2'][0], conv9_2, atol=1e-4 * scale)
    caffe = np.maximum(_numpy_conv(conv9_1, values['ssd300/conv9_2/kernel'],
                                   values['ssd300/conv9_2/bias'], 2, 1, 1), 0.)
    assert np.abs(caffe - conv9_2).max() > 0.05 * scale        # the padding matters

    # 3. Heads on conv9 (source layer 3: cls_3 / loc_3), 3x3 'same', reshaped (y, x, type).
    start = 5776 + 2166 + 600
    cls = _numpy_conv(conv9_2, values['ssd300/multibox_head/cls_3/kernel'],
                      values['ssd300/multibox_head/cls_3/bias'], 1, 1, 1)    # [5, 5, 6 * 21]
    loc = _numpy_conv(conv9_2, values['ssd300/multibox_head/loc_3/kernel'],
                      values['ssd300/multibox_head/loc_3/bias'], 1, 1, 1)    # [5, 5, 6 * 4]
    cls = cls.reshape(5, 5, 6, NUM_CLASSES)
    loc = loc.reshape(5, 5, 6, 4)
    got_cls = out['cls'][0, start:start + 150].reshape(5, 5, 6, NUM_CLASSES)
    got_loc = out['loc'][0, start:start + 150].reshape(5, 5, 6, 4)
    np.testing.assert_allclose(got_cls, cls, atol=1e-4 * np.abs(cls).max())
    np.testing.assert_allclose(got_loc, loc, atol=1e-4 * np.abs(loc).max())
    assert np.abs(cls).max() > 0.5 and np.abs(loc).max() > 0.05

    # 4. Boxes: the original's decode against its anchors (extra square first).
    anchors = _numpy_original_anchors(3)
    acy, acx = (anchors[..., 0] + anchors[..., 2]) / 2, (anchors[..., 1] + anchors[..., 3]) / 2
    ah, aw = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    cy = loc[..., 0] * 0.1 * ah + acy
    cx = loc[..., 1] * 0.1 * aw + acx
    h = np.exp(loc[..., 2] * 0.2) * ah
    w = np.exp(loc[..., 3] * 0.2) * aw
    expected = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1)
    got_boxes = out['boxes'][0, start:start + 150].reshape(5, 5, 6, 4)
    np.testing.assert_allclose(got_boxes, expected, atol=2e-5)
    # With the old order (s_k square first) the first two types would swap sizes.
    assert np.abs(ah[..., 0] - ah[..., 1]).min() > 0.08


# ----------------------------------------------------------------------------- side by side

from side_by_side_original import DEFAULT_REFERENCE as REFERENCE  # noqa: E402


@pytest.mark.skipif(not os.path.isdir(REFERENCE),
                    reason='the original code is not on this machine (%s)' % REFERENCE)
@pytest.mark.slow
def test_same_detections_as_the_original_code_on_its_own_weights(tmp_path, monkeypatch):
    """The original network (run from a temporary copy, in its own process) with seeded weights
    on its demo1.jpg, through its own eval post-processing; then this project's eval path on its
    checkpoint: every detection agrees (class, score and box to 1e-4); measured max diffs
    3e-6 (score) and 8e-7 (box). See tests/side_by_side_original.py."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'side_by_side_original', os.path.join(os.path.dirname(__file__),
                                              'side_by_side_original.py'))
    side = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(side)
    image = str(tmp_path / 'demo1.jpg')
    import shutil
    shutil.copy(os.path.join(REFERENCE, 'demo', 'demo1.jpg'), image)
    checkpoint, original = side.run_original(REFERENCE, str(tmp_path), [image], seed=0)
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    _, project = side.run_project(os.path.dirname(checkpoint + '/x'), [image], 'class')
    assert len(original[0]) > 1000                   # a real workload for NMS and selection
    agree, score_diff, box_diff = side.compare(original[0], project[0], len(original[0]))
    assert agree == len(original[0]) == len(project[0])
    assert score_diff < 1e-5 and box_diff < 1e-5
