"""Your own data through the real scripts: a YOLO-layout set converted by
dataset/convert_yolo_tfrecords.py, reported and fitted by `python3 -m dataset.report`, trained with
the fitted default boxes (train_ssd.py --anchor_preset=FILE.json), then evaluated and exported
after the json file is deleted: params.json carries the boxes."""
import json
import os

import numpy as np
import pytest

from conftest import TRAIN_FAST_FLAGS, assert_same_detections, run_script
from yolo_files import NAMES, make_yolo_set


@pytest.mark.slow
def test_yolo_set_reports_fits_trains_evaluates_and_exports_with_fitted_boxes(tmp_path):
    import tensorflow as tf
    from net import anchors as anchor_lib
    from utility import drivers, ssd_model
    from utility.inference import image_files

    # small boxes (5-9% of the side: 15-27 px at 300) that the voc preset's s_1 = 0.1 reaches
    # poorly, so the fit has something to raise
    root = str(tmp_path / 'set')
    make_yolo_set(root, counts=(('train', 8), ('val', 2)), side=(0.05, 0.09))
    records = str(tmp_path / 'records')
    proc = run_script(['dataset/convert_yolo_tfrecords.py', '--data_yaml',
                       os.path.join(root, 'data.yaml'), '--output_directory', records,
                       '--train_shards', '2', '--validation_shards', '1', '--num_threads', '2'])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    anchors_json = str(tmp_path / 'anchors.json')
    proc = run_script(['-m', 'dataset.report', '--data_dir', records, '--fit_anchors',
                       anchors_json, '--plot', str(tmp_path / 'report.png')])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith('cat ') for line in lines), proc.stdout
    before = [line for line in lines if line.startswith('Coverage before (voc): ')]
    after = [line for line in lines if line.startswith('Coverage after (fitted): ')]
    assert len(before) == 1 and len(after) == 1, proc.stdout

    def overall(line):
        return float(line.split('boxes: ')[1].split('%')[0])
    assert overall(after[0]) > overall(before[0]), proc.stdout
    assert os.path.getsize(str(tmp_path / 'report.png')) > 10000
    with open(anchors_json) as f:
        fitted = json.load(f)

    model_dir = str(tmp_path / 'model')
    proc = run_script(['train_ssd.py', '--data_dir=' + records, '--model_dir=' + model_dir,
                       '--max_number_of_steps=2', '--anchor_preset=' + anchors_json]
                      + TRAIN_FAST_FLAGS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    output = proc.stdout + proc.stderr
    coverage = [line for line in output.splitlines() if 'Default-box coverage (IoU >= 0.5, '
                'anchors fitted) of the boxes of 8 training images: cat ' in line]
    assert len(coverage) == 1, output[-3000:]
    os.remove(anchors_json)
    with open(os.path.join(model_dir, 'params.json')) as f:
        params = json.load(f)
    assert params['anchor_preset'] == fitted
    assert params['class_names'] == ['none'] + list(NAMES)
    fitted_spec = anchor_lib.ssd300_anchor_spec(preset=fitted)
    assert params['anchor_spec'] == json.loads(json.dumps(fitted_spec))

    proc = run_script(['eval_ssd.py', '--data_dir=' + records, '--model_dir=' + model_dir,
                       '--data_format=channels_last', '--batch_size=2', '--num_readers=1',
                       '--output_dir=' + str(tmp_path / 'eval')])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert 'mAP' in proc.stdout

    proc = run_script(['export_ssd.py', '--model_dir=' + model_dir,
                       '--export_dir=' + str(tmp_path / 'export')])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exported = proc.stdout.strip().splitlines()[-1].split('SavedModel written to ')[1]
    image_path = os.path.join(root, 'images', 'val', 'val_000.jpg')
    with open(image_path, 'rb') as f:
        encoded = f.read()
    serve = tf.saved_model.load(exported).signatures['serving_default']
    served = {k: v.numpy() for k, v in serve(encoded_image=tf.constant([encoded])).items()}

    def predict(anchor_spec):
        run_params = ssd_model.make_params(
            data_format='channels_last', batch_size=1, backbone=params['backbone'],
            num_classes=params['num_classes'], anchor_spec=anchor_spec)
        return next(drivers.predict(
            drivers.resolve_driver('auto'), ssd_model.model_fn,
            image_files.make_image_files_input_fn(run_params, [image_path]), run_params,
            tf.train.latest_checkpoint(model_dir)))
    with_fitted = predict(fitted_spec)
    n = int(with_fitted['num_detections'])
    assert n > 0 and int(served['num_detections'][0]) == n

    def by_class(result):
        rows = {}
        for c, score, box in zip(result['classes'][:n], result['scores'][:n],
                                 result['boxes'][:n]):
            rows.setdefault((int(c), image_path), []).append((float(score),) + tuple(box))
        return rows
    # the export decodes with the fitted boxes: its detections are predict's with them ...
    assert assert_same_detections(
        by_class({k: v[0] for k, v in served.items()}), by_class(with_fitted),
        score_tol=1e-5, box_tol=1e-5) == n
    # ... and not those the voc boxes would give with the same weights
    with_voc = predict(anchor_lib.SSD300_SPEC)
    assert np.abs(np.sort(served['boxes'][0][:n].ravel()) -
                  np.sort(with_voc['boxes'][:n].ravel())).max() > 1e-3
