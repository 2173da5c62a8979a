"""TFLite export (export_ssd.py --format tflite, utility/inference/tflite_export.py) and running it
(utility/inference/runner.py, eval_ssd.py / simple_ssd_demo.py --model).

One float and one int8 export of the session's 2-step model (conftest's trained_model_dir:
ResNet-18 with --batch_norm_decay=0, so its scores are spread out and top detections can be
compared).
"""
import json
import os

import cv2
import numpy as np
import pytest

from conftest import FAST_BACKBONE, run_script
from dataset.labels import VOC_LABELS
from utility.inference import tflite_export

NAMES = list(VOC_LABELS)


def export(model_dir, export_dir, *extra):
    return run_script(['export_ssd.py', '--model_dir=' + model_dir,
                       '--export_dir=' + str(export_dir), '--format=tflite'] + list(extra))


def generated_images(folder, sizes=((240, 320), (375, 500), (300, 300))):
    """PNG files of smooth random colours with a few rectangles, at `sizes` (h, w)."""
    rng = np.random.RandomState(7)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        image = cv2.resize(rng.randint(0, 256, (6, 8, 3)).astype(np.uint8), (w, h))
        for _ in range(3):
            y, x = rng.randint(0, h // 2), rng.randint(0, w // 2)
            image[y:y + h // 3, x:x + w // 3] = rng.randint(0, 256, 3)
        path = os.path.join(str(folder), 'gen_%d.png' % i)
        cv2.imwrite(path, image)
        paths.append(path)
    return paths


@pytest.fixture(scope='session')
def float_export(trained_model_dir, tmp_path_factory):
    export_dir = tmp_path_factory.mktemp('tflite_float')
    proc = export(trained_model_dir, export_dir)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return str(export_dir)


@pytest.fixture(scope='session')
def int8_export(trained_model_dir, tfrecord_dir, tmp_path_factory):
    export_dir = tmp_path_factory.mktemp('tflite_int8')
    proc = export(trained_model_dir, export_dir, '--quantize=int8',
                  '--calibration_data=' + tfrecord_dir, '--calibration_images=3')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return str(export_dir), proc.stdout


# ----------------------------------------------------------------------------- fast


def test_calibration_source_names_the_problem(tmp_path):
    with pytest.raises(ValueError, match='needs --calibration_data'):
        tflite_export.calibration_source('')
    with pytest.raises(ValueError, match='is not a folder'):
        tflite_export.calibration_source(str(tmp_path / 'missing'))
    with pytest.raises(ValueError, match=r'no TFRecord shards \(\*-of-\*\) and no .*\(0 other'):
        tflite_export.calibration_source(str(tmp_path))
    (tmp_path / 'notes.txt').write_text('x')
    (tmp_path / 'b.JPG').write_bytes(b'x')
    (tmp_path / 'a.png').write_bytes(b'x')
    assert tflite_export.calibration_source(str(tmp_path)) == (
        'images', [str(tmp_path / 'a.png'), str(tmp_path / 'b.JPG')])
    (tmp_path / 'val-00000-of-00001').write_bytes(b'')
    assert tflite_export.calibration_source(str(tmp_path)) == (
        'records', [str(tmp_path / 'val-00000-of-00001')])


def test_detector_names_a_missing_or_broken_model(tmp_path):
    from utility.inference import runner
    with pytest.raises(ValueError, match='no such file; pass a .tflite file'):
        runner.open_detector(str(tmp_path / 'missing.tflite'))
    broken = tmp_path / 'broken.tflite'
    broken.write_bytes(b'not a flatbuffer')
    with pytest.raises(ValueError, match='is not a loadable TFLite model'):
        runner.open_detector(str(broken))


# ----------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_float_tflite_gives_the_saved_models_detections(trained_model_dir, float_export,
                                                        tmp_path):
    import tensorflow as tf
    from utility import ssd_model
    from utility.inference import runner
    assert sorted(os.listdir(float_export)) == ['labels.txt', 'model.json', 'model.tflite']
    with open(os.path.join(float_export, 'labels.txt')) as f:
        assert f.read().split() == NAMES
    with open(os.path.join(float_export, 'model.json')) as f:
        sidecar = json.load(f)
    assert sidecar['input']['shape'] == [1, 300, 300, 3] and sidecar['class_names'] == NAMES

    proc = run_script(['export_ssd.py', '--model_dir=' + trained_model_dir,
                       '--export_dir=' + str(tmp_path / 'saved')])
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = tf.saved_model.load(proc.stdout.strip().splitlines()[-1].split('written to ')[1])
    serve = saved.signatures['serving_default']
    detector = runner.open_detector(os.path.join(float_export, 'model.tflite'), 2)
    params = ssd_model.make_params(batch_size=1, backbone=FAST_BACKBONE)
    for path in generated_images(tmp_path / 'images'):
        with open(path, 'rb') as f:
            encoded = f.read()
        want = {k: v.numpy()[0] for k, v in serve(encoded_image=tf.constant([encoded])).items()}
        pixels = tf.io.decode_image(encoded, channels=3)
        height, width = pixels.shape[:2]
        got = {k: v[0] for k, v in detector.detect(ssd_model.preprocess_eval(
            pixels, params, normalize=False).numpy()[np.newaxis]).items()}
        assert int(got['num_detections']) == int(want['num_detections']) > 10
        top = 10
        np.testing.assert_array_equal(got['classes'][:top], want['classes'][:top])
        np.testing.assert_allclose(got['scores'][:top], want['scores'][:top], atol=1e-3)
        scale = np.array([height, width, height, width], np.float32)
        np.testing.assert_allclose(got['boxes'][:top] * scale, want['boxes'][:top] * scale,
                                   atol=1.0)


@pytest.mark.slow
def test_int8_from_tfrecords_is_quarter_size_and_runs_in_eval_and_demo(
        float_export, int8_export, tfrecord_dir, voc_sample_dir, tmp_path):
    export_dir, stdout = int8_export
    assert sorted(os.listdir(export_dir)) == ['labels.txt', 'model_int8.json',
                                              'model_int8.tflite']
    assert 'Calibrating on 3 image(s) from %s' % tfrecord_dir in stdout
    float_line = [l for l in stdout.splitlines() if l.startswith('Ops left in float32')]
    # Only NMS (no int8 kernel) computes in float: the network, decoding, softmax and the
    # class ids do not (quantized float class ids came out one too low).
    assert float_line == ['Ops left in float32 (no int8 kernel): NON_MAX_SUPPRESSION_V4 x20.']
    model = os.path.join(export_dir, 'model_int8.tflite')
    assert os.path.getsize(model) < 0.3 * os.path.getsize(
        os.path.join(float_export, 'model.tflite'))

    out = tmp_path / 'eval'
    proc = run_script(['eval_ssd.py', '--model=' + model, '--data_dir=' + tfrecord_dir,
                       '--output_dir=' + str(out), '--batch_size=2', '--num_threads=1'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'mAP VOC07 11-point' in proc.stdout
    with open(out / 'metrics.json') as f:
        metrics = json.load(f)
    assert metrics['checkpoint'] == model and metrics['num_images'] == 2
    assert metrics['num_detections'] == 2 * 200  # the model's own nms_topk, per image
    assert metrics['post_processing']['nms_topk'] == 200

    image = os.path.join(voc_sample_dir, 'JPEGImages', '2012_000003.jpg')
    proc = run_script(['simple_ssd_demo.py', '--model=' + model, '--input=' + image,
                       '--output_dir=' + str(tmp_path / 'drawn'), '--score_threshold=0.0'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert os.listdir(tmp_path / 'drawn') == ['2012_000003_ssd.jpg']
    source = cv2.imread(image)
    drawn = cv2.imread(str(tmp_path / 'drawn' / '2012_000003_ssd.jpg'))
    assert drawn.shape == source.shape
    assert np.abs(drawn.astype(int) - source.astype(int)).mean() > 2  # boxes were drawn


@pytest.mark.slow
def test_int8_calibrates_from_an_image_folder(trained_model_dir, tmp_path):
    images = tmp_path / 'calibration'
    generated_images(images)
    (images / 'broken.png').write_bytes(b'not a png')
    proc = export(trained_model_dir, tmp_path / 'export', '--quantize=int8',
                  '--calibration_data=' + str(images))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'skipped 1 unreadable image(s)' in proc.stdout
    assert 'Calibrating on 3 image(s)' in proc.stdout
    assert os.path.getsize(tmp_path / 'export' / 'model_int8.tflite') > 1e6


@pytest.mark.slow
@pytest.mark.parametrize('case', ['missing', 'empty', 'not_images', 'unreadable_images',
                                  'format', 'quantize', 'quantize_saved_model'])
def test_bad_export_input_is_one_line_and_writes_nothing(trained_model_dir, tmp_path, case):
    calibration = tmp_path / 'calibration'
    if case != 'missing':
        calibration.mkdir()
    if case == 'not_images':
        (calibration / 'notes.txt').write_text('hello')
    if case == 'unreadable_images':
        (calibration / 'a.jpg').write_text('hello')
    flags = ['--quantize=int8', '--calibration_data=' + str(calibration)]
    if case == 'format':
        flags = ['--format=coreml']
    if case == 'quantize':
        flags = ['--quantize=int4']
    if case == 'quantize_saved_model':
        flags = ['--format=saved_model', '--quantize=int8']  # the last --format wins
    export_dir = tmp_path / 'export'
    proc = export(trained_model_dir, export_dir, *flags)
    assert proc.returncode != 0
    errors = [l for l in proc.stderr.splitlines()
              if l.startswith('error: ') or 'Flags parsing error' in l]
    assert len(errors) == 1, proc.stderr[-3000:]
    expected = {
        'missing': 'is not a folder', 'empty': 'holds no TFRecord shards',
        'not_images': 'holds no TFRecord shards', 'unreadable_images': 'holds no readable image',
        'format': 'value should be one of', 'quantize': 'value should be one of',
        'quantize_saved_model': 'needs --format tflite'}[case]
    assert expected in errors[0]
    assert not export_dir.exists() or not os.listdir(export_dir)
