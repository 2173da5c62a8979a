"""Default-box coverage and fitted anchor sizes (net/anchor_coverage.py, net/anchors.py's
fitted presets): a hand-worked case, the fast grid form against brute force and TensorFlow's
IoU, and a fit that never lowers the coverage and keeps the head's shape."""
import json

import numpy as np
import pytest

from net import anchor_coverage as coverage_lib
from net import anchors as anchor_lib

SPEC = anchor_lib.SSD300_SPEC


def test_hand_made_case():
    anchors = anchor_lib.generate_anchors(SPEC)
    # Anchor 1 of layer 0 is the s_1 = 0.1 square of cell (0, 0), centre (4 / 300, 4 / 300);
    # a box equal to it has IoU 1.
    exact = anchors[1]
    assert exact.tolist() == pytest.approx([4 / 300 - 0.05, 4 / 300 - 0.05,
                                            4 / 300 + 0.05, 4 / 300 + 0.05], abs=1e-6)
    # A 0.01 x 0.01 box centred on cell (10, 10) of layer 0 (centre 84 / 300) lies inside that
    # cell's s_1 square (0.1 x 0.1) and its ratio-2 and ratio-0.5 boxes (area 0.01 too):
    # IoU 1e-4 / 1e-2 = 0.01; the extra square (0.1414) gives half that, and every other
    # layer's boxes are larger still. No default box reaches 0.5.
    c = 84 / 300
    tiny = np.array([c - 0.005, c - 0.005, c + 0.005, c + 0.005], np.float32)
    # A 0.1 high, 0.2 wide box centred on cell (6, 6) of layer 0 (centre 56 / 300): the s_1
    # square, the ratio-2 box (0.0707 x 0.1414) and layer 1's s_2 square and ratio-2 and -3 boxes
    # all give IoU exactly 0.5; the best is layer 0's extra square (side 0.1414): intersection
    # 0.1 * 0.1414, union 0.1414^2 + 0.02 - 0.01414, IoU 0.5469.
    c1 = 56 / 300
    half = np.array([c1 - 0.05, c1 - 0.1, c1 + 0.05, c1 + 0.1], np.float32)
    boxes = np.stack([exact, tiny, half])
    best = coverage_lib.best_anchor_iou(boxes, anchors)
    assert best.tolist() == pytest.approx([1.0, 0.01, 0.01414 / 0.02585396], abs=1e-4)
    assert coverage_lib.best_default_box_iou(boxes, SPEC).tolist() == pytest.approx(
        best.tolist(), abs=1e-6)
    summary = coverage_lib.coverage(np.array([1.0, 0.01, 0.6]), [1, 2, 2], num_classes=4)
    assert summary['boxes'] == 3 and summary['covered'] == 2
    assert summary['coverage'] == pytest.approx(2 / 3)
    assert summary['per_class'][1]['coverage'] == 1.0
    assert summary['per_class'][2]['coverage'] == 0.5
    assert summary['per_class'][2]['median_best_iou'] == pytest.approx(0.305)
    assert summary['per_class'][3]['boxes'] == 0
    assert summary['mean_class_coverage'] == pytest.approx(0.75)
    assert coverage_lib.coverage_line(summary, ['none', 'a', 'b', 'c']) == (
        'a 100.0%, b 50.0%, c no boxes (all 3 boxes: 66.7%)')


def _random_boxes(count, seed, largest=0.8):
    rng = np.random.RandomState(seed)
    centres = rng.uniform(-0.05, 1.05, (count, 2))
    sides = rng.uniform(0.005, 1, (count, 2)) ** 2 * largest
    return np.concatenate([centres - sides / 2, centres + sides / 2], axis=1)[:, [0, 1, 2, 3]]


@pytest.mark.parametrize('preset', ['voc', 'coco', 'fitted'])
def test_grid_form_equals_brute_force(preset):
    fitted = {'anchor_scales': [0.05, 0.12, 0.3, 0.5, 0.7, 0.88], 'anchor_scale_end': 1.0,
              'extra_anchor_scales': None,
              'anchor_ratios': [[1.5, 0.4], [2.5, 3.5, 0.6, 0.25], [2, 3, .5, .3333],
                                [2, 3, .5, .3333], [2, .5], [1.6, .7]]}
    spec = anchor_lib.ssd300_anchor_spec(preset=fitted if preset == 'fitted' else preset)
    boxes = _random_boxes(600, seed=1)
    brute = coverage_lib.best_anchor_iou(boxes, anchor_lib.generate_anchors(spec), chunk_size=97)
    assert np.abs(coverage_lib.best_default_box_iou(boxes, spec) - brute).max() < 1e-6
    assert (brute > 0).all() and (brute >= 0.5).any() and (brute < 0.5).any()


def test_brute_force_iou_is_the_matchers():
    import tensorflow as tf
    from net.anchor_manipulator import iou_matrix
    anchors = anchor_lib.generate_anchors(SPEC)
    boxes = _random_boxes(50, seed=2)
    boxes[0] = [0.3, 0.3, 0.3, 0.5]  # empty
    expected = tf.reduce_max(iou_matrix(boxes, anchors), axis=1).numpy()
    assert np.abs(coverage_lib.best_anchor_iou(boxes, anchors) - expected).max() < 1e-6


def _small_and_medium_boxes(seed=3):
    """Platelet-like boxes (about 20 px at 300: s_1 = 0.1 of the voc preset reaches few) as
    class 2 and cell-like ones (about 55 px) as class 1."""
    rng = np.random.RandomState(seed)
    boxes, labels = [], []
    for label, side, count in ((1, 55 / 300, 300), (2, 20 / 300, 60)):
        centres = rng.uniform(0.1, 0.9, (count, 2))
        sides = side * rng.uniform(0.8, 1.25, (count, 2))
        boxes.append(np.concatenate([centres - sides / 2, centres + sides / 2], axis=1))
        labels.append(np.full(count, label))
    return np.concatenate(boxes).astype(np.float32), np.concatenate(labels)


def test_fit_raises_coverage_of_small_boxes_and_keeps_the_head():
    boxes, labels = _small_and_medium_boxes()
    before = coverage_lib.box_coverage(boxes, labels, SPEC, num_classes=3)
    preset, spec = coverage_lib.fit_preset(boxes, labels, SPEC)
    after = coverage_lib.box_coverage(boxes, labels, spec, num_classes=3)
    assert before['per_class'][2]['coverage'] < 0.6
    assert after['per_class'][2]['coverage'] > before['per_class'][2]['coverage'] + 0.3
    assert after['coverage'] >= before['coverage']
    assert after['mean_class_coverage'] >= before['mean_class_coverage']
    # the preset is a checked json object that rebuilds the same anchors, with the head's shape
    preset = json.loads(json.dumps(preset))
    assert anchor_lib.check_fitted_preset(preset) is preset
    rebuilt = anchor_lib.ssd300_anchor_spec(preset=preset)
    assert anchor_lib.anchors_per_location(rebuilt) == anchor_lib.anchors_per_location(SPEC)
    assert anchor_lib.num_anchors(rebuilt) == 8732
    assert np.array_equal(anchor_lib.generate_anchors(rebuilt), anchor_lib.generate_anchors(spec))
    assert preset['anchor_scales'][0] < 0.1


@pytest.mark.parametrize('case', ['covered', 'sampled', 'mixed'])
def test_fit_never_lowers_coverage(case):
    if case == 'covered':  # every box is already covered: nothing to gain, nothing may be lost
        boxes = anchor_lib.generate_anchors(SPEC)[::97].clip(0, 1)
        labels = np.arange(len(boxes)) % 3 + 1
    else:
        # seed 5, searched on a sample of 15: the sample's best sizes cover 0.51 of all 400
        # boxes against the voc preset's 0.55 (measured), so only the final check on every box
        # keeps the fit from lowering the coverage
        boxes = _random_boxes(400, seed=5 if case == 'sampled' else 4).clip(0, 1)
        labels = np.arange(len(boxes)) % 4 + 1
    kwargs = {'max_boxes': 15} if case == 'sampled' else {}
    before = coverage_lib.box_coverage(boxes, labels, SPEC)
    _, spec = coverage_lib.fit_preset(boxes, labels, SPEC, rounds=2, **kwargs)
    after = coverage_lib.box_coverage(boxes, labels, spec)
    assert after['coverage'] >= before['coverage']
    assert after['mean_class_coverage'] >= before['mean_class_coverage']


def test_fitted_preset_errors(tmp_path):
    good = coverage_lib.preset_of_spec(SPEC)
    assert anchor_lib.check_preset(dict(good)) == good
    with pytest.raises(ValueError, match='anchor_scales.*6 positive'):
        anchor_lib.check_fitted_preset(dict(good, anchor_scales=[0.1, 0.2]))
    with pytest.raises(ValueError, match=r'\[2, 4, 4, 4, 2, 2\]'):
        anchor_lib.check_fitted_preset(dict(good, anchor_ratios=[[2.0]] * 6))
    with pytest.raises(ValueError, match='unknown key.*feature_shapes'):
        anchor_lib.check_fitted_preset(dict(good, feature_shapes=[38] * 6))
    with pytest.raises(ValueError, match='cannot read the anchor preset file .*missing.json'):
        anchor_lib.read_preset_file(str(tmp_path / 'missing.json'))
    path = tmp_path / 'bad.json'
    path.write_text('{"anchor_scales": ')
    with pytest.raises(ValueError, match='not valid json'):
        anchor_lib.read_preset_file(str(path))
    assert anchor_lib.is_preset_file('anchors.json') and anchor_lib.is_preset_file('d/a')
    assert not anchor_lib.is_preset_file('voc') and not anchor_lib.is_preset_file('kitti')


FITTED = {'anchor_scales': [0.06, 0.16, 0.3, 0.5, 0.7, 0.9], 'anchor_scale_end': 1.075,
          'extra_anchor_scales': None,
          'anchor_ratios': [[1.5, 0.6], [2, 3, .5, .3333], [2, 3, .5, .3333],
                            [2, 3, .5, .3333], [2, .5], [2, .5]]}


def test_fitted_preset_is_the_models_identity(tmp_path):
    """params.json records a fitted preset whole: resuming with other boxes is refused (naming
    the file to write), and eval, demo and export rebuild the fitted boxes from it alone."""
    import types
    from common import defaults
    from conftest import write_variables
    from utility import ssd_model
    from utility.checkpoints import params_file
    from utility.inference import checkpoint_params
    params = ssd_model.make_params(anchor_preset=json.loads(json.dumps(FITTED)))
    assert params['anchor_spec'] == json.loads(json.dumps(
        anchor_lib.ssd300_anchor_spec(preset=FITTED)))
    write_variables(str(tmp_path / 'model.ckpt-5'), {'global_step': np.array(5, np.int64)})
    params_file.save_params(params, str(tmp_path))
    with pytest.raises(ValueError, match=r'anchor_preset=.*"anchor_ratios".*this run has '
                                         r'anchor_preset="voc"; pass --anchor_preset=FILE.json '
                                         r'with the "anchor_preset" of .*params.json'):
        params_file.check_params_identity(str(tmp_path), ssd_model.make_params(),
                                          defaults=defaults.DEFAULT_PARAMS)
    assert params_file.check_params_identity(
        str(tmp_path), ssd_model.make_params(anchor_preset=dict(FITTED)),
        defaults=defaults.DEFAULT_PARAMS)['anchor_preset'] == FITTED
    values = types.SimpleNamespace(
        num_classes=21, train_image_size=300, data_format='channels_last',
        model_scope=defaults.MODEL_SCOPE, select_threshold=0.01, min_size=0.03,
        nms_threshold=0.45, nms_topk=200, keep_topk=400)
    inferred = checkpoint_params.inference_params(values, checkpoint=str(tmp_path / 'model.ckpt-5'))
    assert inferred['anchor_preset'] == FITTED
    assert np.array_equal(anchor_lib.generate_anchors(inferred['anchor_spec']),
                          anchor_lib.generate_anchors(anchor_lib.ssd300_anchor_spec(preset=FITTED)))
