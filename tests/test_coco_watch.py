"""eval_ssd.py --watch with the COCO metric: its figures in the history and in TensorBoard."""
import glob
import os

import pytest
import tensorflow as tf

from evaluation.coco_metric import STAT_NAMES
from utility.inference import watch as eval_watch


def _coco_summary(ap):
    coco = {name: ap / (k + 1) for k, name in enumerate(STAT_NAMES)}
    coco.update({'num_detections': 7, 'ap_per_class': {'cat': ap}})
    return {'metrics_computed': ['coco'], 'coco': coco, 'evaluated_at': 'now'}


def test_watch_records_coco_figures_without_the_voc_metric(tmp_path):
    model_dir = str(tmp_path / 'model')
    os.makedirs(model_dir)
    open(os.path.join(model_dir, 'model.ckpt-30.index'), 'w').close()
    lines = []
    records = eval_watch.watch_checkpoints(
        model_dir, lambda prefix: _coco_summary(0.6), str(tmp_path / 'out'), interval_secs=1,
        timeout_secs=0, max_step=30, log=lines.append, sleep=lambda s: None)
    assert records[0]['map_07'] is None and records[0]['num_detections'] == 7
    history = eval_watch.read_history(str(tmp_path / 'out' / eval_watch.HISTORY_FILE))
    assert history[0]['coco']['AP'] == pytest.approx(0.6)
    assert history[0]['coco']['AP50'] == pytest.approx(0.3)
    assert history[0]['coco_ap'] == {'cat': pytest.approx(0.6)}
    assert any('global step 30: COCO AP 0.6000, AP50 0.3000' in line for line in lines)
    events = {}
    for path in glob.glob(os.path.join(model_dir, 'eval', 'events.out.tfevents.*')):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                events[(value.tag, event.step)] = value.simple_value
    assert events[('COCO/AP', 30)] == pytest.approx(0.6)
    assert events[('COCO/AP75', 30)] == pytest.approx(0.2)
    assert events[('COCO/AR100', 30)] == pytest.approx(0.6 / 9)
    assert events[('AP_COCO/cat', 30)] == pytest.approx(0.6)
    assert not any(tag.startswith('mAP/') for tag, _ in events)
