"""Evaluated images with ground truth beside detections (evaluation/side_by_side.py) and the
tool that draws them from eval_ssd.py's results files (tools/draw_eval_images.py)."""
import os

import cv2
import numpy as np
import pytest

from evaluation import draw, side_by_side
from tools import draw_eval_images

NAMES = ['none', 'cell', 'dot']


def test_ground_truth_captions_have_no_score():
    assert draw.format_label('cell') == 'cell'
    assert draw.format_label('cell', 0.876) == 'cell 0.88'
    image = np.zeros((60, 80, 3), np.uint8)
    out = draw.draw_detections(image, [[21, 31, 60, 50]], [1], None, NAMES, thickness=1)
    np.testing.assert_array_equal(out[30, 40], draw.class_color(1))  # top edge, row 30


def test_pair_draws_truth_left_and_thresholded_detections_right():
    image = np.zeros((200, 400, 3), np.uint8)  # drawn at half size in 200-pixel panels
    truth = (np.array([[101, 41, 200, 140]]), np.array([1]))
    detections = (np.array([[101, 41, 200, 140], [301, 41, 380, 100]]), np.array([1, 2]),
                  np.array([0.9, 0.3]))
    out = side_by_side.pair(image, truth, detections, NAMES, 0.5, width=200)
    heading, gap = side_by_side.HEADING_PIXELS, side_by_side.GAP_PIXELS
    assert out.shape == (heading + 100, 2 * 200 + gap, 3)
    left, right = out[heading:, :200], out[heading:, 200 + gap:]
    cell, dot = draw.class_color(1), draw.class_color(2)
    # The box [101, 41, 200, 140] at half size, scaled from pixel 1: [51, 21, 100.5, 70.5],
    # drawn on columns 50..99 and rows 20..69 (0-based).
    for panel in (left, right):
        np.testing.assert_array_equal(panel[45, 50], cell)  # its left edge
        np.testing.assert_array_equal(panel[69, 75], cell)  # its bottom edge
    # The 0.3 detection of 'dot' is below the threshold: not drawn.
    assert not (right == np.array(dot, np.uint8)).all(axis=-1).any()
    assert (out[:heading] == 255).mean() > 0.8  # white heading strips with a little text


def test_figure_lays_pairs_out_in_a_grid():
    pairs = [np.zeros((10, 20, 3), np.uint8), np.zeros((12, 20, 3), np.uint8),
             np.zeros((10, 20, 3), np.uint8)]
    gap = side_by_side.GAP_PIXELS
    grid = side_by_side.figure(pairs, columns=2)
    assert grid.shape == (2 * 12 + gap, 2 * 20 + gap, 3)
    assert not grid[:10, :20].any() and not grid[12 + gap:, :20][:10].any()
    assert (grid[10:12, :20] == 255).all()  # the shorter pair padded white
    assert (grid[12 + gap:, 20 + gap:] == 255).all()  # no fourth pair: white
    with pytest.raises(ValueError, match='no images'):
        side_by_side.figure([])


def _write_results(eval_dir, image_id, box):
    os.makedirs(eval_dir, exist_ok=True)
    for name in ('aeroplane', 'bicycle'):  # one detection, the rest empty files
        with open(os.path.join(eval_dir, 'comp4_det_test_%s.txt' % name), 'w') as f:
            if name == 'aeroplane':
                f.write('%s 0.950000 %.3f %.3f %.3f %.3f\n' % ((image_id,) + tuple(box)))


def test_tool_draws_the_records_with_the_results_files(tfrecord_dir, tmp_path, capsys):
    from evaluation.ground_truth import scan_records
    first = scan_records(os.path.join(tfrecord_dir, 'val-*'))[0]
    width, height = first['width'], first['height']
    box = [0.25 * width, 0.25 * height, 0.75 * width, 0.75 * height]
    eval_dir = str(tmp_path / 'eval')
    _write_results(eval_dir, first['image_id'], box)
    output = str(tmp_path / 'pairs.png')
    assert draw_eval_images.main(['--data_dir', tfrecord_dir, '--eval_dir', eval_dir,
                                  '--output', output, '--num_images', '1',
                                  '--panel_width', str(width)]) == 0
    assert 'Wrote %s: 1 images' % output in capsys.readouterr().out
    picture = cv2.imread(output)[..., ::-1]
    heading, gap = side_by_side.HEADING_PIXELS, side_by_side.GAP_PIXELS
    assert picture.shape == (heading + height, 2 * width + gap, 3)
    right = picture[heading:, width + gap:]
    x0, y0 = int(round(box[0])) - 1, int(round(box[1])) - 1
    np.testing.assert_array_equal(right[y0 + 5:y0 + 20, x0], [draw.class_color(1)] * 15)


def test_tool_without_results_files_says_what_to_run(tfrecord_dir, tmp_path, capsys):
    assert draw_eval_images.main(['--data_dir', tfrecord_dir, '--eval_dir', str(tmp_path),
                                  '--output', str(tmp_path / 'x.jpg')]) == 2
    assert 'run eval_ssd.py --metric voc (or both)' in capsys.readouterr().err
    assert not (tmp_path / 'x.jpg').exists()
