"""eval_ssd.py, evaluation/ (ground truth, detections, report, figures) and the checkpoint and
flag support of utility/inference/."""
import json
import os
import re
import types

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import run_script
from dataset.labels import VOC_LABELS
from dataset.pipeline import build_dataset
from dataset import voc_to_tfrecords
from evaluation import detections
from evaluation import figures
from evaluation import ground_truth
from evaluation import report
from evaluation import voc_metric
from utility.inference import checkpoint_params

NAMES = list(VOC_LABELS)
C = len(NAMES)
DOG, CAT = NAMES.index('dog'), NAMES.index('cat')


def prediction(filename, height, width, dets, gt, pad_gt=0, k=6):
    """An Estimator.predict dict: dets/gt rows are (label, score|difficult, xmin, ymin, xmax,
    ymax) in 1-based pixels, stored normalized as the model and the records do."""
    def norm(rows):
        rows = np.asarray(rows, np.float64).reshape(-1, 6)
        return np.stack([rows[:, 3] / height, rows[:, 2] / width, rows[:, 5] / height,
                         rows[:, 4] / width], axis=1).astype(np.float32)
    boxes = np.zeros([k, 4], np.float32)
    scores = np.zeros([k], np.float32)
    classes = np.zeros([k], np.int32)
    n = len(dets)
    boxes[:n] = norm(dets)
    scores[:n] = [d[1] for d in dets]
    classes[:n] = [d[0] for d in dets]
    gt_boxes = np.concatenate([norm(gt), np.zeros([pad_gt, 4], np.float32)])
    return {'boxes': boxes, 'scores': scores, 'classes': classes, 'num_detections': np.int32(n),
            'filename': filename.encode(), 'shape': np.array([height, width, 3], np.int32),
            'gt_boxes': gt_boxes,
            'gt_labels': np.array([g[0] for g in gt] + [-1] * pad_gt, np.int32),
            'gt_difficult': np.array([g[1] for g in gt] + [0] * pad_gt, np.int32)}


def hand_predictions():
    """Dog: 2 gt; detections 0.9 TP, 0.8 FP, 0.7 TP, 0.3 FP -> recall .5 .5 1 1,
    precision 1 .5 2/3 .5: AP area = .5 * 1 + .5 * 2/3 = 0.8333, AP 07 = (6 + 5 * 2/3) / 11
    = 0.8485. Cat: one difficult gt only (AP n/a), its detection is ignored."""
    a = prediction('a.jpg', 200, 100,
                   dets=[(DOG, .9, 10, 20, 50, 80), (CAT, .8, 60, 100, 90, 190),
                         (DOG, .3, 60, 20, 90, 60)],
                   gt=[(DOG, 0, 10, 20, 50, 80), (CAT, 1, 60, 100, 90, 190)])
    b = prediction('dir/b.png', 100, 100,
                   dets=[(DOG, .8, 50, 50, 90, 90), (DOG, .7, 1, 1, 40, 40)],
                   gt=[(DOG, 0, 1, 1, 40, 40)], pad_gt=1)
    return [a, b]


def test_hand_computed_ap_table_json_and_results_files(tmp_path):
    logged = []
    collection = detections.collect_predictions(iter(hand_predictions()), total=2,
                                                log=logged.append)
    assert collection.image_ids == ['a', 'b']
    np.testing.assert_allclose(collection.det_boxes[0], [10, 20, 50, 80], atol=1e-4)
    assert [len(g['labels']) for g in collection.ground_truth] == [2, 1]  # padding dropped
    assert logged[-1].startswith('eval: 2 images in ')

    result = voc_metric.evaluate(collection.detections(C), collection.ground_truth, C)
    assert result['ap_07'][DOG] == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert result['ap_area'][DOG] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert np.isnan(result['ap_07'][CAT])

    summary = report.summarize(result, collection.ground_truth, 2, NAMES)
    table = report.format_table(summary)
    assert '2 images, 3 gt objects (1 difficult), 5 detections' in table
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[2:-1]}
    assert list(rows) == NAMES[1:] + ['mAP']
    assert rows['dog'] == ['2', '4', '0.8485', '0.8333']
    assert rows['cat'] == ['0', '1', 'n/a', 'n/a']
    assert rows['mAP'] == ['2', '5', '0.8485', '0.8333']
    assert 'mAP VOC07 11-point: 0.8485   mAP VOC2010+ area: 0.8333' in table

    path = report.write_metrics_json(str(tmp_path / 'out' / 'metrics.json'), summary)
    with open(path) as f:
        loaded = json.load(f)
    assert loaded['map_07'] == pytest.approx(0.848485, abs=1e-6)
    assert loaded['map_area'] == pytest.approx(0.833333, abs=1e-6)
    by_name = {c['name']: c for c in loaded['classes']}
    assert by_name['cat']['ap_07'] is None and by_name['dog']['num_gt'] == 2
    assert loaded['num_objects'] == 3 and loaded['num_difficult'] == 1

    out = str(tmp_path / 'out')
    paths = detections.write_results_files(out, collection, NAMES)
    assert len(paths) == 20 and os.path.basename(paths[0]) == 'comp4_det_test_aeroplane.txt'
    with open(os.path.join(out, 'comp4_det_test_dog.txt')) as f:
        lines = f.read().splitlines()
    assert lines[0] == 'a 0.900000 10.000 20.000 50.000 80.000'
    assert [line.split()[:2] for line in lines] == [
        ['a', '0.900000'], ['b', '0.800000'], ['b', '0.700000'], ['a', '0.300000']]
    again = voc_metric.evaluate(detections.read_results_files(out, ['a', 'b'], NAMES),
                                collection.ground_truth, C)
    assert again['map_07'] == pytest.approx(result['map_07'], abs=1e-9)
    assert again['map_area'] == pytest.approx(result['map_area'], abs=1e-9)

    curves = voc_metric.evaluate(collection.detections(C), collection.ground_truth, C,
                                 return_curves=True)['curves']
    np.testing.assert_allclose(curves[DOG][0], [.5, .5, 1, 1])
    np.testing.assert_allclose(curves[DOG][1], [1, .5, 2 / 3, .5])
    assert curves[CAT] is None and curves[0] is None
    png = figures.draw_pr_curves(os.path.join(out, 'pr.png'), curves, summary)
    _check_pr_png(png)


def _check_pr_png(path):
    """`path` is a non-empty PNG that PIL reads (the file eval_ssd.py writes)."""
    with open(path, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with Image.open(path) as image:
        assert image.format == 'PNG'
        assert image.size[0] > 0 and image.size[1] > 0


def test_pr_figure_has_one_panel_per_class_with_ground_truth(tmp_path):
    import matplotlib
    collection = detections.collect_predictions(iter(hand_predictions()))
    result = voc_metric.evaluate(collection.detections(C), collection.ground_truth, C,
                                 return_curves=True)
    summary = report.summarize(result, collection.ground_truth, 2, NAMES)
    figure = figures.pr_figure(result['curves'], summary)
    try:
        assert matplotlib.get_backend().lower() == 'agg'  # headless
        panels = [axes for axes in figure.axes if axes.get_visible()]
        assert len(panels) == 1  # dog; cat's only gt is difficult: no curve, no panel
        assert panels[0].get_title() == 'dog: AP07 0.848 / area 0.833'
        assert panels[0].get_xlabel() == 'recall' and panels[0].get_ylabel() == 'precision'
        assert panels[0].get_xlim() == (0.0, 1.0) and len(panels[0].get_xticks()) == 5
        (line,) = panels[0].get_lines()
        np.testing.assert_allclose(line.get_xdata(), [0, .5, .5, 1, 1])
        np.testing.assert_allclose(line.get_ydata(), [1, 1, .5, 2 / 3, .5])
        assert panels[0].get_legend() is not None
        title = ' '.join(figure._suptitle.get_text().split())  # wrapped to the width
        assert 'mAP VOC07 11-point 0.848, VOC2010+ area 0.833' in title
        assert '19 classes without gt not shown' in title
    finally:
        from matplotlib import pyplot
        pyplot.close(figure)

    # Three classes with ground truth: three titled panels, in label order.
    curves = [None] * C
    for label in (1, DOG, CAT):
        curves[label] = (np.array([.5, 1.]), np.array([1., .5]))
    rows = [{'label': c, 'name': NAMES[c], 'num_gt': 2, 'num_detections': 2,
             'ap_07': None if curves[c] is None else 0.75,
             'ap_area': None if curves[c] is None else 0.7} for c in range(1, C)]
    summary = dict(summary, classes=rows)
    figure = figures.pr_figure(curves, summary)
    try:
        titles = [axes.get_title() for axes in figure.axes if axes.get_visible()]
        assert titles == ['%s: AP07 0.750 / area 0.700' % NAMES[c]
                          for c in sorted((1, DOG, CAT))]
    finally:
        from matplotlib import pyplot
        pyplot.close(figure)
    path = figures.draw_pr_curves(str(tmp_path / 'deep' / figures.PR_CURVES_FILE), curves,
                                  summary)
    assert os.path.basename(path) == 'pr_curves.png'
    _check_pr_png(path)


def test_results_file_with_unknown_image_is_refused(tmp_path):
    with open(detections.results_file(str(tmp_path), 'dog'), 'w') as f:
        f.write('zzz 0.5 1 1 10 10\n')
    with pytest.raises(ValueError, match='comp4_det_test_dog.txt line 1'):
        detections.read_results_files(str(tmp_path), ['a'], NAMES)


def _records_predictions(pattern):
    """Estimator.predict-like dicts whose detections are the records' ground truth."""
    dataset = build_dataset(pattern, None, batch_size=1, is_training=False,
                            num_readers=1)
    out = []
    for parsed in dataset.as_numpy_iterator():
        n = len(parsed['labels'][0])
        k = 200
        boxes = np.zeros([k, 4], np.float32)
        boxes[:n] = parsed['boxes'][0]
        classes = np.zeros([k], np.int32)
        classes[:n] = parsed['labels'][0]
        scores = np.zeros([k], np.float32)
        scores[:n] = np.linspace(1.0, 0.5, n)
        out.append({'boxes': boxes, 'scores': scores, 'classes': classes,
                    'num_detections': np.int32(n), 'filename': parsed['filename'][0],
                    'shape': parsed['shape'][0], 'gt_boxes': parsed['boxes'][0],
                    'gt_labels': parsed['labels'][0], 'gt_difficult': parsed['difficult'][0]})
    return out


def test_oracle_ground_truth_as_detections_scores_one(tfrecord_dir, voc_sample_dir, tmp_path):
    pattern = os.path.join(tfrecord_dir, 'train-*')
    predictions = _records_predictions(pattern)
    collection = detections.collect_predictions(iter(predictions))
    objects, difficult = ground_truth.count_objects(collection.ground_truth, C)
    assert (len(predictions), objects, difficult) == (10, 32, 3)  # the sample's train split
    result = voc_metric.evaluate(collection.detections(C), collection.ground_truth, C)
    assert result['map_07'] == 1.0 and result['map_area'] == 1.0

    # Through the devkit results files and back.
    detections.write_results_files(str(tmp_path), collection, NAMES)
    again = voc_metric.evaluate(
        detections.read_results_files(str(tmp_path), collection.image_ids, NAMES),
        collection.ground_truth, C)
    assert again['map_07'] == 1.0 and again['map_area'] == 1.0

    # The XML annotations hold the same ground truth (matched by image id).
    xml = ground_truth.ground_truth_from_annotations(
        collection.image_ids, os.path.join(voc_sample_dir, 'Annotations'), NAMES)
    for from_xml, from_records in zip(xml, collection.ground_truth):
        np.testing.assert_array_equal(from_xml['labels'], from_records['labels'])
        np.testing.assert_array_equal(from_xml['difficult'], from_records['difficult'])
        np.testing.assert_allclose(from_xml['boxes_pixels'], from_records['boxes_pixels'],
                                   atol=1e-3)
    with_xml = voc_metric.evaluate(collection.detections(C), xml, C)
    assert with_xml['map_07'] == 1.0 and with_xml['map_area'] == 1.0

    # The pre-scan reads the same ground truth without decoding images.
    scanned = ground_truth.scan_records(pattern)
    assert [r['image_id'] for r in scanned] == collection.image_ids
    for record, prediction in zip(scanned, predictions):
        np.testing.assert_array_equal(record['labels'], prediction['gt_labels'])
        np.testing.assert_array_equal(record['difficult'], prediction['gt_difficult'])
        np.testing.assert_array_equal(record['boxes'], prediction['gt_boxes'])
        assert (record['height'], record['width']) == tuple(prediction['shape'][:2])


def test_missing_annotation_names_the_file(tmp_path):
    with pytest.raises(ValueError, match=r'No annotation .*2012_000099\.xml for image'):
        ground_truth.ground_truth_from_annotations(['2012_000099'], str(tmp_path), NAMES)


def test_split_without_ground_truth_is_refused():
    empty = [{'labels': np.zeros(0, int)}, {'labels': np.array([-1, -1])}]
    with pytest.raises(ValueError, match=r"Split 'val' has no ground-truth boxes \(2 images\)"):
        ground_truth.check_has_ground_truth(empty, C, "Split 'val'")
    only_difficult = [{'labels': np.array([3]), 'difficult': np.array([1])}]
    with pytest.raises(ValueError, match='no ground-truth boxes that are not difficult'):
        ground_truth.check_has_ground_truth(only_difficult, C, 'x')
    ground_truth.check_has_ground_truth([{'labels': np.array([3])}], C, 'x')  # fine


def test_find_checkpoint(tmp_path):
    model_dir = tmp_path / 'logs'
    model_dir.mkdir()
    with pytest.raises(ValueError, match='No checkpoint found in %s' % re.escape(str(model_dir))):
        checkpoint_params.find_checkpoint('', str(model_dir))
    with pytest.raises(ValueError, match='Model directory .*nowhere does not exist'):
        checkpoint_params.find_checkpoint('', str(tmp_path / 'nowhere'))
    with pytest.raises(ValueError, match=r'No checkpoint at .*model\.ckpt-7'):
        checkpoint_params.find_checkpoint(str(model_dir / 'model.ckpt-7'), '')
    for step in (5, 10, 9):  # no 'checkpoint' state file: the highest step wins
        (model_dir / ('model.ckpt-%d.index' % step)).write_bytes(b'')
    newest = str(model_dir / 'model.ckpt-10')
    assert checkpoint_params.find_checkpoint('', str(model_dir)) == newest
    assert checkpoint_params.find_checkpoint(newest + '.index', 'ignored') == newest
    assert checkpoint_params.find_checkpoint(str(model_dir / 'model.ckpt-5'), '') == str(
        model_dir / 'model.ckpt-5')


def test_inference_params_from_flag_values():
    values = types.SimpleNamespace(
        num_classes=C, train_image_size=300, data_format='channels_last', model_scope='ssd300',
        select_threshold=0.2, min_size=0.05, nms_threshold=0.4, nms_topk=50, keep_topk=100)
    logged = []
    params = checkpoint_params.inference_params(values, log=logged.append, batch_size=3)
    assert (params['select_threshold'], params['min_size'], params['nms_threshold'],
            params['nms_topk'], params['keep_topk']) == (0.2, 0.05, 0.4, 50, 100)
    assert params['batch_size'] == 3 and params['data_format'] == 'channels_last'
    assert logged == []                       # channels_last needs no fallback notice


def test_num_classes_must_match_the_label_table():
    checkpoint_params.check_num_classes(C, NAMES)
    with pytest.raises(ValueError, match=r'--num_classes=20 does not match the 21 VOC labels '
                                         r'.*use --num_classes=21\.'):
        checkpoint_params.check_num_classes(20, NAMES)


@pytest.mark.slow
def test_entry_run_exit_status_one_line_error_and_interrupt():
    """utility/entry.run, the one runner of the four entry scripts."""
    code = ('import sys; from utility import entry\n'
            'def main(argv):\n'
            '    if argv[1:] == ["bad"]:\n'
            '        raise ValueError("No checkpoint found in x; train first.")\n'
            '    if argv[1:] == ["stop"]:\n'
            '        raise KeyboardInterrupt\n'
            '    print("ran", argv[1:]); return 3\n'
            'entry.run(main, interrupted="Interrupted; nothing was trained.")\n')
    ok = run_script(['-c', code, 'fine'])
    assert ok.returncode == 3 and "ran ['fine']" in ok.stdout
    bad = run_script(['-c', code, 'bad'])
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == 'error: No checkpoint found in x; train first.'
    assert 'Traceback' not in bad.stderr
    stop = run_script(['-c', code, 'stop'])
    assert stop.returncode == 130, stop.stderr[-2000:]
    assert stop.stdout.strip().splitlines()[-1] == 'Interrupted; nothing was trained.'
    assert 'Traceback' not in stop.stderr


# ----------------------------------------------------------------------------- the script


def _table_rows(stdout):
    rows = {}
    for line in stdout.splitlines():
        fields = line.split()
        if len(fields) == 5 and (fields[0] in NAMES or fields[0] == 'mAP'):
            rows[fields[0]] = fields[1:]
    return rows


@pytest.mark.slow
def test_eval_script_table_json_results_and_xml_ground_truth(trained_model_dir, tfrecord_dir,
                                                             voc_sample_dir, tmp_path):
    out = str(tmp_path / 'eval')
    proc = run_script(['eval_ssd.py', '--data_dir=' + tfrecord_dir,
                       '--model_dir=' + trained_model_dir, '--output_dir=' + out,
                       '--num_readers=2', '--batch_size=2'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = _table_rows(proc.stdout)
    assert list(rows) == NAMES[1:] + ['mAP']
    assert 'mAP VOC07 11-point:' in proc.stdout and 'mAP VOC2010+ area:' in proc.stdout
    assert '2 images, 3 gt objects (0 difficult)' in proc.stdout
    assert re.search(r'eval: 2 images in [0-9.]+ s \([0-9.]+ images/s\)', proc.stdout)

    with open(os.path.join(out, 'metrics.json')) as f:
        metrics = json.load(f)
    assert metrics['num_images'] == 2 and metrics['checkpoint'].endswith('model.ckpt-2')
    assert rows['mAP'][2:] == ['%.4f' % metrics['map_07'], '%.4f' % metrics['map_area']]
    for entry in metrics['classes']:
        printed = rows[entry['name']]
        assert int(printed[0]) == entry['num_gt'] and int(printed[1]) == entry['num_detections']
        assert printed[2] == ('n/a' if entry['ap_07'] is None else '%.4f' % entry['ap_07'])

    # Recompute from the devkit files with the records' ground truth.
    records = ground_truth.scan_records(os.path.join(tfrecord_dir, 'val-*'))
    ids = [r['image_id'] for r in records]
    truth = [{'boxes_pixels': voc_metric.normalized_to_pixels(r['boxes'], r['height'],
                                                              r['width']),
              'labels': r['labels'], 'difficult': r['difficult']} for r in records]
    read_back = detections.read_results_files(out, ids, NAMES)
    assert sum(len(d) for d in read_back) == metrics['num_detections'] > 0
    again = voc_metric.evaluate(read_back, truth, C)
    assert again['map_07'] == pytest.approx(metrics['map_07'], abs=1e-9)
    assert again['map_area'] == pytest.approx(metrics['map_area'], abs=1e-9)
    for entry in metrics['classes']:
        assert again['num_detections'][entry['label']] == entry['num_detections']
        if entry['ap_07'] is not None:
            assert again['ap_07'][entry['label']] == pytest.approx(entry['ap_07'], abs=1e-9)
    _check_pr_png(os.path.join(out, 'pr_curves.png'))

    # XML ground truth and an explicit checkpoint prefix give the same numbers.
    out_xml = str(tmp_path / 'eval_xml')
    proc = run_script(['eval_ssd.py', '--data_dir=' + tfrecord_dir,
                       '--model_dir=' + str(tmp_path / 'unused'),
                       '--checkpoint_path=' + os.path.join(trained_model_dir, 'model.ckpt-2'),
                       '--annotations_dir=' + os.path.join(voc_sample_dir, 'Annotations'),
                       '--output_dir=' + out_xml, '--num_readers=2', '--batch_size=1'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(os.path.join(out_xml, 'metrics.json')) as f:
        xml_metrics = json.load(f)
    assert xml_metrics['ground_truth'].endswith('Annotations')
    for key in ('num_images', 'num_objects', 'num_difficult', 'num_detections'):
        assert xml_metrics[key] == metrics[key]
    assert xml_metrics['map_07'] == pytest.approx(metrics['map_07'], abs=1e-9)
    assert xml_metrics['map_area'] == pytest.approx(metrics['map_area'], abs=1e-9)
    for a, b in zip(xml_metrics['classes'], metrics['classes']):
        assert (a['name'], a['num_gt'], a['num_detections']) == (
            b['name'], b['num_gt'], b['num_detections'])
        assert (a['ap_area'] is None) == (b['ap_area'] is None)
        if a['ap_area'] is not None:
            assert a['ap_area'] == pytest.approx(b['ap_area'], abs=1e-9)


@pytest.mark.slow
def test_eval_script_errors(trained_model_dir, tfrecord_dir, voc_sample_dir, tmp_path):
    empty_model_dir = tmp_path / 'no_model'
    empty_model_dir.mkdir()
    proc = run_script(['eval_ssd.py', '--data_dir=' + tfrecord_dir,
                       '--model_dir=' + str(empty_model_dir)])
    assert proc.returncode == 2
    assert 'error: No checkpoint found in %s' % empty_model_dir in proc.stderr
    assert 'Traceback' not in proc.stderr

    # A split whose records hold no boxes (background-only images).
    data_dir = tmp_path / 'records'
    data_dir.mkdir()
    with open(os.path.join(voc_sample_dir, 'JPEGImages', '2012_000001.jpg'), 'rb') as f:
        jpeg = f.read()
    height, width = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    with tf.io.TFRecordWriter(str(data_dir / 'val-00000-of-00001')) as writer:
        for name in ('x1.jpg', 'x2.jpg'):
            example = voc_to_tfrecords.make_example(name, jpeg, height, width, [])
            writer.write(example.SerializeToString())
    proc = run_script(['eval_ssd.py', '--data_dir=' + str(data_dir),
                       '--model_dir=' + trained_model_dir])
    assert proc.returncode == 2
    assert re.search(r"error: Split 'val' \(.*val-\*\) has no ground-truth boxes \(2 images\)",
                     proc.stderr), proc.stderr[-2000:]

    proc = run_script(['eval_ssd.py', '--data_dir=' + str(data_dir), '--split=test',
                       '--model_dir=' + trained_model_dir])
    assert proc.returncode == 2 and 'error: No TFRecord files match' in proc.stderr
