"""The COCO anchor preset (net/anchors.py): its sizes, its way into params, params.json and the
resume check. No network is built."""
import json
import math
import os
import types

import numpy as np
import pytest

from common import defaults
from conftest import write_variables
from net import anchors as anchor_lib
from utility.inference import checkpoint_params
from utility.checkpoints import params_file
from utility import ssd_model

# The caffe SSD300 COCO model's prior boxes in pixels at 300 (min_ratio 15, max_ratio 90,
# first layer 7%): square sides min_k and sqrt(min_k * max_k).
COCO_MIN = [21, 45, 99, 153, 207, 261]
COCO_MAX = [45, 99, 153, 207, 261, 315]


def test_coco_preset_has_the_caffe_ssd300_coco_sizes():
    spec = anchor_lib.ssd300_anchor_spec(preset='coco')
    for layer in range(6):
        heights, widths = anchor_lib.layer_anchor_sizes(spec, layer)
        extra, square = heights[0] * 300, heights[1] * 300
        assert square == pytest.approx(COCO_MIN[layer])
        assert extra == pytest.approx(math.sqrt(COCO_MIN[layer] * COCO_MAX[layer]))
        # ratio-r anchors keep the area of the min_k square
        np.testing.assert_allclose(heights[2:] * widths[2:] * 300 ** 2, COCO_MIN[layer] ** 2)
    assert anchor_lib.num_anchors(spec) == 8732
    anchors = anchor_lib.generate_anchors(spec)
    first = anchors[1]  # cell (0, 0) of conv4_3, its min-size square, centre (4, 4) pixels
    np.testing.assert_allclose(first * 300, [4 - 10.5, 4 - 10.5, 4 + 10.5, 4 + 10.5], atol=1e-4)


def test_voc_preset_is_the_original_spec_and_the_default():
    assert anchor_lib.ssd300_anchor_spec(preset='voc') == anchor_lib.SSD300_SPEC
    assert ssd_model.make_params()['anchor_spec'] == anchor_lib.SSD300_SPEC
    assert defaults.DEFAULT_PARAMS['anchor_preset'] == 'voc'
    coco = ssd_model.make_params(anchor_preset='coco')
    assert coco['anchor_spec'] == anchor_lib.ssd300_anchor_spec(preset='coco')
    assert coco['anchor_spec']['anchor_scales'][0] == pytest.approx(0.07)


def test_unknown_preset_is_one_line_naming_the_choices():
    with pytest.raises(ValueError, match=r"unknown anchor preset 'kitti'; use one of coco, ssdlite, voc "):
        ssd_model.make_params(anchor_preset='kitti')


def _model_dir_with_checkpoint(path, params):
    """A model directory with params.json and a real (head-less) checkpoint at step 5."""
    os.makedirs(str(path), exist_ok=True)
    write_variables(str(path / 'model.ckpt-5'), {'global_step': np.array(5, np.int64)})
    with open(str(path / 'params.json'), 'w') as f:
        json.dump(params, f, default=str)


def test_resuming_with_another_preset_is_refused_naming_the_flag(tmp_path):
    _model_dir_with_checkpoint(tmp_path, ssd_model.make_params(anchor_preset='coco'))
    with pytest.raises(ValueError, match=r'anchor_preset="coco".*anchor_preset="voc".*pass '
                                         r'--anchor_preset coco'):
        params_file.check_params_identity(str(tmp_path), ssd_model.make_params(),
                                          defaults=defaults.DEFAULT_PARAMS)
    same = params_file.check_params_identity(str(tmp_path),
                                             ssd_model.make_params(anchor_preset='coco'),
                                             defaults=defaults.DEFAULT_PARAMS)
    assert same['anchor_preset'] == 'coco'


def test_inference_takes_the_preset_from_the_checkpoints_params_json(tmp_path):
    """eval, demo and export build params through checkpoint_params.inference_params: the anchors
    are the ones the checkpoint was trained with, whatever the flags say."""
    _model_dir_with_checkpoint(tmp_path, ssd_model.make_params(anchor_preset='coco'))
    values = types.SimpleNamespace(
        num_classes=21, train_image_size=300, data_format='channels_last',
        model_scope=defaults.MODEL_SCOPE, select_threshold=0.01, min_size=0.03,
        nms_threshold=0.45, nms_topk=200, keep_topk=400)
    params = checkpoint_params.inference_params(values, checkpoint=str(tmp_path / 'model.ckpt-5'))
    assert params['anchor_preset'] == 'coco'
    assert params['anchor_spec'] == anchor_lib.ssd300_anchor_spec(preset='coco')
