"""Tests of the synthetic VOC sample generator (dataset/make_voc_sample.py)."""
import filecmp
import os
import xml.etree.ElementTree as ElementTree

import cv2
import numpy as np
import pytest

from dataset import make_voc_sample as mvs


def _read_list(split_dir, name):
    with open(os.path.join(split_dir, 'ImageSets', 'Main', name + '.txt')) as f:
        return [line.strip() for line in f if line.strip()]


def _objects(xml_path):
    root = ElementTree.parse(xml_path).getroot()
    out = []
    for obj in root.findall('object'):
        box = obj.find('bndbox')
        out.append({
            'name': obj.find('name').text,
            'pose': obj.find('pose').text,
            'truncated': int(obj.find('truncated').text),
            'difficult': int(obj.find('difficult').text),
            'bbox': tuple(int(box.find(k).text) for k in ('xmin', 'ymin', 'xmax', 'ymax')),
        })
    return root, out


def _all_files(root):
    found = []
    for dirpath, _dirs, files in os.walk(root):
        found.extend(os.path.relpath(os.path.join(dirpath, f), root) for f in files)
    return sorted(found)


def test_class_names_match_the_label_table():
    from dataset.labels import VOC_LABELS
    assert mvs.CLASS_NAMES == VOC_LABELS[1:]


def test_each_class_has_its_own_appearance():
    looks = [mvs.class_appearance(c) for c in range(1, 21)]
    assert len(set(looks)) == 20
    assert mvs.class_appearance(1) == ('box', (220, 35, 35))       # aeroplane: red box
    assert mvs.class_appearance(6) == ('ellipse', (35, 175, 45))    # bus: green ellipse
    assert mvs.class_appearance(20) == ('ring', (235, 210, 25))     # tvmonitor: yellow ring
    with pytest.raises(ValueError, match='outside 1..20'):
        mvs.class_appearance(0)


def test_layout_splits_and_annotations(voc_sample_dir):
    assert os.path.basename(voc_sample_dir) == 'VOC2012_sample'
    ids = ['2012_%06d' % i for i in range(1, 13)]
    listing = lambda sub: sorted(os.listdir(os.path.join(voc_sample_dir, sub)))  # noqa: E731
    assert listing('JPEGImages') == [i + '.jpg' for i in ids]
    assert listing('Annotations') == [i + '.xml' for i in ids]
    train, val = _read_list(voc_sample_dir, 'train'), _read_list(voc_sample_dir, 'val')
    assert (len(train), len(val)) == (10, 2)      # round(0.2 * 12) = 2 validation images
    assert not set(train) & set(val)
    assert sorted(train + val) == ids == _read_list(voc_sample_dir, 'trainval')
    assert train == sorted(train) and val == sorted(val)

    n_difficult = n_truncated = 0
    for image_id in ids:
        root, objects = _objects(os.path.join(voc_sample_dir, 'Annotations', image_id + '.xml'))
        image = cv2.imread(os.path.join(voc_sample_dir, 'JPEGImages', image_id + '.jpg'))
        height, width = image.shape[:2]
        assert root.find('folder').text == 'VOC2012_sample'
        assert root.find('filename').text == image_id + '.jpg'
        assert int(root.find('size/width').text) == width
        assert int(root.find('size/height').text) == height
        assert int(root.find('size/depth').text) == 3
        assert 300 <= width <= 500 and 300 <= height <= 500
        assert 1 <= len(objects) <= 5     # 1-4 objects, plus the tiny difficult one every 8th
        for obj in objects:
            xmin, ymin, xmax, ymax = obj['bbox']
            # 1-based inclusive pixel coordinates inside the image.
            assert 1 <= xmin < xmax <= width and 1 <= ymin < ymax <= height
            touches = xmin == 1 or ymin == 1 or xmax == width or ymax == height
            assert obj['truncated'] == int(touches)
            assert obj['pose'] == 'Unspecified'
            n_difficult += obj['difficult']
            n_truncated += obj['truncated']
            # The object's colour dominates its box (the box is not off target).
            _family, colour = mvs.class_appearance(mvs.CLASS_NAMES.index(obj['name']) + 1)
            patch = image[ymin - 1:ymax, xmin - 1:xmax, ::-1].astype(np.float64)
            close = np.linalg.norm(patch - np.array(colour), axis=2) < 70
            assert close.mean() > 0.3, (image_id, obj)
    # Images 0, 5, 10 carry a border-crossing object; images 2 and 10 a tiny difficult one.
    assert n_truncated >= 3
    assert n_difficult >= 2


def test_same_seed_gives_identical_bytes_and_prefix(tmp_path):
    a = mvs.make_voc_sample(str(tmp_path / 'a'), num_images=6, seed=3)
    b = mvs.make_voc_sample(str(tmp_path / 'b'), num_images=6, seed=3)
    files = _all_files(a)
    assert files == _all_files(b) and len(files) == 6 + 6 + 3
    _match, mismatch, errors = filecmp.cmpfiles(a, b, files, shallow=False)
    assert mismatch == [] and errors == []

    # Image i does not depend on how many images are generated.
    c = mvs.make_voc_sample(str(tmp_path / 'c'), num_images=3, seed=3)
    head = ['JPEGImages/2012_00000%d.jpg' % i for i in (1, 2, 3)]
    head += ['Annotations/2012_00000%d.xml' % i for i in (1, 2, 3)]
    assert filecmp.cmpfiles(a, c, head, shallow=False)[0] == head

    d = mvs.make_voc_sample(str(tmp_path / 'd'), num_images=6, seed=4)
    differ = filecmp.cmpfiles(a, d, [f for f in files if f.endswith('.jpg')], shallow=False)[1]
    assert len(differ) == 6


def test_regenerating_smaller_sample_removes_stale_files(tmp_path):
    path = mvs.make_voc_sample(str(tmp_path), num_images=4, seed=0)
    open(os.path.join(path, 'JPEGImages', 'keep_me.jpg'), 'wb').close()
    mvs.make_voc_sample(str(tmp_path), num_images=2, seed=0)
    assert sorted(os.listdir(os.path.join(path, 'JPEGImages'))) == [
        '2012_000001.jpg', '2012_000002.jpg', 'keep_me.jpg']
    assert sorted(os.listdir(os.path.join(path, 'Annotations'))) == [
        '2012_000001.xml', '2012_000002.xml']


def test_command_line(tmp_path, capsys):
    assert mvs.main(['--output_dir', str(tmp_path), '--num_images', '3', '--seed', '1']) == 0
    assert 'Wrote 3 images' in capsys.readouterr().out
    assert len(os.listdir(tmp_path / 'VOC2012_sample' / 'JPEGImages')) == 3
    assert mvs.main(['--output_dir', str(tmp_path), '--num_images', '1']) == 1
    assert 'num_images=1 is too small' in capsys.readouterr().err
