"""Any VOC-format dataset: the class names come from the data (issue #14).

A 3-class VOC-format dataset with made-up class names goes through the converter (--labels),
training, evaluation, the demo and the export without a code change; the names (in the label
file's order, not sorted, not VOC's) and num_classes 4 must reach every step.
"""
import json
import os
import re

import pytest

from conftest import TRAIN_FAST_FLAGS, run_script

CLASSES = ('widget', 'gizmo', 'sprocket')  # deliberately not alphabetical
NAMES = ['none'] + list(CLASSES)
SPLIT = 'Gadgets'


def _one_line_error(proc, *fragments):
    assert proc.returncode != 0, proc.stdout[-2000:]
    errors = [line for line in proc.stderr.splitlines()
              if line.startswith('error: ') or line.startswith('ERROR: ')]
    assert len(errors) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert 'Traceback' not in proc.stderr
    return errors[0]


# ----------------------------------------------------------------------------- fast unit tests


def test_read_label_map_ignores_blanks_and_whitespace(tmp_path):
    from dataset.labels import read_label_map
    path = tmp_path / 'labels.txt'
    path.write_text('\n  widget \n\n\tgizmo\nsprocket\n\n')
    assert read_label_map(str(path)) == tuple(NAMES)


@pytest.mark.parametrize('text, fragment', [
    ('', 'has no class names'),
    ('\n  \n\n', 'has no class names'),
    ('widget\ngizmo\nwidget\n', "lists class 'widget' twice (lines 1 and 3)"),
    ('none\nwidget\n', "line 1: 'none' is the implied background"),
])
def test_read_label_map_errors_are_one_line_naming_the_file(tmp_path, text, fragment):
    from dataset.labels import read_label_map
    path = tmp_path / 'labels.txt'
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        read_label_map(str(path))
    message = str(info.value)
    assert fragment in message and str(path) in message and '\n' not in message
    with pytest.raises(ValueError, match='cannot read the label file'):
        read_label_map(str(tmp_path / 'missing.txt'))


def test_make_voc_sample_writes_the_given_class_names(tmp_path):
    from dataset import make_voc_sample
    root = make_voc_sample.make_voc_sample(str(tmp_path), num_images=6, seed=1, name='S',
                                           classes='widget, gizmo,sprocket')
    found = set()
    for name in os.listdir(os.path.join(root, 'Annotations')):
        with open(os.path.join(root, 'Annotations', name)) as f:
            found.update(re.findall(r'<name>(.*)</name>', f.read()))
    assert found == set(CLASSES)
    with pytest.raises(ValueError, match='twice'):
        make_voc_sample.parse_classes('a,b,a')


def test_unknown_class_message_names_the_label_file(tmp_path):
    from dataset import make_voc_sample, voc_to_tfrecords
    make_voc_sample.make_voc_sample(str(tmp_path), num_images=3, seed=2, name='S',
                                    classes=CLASSES)
    labels = tmp_path / 'two.txt'
    labels.write_text('widget\ngizmo\n')  # sprocket missing
    with pytest.raises(voc_to_tfrecords.ConversionError) as info:
        voc_to_tfrecords.convert_dataset(str(tmp_path), str(tmp_path / 'out'), ['S'], [],
                                         train_shards=1, num_threads=1, train_list='trainval',
                                         label_file=str(labels))
    assert "unknown class 'sprocket'" in str(info.value)
    assert 'label file %s' % labels in str(info.value)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope='module')
def gadget_data(tmp_path_factory):
    """(dataset folder, tfrecords folder) of a 10-image, 3-class VOC-format dataset
    converted with the converter's command line and --labels."""
    from dataset import make_voc_sample
    root = str(tmp_path_factory.mktemp('gadgets'))
    make_voc_sample.make_voc_sample(root, num_images=10, seed=3, name=SPLIT, classes=CLASSES)
    labels = os.path.join(root, 'gadgets.txt')
    with open(labels, 'w') as f:
        f.write('widget\n\n  gizmo  \nsprocket\n')
    out = os.path.join(root, 'tfrecords')
    proc = run_script(['dataset/convert_voc_sample_tfrecords.py', '--dataset_directory=' + root,
                       '--output_directory=' + out, '--train_splits=' + SPLIT,
                       '--validation_splits=' + SPLIT, '--train_shards=1',
                       '--validation_shards=1', '--num_threads=1', '--labels=' + labels])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return os.path.join(root, SPLIT), out


@pytest.fixture(scope='module')
def gadget_model(gadget_data, tmp_path_factory):
    """model_dir of a 1-step, batch-2 from-scratch training run on the gadget records, with
    --num_classes left to the manifest."""
    model_dir = str(tmp_path_factory.mktemp('gadget_model') / 'model')
    proc = run_script(['train_ssd.py', '--data_dir=' + gadget_data[1],
                       '--model_dir=' + model_dir, '--max_number_of_steps=1']
                      + TRAIN_FAST_FLAGS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return model_dir


@pytest.mark.slow
def test_manifest_records_the_label_file_names(gadget_data):
    with open(os.path.join(gadget_data[1], 'manifest.json')) as f:
        manifest = json.load(f)
    assert manifest['labels'] == NAMES
    per_class = manifest['splits']['train']['objects_per_class']
    assert list(per_class) == list(CLASSES) and sum(per_class.values()) > 0


@pytest.mark.slow
def test_explicit_num_classes_that_disagrees_with_the_manifest(gadget_data, tmp_path):
    model_dir = tmp_path / 'model'
    proc = run_script(['train_ssd.py', '--data_dir=' + gadget_data[1],
                       '--model_dir=' + str(model_dir), '--num_classes=21']
                      + TRAIN_FAST_FLAGS)
    _one_line_error(proc, '--num_classes=21', '4 classes',
                    os.path.join(gadget_data[1], 'manifest.json'))
    written = sorted(os.listdir(str(model_dir))) if model_dir.exists() else []
    assert not [f for f in written if f.startswith('model.ckpt') or f == 'params.json'], written


@pytest.mark.slow
def test_training_records_the_names_and_four_classes(gadget_model):
    import tensorflow as tf
    with open(os.path.join(gadget_model, 'params.json')) as f:
        params = json.load(f)
    assert params['num_classes'] == 4 and params['class_names'] == NAMES
    shapes = tf.train.load_checkpoint(gadget_model).get_variable_to_shape_map()
    assert shapes['ssd300/multibox_head/cls_0/biases'][-1] % 4 == 0
    assert shapes['ssd300/multibox_head/cls_0/biases'][-1] // 4 == 4  # 4 anchors x 4 classes


@pytest.mark.slow
def test_eval_reports_the_made_up_classes(gadget_data, gadget_model, tmp_path):
    split_dir, records = gadget_data
    for extra in ([], ['--annotations_dir=' + os.path.join(split_dir, 'Annotations')]):
        out = tmp_path / ('xml' if extra else 'records')
        proc = run_script(['eval_ssd.py', '--data_dir=' + records,
                           '--model_dir=' + gadget_model, '--output_dir=' + str(out),
                           '--batch_size=2', '--data_format=channels_last'] + extra)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert 'names the classes' not in proc.stderr  # params.json agrees with the manifest
        with open(out / 'metrics.json') as f:
            metrics = json.load(f)
        assert [c['name'] for c in metrics['classes']] == list(CLASSES)
        assert [c['label'] for c in metrics['classes']] == [1, 2, 3]
        table = proc.stdout[proc.stdout.index('AP VOC07 11pt'):].splitlines()
        assert [line.split()[0] for line in table[1:4]] == list(CLASSES)
        assert table[4].startswith('mAP')
        for name in CLASSES:
            assert (out / ('comp4_det_test_%s.txt' % name)).exists()
        assert not (out / 'comp4_det_test_aeroplane.txt').exists()


@pytest.mark.slow
def test_demo_draws_with_the_made_up_names(gadget_data, gadget_model, tmp_path):
    image = os.path.join(gadget_data[0], 'JPEGImages', '2012_000001.jpg')
    out = tmp_path / 'drawn'
    proc = run_script(['simple_ssd_demo.py', '--checkpoint_path=' + gadget_model,
                       '--input=' + image, '--output_dir=' + str(out),
                       '--score_threshold=0.0', '--data_format=channels_last'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert os.listdir(out) == ['2012_000001_ssd.jpg']
    line = [l for l in proc.stdout.splitlines() if l.startswith(image + ': ')][0]
    listed = re.findall(r'(\w+) \d+\.\d\d \[', line)
    assert listed and set(listed) <= set(CLASSES), line


@pytest.mark.slow
def test_export_lists_the_made_up_names(gadget_model, tmp_path):
    export_base = str(tmp_path / 'export')
    proc = run_script(['export_ssd.py', '--model_dir=' + gadget_model,
                       '--export_dir=' + export_base, '--data_format=channels_last'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exported = proc.stdout.strip().splitlines()[-1].split('SavedModel written to ')[1]
    with open(os.path.join(exported, 'assets.extra', 'labels.txt')) as f:
        assert f.read().split('\n') == NAMES + ['']


@pytest.mark.slow
def test_demo_refuses_a_num_classes_that_disagrees_with_params_json(gadget_data, gadget_model,
                                                                    tmp_path):
    image = os.path.join(gadget_data[0], 'JPEGImages', '2012_000001.jpg')
    proc = run_script(['simple_ssd_demo.py', '--checkpoint_path=' + gadget_model,
                       '--input=' + image, '--output_dir=' + str(tmp_path / 'd'),
                       '--num_classes=21'])
    _one_line_error(proc, '--num_classes=21', '4 class names', 'params.json',
                    'use --num_classes=4')


def test_converting_a_split_with_other_labels_drops_the_stale_splits(tmp_path):
    import io
    from dataset import make_voc_sample, voc_to_tfrecords
    make_voc_sample.make_voc_sample(str(tmp_path), num_images=4, seed=4, name='S',
                                    classes=CLASSES)
    labels = tmp_path / 'labels.txt'
    labels.write_text('\n'.join(CLASSES) + '\n')
    out = str(tmp_path / 'out')
    quiet = voc_to_tfrecords.Reporter(out=io.StringIO(), err=io.StringIO())
    first = voc_to_tfrecords.convert_dataset(str(tmp_path), out, ['S'], ['S'], train_shards=1,
                                             validation_shards=1, num_threads=1,
                                             label_file=str(labels), reporter=quiet)
    assert first['labels'] == NAMES and sorted(first['splits']) == ['train', 'val']
    labels.write_text('sprocket\nwidget\ngizmo\n')  # same classes, other label ids
    err = io.StringIO()
    second = voc_to_tfrecords.convert_dataset(
        str(tmp_path), out, [], ['S'], validation_shards=1, num_threads=1,
        label_file=str(labels), reporter=voc_to_tfrecords.Reporter(out=io.StringIO(), err=err))
    assert second['labels'] == ['none', 'sprocket', 'widget', 'gizmo']
    assert sorted(second['splits']) == ['val'] and 'dropping them' in err.getvalue()


def test_checkpoint_class_names_fall_back_to_voc(tmp_path):
    from dataset.labels import VOC_LABELS
    from utility.inference import checkpoint_params
    assert checkpoint_params.checkpoint_class_names(str(tmp_path / 'model.ckpt-1')) == (
        list(VOC_LABELS), None)
    (tmp_path / 'params.json').write_text(json.dumps({'class_names': NAMES, 'num_classes': 4}))
    assert checkpoint_params.checkpoint_class_names(str(tmp_path / 'model.ckpt-1')) == (
        NAMES, str(tmp_path / 'params.json'))
    with pytest.raises(ValueError, match='class names .* of .*params.json; use --num_classes=4'):
        checkpoint_params.check_num_classes(21, NAMES, str(tmp_path / 'params.json'))
