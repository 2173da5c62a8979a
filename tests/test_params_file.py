"""params.json as the model directory's identity (utility/checkpoints/params_file.py, issue 16):
the stored settings against the run's."""
import json
import os
import types

import pytest

from common import defaults
from conftest import save_checkpoints
from utility.checkpoints import params_file


# ----------------------------------------------------------------------------- identity


def write_params(directory, params, checkpoint=True):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, 'params.json'), 'w') as f:
        json.dump(params, f)
    if checkpoint:
        save_checkpoints(directory, [(0, 0.0, 0.0)])


SPEC = {'image_size': 300, 'feature_shapes': [38, 19, 10, 5, 3, 1], 'anchor_offset': 0.5}


def test_params_mismatch_names_key_both_values_and_fix(tmp_path):
    directory = str(tmp_path / 'model')
    stored = {'num_classes': 21, 'train_image_size': 300, 'model_scope': 'ssd300',
              'anchor_spec': SPEC, 'data_format': 'channels_first', 'learning_rate': 1e-3}
    write_params(directory, stored)
    same = dict(stored, data_format='channels_last', learning_rate=1e-4, batch_size=2)
    assert params_file.check_params_identity(directory, same) == stored
    with pytest.raises(ValueError) as info:
        params_file.check_params_identity(directory, dict(stored, num_classes=5))
    assert str(info.value) == (
        '--model_dir %s holds a checkpoint trained with num_classes=21 (%s), but this run has '
        'num_classes=5; pass --num_classes 21 to resume it, or pass a new --model_dir to '
        'train another model.' % (directory, os.path.join(directory, 'params.json')))
    with pytest.raises(ValueError, match=r'model_scope="ssd300" .*, but this run has '
                                         r'model_scope="ssd512"; pass --model_scope ssd300 '):
        params_file.check_params_identity(directory, dict(stored, model_scope='ssd512'))
    spec = dict(SPEC, feature_shapes=[64, 32, 16, 8, 6, 4])
    with pytest.raises(ValueError) as info:
        params_file.check_params_identity(directory, dict(stored, anchor_spec=spec))
    assert ('anchor_spec.feature_shapes=[38, 19, 10, 5, 3, 1] (' in str(info.value)
            and 'this run has anchor_spec.feature_shapes=[64, 32, 16, 8, 6, 4]; use the '
                'settings it was trained with (see ' in str(info.value))
    # A params.json without 'backbone' reads as the default backbone.
    defaults = {'backbone': 'vgg16'}
    assert params_file.check_params_identity(directory, dict(stored, backbone='vgg16'), defaults)
    with pytest.raises(ValueError, match=r'backbone="vgg16" .*backbone="mobilenet"; pass '
                                         r'--backbone vgg16 to resume it'):
        params_file.check_params_identity(directory, dict(stored, backbone='mobilenet'), defaults)


def test_params_check_needs_a_checkpoint_and_a_readable_file(tmp_path):
    directory = str(tmp_path / 'fresh')
    write_params(directory, {'num_classes': 21}, checkpoint=False)
    # nothing to keep
    assert params_file.check_params_identity(directory, {'num_classes': 5}) is None
    assert params_file.check_params_identity(str(tmp_path / 'none'), {'num_classes': 5}) is None
    broken = str(tmp_path / 'broken')
    write_params(broken, {})
    with open(os.path.join(broken, 'params.json'), 'w') as f:
        f.write('{"num_classes": 2')
    with pytest.raises(ValueError, match=r'params.json is unreadable \(.*\); restore it from '
                                         r'a backup, or rebuild it from the checkpoint with '
                                         r'`python3 -m tools.rebuild_params --model_dir '):
        params_file.check_params_identity(broken, {'num_classes': 5})


# ----------------------------------------------------------------------------- one list


class FlagValues(types.SimpleNamespace):
    """Parsed flag values; `given` names the flags on the command line (absl's `.present`)."""

    def __getitem__(self, name):
        return types.SimpleNamespace(present=name in self.given)


def test_inference_takes_what_defines_the_model_from_params_json_unless_a_flag_is_given(
        tmp_path):
    """eval, demo and export (checkpoint_params.inference_params) take every key of the list resume
    checks (params_file.MODEL_KEYS) from the params.json beside the checkpoint; a flag given
    on the command line wins."""
    from utility import ssd_model
    from utility.inference import checkpoint_params
    trained = ssd_model.make_params(backbone='resnet18', num_classes=5, model_scope='other',
                                    anchor_preset='coco')
    with open(os.path.join(str(tmp_path), defaults.PARAMS_NAME), 'w') as f:
        json.dump(trained, f, default=str)
    checkpoint = str(tmp_path / 'model.ckpt-5')
    values = FlagValues(
        given=(), num_classes=21, train_image_size=512, data_format='channels_last',
        model_scope='ssd300', select_threshold=0.01, min_size=0.03, nms_threshold=0.45,
        nms_topk=200, keep_topk=400, keep_per='image')
    params = checkpoint_params.inference_params(values, checkpoint=checkpoint)
    for key in params_file.MODEL_KEYS:
        assert params[key] == trained[key], key
    values.given = ('num_classes', 'model_scope')
    params = checkpoint_params.inference_params(values, checkpoint=checkpoint)
    assert (params['num_classes'], params['model_scope']) == (21, 'ssd300')
    assert (params['backbone'], params['train_image_size']) == ('resnet18', 300)
