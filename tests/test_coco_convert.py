"""COCO json -> TFRecords (dataset/coco_to_tfrecords.py): round trip and every bad input.

TensorFlow runs in this process only to read the records back (no subprocess, no model).
"""
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from dataset import coco_to_tfrecords as coco
from dataset.make_voc_sample import coco_category_id, make_coco_sample
from dataset.shard_writer import ConversionError, Reporter
from evaluation.ground_truth import scan_records


def _quiet():
    out, err = io.StringIO(), io.StringIO()
    return Reporter(out=out, err=err), err


@pytest.fixture(scope='module')
def coco_sample(tmp_path_factory):
    return make_coco_sample(str(tmp_path_factory.mktemp('coco')), num_images=8, seed=0)


def _convert(sample, split, out, reporter=None):
    return coco.convert_coco(os.path.join(sample, 'annotations', 'instances_%s.json' % split),
                             os.path.join(sample, 'images'), out, split=split, num_shards=2,
                             num_threads=2, reporter=reporter or _quiet()[0])


def test_round_trip_boxes_ids_crowd_and_empty_images(coco_sample, tmp_path):
    out = str(tmp_path / 'records')
    manifest = None
    for split in ('train', 'val'):
        manifest = _convert(coco_sample, split, out)
    with open(os.path.join(coco_sample, 'annotations', 'instances_train.json')) as f:
        source = json.load(f)
    assert manifest['source'] == 'coco' and manifest['anchor_preset'] == 'coco'
    # Labels in category-id order; each label's COCO id recorded (not contiguous).
    categories = sorted(source['categories'], key=lambda c: c['id'])
    assert manifest['labels'] == ['none'] + [c['name'] for c in categories]
    assert manifest['category_ids'] == [c['id'] for c in categories]
    assert manifest['category_ids'][:3] == [coco_category_id(1), coco_category_id(2), 5 + 3]
    train = manifest['splits']['train']
    assert train['images'] == len(source['images']) == train['listed_images']
    assert train['images_without_annotations'] == 1 and train['crowd_boxes'] == 1
    assert train['objects'] == len(source['annotations'])
    assert train['skipped_images'] == [] and train['dropped_boxes'] == []
    assert set(manifest['splits']) == {'train', 'val'}

    records = scan_records(os.path.join(out, 'train-*'))
    by_id = {int(r['source_id']): r for r in records}
    assert sorted(by_id) == sorted(i['id'] for i in source['images'])
    images = {i['id']: i for i in source['images']}
    label_of = {cid: k + 1 for k, cid in enumerate(manifest['category_ids'])}
    for image_id, record in by_id.items():
        image = images[image_id]
        assert record['filename'] == image['file_name']
        anns = [a for a in source['annotations'] if a['image_id'] == image_id]
        assert len(record['labels']) == len(anns)
        w, h = image['width'], image['height']
        for k, a in enumerate(anns):
            ymin, xmin, ymax, xmax = record['boxes'][k]
            x, y, bw, bh = a['bbox']
            np.testing.assert_allclose([xmin * w, ymin * h, (xmax - xmin) * w, (ymax - ymin) * h],
                                       [x, y, bw, bh], atol=0.01)
            assert manifest['category_ids'][record['labels'][k] - 1] == a['category_id']
            assert record['labels'][k] == label_of[a['category_id']]
            assert record['iscrowd'][k] == a['iscrowd']
    assert sum(int(r['iscrowd'].sum()) for r in records) == 1
    assert sum(1 for r in records if len(r['labels']) == 0) == 1


def test_boxes_are_converted_exactly_and_bad_boxes_clipped_or_skipped():
    anns = [{'id': 1, 'bbox': [10.25, 0.5, 20.0, 30.0]},    # inside: exact
            {'id': 2, 'bbox': [-5.0, 90.0, 20.0, 20.0]},    # crosses the border: clipped
            {'id': 3, 'bbox': [5.0, 5.0, 0.0, 10.0]},       # zero width
            {'id': 4, 'bbox': [5.0, 5.0, 10.0, -3.0]},      # negative height
            {'id': 5, 'bbox': [250.0, 10.0, 30.0, 30.0]}]   # outside the 200x100 image
    kept, dropped, clipped = coco.normalize_coco_boxes(anns, 200, 100)
    assert [a['id'] for a in kept] == [1, 2]
    assert kept[0]['bbox_normalized'] == (0.5 / 100, 10.25 / 200, 30.5 / 100, 30.25 / 200)
    assert kept[1]['bbox_normalized'] == (0.9, 0.0, 1.0, 15.0 / 200)
    assert [a['id'] for a, _ in dropped] == [3, 4, 5]
    assert 'zero-area or negative' in dropped[0][1] and 'outside' in dropped[2][1]
    assert [a['id'] for a, _ in clipped] == [2]


def _write_json(path, document):
    with open(path, 'w') as f:
        f.write(document if isinstance(document, str) else json.dumps(document))
    return str(path)


def _image(folder, name, size=(64, 48)):
    Image.new('RGB', size, (90, 120, 200)).save(os.path.join(folder, name), format='JPEG')


def _small_dataset(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    for name in ('a.jpg', 'b.jpg'):
        _image(str(images), name)
    return {
        'images': [{'id': 1, 'file_name': 'a.jpg', 'width': 64, 'height': 48},
                   {'id': 2, 'file_name': 'b.jpg', 'width': 64, 'height': 48}],
        'annotations': [{'id': 10, 'image_id': 1, 'category_id': 3, 'bbox': [1, 2, 10, 10],
                         'iscrowd': 0}],
        'categories': [{'id': 3, 'name': 'cat'}, {'id': 1, 'name': 'dog'}],
    }, str(images)


@pytest.mark.parametrize('document, message', [
    ('{"images": [', 'is not valid JSON'),
    ('[1, 2]', 'not a COCO json object'),
    ({'images': [], 'annotations': []}, "lacks the 'categories' list"),
    ({'categories': [{'id': 1, 'name': 'a'}]}, "lacks the 'images', 'annotations' lists"),
    ({'images': [{'id': 1, 'file_name': 'a.jpg'}, {'id': 1, 'file_name': 'b.jpg'}],
      'annotations': [], 'categories': [{'id': 1, 'name': 'a'}]}, 'lists image id 1 twice'),
    ({'images': [], 'annotations': [], 'categories': [{'id': 1, 'name': 'a'},
                                                      {'id': 1, 'name': 'b'}]},
     'lists category id 1 twice'),
    ({'images': [], 'annotations': [], 'categories': [{'id': 1, 'name': 'a'},
                                                      {'id': 2, 'name': 'a'}]},
     "names two categories 'a'"),
])
def test_bad_json_is_one_line_error_and_nothing_is_written(tmp_path, document, message):
    path = _write_json(tmp_path / 'bad.json', document)
    images = tmp_path / 'images'
    images.mkdir()
    out = tmp_path / 'out'
    with pytest.raises(ConversionError, match=message) as raised:
        coco.convert_coco(path, str(images), str(out), num_shards=1, num_threads=1,
                          reporter=_quiet()[0])
    assert '\n' not in str(raised.value) and 'bad.json' in str(raised.value)
    assert not out.exists() or os.listdir(str(out)) == []


def test_command_line_prints_one_error_line_and_exits_1(tmp_path, capsys):
    path = _write_json(tmp_path / 'bad.json', '{')
    status = coco.main(['--annotations_file', path, '--images_dir', str(tmp_path),
                        '--output_directory', str(tmp_path / 'out')])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(err) == 1 and err[0].startswith('ERROR: ')


def test_unknown_image_or_category_and_bad_entries_are_warned_and_counted(tmp_path):
    document, images = _small_dataset(tmp_path)
    document['annotations'] += [
        {'id': 11, 'image_id': 99, 'category_id': 3, 'bbox': [1, 1, 5, 5]},
        {'id': 12, 'image_id': 2, 'category_id': 77, 'bbox': [1, 1, 5, 5]},
        {'id': 13, 'image_id': 2, 'category_id': 1, 'bbox': [1, 1, 5]},
        {'id': 14, 'image_id': 2, 'category_id': 1, 'bbox': [1, 1, 0, 5]},
        {'id': 15, 'image_id': 2, 'category_id': 1, 'bbox': [60, 40, 20, 20]}]
    document['images'].append({'file_name': 'no_id.jpg'})
    path = _write_json(tmp_path / 'instances.json', document)
    reporter, err = _quiet()
    manifest = coco.convert_coco(path, images, str(tmp_path / 'out'), num_shards=1,
                                 num_threads=1, reporter=reporter)
    warnings = err.getvalue()
    assert 'annotation 11 of image 99: unknown image id 99' in warnings
    assert 'annotation 12 of image 2: unknown category id 77' in warnings
    assert 'annotation 13 of image 2: bbox [1, 1, 5] is not 4 finite numbers' in warnings
    assert 'annotation 14 of image 2' in warnings and 'zero-area or negative box' in warnings
    assert 'annotation 15 of image 2' in warnings and 'clipped to the 64x48 image' in warnings
    assert "image entry 2 of %s has no integer \"id\"" % path in warnings
    split = manifest['splits']['train']
    assert sorted(d['annotation'] for d in split['dropped_boxes']) == [11, 12, 13, 14]
    assert split['clipped_boxes'] == 1 and split['objects'] == 2
    assert split['images'] == 2 and len(split['skipped_images']) == 1
    # Labels in category-id order: dog (id 1) is label 1, cat (id 3) label 2.
    assert manifest['labels'] == ['none', 'dog', 'cat'] and manifest['category_ids'] == [1, 3]


def test_missing_or_unreadable_image_is_skipped_with_a_warning(tmp_path):
    document, images = _small_dataset(tmp_path)
    document['images'] += [{'id': 3, 'file_name': 'gone.jpg'},
                           {'id': 4, 'file_name': 'broken.jpg'}]
    with open(os.path.join(images, 'broken.jpg'), 'wb') as f:
        f.write(b'\xff\xd8 not really a jpeg')
    path = _write_json(tmp_path / 'instances.json', document)
    reporter, err = _quiet()
    manifest = coco.convert_coco(path, images, str(tmp_path / 'out'), split='val',
                                 num_shards=2, num_threads=2, reporter=reporter)
    warnings = err.getvalue()
    assert 'skipping image 3: missing or unreadable image file' in warnings
    assert 'gone.jpg' in warnings
    assert 'skipping image 4: missing or unreadable image file' in warnings
    split = manifest['splits']['val']
    assert sorted(s['image'] for s in split['skipped_images']) == [3, 4]
    assert split['images'] == 2 and split['images_without_annotations'] == 1
    assert sorted(os.listdir(str(tmp_path / 'out'))) == [
        'manifest.json', 'val-00000-of-00002', 'val-00001-of-00002']


def test_a_failed_conversion_leaves_the_previous_one_untouched(tmp_path):
    document, images = _small_dataset(tmp_path)
    out = str(tmp_path / 'out')
    path = _write_json(tmp_path / 'instances.json', document)
    coco.convert_coco(path, images, out, num_shards=1, num_threads=1, reporter=_quiet()[0])
    before = {n: open(os.path.join(out, n), 'rb').read() for n in os.listdir(out)}
    for name in ('a.jpg', 'b.jpg'):  # every image unreadable: nothing to write
        os.remove(os.path.join(images, name))
    with pytest.raises(ConversionError, match='no records were written'):
        coco.convert_coco(path, images, out, num_shards=3, num_threads=2,
                          reporter=_quiet()[0])
    assert {n: open(os.path.join(out, n), 'rb').read() for n in os.listdir(out)} == before
