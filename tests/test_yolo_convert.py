"""The YOLO converter (dataset/yolo_to_tfrecords.py) and its data.yaml reader
(dataset/yolo_yaml.py): round trip, both `names` forms, every bad input it counts or refuses."""
import os

import numpy as np
import pytest

from dataset import yolo_to_tfrecords, yolo_yaml
from voc_files import feature, image_bytes, read_records
from yolo_files import NAMES, convert, make_yolo_set, write_labels


@pytest.mark.parametrize('names_form', ['list', 'dict'])
def test_round_trip_gives_the_pixel_boxes_back(tmp_path, names_form):
    truth = make_yolo_set(str(tmp_path / 'set'), names_form=names_form)
    out = tmp_path / 'records'
    manifest, stdout, stderr = convert(tmp_path / 'set' / 'data.yaml', out)
    assert manifest['labels'] == ['none'] + list(NAMES)
    assert manifest['source'] == 'yolo'
    assert not stderr
    for split in ('train', 'val'):
        records = read_records(out, split)
        assert sorted(records) == sorted(truth[split])
        assert manifest['splits'][split]['images'] == len(truth[split])
        for name, (width, height, boxes) in truth[split].items():
            parsed, example = records[name]
            assert tuple(parsed['shape'][:2]) == (height, width)  # from the image file
            got = parsed['boxes'] * np.array([height, width, height, width])
            want = np.array([[y0, x0, y1, x1] for _, (x0, y0, x1, y1) in boxes], np.float64)
            assert np.abs(got - want).max() <= 0.5
            assert parsed['labels'].tolist() == [label + 1 for label, _ in boxes]
            assert [t.decode() for t in feature(example, 'image/object/bbox/label_text')] == \
                [NAMES[label] for label, _ in boxes]
    assert os.listdir(str(out)).count('manifest.json') == 1
    assert 'conversion.incomplete' not in os.listdir(str(out))


def test_bad_label_lines_and_images_are_counted_and_named(tmp_path):
    root = str(tmp_path / 'set')
    make_yolo_set(root, counts=(('train', 3), ('val', 1)))
    label_file = write_labels(root, 'train', 'train_000.jpg', [
        '0 0.5 0.5 0.4 0.4',          # fine
        '7 0.5 0.5 0.2 0.2',          # class outside names
        '1 0.5 0.5 0.2',              # 4 numbers
        '1 0.5 0.5 0.2 0.2 0.3 0.3',  # a segment, not a box
        'x 0.5 0.5 0.2 0.2',          # not a number
        '2 0.9 0.5 0.4 0.2',          # reaches past x = 1: clipped
        '2 0.5 0.5 0.0 0.2',          # zero width
        ''])
    images = os.path.join(root, 'images', 'train')
    with open(os.path.join(images, 'train_001.jpg'), 'rb') as f:
        data = f.read()
    with open(os.path.join(images, 'train_001.jpg'), 'wb') as f:
        f.write(data[:len(data) // 2])  # truncated
    with open(os.path.join(images, 'train_002.jpg'), 'wb') as f:
        f.write(image_bytes(64, 48, fmt='PNG'))  # PNG behind a .jpg name
    with open(os.path.join(images, 'negative.jpg'), 'wb') as f:
        f.write(image_bytes(64, 48))  # no label file
    manifest, _, stderr = convert(os.path.join(root, 'data.yaml'), tmp_path / 'records')
    train = manifest['splits']['train']
    assert train['unknown_class_boxes'] == 1
    assert train['bad_label_lines'] == 3
    assert train['zero_size_boxes'] == 1
    assert train['clipped_boxes'] == 1
    assert [d['line'] for d in train['dropped_boxes'] if d['image'].endswith('train_000.jpg')] \
        == [2, 3, 4, 5, 7]
    assert [s['image'] for s in train['skipped_images']] == [
        os.path.join('images', 'train', 'train_001.jpg')]
    assert len(train['re_encoded_images']) == 1
    assert train['images_without_labels'] == 1 and train['background_only_images'] == 1
    assert train['images'] == 3 and train['listed_images'] == 4
    for line, words in ((2, 'class index 7 is outside names (0..2)'),
                        (3, 'expected 5 numbers'), (4, 'segment polygons'),
                        (5, 'expected 5 numbers'), (6, 'clipped'), (7, 'no area')):
        assert '%s:%d: %s' % (label_file, line, words) in stderr or (
            '%s:%d:' % (label_file, line) in stderr and words in stderr), (line, stderr)
    assert 'train_001.jpg' in stderr and 'unreadable' in stderr
    parsed, _ = read_records(tmp_path / 'records', 'train')['train_000.jpg']
    assert parsed['labels'].tolist() == [1, 3]
    assert parsed['boxes'][1].tolist() == pytest.approx([0.4, 0.7, 0.6, 1.0])  # clipped at 1


def _fails(capsys, data_yaml, out, *fragments):
    status = yolo_to_tfrecords.main(['--data_yaml', str(data_yaml), '--output_directory',
                                     str(out), '--num_threads', '1'])
    stderr = capsys.readouterr().err
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('ERROR: '), stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert not os.path.exists(str(out)) or os.listdir(str(out)) == []
    return lines[0]


def test_fatal_inputs_write_nothing(tmp_path, capsys):
    root = str(tmp_path / 'set')
    make_yolo_set(root, counts=(('train', 2), ('val', 1)))
    out = tmp_path / 'records'
    data_yaml = os.path.join(root, 'data.yaml')
    with open(data_yaml) as f:
        text = f.read()

    def write(new_text):
        with open(data_yaml, 'w') as f:
            f.write(new_text)
        return data_yaml

    _fails(capsys, write(text.replace('names: [cat, dog, bird]\n', '')), out,
           'has no "names"')
    _fails(capsys, write(text.replace('val: images/val', 'val: images/validation')), out,
           "the val images 'images/validation'", 'do not exist')
    _fails(capsys, write(text.replace('nc: 3', 'nc: 4')), out, 'nc: 4', '3 classes')
    _fails(capsys, write(text.replace('[cat, dog, bird]', '[cat, dog, cat]')), out,
           "class 2 is named 'cat'")
    _fails(capsys, tmp_path / 'missing.yaml', out, 'cannot read the data yaml')
    os.makedirs(os.path.join(root, 'images', 'empty'))
    _fails(capsys, write(text.replace('val: images/val', 'val: images/empty')), out,
           'holds no images')


def test_list_files_and_labels_path():
    assert yolo_to_tfrecords.label_path('/d/images/train/a.b.jpg') == '/d/labels/train/a.b.txt'
    assert yolo_to_tfrecords.label_path('/images/d/images/x/a.png') == '/images/d/labels/x/a.txt'
    assert yolo_to_tfrecords.label_path('/d/pics/a.jpg') == '/d/pics/a.txt'


def test_split_given_as_a_list_file_relative_to_the_yaml(tmp_path):
    root = str(tmp_path / 'set')
    truth = make_yolo_set(root, counts=(('train', 3), ('val', 1)))
    with open(os.path.join(root, 'train.txt'), 'w') as f:
        f.write('./images/train/train_000.jpg\nimages/train/train_002.jpg\n')
    with open(os.path.join(root, 'data.yaml')) as f:
        text = f.read().replace('train: images/train', 'train: train.txt')
    with open(os.path.join(root, 'data.yaml'), 'w') as f:
        f.write(text.replace('path: .', 'path: elsewhere'))  # not found there: the yaml's folder
    manifest, _, _ = convert(os.path.join(root, 'data.yaml'), tmp_path / 'records')
    assert sorted(read_records(tmp_path / 'records', 'train')) == ['train_000.jpg',
                                                                   'train_002.jpg']
    assert manifest['splits']['train']['objects'] == sum(
        len(truth['train'][n][2]) for n in ('train_000.jpg', 'train_002.jpg'))


DATA_YAML = '''# Ultralytics-style
path: ../datasets/coco8 # dataset root dir
train: images/train  # train images
val: 'images/val'
test:  # optional
nc: 3
names:
  0: person
  1: "bicycle # not a comment"
  2: car
download: |
  from utils import download
  download(['https://example.com/a.zip'])
extra: {a: 1, b: x}
'''


def test_simple_yaml_reader_reads_data_yaml_forms():
    data = yolo_yaml.parse_simple_yaml(DATA_YAML)
    assert data['path'] == '../datasets/coco8'
    assert data['train'] == 'images/train' and data['val'] == 'images/val'
    assert data['test'] is None and data['nc'] == 3
    assert data['names'] == {0: 'person', 1: 'bicycle # not a comment', 2: 'car'}
    assert data['download'].startswith('from utils import download')
    assert data['extra'] == {'a': 1, 'b': 'x'}
    assert yolo_yaml.parse_simple_yaml('names: [a, "b, c"]\n')['names'] == ['a', 'b, c']
    assert yolo_yaml.parse_simple_yaml('names:\n  - a\n  - b\n')['names'] == ['a', 'b']
    with pytest.raises(yolo_yaml.YamlError, match='line 2'):
        yolo_yaml.parse_simple_yaml('names:\n  0:\n    deeper: x\n')
    # keys not asked for are skipped unread, whatever they hold
    assert yolo_yaml.parse_simple_yaml('names: [a]\nweird:\n  0:\n    x: 1\n',
                                       keys=('names',)) == {'names': ['a']}


def test_pyyaml_reads_the_same_where_installed():
    yaml = pytest.importorskip('yaml')
    assert yolo_yaml.parse_simple_yaml(DATA_YAML) == yaml.safe_load(DATA_YAML)
