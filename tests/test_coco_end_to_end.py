"""COCO through the real scripts: convert_coco_tfrecords.py -> train_ssd.py -> eval_ssd.py.

* A few training steps of a ResNet-18 on the COCO-format sample, then `eval_ssd.py` (COCO
  metric by default on COCO data; `--metric both` prints both tables and writes
  coco_results.json, which pycocotools scores to the same printed figures against the
  sample's own instances_val.json).
* The overfit check on the COCO-format sample: AP50 >= 0.9 on the fitted images, with the
  cheap ResNet-18 configuration of tests/test_learning.py (conftest.RESNET18_OVERFIT_FLAGS,
  --batch_norm_decay=0.9 so that the moving averages of a 150-step fit are its own); the
  VGG-16 overfit check stays on VOC (test_learning.py), the original's network and data.
"""
import contextlib
import io
import json
import os

import pytest

from conftest import RESNET18_OVERFIT_FLAGS, TRAIN_FAST_FLAGS, run_script

FIT_IMAGE_IDS = (1006, 1007)  # images 2012_000007, 2012_000008 (index 6, 7) of tests/test_learning.py


def _convert(sample, split, out, annotations=None):
    proc = run_script(['dataset/convert_coco_tfrecords.py', '--annotations_file',
                       annotations or os.path.join(sample, 'annotations',
                                                   'instances_%s.json' % split),
                       '--images_dir', os.path.join(sample, 'images'),
                       '--output_directory', out, '--split', split, '--num_shards', '2',
                       '--num_threads', '2'])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _pycocotools_summary(annotation_file, results_file):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(annotation_file)
        evaluator = COCOeval(gt, gt.loadRes(results_file), 'bbox')
        evaluator.evaluate()
        evaluator.accumulate()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        evaluator.summarize()
    return printed.getvalue().strip(), evaluator.stats


@pytest.mark.slow
def test_coco_sample_converts_trains_and_evaluates_with_both_metrics(tmp_path):
    from dataset.make_voc_sample import make_coco_sample
    sample = make_coco_sample(str(tmp_path), num_images=8, seed=0)
    records = str(tmp_path / 'records')
    _convert(sample, 'train', records)
    _convert(sample, 'val', records)
    model_dir = str(tmp_path / 'model')
    proc = run_script(['train_ssd.py', '--data_dir=' + records, '--model_dir=' + model_dir,
                       '--backbone=resnet18', '--max_number_of_steps=2'] + TRAIN_FAST_FLAGS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    with open(os.path.join(model_dir, 'params.json')) as f:
        params = json.load(f)
    assert params['anchor_preset'] == 'coco'  # from the manifest
    assert params['anchor_spec']['anchor_scales'][0] == pytest.approx(0.07)

    common = ['eval_ssd.py', '--data_dir=' + records, '--model_dir=' + model_dir,
              '--data_format=channels_last', '--batch_size=2', '--num_readers=1']
    default = run_script(common + ['--output_dir=' + str(tmp_path / 'eval_default')])
    assert default.returncode == 0, default.stdout[-3000:] + default.stderr[-5000:]
    assert 'COCO AP@[.5:.95]:' in default.stdout
    assert 'mAP VOC07 11-point' not in default.stdout  # COCO data: the COCO metric only

    proc = run_script(common + ['--metric=both'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith('mAP VOC07 11-point') for line in lines)
    summary_line = [line for line in lines if line.startswith('COCO AP@[.5:.95]:')]
    assert len(summary_line) == 1
    eval_dir = os.path.join(model_dir, 'eval')
    results_file = os.path.join(eval_dir, 'coco_results.json')
    with open(results_file) as f:
        results = json.load(f)
    annotation_file = os.path.join(sample, 'annotations', 'instances_val.json')
    with open(annotation_file) as f:
        truth = json.load(f)
    assert results, 'a 2-step model still detects something at select_threshold 0.01'
    assert {r['image_id'] for r in results} <= {i['id'] for i in truth['images']}
    assert {r['category_id'] for r in results} <= {c['id'] for c in truth['categories']}
    per_image = {}
    for r in results:
        per_image[r['image_id']] = per_image.get(r['image_id'], 0) + 1
        assert len(r['bbox']) == 4 and set(r) == {'image_id', 'category_id', 'bbox', 'score'}
    assert max(per_image.values()) <= 100
    # pycocotools on the written results and the sample's own annotation file prints the
    # table eval_ssd.py printed, and metrics.json holds its figures.
    direct, stats = _pycocotools_summary(annotation_file, results_file)
    assert direct in proc.stdout
    assert summary_line[0].startswith('COCO AP@[.5:.95]: %.4f' % stats[0])
    with open(os.path.join(eval_dir, 'metrics.json')) as f:
        metrics = json.load(f)
    assert metrics['coco']['AP50'] == pytest.approx(stats[1], abs=1e-9)
    assert metrics['map_07'] is not None and metrics['metrics_computed'] == ['voc', 'coco']


def _fit_annotations(sample, path):
    """The sample's FIT_IMAGE_IDS (train and val jsons merged) as one COCO json, every
    annotation a plain one: the sample makes the first object of image 1007 a crowd region,
    which training never learns; the crowd rules are tested on their own
    (test_coco_metric.py, test_coco_targets.py)."""
    images, annotations, categories = [], [], None
    for split in ('train', 'val'):
        with open(os.path.join(sample, 'annotations', 'instances_%s.json' % split)) as f:
            data = json.load(f)
        categories = data['categories']
        images += [i for i in data['images'] if i['id'] in FIT_IMAGE_IDS]
        annotations += [dict(a, iscrowd=0) for a in data['annotations']
                        if a['image_id'] in FIT_IMAGE_IDS]
    assert sorted(i['id'] for i in images) == list(FIT_IMAGE_IDS)
    with open(path, 'w') as f:
        json.dump({'images': images, 'annotations': annotations, 'categories': categories}, f)
    return path


@pytest.mark.slow
def test_detector_overfits_the_coco_sample_to_ap50_0_9(tmp_path):
    """tests/test_learning.py's overfit check on the COCO-format sample, scored by the COCO
    metric: the same two large-object images (ResNet-18 from scratch, no augmentation, the
    cheap check's 150 steps), trained and evaluated through the real scripts; AP50 must reach
    0.9 and the step-0 checkpoint must score far below it."""
    from dataset.make_voc_sample import make_coco_sample
    sample = make_coco_sample(str(tmp_path), num_images=12, seed=0)
    fit = _fit_annotations(sample, str(tmp_path / 'instances_fit.json'))
    records = str(tmp_path / 'records')
    _convert(sample, 'train', records, annotations=fit)
    _convert(sample, 'val', records, annotations=fit)
    model_dir = str(tmp_path / 'model')
    # the VOC anchors of test_learning.py's measured runs: the fitted objects are large, and
    # the preset does not change what this test proves
    flags = RESNET18_OVERFIT_FLAGS + ['--anchor_preset=voc', '--batch_size=2']
    steps = int([f for f in flags if f.startswith('--max_number_of_steps=')][-1].split('=')[1])
    proc = run_script(['train_ssd.py', '--data_dir=' + records, '--model_dir=' + model_dir]
                      + flags, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    eval_dir = str(tmp_path / 'eval')
    proc = run_script(['eval_ssd.py', '--watch', '--model_dir=' + model_dir,
                       '--data_dir=' + records, '--split=val', '--output_dir=' + eval_dir,
                       '--data_format=channels_last', '--batch_size=2', '--num_readers=1',
                       '--watch_interval_secs=1', '--watch_timeout_secs=5',
                       '--watch_max_step=%d' % steps], timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    with open(os.path.join(eval_dir, 'metrics_history.jsonl')) as f:
        history = [json.loads(line) for line in f]
    for record in history:
        print('step %d: COCO AP %.4f AP50 %.4f' % (record['global_step'], record['coco']['AP'],
                                                   record['coco']['AP50']))
    assert [r['global_step'] for r in history] == [0, steps]
    assert history[0]['coco']['AP50'] < 0.3, history[0]
    assert history[-1]['coco']['AP50'] >= 0.9, history[-1]
