"""Restoring the pretrained reduced-fc backbone (utility/checkpoints/restore.py): name remapping,
what is restored and what is listed."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tf_slim as slim

from conftest import write_variables
from net import backbones
from net import ssd_net
from utility.checkpoints import locate, restore

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED_EXCLUDES = 'ssd300/multibox_head, ssd300/additional_layers, ssd300/conv4_3_scale'
V1 = tf.compat.v1.train.SaverDef.V1


@pytest.fixture(scope='module')
def backbone_values():
    rng = np.random.default_rng(7)
    return {name: rng.standard_normal(shape, dtype=np.float32)
            for name, shape in backbones.VGG_REDUCED_FC_SHAPES}


@pytest.fixture(scope='module')
def backbone_dir(tmp_path_factory, backbone_values):
    """Directory with 'checkpoint' + V2 'vgg16_reducedfc.*' holding the full public backbone."""
    directory = tmp_path_factory.mktemp('model')
    write_variables(str(directory / 'vgg16_reducedfc'), backbone_values)
    assert (directory / 'checkpoint').exists()
    return directory


def _small_model():
    """ssd300/conv1/conv1_1 (3x3x3x64) + ssd300/multibox_head/loc_0 (3x3x64x16)."""
    images = tf.zeros([1, 8, 8, 3])
    with tf.compat.v1.variable_scope('ssd300'):
        net = slim.conv2d(images, 64, [3, 3], scope='conv1/conv1_1')
        slim.conv2d(net, 16, [3, 3], scope='multibox_head/loc_0')
    return {v.op.name: v for v in tf.compat.v1.global_variables()}


def _restore_and_read(init_fn, variables):
    with tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        init_fn(None, session)
        return session.run(variables)


def test_full_backbone_restores_into_ssd300(backbone_dir, backbone_values):
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 300, 300, 3])
        ssd_net.ssd300(images, 21, [4, 6, 6, 6, 4, 4])
        # Optimizer slots and the global step are global variables that must be ignored.
        tf.compat.v1.train.get_or_create_global_step()
        variables = {v.op.name: v for v in tf.compat.v1.model_variables()}
        loss = tf.add_n([tf.reduce_sum(v) for v in variables.values()])
        tf.compat.v1.train.MomentumOptimizer(0.1, 0.9).minimize(loss)
        init_fn, report = restore.build_restore_fn(
            str(backbone_dir), exclude_scopes=SEED_EXCLUDES)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            scale = session.run(variables['ssd300/conv4_3_scale/weights'])
            head_before = session.run(variables['ssd300/multibox_head/cls_0/weights'])
            init_fn(tf.compat.v1.train.Scaffold(init_fn=init_fn), session)
            values = session.run(variables)

    backbone = sorted(n.replace('vgg_16/', 'ssd300/', 1)
                      for n, _ in backbones.VGG_REDUCED_FC_SHAPES)
    assert report['checkpoint'] == str(backbone_dir / 'vgg16_reducedfc')
    assert report['restored'] == backbone
    assert report['missing'] == []
    assert report['not_restored'] == report['excluded'] == sorted(set(variables) - set(backbone))
    assert len(report['not_restored']) == 41
    assert report['name_map']['ssd300/fc6/weights'] == 'vgg_16/fc6/weights'
    for name, expected in backbone_values.items():
        np.testing.assert_array_equal(values[name.replace('vgg_16/', 'ssd300/', 1)], expected)
    # Not restored: keep their initial values.
    np.testing.assert_array_equal(values['ssd300/conv4_3_scale/weights'], scale)
    np.testing.assert_array_equal(values['ssd300/multibox_head/cls_0/weights'], head_before)


def test_missing_new_layers_error_or_listed_with_ignore_missing_vars(backbone_dir):
    with tf.Graph().as_default():
        ssd_net.ssd300(tf.zeros([1, 300, 300, 3]), 21, [4, 6, 6, 6, 4, 4])
        with pytest.raises(ValueError) as error:
            restore.build_restore_fn(str(backbone_dir))
        message = str(error.value)
        assert '41 model variables are not in checkpoint' in message
        assert 'ssd300/conv4_3_scale/weights' in message
        assert '--checkpoint_exclude_scopes' in message and '--ignore_missing_vars' in message

        _, report = restore.build_restore_fn(str(backbone_dir),
                                             ignore_missing_vars=True)
    assert len(report['restored']) == 30
    assert len(report['missing']) == 41 and report['excluded'] == []
    assert report['not_restored'] == report['missing']
    assert 'ssd300/additional_layers/conv8/conv8_2/weights' in report['missing']


def test_restore_logs_counts_and_every_unrestored_variable(backbone_dir, monkeypatch):
    messages = []
    monkeypatch.setattr(tf.compat.v1.logging, 'info',
                        lambda msg, *args: messages.append(msg % args if args else msg))
    with tf.Graph().as_default():
        _small_model()
        init_fn, _ = restore.build_restore_fn(str(backbone_dir),
                                              exclude_scopes=['ssd300/multibox_head'])
        _restore_and_read(init_fn, [])
    text = '\n'.join(messages)
    assert 'Restoring 2 of 4 model variables' in text
    assert 'ssd300/multibox_head/loc_0/weights (excluded)' in text
    assert 'ssd300/multibox_head/loc_0/biases (excluded)' in text
    assert 'Restored 2 variables' in text


def test_directory_without_checkpoint_file_and_prefix_and_index_file(tmp_path, backbone_values):
    tensors = {k: v for k, v in backbone_values.items() if 'conv1_1' in k}
    prefix = write_variables(str(tmp_path / 'weights' / 'vgg16.ckpt'), tensors)
    os.remove(str(tmp_path / 'weights' / 'checkpoint'))
    assert locate.resolve_checkpoint(str(tmp_path / 'weights')) == prefix
    assert locate.resolve_checkpoint(prefix) == prefix
    assert locate.resolve_checkpoint(prefix + '.index') == prefix
    with tf.Graph().as_default():
        variables = _small_model()
        init_fn, report = restore.build_restore_fn(
            str(tmp_path / 'weights'), exclude_scopes='ssd300/multibox_head')
        values = _restore_and_read(init_fn, variables)
    assert report['restored'] == ['ssd300/conv1/conv1_1/biases', 'ssd300/conv1/conv1_1/weights']
    np.testing.assert_array_equal(values['ssd300/conv1/conv1_1/weights'],
                                  tensors['vgg_16/conv1/conv1_1/weights'])


def test_v1_checkpoint_restores(tmp_path, backbone_values):
    tensors = {k: v for k, v in backbone_values.items() if 'conv1_1' in k}
    prefix = write_variables(str(tmp_path / 'v1' / 'vgg_16.ckpt'), tensors, version=V1)
    assert os.path.isfile(prefix) and not os.path.exists(prefix + '.index')
    os.remove(str(tmp_path / 'v1' / 'checkpoint'))
    assert locate.resolve_checkpoint(str(tmp_path / 'v1')) == prefix
    assert locate.resolve_checkpoint(prefix) == prefix
    with tf.Graph().as_default():
        variables = _small_model()
        init_fn, report = restore.build_restore_fn(prefix, ignore_missing_vars=True)
        values = _restore_and_read(init_fn, variables)
    assert report['missing'] == ['ssd300/multibox_head/loc_0/biases',
                                 'ssd300/multibox_head/loc_0/weights']
    np.testing.assert_array_equal(values['ssd300/conv1/conv1_1/weights'],
                                  tensors['vgg_16/conv1/conv1_1/weights'])
    np.testing.assert_array_equal(values['ssd300/conv1/conv1_1/biases'],
                                  tensors['vgg_16/conv1/conv1_1/biases'])


def test_kernel_bias_names_and_other_scope(tmp_path):
    rng = np.random.default_rng(3)
    kernel = rng.standard_normal([3, 3, 3, 64], dtype=np.float32)
    bias = rng.standard_normal([64], dtype=np.float32)
    prefix = write_variables(str(tmp_path / 'k' / 'model'),
                             {'vgg16/conv1/conv1_1/kernel': kernel,
                              'vgg16/conv1/conv1_1/bias': bias})
    with tf.Graph().as_default():
        variables = _small_model()
        init_fn, report = restore.build_restore_fn(
            prefix, checkpoint_model_scope='vgg16', exclude_scopes=['ssd300/multibox_head/'])
        values = _restore_and_read(init_fn, variables)
    assert report['name_map'] == {'ssd300/conv1/conv1_1/weights': 'vgg16/conv1/conv1_1/kernel',
                                  'ssd300/conv1/conv1_1/biases': 'vgg16/conv1/conv1_1/bias'}
    np.testing.assert_array_equal(values['ssd300/conv1/conv1_1/weights'], kernel)
    np.testing.assert_array_equal(values['ssd300/conv1/conv1_1/biases'], bias)


def test_excluded_scopes_are_not_restored_even_if_present(tmp_path):
    tensors = {'vgg_16/conv1/conv1_1/weights': np.full([3, 3, 3, 64], 2., np.float32),
               'vgg_16/conv1/conv1_1/biases': np.full([64], 3., np.float32),
               'vgg_16/multibox_head/loc_0/weights': np.full([3, 3, 64, 16], 4., np.float32),
               'vgg_16/multibox_head/loc_0/biases': np.full([16], 5., np.float32)}
    prefix = write_variables(str(tmp_path / 'm'), tensors)
    with tf.Graph().as_default():
        variables = _small_model()
        init_fn, report = restore.build_restore_fn(
            prefix, exclude_scopes='ssd300/conv1, ssd300/multibox_head/loc_0/biases')
        values = _restore_and_read(init_fn, variables)
    assert report['restored'] == ['ssd300/multibox_head/loc_0/weights']
    assert report['excluded'] == ['ssd300/conv1/conv1_1/biases', 'ssd300/conv1/conv1_1/weights',
                                  'ssd300/multibox_head/loc_0/biases']
    assert np.all(values['ssd300/multibox_head/loc_0/weights'] == 4.)
    assert np.all(values['ssd300/multibox_head/loc_0/biases'] == 0.)  # zeros init, not 5
    assert np.all(values['ssd300/conv1/conv1_1/biases'] == 0.)
    assert not np.any(values['ssd300/conv1/conv1_1/weights'] == 2.)


def test_exclude_scope_is_a_path_prefix_not_a_string_prefix(tmp_path):
    prefix = write_variables(str(tmp_path / 'm'),
                             {'vgg_16/conv1/conv1_1/weights': np.ones([3, 3, 3, 64], np.float32),
                              'vgg_16/conv1/conv1_1/biases': np.ones([64], np.float32)})
    with tf.Graph().as_default():
        _small_model()
        _, report = restore.build_restore_fn(
            prefix, exclude_scopes='ssd300/conv1/conv1_, ssd300/multibox_head')
    assert report['restored'] == ['ssd300/conv1/conv1_1/biases', 'ssd300/conv1/conv1_1/weights']


def test_shape_mismatch_names_variable_and_both_shapes(tmp_path):
    prefix = write_variables(str(tmp_path / 'm'),
                             {'vgg_16/conv1/conv1_1/weights': np.ones([3, 3, 4, 64], np.float32),
                              'vgg_16/conv1/conv1_1/biases': np.ones([64], np.float32)})
    with tf.Graph().as_default():
        _small_model()
        with pytest.raises(ValueError) as error:
            restore.build_restore_fn(prefix, exclude_scopes='ssd300/multibox_head',
                                     ignore_missing_vars=True)
    assert ('ssd300/conv1/conv1_1/weights [3, 3, 3, 64] vs checkpoint '
            'vgg_16/conv1/conv1_1/weights [3, 3, 4, 64]') in str(error.value)


def test_wrong_checkpoint_scope_restores_nothing_is_an_error(backbone_dir):
    with tf.Graph().as_default():
        _small_model()
        with pytest.raises(ValueError, match="under scope 'vgg16'.*--checkpoint_model_scope"):
            restore.build_restore_fn(str(backbone_dir), checkpoint_model_scope='vgg16',
                                     ignore_missing_vars=True)


def test_missing_path_message_says_how_to_get_weights(tmp_path):
    missing = str(tmp_path / 'no_such_model')
    with pytest.raises(ValueError) as error:
        locate.resolve_checkpoint(missing)
    message = str(error.value)
    assert missing in message
    assert 'model/README.md' in message
    assert 'python3 -m tools.convert_vgg_weights --from_slim' in message
    assert '--checkpoint_path= (empty) to train from scratch' in message
    with pytest.raises(ValueError, match='holds no checkpoint'):
        locate.resolve_checkpoint(str(tmp_path))
    with pytest.raises(ValueError, match='No checkpoint path given'):
        locate.resolve_checkpoint('')
    with tf.Graph().as_default():
        _small_model()
        with pytest.raises(ValueError, match='model/README.md'):
            restore.build_restore_fn(missing)


def test_empty_checkpoint_path_trains_from_scratch():
    with tf.Graph().as_default():
        variables = _small_model()
        init_fn, report = restore.build_restore_fn('')
    assert init_fn is None
    assert report['restored'] == [] and report['not_restored'] == sorted(variables)


@pytest.mark.slow
def test_mirrored_variables_restore_on_every_replica(tmp_path):
    """MirroredStrategy on two logical CPUs: both copies of each variable get the weights."""
    script = textwrap.dedent('''
        import sys
        import numpy as np
        import tensorflow as tf
        import tf_slim as slim
        cpu = tf.config.list_physical_devices('CPU')[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from utility.checkpoints import restore
        prefix = sys.argv[1]
        expected = np.load(prefix + '.npy')
        with tf.Graph().as_default():
            strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
            def replica_fn():
                with tf.compat.v1.variable_scope('ssd300'):
                    slim.conv2d(tf.zeros([1, 8, 8, 3]), 64, [3, 3], scope='conv1/conv1_1')
                init_fn, report = restore.build_restore_fn(prefix)
                return init_fn
            with strategy.scope():
                per_replica = strategy.extended.call_for_each_replica(replica_fn)
            init_fn = strategy.experimental_local_results(per_replica)[0]
            weights = [v for v in tf.compat.v1.model_variables() if 'weights' in v.name][0]
            copies = strategy.experimental_local_results(weights)
            assert len(copies) == 2, copies
            with tf.compat.v1.Session() as session:
                session.run(tf.compat.v1.global_variables_initializer())
                init_fn(None, session)
                for copy in copies:
                    np.testing.assert_array_equal(session.run(copy), expected)
        print('MIRRORED_OK', type(weights).__name__, [c.name for c in copies])
    ''')
    weights = np.random.default_rng(5).standard_normal([3, 3, 3, 64], dtype=np.float32)
    prefix = write_variables(str(tmp_path / 'm'),
                             {'vgg_16/conv1/conv1_1/weights': weights,
                              'vgg_16/conv1/conv1_1/biases': np.ones([64], np.float32)})
    np.save(prefix + '.npy', weights)
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')
    result = subprocess.run([sys.executable, '-c', script, prefix], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MIRRORED_OK MirroredVariable ['ssd300/conv1/conv1_1/weights:0', " \
           "'ssd300/conv1/conv1_1/weights/replica_1:0']" in result.stdout
