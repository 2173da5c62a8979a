"""evaluation/draw.py, the demo's image-file input, simple_ssd_demo.py and the SavedModel export."""
import glob
import json
import os
import re

import cv2
import numpy as np
import pytest
import tensorflow as tf

from conftest import AVAILABLE_DRIVERS, assert_same_detections, run_script
from dataset.labels import VOC_LABELS
from utility import ssd_model
from preprocessing import ssd_preprocessing
from evaluation import draw
from utility import drivers
from utility.inference import image_files

NAMES = list(VOC_LABELS)


# ----------------------------------------------------------------------------- drawing


def test_draw_detections_box_edges_caption_and_copy():
    image = np.zeros((100, 120, 3), np.uint8)
    dog = NAMES.index('dog')
    # VOC pixels 41..80 (x) and 31..70 (y), 1-based -> array columns 40..79, rows 30..69.
    out = draw.draw_detections(image, [[41, 31, 80, 70]], [dog], [0.876], NAMES, thickness=1)
    assert not image.any()  # the input is untouched
    color = np.array(draw.class_color(dog), np.uint8)
    for y, x in ((30, 50), (69, 50), (50, 40), (50, 79)):  # the four edges
        np.testing.assert_array_equal(out[y, x], color)
    assert not out[31:69, 41:79].any()  # inside the box stays black
    assert out[:30, 40:].any()  # the caption sits above the box
    assert not out[:, :40].any() and not out[71:].any()
    assert draw.format_label('dog', 0.876) == 'dog 0.88'


def test_class_colors_are_fixed_and_distinct():
    colors = [draw.class_color(c) for c in range(1, 21)]
    assert len(set(colors)) == 20
    assert draw.class_color(7) == colors[6]
    assert all(0 <= v <= 255 for c in colors for v in c)


def test_draw_rejects_a_float_image():
    with pytest.raises(ValueError, match='uint8'):
        draw.draw_detections(np.zeros((4, 4, 3)), [], [], [], NAMES)


# ----------------------------------------------------------------------------- image files


def test_list_image_files_and_decoder(tmp_path):
    rgb = np.random.RandomState(0).randint(0, 256, (7, 9, 3)).astype(np.uint8)
    folder = tmp_path / 'imgs'
    folder.mkdir()
    cv2.imwrite(str(folder / 'b.png'), rgb[..., ::-1])
    cv2.imwrite(str(folder / 'a.png'), rgb[..., ::-1])
    (folder / 'notes.txt').write_text('not an image')
    (tmp_path / 'broken.jpg').write_bytes(b'not a jpeg')
    files, missing = image_files.list_image_files(
        [str(folder), str(tmp_path / 'broken.jpg'), str(tmp_path / 'nothing')])
    assert files == [str(folder / 'a.png'), str(folder / 'b.png'), str(tmp_path / 'broken.jpg')]
    assert missing == [(str(tmp_path / 'nothing'), 'no such file or directory')]
    with image_files.ImageDecoder() as decoder:
        np.testing.assert_array_equal(decoder.decode(files[0]), rgb)  # RGB, lossless
        with pytest.raises(ValueError, match='Unknown image file format'):
            decoder.decode(files[2])
        with pytest.raises(ValueError, match='cannot read the file'):
            decoder.decode(str(folder))


def test_image_files_input_fn_matches_eval_preprocessing(tmp_path):
    rgb = np.random.RandomState(1).randint(0, 256, (40, 60, 3)).astype(np.uint8)
    path = str(tmp_path / 'x.png')
    cv2.imwrite(path, rgb[..., ::-1])
    params = ssd_model.make_params(data_format='channels_last')
    with tf.Graph().as_default():
        features = tf.compat.v1.data.make_one_shot_iterator(
            image_files.make_image_files_input_fn(params, [path])()).get_next()
        expected = ssd_preprocessing.preprocess_for_eval(tf.constant(rgb))
        with tf.compat.v1.Session() as sess:
            got, want = sess.run([features, expected])
    assert got['image'].shape == (1, 300, 300, 3)
    np.testing.assert_allclose(got['image'][0], want, atol=1e-4)
    assert got['filename'][0].decode() == path
    np.testing.assert_array_equal(got['shape'][0], [40, 60, 3])


# ----------------------------------------------------------------------------- demo script


@pytest.mark.slow
def test_demo_writes_one_image_per_readable_input(trained_model_dir, voc_sample_dir, tmp_path):
    images = os.path.join(voc_sample_dir, 'JPEGImages')
    inputs = [os.path.join(images, n) for n in ('2012_000003.jpg', '2012_000011.jpg')]
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'\xff\xd8 truncated')
    out = tmp_path / 'drawn'
    args = ['simple_ssd_demo.py', '--checkpoint_path=' + trained_model_dir,
            '--output_dir=' + str(out), '--score_threshold=0.0']
    proc = run_script(args + ['--input=' + p for p in
                              inputs + [str(broken), str(tmp_path / 'missing.jpg')]])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(os.listdir(out)) == ['2012_000003_ssd.jpg', '2012_000011_ssd.jpg']
    assert re.search(r'skipping .*broken\.jpg: not a decodable', proc.stderr)
    assert re.search(r'skipping .*missing\.jpg: no such file', proc.stderr)
    for path in inputs:
        line = [l for l in proc.stdout.splitlines() if l.startswith(path + ': ')]
        assert len(line) == 1 and re.search(r': \d+ detection\(s\)', line[0])
        count = int(re.search(r': (\d+) detection', line[0]).group(1))
        assert count > 0  # threshold 0 lists every detection
        source = cv2.imread(path)
        drawn = cv2.imread(str(out / (os.path.basename(path)[:-4] + '_ssd.jpg')))
        assert drawn.shape == source.shape
        assert np.abs(drawn.astype(int) - source.astype(int)).mean() > 2  # boxes were drawn

    proc = run_script(['simple_ssd_demo.py', '--checkpoint_path=' + trained_model_dir,
                       '--output_dir=' + str(out), '--input=' + str(broken)])
    assert proc.returncode == 2 and 'error: None of the --input paths' in proc.stderr


@pytest.mark.slow
def test_demo_without_checkpoint_fails_clearly(tmp_path):
    proc = run_script(['simple_ssd_demo.py', '--checkpoint_path=' + str(tmp_path),
                       '--input=' + str(tmp_path)])
    assert proc.returncode == 2
    assert 'error: No checkpoint found in %s' % tmp_path in proc.stderr


# ----------------------------------------------------------------------------- export


@pytest.mark.slow
@pytest.mark.parametrize('driver', AVAILABLE_DRIVERS)
def test_saved_model_round_trip_matches_predict(trained_model_dir, voc_sample_dir, tmp_path,
                                                driver):
    """Both drivers export the same signature, and it serves what predict gives."""
    export_base = str(tmp_path / 'export')
    proc = run_script(['export_ssd.py', '--model_dir=' + trained_model_dir,
                       '--export_dir=' + export_base, '--driver=' + driver])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exported = proc.stdout.strip().splitlines()[-1].split('SavedModel written to ')[1]
    assert glob.glob(os.path.join(export_base, '*')) == [exported]
    with open(os.path.join(exported, 'assets.extra', 'labels.txt')) as f:
        assert f.read().split() == NAMES

    image_path = os.path.join(voc_sample_dir, 'JPEGImages', '2012_000011.jpg')
    with open(image_path, 'rb') as f:
        encoded = f.read()
    loaded = tf.saved_model.load(exported)
    serve = loaded.signatures['serving_default']
    assert list(serve.structured_input_signature[1]) == ['encoded_image']
    served = {k: v.numpy() for k, v in serve(encoded_image=tf.constant([encoded])).items()}
    assert sorted(served) == ['boxes', 'classes', 'num_detections', 'scores']
    assert served['boxes'].shape == (1, 200, 4) and served['classes'].dtype == np.int32

    with open(os.path.join(trained_model_dir, 'params.json')) as f:
        backbone = json.load(f)['backbone']
    params = ssd_model.make_params(data_format='channels_last', batch_size=1, backbone=backbone)
    predicted = next(drivers.predict(
        drivers.resolve_driver('auto'), ssd_model.model_fn,
        image_files.make_image_files_input_fn(params, [image_path]), params,
        tf.train.latest_checkpoint(trained_model_dir)))
    n = int(predicted['num_detections'])
    assert n > 0 and int(served['num_detections'][0]) == n

    def by_class(classes, scores, boxes):
        rows = {}
        for c, score, box in zip(classes[:n], scores[:n], boxes[:n]):
            rows.setdefault((int(c), image_path), []).append((float(score),) + tuple(box))
        return rows
    # the same detections, paired by class, score and box whatever the order of tied scores
    assert assert_same_detections(
        by_class(served['classes'][0], served['scores'][0], served['boxes'][0]),
        by_class(predicted['classes'], predicted['scores'], predicted['boxes']),
        score_tol=1e-5, box_tol=1e-5) == n


@pytest.mark.slow
def test_export_without_checkpoint_fails_clearly(tmp_path):
    proc = run_script(['export_ssd.py', '--model_dir=' + str(tmp_path)])
    assert proc.returncode == 2
    assert 'error: No checkpoint found in %s' % tmp_path in proc.stderr
