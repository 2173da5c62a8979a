"""VGG-16 -> reduced-fc converters: decimation by hand, full-size slim conversion, .pth mapping."""

import os

import numpy as np
import pytest
import tensorflow as tf

from net import backbones
from net import ssd_net
from utility.checkpoints import restore
from tools import convert_vgg_weights as cvw
from conftest import write_variables

SEED_EXCLUDES = 'ssd300/multibox_head, ssd300/additional_layers, ssd300/conv4_3_scale'
CONV_LAYERS = ['conv1/conv1_1', 'conv1/conv1_2', 'conv2/conv2_1', 'conv2/conv2_2',
               'conv3/conv3_1', 'conv3/conv3_2', 'conv3/conv3_3', 'conv4/conv4_1',
               'conv4/conv4_2', 'conv4/conv4_3', 'conv5/conv5_1', 'conv5/conv5_2',
               'conv5/conv5_3']


def test_decimate_by_hand():
    taps = np.arange(49).reshape(7, 7)
    np.testing.assert_array_equal(cvw.decimate(taps, (3, 3)),
                                  [[0, 3, 6], [21, 24, 27], [42, 45, 48]])
    fc7_like = np.arange(64).reshape(1, 1, 8, 8)  # value = 8 * input + output
    np.testing.assert_array_equal(cvw.decimate(fc7_like, (1, 1, 4, 4)),
                                  [[[[0, 4], [32, 36]]]])
    np.testing.assert_array_equal(cvw.decimate(np.arange(10), (4,)), [0, 4, 8])
    with pytest.raises(ValueError, match='one step per axis'):
        cvw.decimate(taps, (3,))


def test_reduce_fc_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r'fc6/weights has shape \[3, 3, 512, 1024\] but '
                                         r'\[7, 7, 512, 4096\] is expected'):
        cvw.reduce_fc6(np.zeros([3, 3, 512, 1024], np.float32), np.zeros([4096], np.float32))
    with pytest.raises(ValueError, match=r'fc7/biases has shape \[1024\]'):
        cvw.reduce_fc7(np.zeros([1, 1, 4096, 4096], np.float32), np.zeros([1024], np.float32))


@pytest.fixture(scope='module')
def slim_checkpoint(tmp_path_factory):
    """A TF-slim-layout vgg_16 checkpoint with the FULL shapes (fc6 7x7x512x4096, ~550 MB)."""
    rng = np.random.default_rng(11)
    tensors = {}
    in_channels = 3
    for layer in CONV_LAYERS:
        out_channels = {'1': 64, '2': 128, '3': 256, '4': 512, '5': 512}[layer[4]]
        tensors['vgg_16/%s/weights' % layer] = rng.standard_normal(
            [3, 3, in_channels, out_channels], dtype=np.float32)
        tensors['vgg_16/%s/biases' % layer] = rng.standard_normal([out_channels],
                                                                  dtype=np.float32)
        in_channels = out_channels
    tensors['vgg_16/fc6/weights'] = rng.standard_normal([7, 7, 512, 4096], dtype=np.float32)
    tensors['vgg_16/fc6/biases'] = rng.standard_normal([4096], dtype=np.float32)
    tensors['vgg_16/fc7/weights'] = rng.standard_normal([1, 1, 4096, 4096], dtype=np.float32)
    tensors['vgg_16/fc7/biases'] = rng.standard_normal([4096], dtype=np.float32)
    tensors['vgg_16/fc8/weights'] = rng.standard_normal([1, 1, 4096, 1000], dtype=np.float32)
    tensors['vgg_16/fc8/biases'] = rng.standard_normal([1000], dtype=np.float32)
    tensors['global_step'] = np.array(1000, np.int64)
    directory = tmp_path_factory.mktemp('slim')
    prefix = write_variables(str(directory / 'vgg_16.ckpt'), tensors)
    yield prefix, tensors
    for name in os.listdir(str(directory)):  # do not leave 550 MB in pytest's tmp dirs
        os.remove(str(directory / name))


def test_slim_conversion_restores_into_ssd300(slim_checkpoint, tmp_path, capsys):
    source_prefix, source = slim_checkpoint
    output = tmp_path / 'model' / 'vgg16_reducedfc'
    assert cvw.main(['--from_slim', source_prefix, '--output', str(output)]) == 0
    printed = capsys.readouterr().out
    assert 'vgg_16/fc6/weights' in printed and '[3, 3, 512, 1024]' in printed
    assert '30 tensors, 20483904 values' in printed
    assert sorted(os.listdir(str(tmp_path / 'model'))) == [
        'checkpoint', 'vgg16_reducedfc.data-00000-of-00001', 'vgg16_reducedfc.index']

    listing = cvw.list_checkpoint(str(tmp_path / 'model'))
    assert [(n, tuple(s)) for n, s, _ in listing] == sorted(backbones.VGG_REDUCED_FC_SHAPES)
    assert {d for _, _, d in listing} == {'float32'}

    with tf.Graph().as_default():
        ssd_net.ssd300(tf.compat.v1.placeholder(tf.float32, [None, 300, 300, 3]), 21,
                       [4, 6, 6, 6, 4, 4])
        variables = {v.op.name: v for v in tf.compat.v1.model_variables()}
        # The directory is what train_ssd.py gets by default (--checkpoint_path=./model).
        init_fn, report = restore.build_restore_fn(str(tmp_path / 'model'),
                                                   exclude_scopes=SEED_EXCLUDES)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            init_fn(None, session)
            values = session.run({n: variables[n] for n in report['restored']})
    assert len(report['restored']) == 30

    fc6, fc6_src = values['ssd300/fc6/weights'], source['vgg_16/fc6/weights']
    assert fc6[0, 0, 0, 0] == fc6_src[0, 0, 0, 0]
    assert fc6[1, 2, 10, 5] == fc6_src[3, 6, 10, 20]
    assert fc6[2, 1, 511, 1023] == fc6_src[6, 3, 511, 4092]
    np.testing.assert_array_equal(fc6[:, :, 7, 9], fc6_src[[0, 3, 6]][:, [0, 3, 6], 7, 36])
    assert values['ssd300/fc6/biases'][7] == source['vgg_16/fc6/biases'][28]
    fc7, fc7_src = values['ssd300/fc7/weights'], source['vgg_16/fc7/weights']
    assert fc7[0, 0, 3, 9] == fc7_src[0, 0, 12, 36]
    assert fc7[0, 0, 1023, 1] == fc7_src[0, 0, 4092, 4]
    assert values['ssd300/fc7/biases'][1023] == source['vgg_16/fc7/biases'][4092]
    # RGB-trained conv1_1 gets its input channels reversed (the model takes BGR).
    conv1_1, conv1_1_src = values['ssd300/conv1/conv1_1/weights'], \
        source['vgg_16/conv1/conv1_1/weights']
    for channel in range(3):
        np.testing.assert_array_equal(conv1_1[:, :, channel, :],
                                      conv1_1_src[:, :, 2 - channel, :])
    np.testing.assert_array_equal(values['ssd300/conv1/conv1_1/biases'],
                                  source['vgg_16/conv1/conv1_1/biases'])
    for layer in CONV_LAYERS[1:]:
        np.testing.assert_array_equal(values['ssd300/%s/weights' % layer],
                                      source['vgg_16/%s/weights' % layer])


def test_slim_keep_channel_order_and_errors(slim_checkpoint, tmp_path, capsys):
    source_prefix, source = slim_checkpoint
    converted = cvw.convert_slim_tensors(source, reverse_input_channels=False)
    np.testing.assert_array_equal(converted['vgg_16/conv1/conv1_1/weights'],
                                  source['vgg_16/conv1/conv1_1/weights'])
    assert list(converted) == [n for n, _ in backbones.VGG_REDUCED_FC_SHAPES]

    # A reduced-fc checkpoint given to --from_slim.
    reduced = cvw.write_checkpoint(converted, str(tmp_path / 'reduced' / 'vgg16_reducedfc'))
    with pytest.raises(ValueError, match=r'already reduced-fc \(fc6 \[3, 3, 512, 1024\]\); '
                                         r'no conversion is needed'):
        cvw.convert_from_slim(reduced, str(tmp_path / 'out'))
    # Wrong scope / not a VGG-16.
    with pytest.raises(ValueError, match='has no vgg16/fc6/weights.*--source_scope'):
        cvw.convert_from_slim(source_prefix, str(tmp_path / 'out'), source_scope='vgg16')
    incomplete = write_variables(str(tmp_path / 'inc' / 'x.ckpt'),
                           {'vgg_16/fc6/weights': np.zeros([1, 1, 1, 1], np.float32)})
    with pytest.raises(ValueError, match='lacks vgg_16/conv1/conv1_1/weights'):
        cvw.convert_from_slim(incomplete, str(tmp_path / 'out'))
    # Missing file via the command line: exit status 2 and a one-line reason.
    missing = str(tmp_path / 'nowhere' / 'vgg_16.ckpt')
    assert cvw.main(['--from_slim', missing, '--output', str(tmp_path / 'out')]) == 2
    error = capsys.readouterr().err
    assert error.startswith('error: --from_slim: %s is not a readable TF-slim checkpoint (No '
                            'checkpoint found at %s' % (missing, missing))
    assert 'vgg_16_2016_08_28.tar.gz' in error
    assert not os.path.exists(str(tmp_path / 'out'))


def _pytorch_state_dict(prefix='vgg.', seed=2):
    """Synthetic ssd.pytorch reduced-fc state dict (OIHW), plus unrelated SSD keys."""
    rng = np.random.default_rng(seed)
    state = {}
    for (index, layer) in cvw.PYTORCH_LAYER_INDICES.items():
        hwio = dict(backbones.VGG_REDUCED_FC_SHAPES)['vgg_16/%s/weights' % layer]
        oihw = (hwio[3], hwio[2], hwio[0], hwio[1])
        state['%s%d.weight' % (prefix, index)] = rng.standard_normal(oihw, dtype=np.float32)
        state['%s%d.bias' % (prefix, index)] = rng.standard_normal([hwio[3]], dtype=np.float32)
    state['extras.0.weight'] = np.zeros([256, 1024, 1, 1], np.float32)
    state['L2Norm.weight'] = np.full([512], 20., np.float32)
    return state


@pytest.mark.parametrize('prefix', ['vgg.', '', 'features.'])
def test_pytorch_state_dict_mapping(prefix):
    state = _pytorch_state_dict(prefix)
    out = cvw.convert_pytorch_state_dict(state)
    assert [(n, a.shape) for n, a in out.items()] == list(backbones.VGG_REDUCED_FC_SHAPES)
    # OIHW -> HWIO: out[h, w, i, o] == in[o, i, h, w]; no channel reversal for Caffe weights.
    fc6 = state[prefix + '31.weight']
    assert out['vgg_16/fc6/weights'][2, 0, 100, 700] == fc6[700, 100, 2, 0]
    fc7 = state[prefix + '33.weight']
    assert out['vgg_16/fc7/weights'][0, 0, 5, 1000] == fc7[1000, 5, 0, 0]
    conv1_1 = state[prefix + '0.weight']  # [64, 3, 3, 3]
    np.testing.assert_array_equal(out['vgg_16/conv1/conv1_1/weights'][:, :, 0, 17],
                                  conv1_1[17, 0])
    conv4_3 = state[prefix + '21.weight']
    assert out['vgg_16/conv4/conv4_3/weights'][1, 2, 3, 4] == conv4_3[4, 3, 1, 2]
    np.testing.assert_array_equal(out['vgg_16/conv5/conv5_3/biases'], state[prefix + '28.bias'])


def test_pytorch_wrong_state_dicts():
    state = _pytorch_state_dict()
    del state['vgg.33.weight']
    with pytest.raises(ValueError, match='not a reduced-fc VGG-16.*found prefixes'):
        cvw.convert_pytorch_state_dict(state)
    state = _pytorch_state_dict()
    state['vgg.31.weight'] = np.zeros([4096, 512, 7, 7], np.float32)  # a full fc6
    with pytest.raises(ValueError, match=r'vgg_16/fc6/weights has shape \[7, 7, 512, 4096\]'):
        cvw.convert_pytorch_state_dict(state)


def test_pytorch_missing_file_and_missing_torch(tmp_path):
    with pytest.raises(ValueError, match='does not exist.*vgg16_reducedfc.pth'):
        cvw.load_pytorch_state_dict(str(tmp_path / 'missing.pth'))
    try:
        import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        dummy = tmp_path / 'weights.pth'
        dummy.write_bytes(b'x')
        with pytest.raises(ValueError, match='--from_pytorch needs PyTorch'):
            cvw.load_pytorch_state_dict(str(dummy))


def test_pytorch_file_conversion(tmp_path):
    torch = pytest.importorskip(
        'torch', reason='PyTorch is not installed (only --from_pytorch needs it)')
    state = _pytorch_state_dict('')
    pth = str(tmp_path / 'vgg16_reducedfc.pth')
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, pth)
    assert cvw.main(['--from_pytorch', pth, '--output', str(tmp_path / 'model') + os.sep]) == 0
    reader = tf.compat.v1.train.NewCheckpointReader(str(tmp_path / 'model' / 'vgg16_reducedfc'))
    assert reader.get_tensor('vgg_16/fc7/weights')[0, 0, 5, 9] == state['33.weight'][9, 5, 0, 0]
    (tmp_path / 'bad.pth').write_bytes(b'not a pickle')
    with pytest.raises(ValueError, match='Cannot read .*bad.pth as a PyTorch file'):
        cvw.load_pytorch_state_dict(str(tmp_path / 'bad.pth'))


def test_list_command(tmp_path, capsys):
    tensors = {'vgg_16/conv1/conv1_1/biases': np.zeros([64], np.float32),
               'vgg_16/fc7/weights': np.zeros([1, 1, 2, 3], np.float32)}
    prefix = cvw.write_checkpoint(tensors, str(tmp_path / 'small'))
    assert cvw.main(['--list', prefix]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ['vgg_16/conv1/conv1_1/biases', '[64]', 'float32']
    assert lines[1].split() == ['vgg_16/fc7/weights', '[1,', '1,', '2,', '3]', 'float32']
    assert lines[2] == '2 tensors, 70 values'
    assert cvw.main(['--list', str(tmp_path / 'nothing')]) == 2
    assert 'No checkpoint found' in capsys.readouterr().err
