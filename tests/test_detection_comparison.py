"""conftest.assert_same_detections, the helper that the driver, cross-TF and export tests use to
compare two runs' detections: it forgives the order of tied scores and a near-tie at an
image's top-k cut, and nothing else."""
import pytest

from conftest import assert_same_detections

SCORE_TOL, BOX_TOL = 1e-3, 0.5  # the cross-TF test's tolerances, the loosest in use


def _row(score, x=10.0):
    return (score, x, 20.0, x + 50.0, 80.0)


def _capped(extra, cap=4):
    """An image at its top-k cap `cap`: cap - 1 shared detections plus `extra` (class, row)."""
    rows = {('comp4_det_test_cat.txt', 'img'): [_row(0.9), _row(0.5, 30.0), _row(0.2, 60.0)]}
    label, row = extra
    rows.setdefault((label, 'img'), []).append(row)
    return rows


def test_the_same_detections_in_another_order_of_tied_scores_pair_up():
    first = {('comp4_det_test_cat.txt', 'a'): [_row(0.7, 10.0), _row(0.7, 40.0), _row(0.1)],
             ('comp4_det_test_dog.txt', 'a'): [_row(0.3)],
             ('comp4_det_test_dog.txt', 'b'): [_row(0.05)]}
    second = {('comp4_det_test_cat.txt', 'a'): [_row(0.7, 40.0), _row(0.7004, 10.0),
                                                _row(0.1)],
              ('comp4_det_test_dog.txt', 'a'): [_row(0.3)],
              ('comp4_det_test_dog.txt', 'b'): [_row(0.0501, 10.2)]}
    assert assert_same_detections(first, second, SCORE_TOL, BOX_TOL) == 5


def test_other_boxes_fail_even_when_a_class_list_scores_all_alike():
    # The cat list's scores are all within the tolerance of its own lowest; the image's lowest
    # score (the dog's 0.02) is far below them, so the cat boxes must pair up, and they differ.
    first = {('comp4_det_test_cat.txt', 'a'): [_row(0.6, 10.0), _row(0.6, 40.0)],
             ('comp4_det_test_dog.txt', 'a'): [_row(0.02)]}
    second = {('comp4_det_test_cat.txt', 'a'): [_row(0.6, 150.0), _row(0.6, 200.0)],
              ('comp4_det_test_dog.txt', 'a'): [_row(0.02)]}
    with pytest.raises(AssertionError, match='unpaired'):
        assert_same_detections(first, second, SCORE_TOL, BOX_TOL)


def test_other_boxes_fail_when_every_score_of_the_image_is_alike():
    first = {('comp4_det_test_cat.txt', 'a'): [_row(0.6, 10.0)]}
    second = {('comp4_det_test_cat.txt', 'a'): [_row(0.6, 150.0)]}
    with pytest.raises(AssertionError, match='unpaired'):
        assert_same_detections(first, second, SCORE_TOL, BOX_TOL)


def test_three_detections_against_one_fail_below_the_cap():
    first = {('comp4_det_test_cat.txt', 'a'): [_row(0.3008), _row(0.3005, 40.0),
                                               _row(0.3, 70.0)]}
    second = {('comp4_det_test_cat.txt', 'a'): [_row(0.3008)]}
    with pytest.raises(AssertionError, match='3 detections against 1'):
        assert_same_detections(first, second, SCORE_TOL, BOX_TOL)


def test_a_near_tie_at_the_top_k_cut_may_differ():
    # Both images hold the cap's 4 detections; the last one differs in class and box, and
    # scores within the tolerance of the image's lowest.
    first = _capped(('comp4_det_test_dog.txt', _row(0.1003, 90.0)))
    second = _capped(('comp4_det_test_bird.txt', _row(0.1, 120.0)))
    first[('comp4_det_test_cat.txt', 'img')][-1] = _row(0.1005, 60.0)
    second[('comp4_det_test_cat.txt', 'img')][-1] = _row(0.1005, 60.0)
    assert assert_same_detections(first, second, SCORE_TOL, BOX_TOL, max_per_image=4) == 3


def test_an_unpaired_detection_above_the_cut_fails_at_the_cap():
    first = _capped(('comp4_det_test_dog.txt', _row(0.15, 90.0)))
    second = _capped(('comp4_det_test_dog.txt', _row(0.15, 200.0)))
    for rows in (first, second):  # the image's lowest score: 0.1, the cat's
        rows[('comp4_det_test_cat.txt', 'img')][-1] = _row(0.1, 60.0)
    with pytest.raises(AssertionError, match='above its lowest score'):
        assert_same_detections(first, second, SCORE_TOL, BOX_TOL, max_per_image=4)


def test_an_image_missing_from_one_result_fails():
    first = {('comp4_det_test_cat.txt', 'a'): [_row(0.3)],
             ('comp4_det_test_cat.txt', 'b'): [_row(0.3)]}
    second = {('comp4_det_test_cat.txt', 'a'): [_row(0.3)]}
    with pytest.raises(AssertionError):
        assert_same_detections(first, second, SCORE_TOL, BOX_TOL)
