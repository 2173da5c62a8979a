"""SSDLite-MobileNetV2 (--backbone mobilenet_v2) and its ImageNet initialisation from a TFLite
file (tools/convert_backbone_weights.py).

The converter is checked on stand-in TFLite files built here: TF-slim's MobilenetV2 at a
32x32 input (net.backbones.mobilenet_v2_classifier, random batch-norm statistics so that the
folding matters), converted to a float and to an int8 (per-channel) TFLite file; never the
real ImageNet file.
"""
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import AVAILABLE_DRIVERS, TRAIN_FAST_FLAGS, assert_finite_losses, run_script
from net import anchors as anchor_lib
from net import backbones, ssd_net
from tools import convert_backbone_weights as converter

STANDIN_SIZE = 32
STANDIN_CLASSES = 5
SCOPE = backbones.MOBILENET_V2_SCOPE


# ----------------------------------------------------------------------------- the network


def test_six_maps_19_10_5_3_2_1_with_slim_names_and_ssdlite_heads():
    from utility import ssd_model
    params = ssd_model.make_params(backbone='mobilenet_v2', num_classes=3)
    assert (params['head'], params['anchor_preset']) == ('ssdlite', 'ssdlite')
    assert (params['channel_order'], params['mean_rgb']) == ('rgb', [127.5] * 3)
    assert params['checkpoint_model_scope'] == 'MobilenetV2'
    spec = params['anchor_spec']
    assert spec['feature_shapes'] == ssd_net.feature_shapes('mobilenet_v2', 300) == \
        [19, 10, 5, 3, 2, 1]
    assert spec['anchor_scales'] == [0.2, 0.35, 0.5, 0.65, 0.8, 0.95]
    k = anchor_lib.anchors_per_location(spec)
    with tf.Graph().as_default():
        cls_logits, loc_preds, end_points = ssd_net.ssd300(
            tf.zeros([2, 300, 300, 3]), 3, k, is_training=True, backbone='mobilenet_v2')
        shapes = [f.shape.as_list() for f in end_points['feature_maps']]
        assert shapes == [[2, 19, 19, 576], [2, 10, 10, 1280], [2, 5, 5, 512],
                          [2, 3, 3, 256], [2, 2, 2, 256], [2, 1, 1, 128]]
        assert end_points['expanded_conv_13/expand'] is end_points['feature_maps'][0]
        num = anchor_lib.num_anchors(spec)
        assert cls_logits.shape.as_list() == [2, num, 3] and loc_preds.shape.as_list() == \
            [2, num, 4]
        variables = {v.op.name: tuple(v.shape.as_list())
                     for v in tf.compat.v1.global_variables()}
        # every update op of training batch norm is there: backbone, extras and heads
        updates = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
    backbone = {n: s for n, s in variables.items()
                if not n.startswith(('ssd300/multibox_head', 'ssd300/additional_layers'))}
    # Exactly TF-slim's MobilenetV2 names and shapes with the scope swapped: restoring is a
    # prefix remap.
    assert backbone == {n.replace(SCOPE, 'ssd300', 1): s
                        for n, s in backbones.mobilenet_v2_variable_shapes().items()}
    assert len(backbone) == 52 * 5
    assert variables['ssd300/expanded_conv_13/expand/weights'] == (1, 1, 96, 576)
    assert variables['ssd300/expanded_conv_13/depthwise/depthwise_weights'] == (3, 3, 576, 1)
    assert 'ssd300/expanded_conv/expand/weights' not in variables  # expansion 1
    # SSDLite extras 1x1 -> 3x3 depthwise/2 -> 1x1 and separable heads
    assert variables['ssd300/additional_layers/conv11/conv11_2_depthwise/depthwise_weights'] \
        == (3, 3, 64, 1)
    assert variables['ssd300/additional_layers/conv11/conv11_2/weights'] == (1, 1, 64, 128)
    assert variables['ssd300/multibox_head/cls_0_depthwise/depthwise_weights'] == \
        (3, 3, 576, 1)
    assert variables['ssd300/multibox_head/cls_0/weights'] == (1, 1, 576, k[0] * 3)
    assert variables['ssd300/multibox_head/loc_5/biases'] == (k[5] * 4,)
    bn_layers = {n.rsplit('/BatchNorm/', 1)[0] for n in variables if '/BatchNorm/moving_mean' in n}
    assert len(updates) == 2 * len(bn_layers)
    # backbones.identify_backbone reads it back from the names (params.json repair, eval)
    relative = [n[len('ssd300/'):] for n in variables]
    assert backbones.identify_backbone(relative, ssd_net.SSD_LAYER_SCOPES) == 'mobilenet_v2'


def test_conv_head_and_relu6_and_input_scale():
    k = [4, 6, 6, 6, 4, 4]
    with tf.Graph().as_default():
        _, _, end_points = ssd_net.ssd300(tf.zeros([1, 300, 300, 3]), 3, k,
                                          backbone='mobilenet_v2', head='conv')
        variables = {v.op.name: v.shape.as_list() for v in tf.compat.v1.global_variables()}
        ops = [op.type for op in tf.compat.v1.get_default_graph().get_operations()]
    assert variables['ssd300/multibox_head/cls_0/weights'] == [3, 3, 576, 12]
    assert not [n for n in variables if n.startswith('ssd300/multibox_head/') and
                'depthwise' in n]
    assert ops.count('Relu6') == 35 + 12  # backbone (17 depthwise + 18 expand/Conv), extras
    assert 'Relu' not in ops
    with pytest.raises(ValueError, match="Unknown head 'dense'"):
        ssd_net.resolve_head('dense')
    # the pipeline's RGB - 127.5 becomes MobileNetV2's [-1, 1] inside the network
    with tf.Graph().as_default():
        image = tf.constant(np.full([1, 32, 32, 3], 127.5, np.float32))
        _, points = backbones.mobilenet_v2_base(image)
        scaled = tf.compat.v1.get_default_graph().get_tensor_by_name('input_scale:0')
        with tf.compat.v1.Session() as session:
            assert session.run(scaled).max() == pytest.approx(1.0)


# ----------------------------------------------------------------------------- dequantization


def test_dequantize_matches_worked_numbers():
    # uint8 per tensor: (q - 128) * 0.5
    out = converter.dequantize(np.array([0, 128, 255], np.uint8),
                               {'scales': np.array([0.5]), 'zero_points': np.array([128]),
                                'quantized_dimension': 0})
    np.testing.assert_array_equal(out, [-64.0, 0.0, 63.5])
    # int8 per channel along axis 0: row 0 scale 0.1 zero 0, row 1 scale 0.2 zero 1
    q = np.array([[-2, 3], [4, -5]], np.int8)
    out = converter.dequantize(q, {'scales': np.array([0.1, 0.2]),
                                   'zero_points': np.array([0, 1]), 'quantized_dimension': 0})
    np.testing.assert_allclose(out, [[-0.2, 0.3], [0.6, -1.2]], rtol=1e-6)
    # ... along axis 1: column 0 scale 0.1 zero 0, column 1 scale 0.2 zero 1
    out = converter.dequantize(q, {'scales': np.array([0.1, 0.2]),
                                   'zero_points': np.array([0, 1]), 'quantized_dimension': 1})
    np.testing.assert_allclose(out, [[-0.2, 0.4], [0.4, -1.2]], rtol=1e-6)
    # int32 bias, zero point 0
    out = converter.dequantize(np.array([1000, -7], np.int32),
                               {'scales': np.array([0.001]), 'zero_points': np.array([0])})
    np.testing.assert_allclose(out, [1.0, -0.007], rtol=1e-6)
    # float tensors are their values
    out = converter.dequantize(np.array([1.5, -2.0], np.float32),
                               {'scales': np.array([]), 'zero_points': np.array([])})
    np.testing.assert_array_equal(out, [1.5, -2.0])


# ----------------------------------------------------------------------------- stand-in files


def _standin_graph(seed=3):
    """The slim-named classifier at 32x32 with random batch-norm statistics and gammas,
    taking [-1, 1] input as the published TFLite files do (with the backbone's x 1/127.5 in
    the graph, the TFLite converter folds it into the first convolution's weights)."""
    rng = np.random.RandomState(seed)
    images = tf.compat.v1.placeholder(tf.float32, [1, STANDIN_SIZE, STANDIN_SIZE, 3])
    with tf.compat.v1.variable_scope(SCOPE):
        logits = backbones.mobilenet_v2_classifier(images, STANDIN_CLASSES, input_scale=None)
    assigns = []
    for variable in tf.compat.v1.global_variables():
        shape = variable.shape.as_list()
        if variable.op.name.endswith(('moving_variance', 'gamma')):
            value = rng.uniform(0.5, 1.5, shape)
        elif variable.op.name.endswith(('moving_mean', 'beta', 'biases')):
            value = rng.uniform(-0.3, 0.3, shape)
        else:
            value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[:-1] if 'depthwise' not in
                                                       variable.op.name else shape[:2])),
                               shape)
        assigns.append(tf.compat.v1.assign(variable, value.astype(np.float32)))
    return images, logits, assigns


@pytest.fixture(scope='module')
def standin(tmp_path_factory):
    """{'float': path, 'int8': path, 'inputs': [N, 32, 32, 3] in [-1, 1], 'logits': the
    TF model's logits on them}."""
    folder = tmp_path_factory.mktemp('standin')
    rng = np.random.RandomState(0)
    inputs = rng.uniform(-1, 1, [4, STANDIN_SIZE, STANDIN_SIZE, 3]).astype(np.float32)
    out = {'inputs': inputs}
    with tf.Graph().as_default():
        images, logits, assigns = _standin_graph()
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            session.run(assigns)
            out['logits'] = np.concatenate([session.run(logits, {images: x[None]})
                                            for x in inputs])
            for kind in ('float', 'int8'):
                convert = tf.compat.v1.lite.TFLiteConverter.from_session(session, [images],
                                                                         [logits])
                if kind == 'int8':
                    convert.optimizations = [tf.lite.Optimize.DEFAULT]
                    convert.representative_dataset = lambda: ([x[None]] for x in inputs)
                    convert.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                path = str(folder / ('standin_%s.tflite' % kind))
                with open(path, 'wb') as f:
                    f.write(convert.convert())
                out[kind] = path
    return out


def _convert(tflite, output, *extra):
    return converter.main(['--input', tflite, '--output', str(output),
                           '--input_size', str(STANDIN_SIZE)] + list(extra))


def _classifier_logits(checkpoint, inputs):
    """The converted classifier (the backbone's input convention: RGB - 127.5) on `inputs` in
    [-1, 1]."""
    inputs = inputs * 127.5
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, STANDIN_SIZE, STANDIN_SIZE, 3])
        with tf.compat.v1.variable_scope(SCOPE):
            logits = backbones.mobilenet_v2_classifier(images, STANDIN_CLASSES)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session() as session:
            saver.restore(session, checkpoint)
            return session.run(logits, {images: inputs})


def test_float_standin_converts_to_the_same_network(standin, tmp_path, capsys):
    assert _convert(standin['float'], tmp_path / 'mnv2.ckpt') == 0
    out = capsys.readouterr().out
    assert 'Wrote %s: 262 tensors' % (tmp_path / 'mnv2.ckpt') in out
    assert 'with BatchNorm set to the identity (gamma 1, beta = bias, moving mean 0' in out
    reader = tf.train.load_checkpoint(str(tmp_path / 'mnv2.ckpt'))
    shapes = reader.get_variable_to_shape_map()
    expected = backbones.mobilenet_v2_variable_shapes()
    assert {n: tuple(s) for n, s in shapes.items() if '/Logits/' not in n} == expected
    np.testing.assert_array_equal(reader.get_tensor(SCOPE + '/Conv_1/BatchNorm/gamma'), 1.0)
    np.testing.assert_allclose(reader.get_tensor(SCOPE + '/Conv_1/BatchNorm/moving_variance'),
                               1.0 - backbones.MOBILENET_BATCH_NORM_EPSILON)
    # The folded weights + identity batch norm compute what the unfolded network computed.
    ours = _classifier_logits(str(tmp_path / 'mnv2.ckpt'), standin['inputs'])
    scale = np.abs(standin['logits']).max()
    np.testing.assert_allclose(ours / scale, standin['logits'] / scale, atol=1e-3)


def _first_and_last_filters(tflite):
    """Our own reading of the file: the first CONV_2D (MobilenetV2/Conv) and the last one
    before the classifier (Conv_1): (q, scales, zero points, bias q, bias scales) each."""
    interpreter = converter.load_interpreter(tflite)  # LiteRT, or tf.lite where it is absent
    convs = [op for op in interpreter._get_ops_details() if op['op_name'] == 'CONV_2D']
    details = {t['index']: t for t in interpreter.get_tensor_details()}
    result = []
    for op in (convs[0], convs[-2]):
        weights, bias = details[op['inputs'][1]], details[op['inputs'][2]]
        result.append((interpreter.get_tensor(weights['index']),
                       weights['quantization_parameters'],
                       interpreter.get_tensor(bias['index']), bias['quantization_parameters']))
    return result


def test_restored_backbone_equals_the_int8_files_dequantized_weights(standin, tmp_path):
    from utility.checkpoints import restore
    assert _convert(standin['int8'], tmp_path / 'int8.ckpt') == 0
    with tf.Graph().as_default():
        ssd_net.ssd300(tf.zeros([1, 300, 300, 3]), 3, [4, 6, 6, 6, 4, 4],
                       backbone='mobilenet_v2')
        init_fn, report = restore.build_restore_fn(
            str(tmp_path / 'int8.ckpt'), checkpoint_model_scope=SCOPE,
            exclude_scopes=ssd_net.default_exclude_scopes('mobilenet_v2'))
        variables = {v.op.name: v for v in tf.compat.v1.model_variables()}
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            init_fn(tf.compat.v1.train.Scaffold(init_fn=init_fn), session)
            values = session.run(variables)
    assert len(report['restored']) == 260 and report['missing'] == []
    first, last = _first_and_last_filters(standin['int8'])
    for (q, quant, bias_q, bias_quant), layer in ((first, 'Conv'), (last, 'Conv_1')):
        assert len(quant['scales']) == q.shape[0] > 1  # per output channel, axis 0
        assert q.dtype == np.int8 and bias_q.dtype == np.int32
        scales = quant['scales'].reshape(-1, 1, 1, 1)
        zero_points = quant['zero_points'].reshape(-1, 1, 1, 1)
        kernel = ((q.astype(np.float64) - zero_points) * scales).transpose(1, 2, 3, 0)
        bias = bias_q * bias_quant['scales']
        np.testing.assert_allclose(values['ssd300/%s/weights' % layer], kernel, rtol=1e-6)
        np.testing.assert_allclose(values['ssd300/%s/BatchNorm/beta' % layer], bias,
                                   rtol=1e-6)
        np.testing.assert_array_equal(values['ssd300/%s/BatchNorm/gamma' % layer], 1.0)
        np.testing.assert_array_equal(values['ssd300/%s/BatchNorm/moving_mean' % layer], 0.0)
    # and the int8 file's network, run in float with its weights, still classifies as the
    # float one did
    ours = _classifier_logits(str(tmp_path / 'int8.ckpt'), standin['inputs'])
    assert np.corrcoef(ours.ravel(), standin['logits'].ravel())[0, 1] > 0.9


def _tiny_tflite(path, filters):
    """A one-convolution TFLite file (3x3/2 `filters` + bias, ReLU6) at 32x32."""
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, STANDIN_SIZE, STANDIN_SIZE, 3])
        kernel = tf.constant(np.ones([3, 3, 3, filters], np.float32))
        out = tf.nn.relu6(tf.nn.bias_add(
            tf.nn.conv2d(images, kernel, 2, 'SAME'), tf.constant(np.ones(filters, np.float32))))
        with tf.compat.v1.Session() as session:
            data = tf.compat.v1.lite.TFLiteConverter.from_session(
                session, [images], [out]).convert()
    with open(path, 'wb') as f:
        f.write(data)
    return path


@pytest.mark.parametrize('case', ['garbage', 'truncated', 'missing', 'input_size',
                                  'width_multiplier', 'one_layer'])
def test_bad_input_is_one_line_and_exit_2(standin, tmp_path, capsys, case):
    path = str(tmp_path / 'bad.tflite')
    extra = []
    if case == 'garbage':
        with open(path, 'wb') as f:
            f.write(np.random.RandomState(1).bytes(5000))
        expect = 'is not a readable TFLite file'
    elif case == 'truncated':
        with open(standin['float'], 'rb') as f:
            data = f.read()
        with open(path, 'wb') as f:
            f.write(data[:len(data) // 2])
        expect = 'is not a readable TFLite file'
    elif case == 'missing':
        expect = 'does not exist'
    elif case == 'input_size':
        path, extra = standin['float'], ['--input_size', '224']
        expect = 'takes 32x32 images, not 224x224'
    elif case == 'width_multiplier':  # MobileNetV2 0.75's stem has 24 filters
        _tiny_tflite(path, 24)
        expect = 'Conv has kernel [3, 3, 3, 24] and bias [24], MobileNetV2 1.0 has [3, 3, 3, 32]'
    else:
        _tiny_tflite(path, 32)
        expect = 'ends after 1 convolutions; MobileNetV2 has 52'
    output = tmp_path / 'out' / 'x.ckpt'
    assert converter.main(['--input', path, '--output', str(output)] +
                          (extra or ['--input_size', str(STANDIN_SIZE)])) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1, err
    assert expect in err, err
    assert not os.path.exists(output.parent)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope='module')
def imagenet_standin_checkpoint(standin, tmp_path_factory):
    """The int8 stand-in converted: a MobileNetV2 checkpoint like the ImageNet one."""
    prefix = tmp_path_factory.mktemp('mnv2_ckpt') / 'mobilenet_v2_imagenet.ckpt'
    assert _convert(standin['int8'], prefix) == 0
    return str(prefix)


def _train(tfrecord_dir, model_dir, checkpoint, driver):
    flags = [f for f in TRAIN_FAST_FLAGS if not f.startswith(('--checkpoint_path',
                                                              '--backbone'))]
    return run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                       '--max_number_of_steps=2', '--backbone=mobilenet_v2',
                       '--checkpoint_path=' + checkpoint, '--driver=' + driver] + flags,
                      timeout=900)


@pytest.fixture(scope='module')
def mobilenet_model_dir(tfrecord_dir, imagenet_standin_checkpoint, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp('mnv2_model'))
    proc = _train(tfrecord_dir, model_dir, imagenet_standin_checkpoint, 'session')
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return model_dir, proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize('driver', AVAILABLE_DRIVERS)
def test_two_steps_from_the_converted_weights(driver, mobilenet_model_dir, tfrecord_dir,
                                              imagenet_standin_checkpoint, tmp_path):
    import json
    if driver == 'session':
        model_dir, out = mobilenet_model_dir
    else:
        model_dir = str(tmp_path / 'model')
        proc = _train(tfrecord_dir, model_dir, imagenet_standin_checkpoint, driver)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
    assert_finite_losses(out, steps=range(1, 3))
    assert 'Initializing the backbone from %s' % imagenet_standin_checkpoint in out
    with open(os.path.join(model_dir, 'params.json')) as f:
        params = json.load(f)
    assert (params['backbone'], params['head'], params['anchor_preset']) == \
        ('mobilenet_v2', 'ssdlite', 'ssdlite')
    assert params['checkpoint_model_scope'] == 'MobilenetV2'
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
    assert reader.get_tensor('global_step') == 2
    # the stand-in's weights were restored (two steps at the fast flags' rate move them little)
    source = tf.train.load_checkpoint(imagenet_standin_checkpoint)
    np.testing.assert_allclose(reader.get_tensor('ssd300/expanded_conv_13/expand/weights'),
                               source.get_tensor(SCOPE + '/expanded_conv_13/expand/weights'),
                               atol=0.05)
    assert not np.allclose(reader.get_tensor('ssd300/expanded_conv_13/expand/weights'),
                           reader.get_tensor('ssd300/expanded_conv_12/expand/weights')[:, :, :,
                                                                                         :576])


@pytest.mark.slow
def test_eval_savedmodel_and_int8_tflite(mobilenet_model_dir, tfrecord_dir, tmp_path):
    model_dir, _ = mobilenet_model_dir
    proc = run_script(['eval_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                       '--output_dir=' + str(tmp_path / 'eval'), '--num_readers=2',
                       '--batch_size=2'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'Backbone mobilenet_v2 (from the params.json' in proc.stdout
    assert 'mAP VOC07 11-point:' in proc.stdout

    proc = run_script(['export_ssd.py', '--model_dir=' + model_dir,
                       '--export_dir=' + str(tmp_path / 'saved')])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exported = proc.stdout.strip().splitlines()[-1].split('SavedModel written to ')[1]
    image = np.random.RandomState(0).randint(0, 256, [200, 240, 3]).astype(np.uint8)
    encoded = tf.io.encode_jpeg(image).numpy()
    served = tf.saved_model.load(exported).signatures['serving_default'](
        encoded_image=tf.constant([encoded]))
    assert served['boxes'].shape == (1, 200, 4)

    export_dir = tmp_path / 'int8'
    proc = run_script(['export_ssd.py', '--model_dir=' + model_dir,
                       '--export_dir=' + str(export_dir), '--format=tflite', '--quantize=int8',
                       '--calibration_data=' + tfrecord_dir, '--calibration_images=2'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    model = str(export_dir / 'model_int8.tflite')
    assert os.path.getsize(model) < 6e6
    proc = run_script(['eval_ssd.py', '--model=' + model, '--data_dir=' + tfrecord_dir,
                       '--output_dir=' + str(tmp_path / 'eval_int8'), '--batch_size=2',
                       '--num_threads=1'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'mAP VOC07 11-point' in proc.stdout
