"""benchmarks/bench_ssd.py: the FLOP count it reports (benchmarks/flops.py), and the shape of a
tiny --json run.

Speed itself is never asserted: the benchmark reports it.
"""
import importlib.util
import io
import json
import os
from contextlib import redirect_stdout

import pytest

from conftest import REPO_ROOT, run_script


def _load_bench():
    path = os.path.join(REPO_ROOT, 'benchmarks', 'bench_ssd.py')
    spec = importlib.util.spec_from_file_location('bench_ssd', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_conv_macs_equal_the_hand_count():
    from benchmarks import flops
    from utility import ssd_model
    macs = flops.ssd300_conv_macs(ssd_model.make_params())
    # 13 VGG convs + fc6 + fc7, 8 extra-layer convs, 6 loc + 6 cls heads.
    assert len(macs) == 35
    # conv1_1: 300x300 outputs x 3x3 kernel x 3 in x 64 out channels.
    assert macs['ssd300/conv1/conv1_1'] == 300 * 300 * 9 * 3 * 64 == 155520000
    # fc6 at its nominal 19x19 output, 3x3 (dilated) x 512 x 1024.
    assert macs['ssd300/fc6'] == 19 * 19 * 9 * 512 * 1024
    # conv11_2: 1x1 output of a VALID 3x3 conv on 3x3, 128 -> 256 channels.
    assert macs['ssd300/additional_layers/conv11/conv11_2'] == 9 * 128 * 256
    # cls_0 on conv4_3: 38x38 x 3x3 x 512 x (4 anchors x 21 classes).
    assert macs['ssd300/multibox_head/cls_0'] == 38 * 38 * 9 * 512 * 84
    # Whole network, summed by hand layer by layer: 31.37 GMAC -> 188.2 GFLOP per
    # training image (x 2 FLOPs per MAC x 3 for forward + backward).
    assert sum(macs.values()) == 31373537792
    assert round(sum(macs.values()) * 2 * flops.TRAIN_FLOP_FACTOR / 1e9, 1) == 188.2


def test_benchmark_data_is_voc07_sized():
    from benchmarks.stage_metric import make_benchmark_data
    detections, ground_truth = make_benchmark_data(num_images=50)
    assert len(ground_truth) == 50
    assert sum(len(d) for d in detections) == 50 * 200
    from evaluation import voc_metric
    result = voc_metric.evaluate(detections, ground_truth, 21)
    assert 0.0 < result['map_area'] < 1.0


def test_json_run_of_the_cheap_stages(tmp_path):
    bench = _load_bench()
    out = io.StringIO()
    with redirect_stdout(out):
        code = bench.main(['--stages', 'metric,convert', '--json', '--metric_images', '200',
                           '--metric_repeats', '1', '--num_images', '8', '--repeats', '1',
                           '--convert_shards', '1', '--cache_dir', str(tmp_path)])
    assert code == 0
    report = json.loads(out.getvalue())
    assert report['machine']['cores'] >= 1
    assert report['machine']['tensorflow'] and report['machine']['cpu_model']
    assert len(report['load_average_after']) == 3
    assert list(report['stages']) == ['metric', 'convert']
    metric = report['stages']['metric']
    assert metric['images'] == 200
    assert metric['detections'] == 200 * 200  # 200 per image in make_benchmark_data
    assert metric['meets_target'] == (metric['seconds_best'] < 1.0)
    convert = report['stages']['convert']
    assert convert['images_per_run'] == 8  # every sample image is in train or val
    assert convert['images_per_s'] > 0


def test_unknown_stage_is_an_error(capsys):
    bench = _load_bench()
    assert bench.main(['--stages', 'input,nope']) == 2
    assert 'unknown stage(s) nope' in capsys.readouterr().err


@pytest.mark.slow
def test_tflite_stage_exports_and_times_three_models(tmp_path):
    """--stages tflite: a stand-in checkpoint exported as SavedModel, TFLite fp32 and int8,
    each timed in its own process; int8's ratios against the targets."""
    proc = run_script([os.path.join('benchmarks', 'bench_ssd.py'), '--stages', 'tflite',
                       '--json', '--backbone', 'resnet18', '--tflite_threads', '1',
                       '--tflite_runs', '1', '--calibration_images', '2', '--num_images', '8',
                       '--cache_dir', str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage = json.loads(proc.stdout)['stages']['tflite']
    assert 'untrained' in stage['checkpoint']
    for name in ('saved_model_fp32', 'tflite_fp32', 'tflite_int8'):
        assert stage[name]['ms_1_threads'] > 0 and stage[name]['size_mb'] > 1
    assert stage['tflite_int8']['size_mb'] < 0.3 * stage['tflite_fp32']['size_mb']
    assert stage['int8_size_share_of_tflite_fp32'] < 0.3
    assert stage['int8_speedup_over_tflite_fp32'] > 0 and 'meets_targets' in stage


@pytest.mark.slow
def test_infer_stage_runs_in_a_worker_with_the_command_line_settings(tmp_path):
    """--stages infer: model_fn's PREDICT graph timed in its own worker process
    (benchmarks/workers.py), with the batch size, steps and trace folder given on the command
    line; the network's GFLOP/s from the FLOP count of the chosen backbone."""
    proc = run_script([os.path.join('benchmarks', 'bench_ssd.py'), '--stages', 'infer',
                       '--json', '--backbone', 'resnet18', '--infer_batch_size', '2',
                       '--infer_steps', '1', '--infer_warmup', '0', '--num_images', '8',
                       '--trace_dir', str(tmp_path / 'trace'),
                       '--cache_dir', str(tmp_path / 'cache')])
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage = json.loads(proc.stdout)['stages']['infer']
    assert stage['batch_size'] == 2
    assert stage['images_per_s'] > 0 and stage['peak_rss_gb'] > 0
    assert 0 <= stage['share_postprocess_alone'] and stage['detections_per_image_mean'] > 0
    assert stage['meets_target'] == (stage['share_postprocess_alone'] < 0.10)
    assert stage['trace_top_ops_ms'] and (tmp_path / 'trace' / 'infer_b2.json').is_file()
    from benchmarks import flops
    forward_gmac = flops.backbone_train_gflop('resnet18')[0]
    assert stage['gflop_per_s_network'] == pytest.approx(
        stage['network_only_images_per_s'] * 2 * forward_gmac, abs=0.1)
