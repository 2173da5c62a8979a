"""ONNX and OpenVINO exports (export_ssd.py --format onnx|openvino,
utility/inference/graph_export.py) and running them (utility/inference/runner.py, eval_ssd.py /
simple_ssd_demo.py --model).

The formats need the optional packages of requirements-export.txt (tf2onnx, onnx, onnxruntime,
openvino); a test of a format whose packages are not installed is skipped, with the package in
the reason. The slow tests export the session's 2-step model (conftest's trained_model_dir) and
compare eval_ssd.py's detections and mAP on the sample's val records with the checkpoint's.
"""
import json
import os

import cv2
import numpy as np
import pytest

from conftest import assert_one_line_error, assert_same_detections, read_detections, run_script
from utility.inference import graph_export
from utility.inference import runner

# The packages each format needs: to export, and to run.
PACKAGES = {'onnx': ('tf2onnx', 'onnx', 'onnxruntime'), 'openvino': ('openvino',)}
MODEL_FILES = {'onnx': ['labels.txt', 'model.json', 'model.onnx'],
               'openvino': ['labels.txt', 'model.bin', 'model.json', 'model.xml']}


def require_format(fmt):
    for module in PACKAGES[fmt]:
        pytest.importorskip(module, reason='%s is not installed (requirements-export.txt)'
                            % module)


# ----------------------------------------------------------------------------- fast


def test_unknown_suffix_missing_and_corrupt_models_are_one_line_errors(tmp_path):
    unknown = tmp_path / 'model.pb'
    unknown.write_bytes(b'x')
    with pytest.raises(ValueError, match=r"unknown model format '\.pb'; pass a file written by "
                                         r'export_ssd.py: \.tflite .*\.onnx .*\.xml'):
        runner.open_detector(str(unknown))
    with pytest.raises(ValueError, match='no such file; pass a .onnx file written by '
                                         'export_ssd.py --format onnx'):
        runner.open_detector(str(tmp_path / 'missing.onnx'))
    for fmt, name in (('onnx', 'model.onnx'), ('openvino', 'model.xml')):
        if all(_installed(m) for m in PACKAGES[fmt][-1:]):
            corrupt = tmp_path / name
            corrupt.write_bytes(b'not a model')
            with pytest.raises(ValueError) as caught:
                runner.open_detector(str(corrupt))
            assert 'is not a loadable' in str(caught.value), caught.value
            assert '\n' not in str(caught.value)
            assert not isinstance(caught.value, runner.MissingPackage)


@pytest.mark.parametrize('module,name', [('onnxruntime', 'model.onnx'),
                                         ('openvino', 'model.xml')])
def test_a_missing_runtime_is_a_one_line_missing_package_error(tmp_path, monkeypatch, module,
                                                                name):
    import sys
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    path = tmp_path / name
    path.write_bytes(b'x')
    with pytest.raises(runner.MissingPackage, match='needs the optional package %s, which is '
                       r'not installed; pip install -r requirements-export.txt' % module):
        runner.open_detector(str(path))


@pytest.mark.parametrize('fmt,module', [('onnx', 'tf2onnx'), ('onnx', 'onnx'),
                                        ('openvino', 'openvino')])
def test_export_checks_its_packages_before_writing(tmp_path, monkeypatch, fmt, module):
    import sys
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(runner.MissingPackage, match='export_ssd.py --format %s needs the '
                       'optional package %s' % (fmt, module)):
        graph_export.export({}, 'no-checkpoint', str(tmp_path / 'out'), ['none', 'a'], fmt)
    assert not (tmp_path / 'out').exists()


def _installed(module):
    import importlib.util
    return importlib.util.find_spec(module) is not None


# ----------------------------------------------------------------------------- slow


@pytest.fixture(scope='session')
def checkpoint_eval(trained_model_dir, tfrecord_dir, tmp_path_factory):
    """(output dir, metrics.json) of eval_ssd.py on the 2-step checkpoint, the sample's val."""
    out = tmp_path_factory.mktemp('checkpoint_eval')
    proc = run_script(['eval_ssd.py', '--model_dir=' + trained_model_dir,
                       '--data_dir=' + tfrecord_dir, '--output_dir=' + str(out),
                       '--batch_size=2', '--precision=fp32'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / 'metrics.json') as f:
        return str(out), json.load(f)


@pytest.mark.slow
@pytest.mark.parametrize('fmt', ['onnx', 'openvino'])
def test_export_gives_the_checkpoints_detections_and_map(trained_model_dir, tfrecord_dir,
                                                         voc_sample_dir, checkpoint_eval,
                                                         tmp_path, fmt):
    require_format(fmt)
    export_dir = tmp_path / 'export'
    proc = run_script(['export_ssd.py', '--model_dir=' + trained_model_dir,
                       '--export_dir=' + str(export_dir), '--format=' + fmt])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(os.listdir(export_dir)) == MODEL_FILES[fmt]
    model = str(export_dir / MODEL_FILES[fmt][-1])
    assert proc.stdout.strip().splitlines()[-1].endswith('written to ' + model)
    with open(export_dir / 'model.json') as f:
        sidecar = json.load(f)
    assert sidecar['format'] == fmt and sidecar['input']['shape'] == [1, 300, 300, 3]

    out = tmp_path / 'eval'
    proc = run_script(['eval_ssd.py', '--model=' + model, '--data_dir=' + tfrecord_dir,
                       '--output_dir=' + str(out), '--batch_size=2', '--num_threads=1'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'mAP VOC07 11-point' in proc.stdout
    assert '(%s, 1 thread(s))' % runner.SUFFIXES[os.path.splitext(model)[1]].RUNTIME \
        in proc.stdout
    with open(out / 'metrics.json') as f:
        metrics = json.load(f)
    checkpoint_dir, expected = checkpoint_eval
    assert metrics['checkpoint'] == model
    assert metrics['num_detections'] == expected['num_detections'] == 2 * 200
    # the same detections, paired by class, score and box (VOC pixels) whatever the order of
    # tied scores
    assert assert_same_detections(read_detections(str(out)), read_detections(checkpoint_dir),
                                  score_tol=1e-4, box_tol=0.05) >= 390
    for key in ('map_07', 'map_area'):
        assert abs(metrics[key] - expected[key]) <= 0.005, (key, metrics[key], expected[key])

    if fmt == 'onnx':  # the demo draws with the same runner
        image = os.path.join(voc_sample_dir, 'JPEGImages', '2012_000003.jpg')
        proc = run_script(['simple_ssd_demo.py', '--model=' + model, '--input=' + image,
                           '--output_dir=' + str(tmp_path / 'drawn'), '--score_threshold=0.0'])
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        drawn = cv2.imread(str(tmp_path / 'drawn' / '2012_000003_ssd.jpg'))
        source = cv2.imread(image)
        assert drawn.shape == source.shape
        assert np.abs(drawn.astype(int) - source.astype(int)).mean() > 2  # boxes were drawn


@pytest.mark.slow
def test_missing_package_and_shared_stem_are_one_line_errors(trained_model_dir, tmp_path):
    hidden = tmp_path / 'hidden'
    hidden.mkdir()
    for module in ('tf2onnx', 'onnxruntime'):
        (hidden / (module + '.py')).write_text('raise ImportError("hidden by the test")\n')
    env = {'PYTHONPATH': str(hidden)}
    export_dir = tmp_path / 'export'
    proc = run_script(['export_ssd.py', '--model_dir=' + trained_model_dir,
                       '--export_dir=' + str(export_dir), '--format=onnx'], env=env)
    assert proc.returncode == 2
    assert_one_line_error(proc, 'export_ssd.py --format onnx needs the optional package '
                                'tf2onnx', 'pip install -r requirements-export.txt')
    assert not export_dir.exists() or not os.listdir(export_dir)

    model = tmp_path / 'model.onnx'
    model.write_bytes(b'x')
    proc = run_script(['simple_ssd_demo.py', '--model=' + str(model),
                       '--input=' + str(_image(tmp_path)),
                       '--output_dir=' + str(tmp_path / 'drawn')], env=env)
    assert proc.returncode == 2
    assert_one_line_error(proc, 'needs the optional package onnxruntime')

    # model.tflite would share model.json with the model.onnx already there
    export_dir.mkdir(exist_ok=True)
    (export_dir / 'model.onnx').write_bytes(b'x')
    proc = run_script(['export_ssd.py', '--model_dir=' + trained_model_dir,
                       '--export_dir=' + str(export_dir), '--format=tflite'])
    assert proc.returncode == 2
    assert_one_line_error(proc, 'already holds model.onnx, whose model.json would be '
                                'overwritten')
    assert os.listdir(export_dir) == ['model.onnx']


def _image(folder):
    path = os.path.join(str(folder), 'photo.png')
    cv2.imwrite(path, np.full((60, 80, 3), 128, np.uint8))
    return path
