"""A model directory knows what it is (issue 24, items 3, 4 and 7).

* item 4: records without manifest.json: the class names come from the records'
  image/object/bbox/label_text (or a one-line refusal), in training and in eval;
* item 3: the checkpoint's variables say backbone, class count and anchors; params.json is
  checked against them, a params.json without the identity keys is refused, a missing one never
  lets the defaults resume a ResNet-18 model, and `tools.rebuild_params` repairs it;
* item 7: fine-tuning from a whole SSD of the same backbone restores every variable whose name
  and shape match (the class heads of another class count are listed, not restored); a run
  refused at restore leaves no params.json behind.

One ResNet-18 model, trained 1 step on 3-class records whose manifest is gone, serves the module.
"""
import json
import os
import shutil
import types

import numpy as np
import pytest

from conftest import TRAIN_FAST_FLAGS, run_script, write_variables

CLASSES = ('widget', 'gizmo', 'sprocket')
NAMES = ['none'] + list(CLASSES)
SPLIT = 'Gadgets'
RESNET = ['--backbone=resnet18']
# TRAIN_FAST_FLAGS without their --backbone: runs that take train_ssd.py's default (vgg16).
DEFAULT_BACKBONE_FLAGS = [f for f in TRAIN_FAST_FLAGS if not f.startswith('--backbone=')]


def _one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert 'Traceback' not in proc.stderr
    return errors[0]


# ----------------------------------------------------------------------------- records, fast


def _write_records(path, objects_per_image):
    """A TFRecord file of Examples with only label and label_text (no image is read)."""
    import tensorflow as tf
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for objects in objects_per_image:
            feature = {'image/object/bbox/label': tf.train.Feature(
                int64_list=tf.train.Int64List(value=[label for label, _ in objects]))}
            texts = [name.encode('utf-8') for _, name in objects if name is not None]
            if texts:
                feature['image/object/bbox/label_text'] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=texts))
            writer.write(tf.train.Example(
                features=tf.train.Features(feature=feature)).SerializeToString())


@pytest.mark.parametrize('objects, expected', [
    ([[(1, 'widget'), (3, 'sprocket')], [(2, 'gizmo')], []], tuple(NAMES)),
    ([[(1, 'aeroplane'), (15, 'person')], [(15, 'person')]], 'voc'),
    ([[(1, None), (2, None)]], 'voc'),          # records without names: VOC, as before
    ([[(1, 'café'), (2, '人物')]], ('none', 'café', '人物')),
])
def test_class_names_come_from_the_records_without_a_manifest(tmp_path, objects, expected):
    from dataset.class_names import class_names_of
    from dataset.labels import VOC_LABELS
    _write_records(str(tmp_path / 'train-00000-of-00001'), objects)
    names, source = class_names_of(str(tmp_path), 'train')
    if expected == 'voc':
        assert (names, source) == (VOC_LABELS, None)
    else:
        assert names == expected and 'label_text' in source


def test_records_that_disagree_with_voc_and_leave_a_gap_are_refused(tmp_path):
    from dataset.class_names import class_names_of
    _write_records(str(tmp_path / 'val-00000-of-00001'), [[(1, 'widget'), (3, 'sprocket')]])
    with pytest.raises(ValueError) as info:
        class_names_of(str(tmp_path), 'val')
    message = str(info.value)
    assert '\n' not in message and '1 widget, 3 sprocket' in message
    assert 'label(s) 2 unnamed' in message and '--labels' in message
    # ... unless the model's own table (params.json) names them consistently.
    known = (('none', 'widget', 'gizmo', 'sprocket'), 'model/params.json')
    assert class_names_of(str(tmp_path), 'val', known=known) == known


def test_records_that_name_one_label_twice_are_refused(tmp_path):
    from dataset.class_names import class_names_of
    _write_records(str(tmp_path / 'train-00000-of-00001'), [[(1, 'widget')], [(1, 'gizmo')]])
    with pytest.raises(ValueError, match=r"name label 1 both '(widget|gizmo)' and "):
        class_names_of(str(tmp_path), 'train')


def test_backbones_are_recognised_from_variable_names():
    from net import backbones
    vgg = [name.split('/', 1)[1] for name, _ in backbones.VGG_REDUCED_FC_SHAPES]
    assert backbones.identify_backbone(vgg + ['conv4_3_scale/weights'],
                                       ignore_scopes=('conv4_3_scale',)) == 'vgg16'
    r18 = ['conv1/weights'] + ['%s/BatchNorm/gamma' % s
                               for s in backbones.layer_scopes('resnet18')[1:]]
    assert backbones.identify_backbone(r18) == 'resnet18'
    r34 = ['conv1/weights'] + ['%s/conv1/weights' % s
                               for s in backbones.layer_scopes('resnet34')[1:]]
    assert backbones.identify_backbone(r34) == 'resnet34'
    assert backbones.identify_backbone(r18 + ['block1/unit_3/basic_v1/conv1/weights']) is None
    assert backbones.identify_backbone(['something/else']) is None


# ----------------------------------------------------------------------------- the model


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """(split folder, records folder WITHOUT manifest.json) of a 10-image, 3-class dataset."""
    from dataset import make_voc_sample, voc_to_tfrecords
    import io
    root = str(tmp_path_factory.mktemp('identity_data'))
    make_voc_sample.make_voc_sample(root, num_images=10, seed=3, name=SPLIT, classes=CLASSES)
    labels = os.path.join(root, 'labels.txt')
    with open(labels, 'w') as f:
        f.write('\n'.join(CLASSES) + '\n')
    out = os.path.join(root, 'tfrecords')
    voc_to_tfrecords.convert_dataset(
        root, out, [SPLIT], [SPLIT], train_shards=1, validation_shards=1, num_threads=1,
        label_file=labels, reporter=voc_to_tfrecords.Reporter(out=io.StringIO(),
                                                              err=io.StringIO()))
    os.remove(os.path.join(out, 'manifest.json'))  # lost
    return os.path.join(root, SPLIT), out


@pytest.fixture(scope='module')
def model(data, tmp_path_factory):
    """A ResNet-18 model_dir trained 1 step on the manifest-less records."""
    model_dir = str(tmp_path_factory.mktemp('identity_model') / 'model')
    proc = run_script(['train_ssd.py', '--data_dir=' + data[1], '--model_dir=' + model_dir,
                       '--max_number_of_steps=1'] + RESNET + TRAIN_FAST_FLAGS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return model_dir


def _copy(model, tmp_path, name='copy'):
    target = str(tmp_path / name)
    shutil.copytree(model, target)
    return target


def _params(model_dir):
    with open(os.path.join(model_dir, 'params.json')) as f:
        return json.load(f)


@pytest.mark.slow
def test_training_without_manifest_takes_the_records_names(model):
    params = _params(model)
    assert params['class_names'] == NAMES and params['num_classes'] == 4
    assert params['backbone'] == 'resnet18'


@pytest.mark.slow
def test_checkpoint_says_which_model_it_holds(model):
    from utility.checkpoints import restore
    identity = restore.ssd_checkpoint_identity(model)
    assert identity == {'model_scope': 'ssd300', 'backbone': 'resnet18', 'num_classes': 4,
                        'anchors_per_location': [4, 6, 6, 6, 4, 4]}


@pytest.mark.slow
def test_eval_without_manifest_names_the_records_classes(data, model, tmp_path):
    out = tmp_path / 'eval'
    proc = run_script(['eval_ssd.py', '--data_dir=' + data[1], '--model_dir=' + model,
                       '--output_dir=' + str(out), '--batch_size=2',
                       '--data_format=channels_last'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / 'metrics.json') as f:
        assert [c['name'] for c in json.load(f)['classes']] == list(CLASSES)


@pytest.mark.slow
def test_an_empty_params_json_is_refused_and_kept(data, model, tmp_path):
    model_dir = _copy(model, tmp_path)
    with open(os.path.join(model_dir, 'params.json'), 'w') as f:
        f.write('{}')
    proc = run_script(['train_ssd.py', '--data_dir=' + data[1], '--model_dir=' + model_dir,
                       '--max_number_of_steps=2'] + RESNET + TRAIN_FAST_FLAGS)
    _one_line_error(proc, 'lacks num_classes and anchor_spec',
                    'python3 -m tools.rebuild_params --model_dir %s' % model_dir)
    assert _params(model_dir) == {}


@pytest.mark.slow
def test_a_deleted_params_json_never_resumes_as_the_default_backbone(data, model, tmp_path):
    model_dir = _copy(model, tmp_path)
    os.remove(os.path.join(model_dir, 'params.json'))
    # The default --backbone (vgg16) is refused, naming what the checkpoint holds; nothing is
    # written.
    proc = run_script(['train_ssd.py', '--data_dir=' + data[1], '--model_dir=' + model_dir,
                       '--max_number_of_steps=2'] + DEFAULT_BACKBONE_FLAGS)
    _one_line_error(proc, 'a resnet18 SSD (scope ssd300) with 4 classes',
                    'this run has backbone="vgg16"', 'pass --backbone resnet18 to resume it')
    assert not os.path.exists(os.path.join(model_dir, 'params.json'))
    # The repair the errors advise: params.json rebuilt from the checkpoint (and the data).
    proc = run_script(['-m', 'tools.rebuild_params', '--model_dir=' + model_dir,
                       '--data_dir=' + data[1]])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    params = _params(model_dir)
    assert (params['backbone'], params['num_classes'], params['class_names']) == (
        'resnet18', 4, NAMES)
    # The right --backbone now resumes: one more step from the checkpoint.
    proc = run_script(['train_ssd.py', '--data_dir=' + data[1], '--model_dir=' + model_dir,
                       '--max_number_of_steps=2'] + RESNET + TRAIN_FAST_FLAGS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'Resuming from' in proc.stdout + proc.stderr
    assert os.path.exists(os.path.join(model_dir, 'model.ckpt-2.index'))


@pytest.mark.slow
def test_params_json_that_disagrees_with_the_checkpoint_is_refused(model, tmp_path):
    from utility.inference import checkpoint_params
    model_dir = _copy(model, tmp_path)
    params = _params(model_dir)
    with open(os.path.join(model_dir, 'params.json'), 'w') as f:
        json.dump(dict(params, backbone='vgg16'), f)
    checkpoint = checkpoint_params.find_checkpoint('', model_dir)
    with pytest.raises(ValueError) as info:
        checkpoint_params.checkpoint_identity(checkpoint)
    message = str(info.value)
    assert 'says backbone="vgg16" but checkpoint' in message and 'a resnet18 SSD' in message
    assert 'tools.rebuild_params --model_dir %s' % model_dir in message and '\n' not in message


@pytest.mark.slow
def test_inference_without_params_json_reads_the_backbone_from_the_checkpoint(model, tmp_path):
    from utility.inference import checkpoint_params
    model_dir = _copy(model, tmp_path)
    os.remove(os.path.join(model_dir, 'params.json'))
    values = types.SimpleNamespace(
        num_classes=21, train_image_size=300, data_format='channels_last', model_scope='ssd300',
        select_threshold=0.01, min_size=0.03, nms_threshold=0.45, nms_topk=200, keep_topk=400)
    params = checkpoint_params.inference_params(
        values, checkpoint=checkpoint_params.find_checkpoint('', model_dir))
    assert (params['backbone'], params['num_classes']) == ('resnet18', 4)


@pytest.mark.slow
def test_fine_tuning_from_a_whole_ssd_restores_all_but_other_class_heads(model, tfrecord_dir,
                                                                       tmp_path):
    import tensorflow as tf
    model_dir = str(tmp_path / 'voc')
    # The VOC records have 21 classes, the checkpoint 4: only the class heads differ.
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir, '--model_dir=' + model_dir,
                       '--max_number_of_steps=1', '--learning_rate=1e-30']
                      + RESNET + TRAIN_FAST_FLAGS + ['--checkpoint_path=' + model])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    assert 'Fine-tuning from %s' % os.path.join(model, 'model.ckpt-1') in output
    assert 'No model variable of scope' not in output
    # The six class heads (weights, biases) are listed as not restored, with both shapes.
    listed = [line.strip() for line in output.splitlines() if '(shape ' in line]
    assert len(listed) == 12 and all('/multibox_head/cls_' in line for line in listed), listed
    assert 'ssd300/multibox_head/cls_0/biases (shape [84], checkpoint [16])' in listed
    before, after = tf.train.load_checkpoint(model), tf.train.load_checkpoint(model_dir)
    for name in ('ssd300/block3/unit_2/basic_v1/conv2/weights',
                 'ssd300/additional_layers/conv8/conv8_2/weights',
                 'ssd300/multibox_head/loc_3/weights', 'ssd300/multibox_head/loc_3/biases'):
        np.testing.assert_allclose(after.get_tensor(name), before.get_tensor(name), atol=1e-6)
    assert after.get_tensor('ssd300/multibox_head/cls_0/biases').shape == (84,)


@pytest.mark.slow
def test_fine_tuning_from_another_backbones_ssd_is_one_line(model, tfrecord_dir, tmp_path):
    model_dir = tmp_path / 'vgg'
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir,
                       '--model_dir=' + str(model_dir), '--max_number_of_steps=1']
                      + DEFAULT_BACKBONE_FLAGS + ['--checkpoint_path=' + model])
    _one_line_error(proc, 'holds a resnet18 SSD', 'this run has --backbone vgg16',
                    'pass --backbone resnet18 to fine-tune from it')
    assert not (model_dir / 'params.json').exists()


@pytest.mark.slow
def test_a_run_refused_at_restore_leaves_no_params_json(tfrecord_dir, tmp_path):
    foreign = write_variables(str(tmp_path / 'foreign' / 'model.ckpt'),
                              {'other_net/conv/weights': np.zeros([3, 3, 3, 8], np.float32)})
    model_dir = tmp_path / 'refused'
    proc = run_script(['train_ssd.py', '--data_dir=' + tfrecord_dir,
                       '--model_dir=' + str(model_dir), '--max_number_of_steps=1']
                      + RESNET + TRAIN_FAST_FLAGS + ['--checkpoint_path=' + foreign])
    _one_line_error(proc, 'No model variable of scope')
    assert not (model_dir / 'params.json').exists(), os.listdir(str(model_dir))


@pytest.mark.slow
def test_demo_without_params_json_runs_the_checkpoints_model_on_a_phone_photo(model, tmp_path):
    """No params.json: the demo reads backbone and class count from the checkpoint (numbering
    the unnamed classes), and turns an EXIF-rotated photo upright (issue 24, items 3 and 6)."""
    import cv2
    from PIL import Image
    model_dir = _copy(model, tmp_path)
    os.remove(os.path.join(model_dir, 'params.json'))
    photo = str(tmp_path / 'phone.jpg')
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 48 wide x 32 high, shown 32 wide x 48 high
    Image.fromarray(np.full((32, 48, 3), 128, np.uint8)).save(photo, exif=exif.tobytes())
    out = tmp_path / 'drawn'
    proc = run_script(['simple_ssd_demo.py', '--checkpoint_path=' + model_dir,
                       '--input=' + photo, '--output_dir=' + str(out), '--score_threshold=0.0',
                       '--data_format=channels_last'])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert 'Backbone resnet18 (read from the variables of' in output
    assert 'No class names are recorded beside' in output and 'tools.rebuild_params' in output
    assert '%s (turned upright: EXIF orientation 6)' % photo in output
    assert cv2.imread(str(out / 'phone_ssd.jpg')).shape == (48, 32, 3)
