"""net/anchors.py: the SSD300 spec and its 8732 anchors, checked on hand-computed numbers."""
import copy
import json
import math

import numpy as np
import pytest

from net import anchors as anchor_lib

SPEC = anchor_lib.SSD300_SPEC


def test_counts():
    assert anchor_lib.anchors_per_location(SPEC) == [4, 6, 6, 6, 4, 4]
    assert anchor_lib.anchors_per_layer(SPEC) == [5776, 2166, 600, 150, 36, 4]
    assert anchor_lib.num_anchors(SPEC) == 8732
    anchors = anchor_lib.generate_anchors(SPEC)
    assert anchors.shape == (8732, 4)
    assert anchors.dtype == np.float32


def test_extra_scales_are_the_originals_rounded_geometric_means():
    extra = anchor_lib.extra_anchor_scales(SPEC)
    # The original code's constants exactly (its trained boxes decode against them) ...
    assert extra == [0.1414, 0.2739, 0.4541, 0.6315, 0.8078, 0.9836]
    # ... which are sqrt(s_k * s_k+1), s_7 = 1.075, to 4 digits; without the explicit list the
    # spec gives the unrounded formula.
    spec = copy.deepcopy(SPEC)
    del spec['extra_anchor_scales']
    formula = anchor_lib.extra_anchor_scales(spec)
    np.testing.assert_allclose(formula, extra, atol=5.1e-5)
    assert formula[0] == pytest.approx(math.sqrt(0.02))
    assert formula[-1] == pytest.approx(math.sqrt(0.9 * 1.075))


def test_first_cells_of_first_layer():
    anchors = anchor_lib.generate_anchors(SPEC)
    c = 0.5 * 8 / 300  # centre of cell (0, 0) = 1/75 = 0.013333
    # Original order: extra square (side 0.1414), s_k square (0.1), ratio 2, ratio 1/2.
    # Ratio 2: h = 0.1 / sqrt(2) = 0.070711, w = 0.141421 (half sides 0.035355, 0.070711).
    expected = [
        [c - 0.0707, c - 0.0707, c + 0.0707, c + 0.0707],  # extra square 0.1414
        [c - 0.05, c - 0.05, c + 0.05, c + 0.05],  # s_k square
        [c - 0.035355, c - 0.070711, c + 0.035355, c + 0.070711],  # ratio 2: wide
        [c - 0.070711, c - 0.035355, c + 0.070711, c + 0.035355],  # ratio 1/2: tall
    ]
    np.testing.assert_allclose(anchors[:4], expected, atol=1e-6)
    # Next column (x = 1): centre x = 1.5 * 8 / 300 = 0.04; next row (y = 1) starts at 38 * 4.
    np.testing.assert_allclose(anchors[4 + 1], [c - 0.05, -0.01, c + 0.05, 0.09], atol=1e-7)
    np.testing.assert_allclose(anchors[38 * 4 + 1], [-0.01, c - 0.05, 0.09, c + 0.05],
                               atol=1e-7)


def test_second_layer_ratio_three_and_last_layer_unclipped():
    anchors = anchor_lib.generate_anchors(SPEC)
    c = 0.5 * 16 / 300
    h, w = 0.2 / math.sqrt(3), 0.2 * math.sqrt(3)  # type 3 of layer 2 = ratio 3
    np.testing.assert_allclose(anchors[5776], [c - 0.13695, c - 0.13695, c + 0.13695,
                                               c + 0.13695], atol=1e-7)  # extra 0.2739
    np.testing.assert_allclose(anchors[5776 + 1], [c - 0.1, c - 0.1, c + 0.1, c + 0.1],
                               atol=1e-7)
    np.testing.assert_allclose(anchors[5776 + 3], [c - h / 2, c - w / 2, c + h / 2, c + w / 2],
                               atol=1e-7)
    # Type 5 = ratio 0.3333 (not exactly 1/3): h = 0.2 / sqrt(0.3333) = 0.346427.
    np.testing.assert_allclose(anchors[5776 + 5, 2] - anchors[5776 + 5, 0], 0.346427, atol=1e-6)
    e = 0.9836 / 2
    h, w = 0.9 / math.sqrt(2), 0.9 * math.sqrt(2)
    expected_last = [[0.5 - e, 0.5 - e, 0.5 + e, 0.5 + e],
                     [0.05, 0.05, 0.95, 0.95],
                     [0.5 - h / 2, 0.5 - w / 2, 0.5 + h / 2, 0.5 + w / 2],
                     [0.5 - w / 2, 0.5 - h / 2, 0.5 + w / 2, 0.5 + h / 2]]
    np.testing.assert_allclose(anchors[-4:], expected_last, atol=1e-6)
    assert anchors[-2, 1] < -0.13  # reaches outside the image: not clipped


def test_centres_follow_steps():
    anchors = anchor_lib.generate_anchors(SPEC)
    starts = np.cumsum([0] + anchor_lib.anchors_per_layer(SPEC))
    for layer, (size, step) in enumerate(zip(SPEC['feature_shapes'], SPEC['layer_steps'])):
        k = anchor_lib.anchors_per_location(SPEC)[layer]
        boxes = anchors[starts[layer]:starts[layer + 1]].reshape(size, size, k, 4)
        cy = (boxes[..., 0] + boxes[..., 2]) / 2
        cx = (boxes[..., 1] + boxes[..., 3]) / 2
        expected = (np.arange(size) + 0.5) * step / 300.0
        np.testing.assert_allclose(cy, np.broadcast_to(expected[:, None, None], cy.shape),
                                   atol=1e-6)
        np.testing.assert_allclose(cx, np.broadcast_to(expected[None, :, None], cx.shape),
                                   atol=1e-6)


def test_spec_survives_json():
    spec = json.loads(json.dumps(SPEC))
    assert spec == SPEC
    np.testing.assert_array_equal(anchor_lib.generate_anchors(spec),
                                  anchor_lib.generate_anchors(SPEC))


def test_bad_specs_are_named():
    spec = copy.deepcopy(SPEC)
    del spec['anchor_scale_end']
    with pytest.raises(ValueError, match='anchor_scale_end'):
        anchor_lib.generate_anchors(spec)
    spec = copy.deepcopy(SPEC)
    spec['layer_steps'] = spec['layer_steps'][:5]
    with pytest.raises(ValueError, match='different lengths'):
        anchor_lib.anchors_per_location(spec)
    spec = copy.deepcopy(SPEC)
    spec['extra_anchor_scales'] = [0.1, 0.2]
    with pytest.raises(ValueError, match='extra_anchor_scales'):
        anchor_lib.generate_anchors(spec)
