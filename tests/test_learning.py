"""The overfit check: the detector learns, end to end, through the real scripts.

train_ssd.py (the real input_fn, model_fn, loss and optimizer; from scratch, --noaugment)
fits a few fixed images with few, large objects; eval_ssd.py --watch (the real prediction
path: model_fn PREDICT, decode, NMS, VOC metric) then scores every checkpoint of that run on
the same images. The final VOC07 mAP must reach MIN_MAP, and the step-0 checkpoint (random
initialization: near-uniform class scores) must score far below it, so a network that outputs
uniform scores, a misaligned head, a wrong anchor order or box coding, or a broken NMS/metric
fails. (What the oracle test cannot catch: it skips the network.)

`make learn` runs this file; `-s` shows the training curve and the per-class AP.
Measured settings and timings: docs/learning.md.
"""
import json
import os
import re
import time

import pytest

from conftest import OVERFIT_TRAIN_FLAGS, RESNET18_OVERFIT_FLAGS, run_script

NUM_IMAGES = 2           # images 2012_000007 and 2012_000008 of the seed-0 sample
MIN_OBJECT = 0.15        # every object at least 15% of the image side (4 objects, 4 classes)
MIN_MAP = 0.9
MAX_UNTRAINED_MAP = 0.3
TRAIN_FLAGS = OVERFIT_TRAIN_FLAGS

# The cheap check: tests/conftest.RESNET18_OVERFIT_FLAGS on 4 images of the 24-image seed-0
# sample, under the session driver (the only driver on TF 2.16+).
RESNET18_IMAGES = 4
RESNET18_SAMPLE = 24
RESNET18_FLAGS = RESNET18_OVERFIT_FLAGS


def max_steps(flags=TRAIN_FLAGS):
    return int(next(f for f in flags if f.startswith('--max_number_of_steps=')).split('=')[1])


def make_fit_records(root, num_images=NUM_IMAGES, sample_images=12):
    """Sample -> the num_images large-object images -> train and val shards of the same images."""
    from dataset import voc_to_tfrecords
    from dataset.make_voc_sample import make_voc_sample
    from dataset.select_images import select_images

    split_dir = make_voc_sample(root, num_images=sample_images, seed=0)
    ids = select_images(split_dir, num_images, MIN_OBJECT, output_name='VOC2012_fit')
    out = os.path.join(root, 'tfrecords')
    voc_to_tfrecords.convert_dataset(root, out, ['VOC2012_fit'], ['VOC2012_fit'],
                                     train_shards=1, validation_shards=1, num_threads=1,
                                     train_list='train', validation_list='val')
    return ids, out


def training_curve(output):
    """[(step, cls_loss, loc_loss, accuracy, images/s or None)] from train_ssd.py's log."""
    curve = []
    for line in output.splitlines():
        match = re.search(r'step (\d+), loss \S+, cls_loss (\S+), loc_loss (\S+),.*acc '
                          r'([0-9.]+)(?:, ([0-9.]+) images/s)?', line)
        if match:
            curve.append((int(match.group(1)), float(match.group(2).rstrip(',')),
                          float(match.group(3).rstrip(',')), float(match.group(4)),
                          float(match.group(5)) if match.group(5) else None))
    return curve


def fit_and_score(tmp_path, ids, records, flags, eval_flags=()):
    """Trains with `flags` on `records`, then scores the step-0 and the last checkpoint on the
    same images through eval_ssd.py --watch; prints the curve; returns (history, final, eval
    output)."""
    steps = max_steps(flags)
    model_dir = str(tmp_path / 'model')
    start = time.time()
    proc = run_script(['train_ssd.py', '--data_dir=' + records, '--model_dir=' + model_dir]
                      + list(flags), timeout=1800)
    train_secs = time.time() - start
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    curve = training_curve(out)
    print('\nTraining from scratch on %s (%d images, no augmentation): %.0f s'
          % (' '.join(ids), len(ids), train_secs))
    print('%6s %9s %9s %9s %9s' % ('step', 'cls_loss', 'loc_loss', 'accuracy', 'images/s'))
    for step, cls_loss, loc_loss, acc, rate in curve:
        print('%6d %9.4f %9.4f %9.4f %9s' % (step, cls_loss, loc_loss, acc,
                                             '%.2f' % rate if rate else ''))
    assert curve and curve[-1][0] == steps

    eval_dir = str(tmp_path / 'eval')
    start = time.time()
    proc = run_script(['eval_ssd.py', '--watch', '--model_dir=' + model_dir,
                       '--data_dir=' + records, '--split=val', '--output_dir=' + eval_dir,
                       '--data_format=channels_last', '--batch_size=2', '--num_readers=1',
                       '--watch_interval_secs=1', '--watch_timeout_secs=5',
                       '--watch_max_step=%d' % steps] + list(eval_flags), timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    with open(os.path.join(eval_dir, 'metrics_history.jsonl')) as f:
        history = [json.loads(line) for line in f]
    with open(os.path.join(eval_dir, 'metrics.json')) as f:
        final = json.load(f)
    print('Evaluated %d checkpoint(s) in %.0f s:' % (len(history), time.time() - start))
    for record in history:
        print('  step %6d  mAP VOC07 %.4f  VOC2010+ %.4f  (%d detections)'
              % (record['global_step'], record['map_07'], record['map_area'],
                 record['num_detections']))
    print('Per-class AP at step %d (VOC07 11-point):' % history[-1]['global_step'])
    for row in final['classes']:
        if row['ap_07'] is not None:
            print('  %-12s gt %d  AP %.4f' % (row['name'], row['num_gt'], row['ap_07']))

    assert [r['global_step'] for r in history] == [0, steps]
    assert final['num_images'] == len(ids) and final['checkpoint'].endswith('-%d' % steps)
    return history, final, out


@pytest.mark.slow
def test_detector_overfits_a_few_images_to_map_0_9(tmp_path):
    ids, records = make_fit_records(str(tmp_path))
    history, final, _ = fit_and_score(tmp_path, ids, records, TRAIN_FLAGS)
    # Random initialization (near-uniform scores) is far from the bar; training clears it.
    assert history[0]['map_07'] < MAX_UNTRAINED_MAP, history[0]
    assert final['map_07'] >= MIN_MAP, final


@pytest.mark.slow
def test_resnet18_overfits_a_few_images_under_the_session_driver(tmp_path):
    """The cheap learning check, on every TensorFlow line (the session driver is the only one
    on TF 2.16+): batch norm, its moving averages and the ResNet input convention included;
    then its int8 TFLite export keeps mAP >= MIN_MAP."""
    ids, records = make_fit_records(str(tmp_path), RESNET18_IMAGES, RESNET18_SAMPLE)
    history, final, out = fit_and_score(tmp_path, ids, records, RESNET18_FLAGS,
                                        ['--driver=session'])
    assert 'session driver' in out, out[-3000:]
    # It trains in the default precision (auto): bf16 on a CPU that has it, fp32 elsewhere.
    import tensorflow as tf
    from utility.training import precision as precision_lib
    expected, _ = precision_lib.resolve_precision(
        'auto', bool(tf.config.list_physical_devices('GPU')), precision_lib.cpu_supports_bf16())
    with open(tmp_path / 'model' / 'params.json') as f:
        assert json.load(f)['precision'] == expected
    print('precision: %s' % expected)
    assert history[0]['map_07'] < MAX_UNTRAINED_MAP, history[0]
    assert final['map_07'] >= MIN_MAP, final

    # The fitted model survives full-integer quantization: its int8 TFLite export, calibrated
    # on the same records, scores through eval_ssd.py --model nearly as the checkpoint does.
    export_dir = tmp_path / 'tflite'
    proc = run_script(['export_ssd.py', '--model_dir=' + str(tmp_path / 'model'),
                       '--export_dir=' + str(export_dir), '--format=tflite', '--quantize=int8',
                       '--calibration_data=' + records], timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    proc = run_script(['eval_ssd.py', '--model=' + str(export_dir / 'model_int8.tflite'),
                       '--data_dir=' + records, '--split=val', '--num_threads=2',
                       '--output_dir=' + str(tmp_path / 'eval_int8')], timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(tmp_path / 'eval_int8' / 'metrics.json') as f:
        int8 = json.load(f)
    print('int8 TFLite: mAP VOC07 %.4f (checkpoint %.4f)' % (int8['map_07'], final['map_07']))
    assert int8['num_images'] == len(ids) and int8['map_07'] >= MIN_MAP, int8


def test_noaugment_trains_on_the_eval_preprocessing(tfrecord_dir):
    """params['augment'] False: training images are exactly the eval images (still shuffled)."""
    import numpy as np
    import tensorflow as tf
    from utility import ssd_model

    def first_batches(params, is_training, n):
        pattern = os.path.join(tfrecord_dir, 'train-*')
        with tf.Graph().as_default():
            dataset = ssd_model.make_input_fn(params, is_training, file_pattern=pattern)()
            batch = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
            with tf.compat.v1.Session() as sess:
                return [sess.run(batch) for _ in range(n)]

    params = ssd_model.make_params(data_dir=tfrecord_dir, batch_size=2, augment=False,
                                   num_readers=2)
    evals = {}
    for features in first_batches(params, False, 5):
        for name, image in zip(features['filename'], features['image']):
            evals[name] = image
    train = first_batches(params, True, 3)
    for features, labels in train:
        assert (labels['cls_targets'] > 0).any()
        for name, image in zip(features['filename'], features['image']):
            np.testing.assert_array_equal(image, evals[name])
    # with augmentation (the default) the same images differ from the eval ones
    augmented = first_batches(ssd_model.make_params(data_dir=tfrecord_dir, batch_size=2,
                                                    num_readers=2), True, 2)
    assert any(image.shape != evals[name].shape or not np.array_equal(image, evals[name])
               for features, _ in augmented
               for name, image in zip(features['filename'], features['image']))


def test_select_images_keeps_only_images_with_large_objects(tmp_path):
    from dataset.make_voc_sample import make_voc_sample
    from dataset.select_images import image_objects, select_images

    split_dir = make_voc_sample(str(tmp_path), num_images=12, seed=0)
    ids = select_images(split_dir, NUM_IMAGES, MIN_OBJECT, output_name='VOC2012_fit')
    assert ids == ['2012_000007', '2012_000008']
    fit = tmp_path / 'VOC2012_fit'
    for split in ('train', 'val', 'trainval'):
        assert (fit / 'ImageSets' / 'Main' / (split + '.txt')).read_text().split() == ids
    for i in ids:
        assert (fit / 'JPEGImages' / (i + '.jpg')).exists()
        objects = image_objects(str(fit / 'Annotations' / (i + '.xml')))
        assert objects and all(w >= MIN_OBJECT and h >= MIN_OBJECT and not d
                               for _, w, h, d in objects)
    import pytest
    with pytest.raises(ValueError, match=r'Only \d+ image\(s\) in .* generate more images'):
        select_images(split_dir, 50, MIN_OBJECT)
