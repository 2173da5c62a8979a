"""Tests of the VOC -> TFRecord converter (dataset/voc_to_tfrecords.py and its
two entry scripts)."""
import glob
import io
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import tensorflow as tf

from dataset.labels import LABEL_IDS
from dataset.manifest import read_manifest
from dataset.shard_checks import count_against_manifest
from dataset import voc_to_tfrecords as conv
from voc_files import convert, feature, good, image_bytes, read_records, write_split, xml_text

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    return subprocess.run([sys.executable] + args, cwd=str(cwd), env=env,
                          capture_output=True, text=True, timeout=300)


# ----------------------------------------------------------------------------- round trip


def test_round_trip_every_sample_image_matches_its_xml(voc_sample_dir, tfrecord_dir):
    for split, list_name in (('train', 'train'), ('val', 'val')):
        records = read_records(tfrecord_dir, split)
        with open(os.path.join(voc_sample_dir, 'ImageSets', 'Main', list_name + '.txt')) as f:
            ids = [line.strip() for line in f if line.strip()]
        assert sorted(records) == sorted(i + '.jpg' for i in ids)
        for image_id in ids:
            parsed, example = records[image_id + '.jpg']
            root = ElementTree.parse(
                os.path.join(voc_sample_dir, 'Annotations', image_id + '.xml')).getroot()
            width = int(root.find('size/width').text)
            height = int(root.find('size/height').text)
            objects = root.findall('object')
            expected_boxes = [[float(o.find('bndbox/' + k).text) / d for k, d in
                               (('ymin', height), ('xmin', width), ('ymax', height),
                                ('xmax', width))] for o in objects]
            np.testing.assert_allclose(parsed['boxes'], expected_boxes, rtol=1e-6)
            np.testing.assert_array_equal(
                parsed['labels'], [LABEL_IDS[o.find('name').text] for o in objects])
            np.testing.assert_array_equal(
                parsed['difficult'], [int(o.find('difficult').text) for o in objects])
            np.testing.assert_array_equal(
                parsed['truncated'], [int(o.find('truncated').text) for o in objects])
            np.testing.assert_array_equal(parsed['shape'], [height, width, 3])
            # Valid RGB JPEGs are stored byte for byte.
            with open(os.path.join(voc_sample_dir, 'JPEGImages', image_id + '.jpg'), 'rb') as f:
                assert feature(example, 'image/encoded') == [f.read()]
            assert feature(example, 'image/format') == [b'jpeg']
            assert feature(example, 'image/shape') == [height, width, 3]
            assert feature(example, 'image/channels') == [3]
            assert feature(example, 'image/object/bbox/label_text') == [
                o.find('name').text.encode() for o in objects]


def test_hand_computed_boxes_and_manifest_counts(tmp_path):
    # Image 40 wide, 20 high: v / width and v / height, 1-based pixels.
    entries = [
        ('a', image_bytes(40, 20), xml_text(40, 20, [('dog', 1, 1, 40, 20, 0, 1),
                                                     ('cat', 10, 5, 30, 15, 1, 0)])),
        ('b', image_bytes(40, 20), xml_text(40, 20, [('dog', 20, 2, 22, 18)])),
    ]
    write_split(tmp_path, 'S', entries)
    manifest, out, _err = convert(tmp_path, tmp_path / 'out')
    parsed = read_records(tmp_path / 'out')['a.jpg'][0]
    np.testing.assert_allclose(parsed['boxes'], [[0.05, 0.025, 1.0, 1.0],
                                                 [0.25, 0.25, 0.75, 0.75]], rtol=1e-6)
    np.testing.assert_array_equal(parsed['labels'], [12, 8])
    np.testing.assert_array_equal(parsed['difficult'], [0, 1])
    np.testing.assert_array_equal(parsed['truncated'], [1, 0])

    train = manifest['splits']['train']
    assert train['images'] == 2 and train['objects'] == 3
    assert train['objects_per_class']['dog'] == 2 and train['objects_per_class']['cat'] == 1
    assert sum(train['objects_per_class'].values()) == 3 and len(train['objects_per_class']) == 20
    assert (train['difficult'], train['truncated']) == (1, 1)
    assert train['skipped_images'] == [] and train['dropped_boxes'] == []
    assert train['source_splits'] == ['S']
    assert train['shards'] == 2 and train['shard_files'] == ['train-00000-of-00002',
                                                              'train-00001-of-00002']
    assert sum(train['images_per_shard']) == 2
    assert 'v / width' in manifest['pixel_convention']
    on_disk = json.load(open(os.path.join(tmp_path, 'out', 'manifest.json')))
    assert on_disk == manifest
    assert sorted(os.listdir(tmp_path / 'out')) == ['manifest.json', 'train-00000-of-00002',
                                                    'train-00001-of-00002']
    assert 'train: wrote 2 images (3 objects: 1 difficult, 1 truncated)' in out
    assert 'images/s' in out


def test_sample_manifest_matches_the_xml(voc_sample_dir, tfrecord_dir):
    manifest = read_manifest(tfrecord_dir)
    for split, list_name in (('train', 'train'), ('val', 'val')):
        with open(os.path.join(voc_sample_dir, 'ImageSets', 'Main', list_name + '.txt')) as f:
            ids = [line.strip() for line in f if line.strip()]
        per_class, difficult, truncated = {}, 0, 0
        for image_id in ids:
            root = ElementTree.parse(
                os.path.join(voc_sample_dir, 'Annotations', image_id + '.xml')).getroot()
            for obj in root.findall('object'):
                name = obj.find('name').text
                per_class[name] = per_class.get(name, 0) + 1
                difficult += int(obj.find('difficult').text)
                truncated += int(obj.find('truncated').text)
        entry = manifest['splits'][split]
        assert entry['images'] == len(ids)
        assert {k: v for k, v in entry['objects_per_class'].items() if v} == per_class
        assert (entry['difficult'], entry['truncated']) == (difficult, truncated)
        assert entry['image_lists'] == [os.path.join('VOC2012_sample', 'ImageSets', 'Main',
                                                     list_name + '.txt')]


# ----------------------------------------------------------------------------- bad input


def test_png_cmyk_and_grayscale_behind_jpg_names_are_reencoded(tmp_path):
    entries = [
        ('png', image_bytes(40, 20, (10, 200, 10), fmt='PNG'),
         xml_text(40, 20, [('dog', 1, 1, 9, 9)])),
        ('cmyk', image_bytes(40, 20, (10, 10, 200), mode='CMYK'),
         xml_text(40, 20, [('dog', 1, 1, 9, 9)])),
        ('gray', image_bytes(40, 20, mode='L'), xml_text(40, 20, [('dog', 1, 1, 9, 9)])),
        good('ok'),
    ]
    write_split(tmp_path, 'S', entries)
    manifest, _out, err = convert(tmp_path, tmp_path / 'out')
    assert 'converted PNG data (mode RGB) behind a .jpg name to RGB JPEG' in err
    assert 'converted CMYK JPEG to RGB JPEG' in err
    assert 'converted grayscale JPEG to RGB JPEG' in err
    assert os.path.join('S', 'JPEGImages', 'png.jpg') in err
    records = read_records(tmp_path / 'out')
    assert sorted(records) == ['cmyk.jpg', 'gray.jpg', 'ok.jpg', 'png.jpg']
    for name, colour in (('png.jpg', (10, 200, 10)), ('cmyk.jpg', (10, 10, 200))):
        parsed, example = records[name]
        assert feature(example, 'image/channels') == [3]
        assert feature(example, 'image/encoded')[0][:2] == b'\xff\xd8'    # now a JPEG
        assert np.abs(parsed['image'][10, 20].astype(int) - colour).max() <= 12
    gray = records['gray.jpg'][0]['image']
    assert gray.shape == (20, 40, 3) and (gray[..., 0] == gray[..., 2]).all()
    reasons = {e['image']: e['reason'] for e in manifest['splits']['train']['re_encoded_images']}
    assert sorted(reasons) == ['cmyk', 'gray', 'png']


def test_bad_images_and_annotations_are_skipped_and_neighbours_survive(tmp_path):
    jpeg = image_bytes(40, 20)
    entries = [
        good('ok1'),
        ('truncated', jpeg[:len(jpeg) // 2], xml_text(40, 20, [('dog', 1, 1, 9, 9)])),
        ('garbage', b'this is not an image', xml_text(40, 20, [('dog', 1, 1, 9, 9)])),
        ('empty', b'', xml_text(40, 20, [('dog', 1, 1, 9, 9)])),
        ('noxml', jpeg, None),
        ('badxml', jpeg, '<annotation><object><name>dog</name>'),
        ('nobox', jpeg, '<annotation><object><name>dog</name></object></annotation>'),
        ('textcoord', jpeg, xml_text(40, 20, [('dog', 'left', 1, 9, 9)])),
        ('entity', jpeg, '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx">'
                         '<!ENTITY y "&x;&x;&x;&x;">]><annotation><object><name>&y;</name>'
                         '</object></annotation>'),
        ('noimage', None, xml_text(40, 20, [('dog', 1, 1, 9, 9)])),
        good('ok2'),
    ]
    split_dir = write_split(tmp_path, 'S', entries)
    manifest, _out, err = convert(tmp_path, tmp_path / 'out', num_threads=3, train_shards=3)
    assert sorted(read_records(tmp_path / 'out')) == ['ok1.jpg', 'ok2.jpg']
    skipped = {e['image']: e['reason'] for e in manifest['splits']['train']['skipped_images']}
    assert sorted(skipped) == sorted(e[0] for e in entries if not e[0].startswith('ok'))
    image = lambda n: os.path.join(split_dir, 'JPEGImages', n + '.jpg')    # noqa: E731
    ann = lambda n: os.path.join(split_dir, 'Annotations', n + '.xml')     # noqa: E731
    expected = {
        'truncated': 'bad image %s: unreadable or truncated image data (' % image('truncated'),
        'garbage': 'bad image %s: unreadable or truncated image data' % image('garbage'),
        'empty': 'bad image %s: unreadable' % image('empty'),
        'noxml': 'missing annotation file %s' % ann('noxml'),
        'badxml': 'malformed annotation %s: not well-formed XML' % ann('badxml'),
        'nobox': 'malformed annotation %s: object 0 (dog) has no <bndbox>' % ann('nobox'),
        'textcoord': "malformed annotation %s: object 0 (dog): <xmin> is not a number: 'left'"
                     % ann('textcoord'),
        'entity': 'malformed annotation %s: DOCTYPE/ENTITY declarations are not allowed'
                  % ann('entity'),
        'noimage': 'missing image file %s' % image('noimage'),
    }
    for image_id, reason in expected.items():
        assert skipped[image_id].startswith(reason), (image_id, skipped[image_id])
        assert 'WARNING: skipping image %s: %s' % (image_id, reason) in err
    assert manifest['splits']['train']['images'] == 2
    assert manifest['splits']['train']['listed_images'] == len(entries)


def test_unknown_class_is_an_error_or_dropped_on_request(tmp_path):
    entries = [good('ok'), ('odd', image_bytes(40, 20),
                            xml_text(40, 20, [('dragon', 1, 1, 9, 9), ('cat', 2, 2, 20, 10)]))]
    split_dir = write_split(tmp_path, 'S', entries)
    xml_path = os.path.join(split_dir, 'Annotations', 'odd.xml')
    with pytest.raises(conv.ConversionError) as info:
        convert(tmp_path, tmp_path / 'out')
    assert str(info.value).startswith("unknown class 'dragon' in %s;" % xml_path)
    assert '--skip_unknown_classes' in str(info.value)
    assert not os.path.exists(tmp_path / 'out' / 'train-00000-of-00002')

    manifest, _out, err = convert(tmp_path, tmp_path / 'out', skip_unknown_classes=True)
    assert "dropping object 0 of %s: unknown class 'dragon'" % xml_path in err
    parsed = read_records(tmp_path / 'out')['odd.jpg'][0]
    np.testing.assert_array_equal(parsed['labels'], [8])                    # only the cat
    assert manifest['splits']['train']['dropped_boxes'] == [
        {'split': 'S', 'image': 'odd', 'object': 0, 'reason': "unknown class 'dragon'"}]


def test_boxes_are_clipped_or_dropped_and_empty_images_kept(tmp_path):
    entries = [
        # Outside on every side: clipped to [1, 40] x [1, 20].
        ('clip', image_bytes(40, 20), xml_text(40, 20, [('dog', -5, 0, 50, 25)])),
        ('bad', image_bytes(40, 20), xml_text(40, 20, [
            ('cat', 30, 5, 10, 15),            # inverted (xmax < xmin): dropped
            ('cat', 10, 5, 10, 15),            # zero width: dropped
            ('cat', 45, 5, 60, 15),            # right of the image: zero area after clipping
            ('bird', 4, 2, 8, 10)])),          # kept
        ('allbad', image_bytes(40, 20), xml_text(40, 20, [('cat', 9, 9, 3, 3)])),
        ('none', image_bytes(40, 20), xml_text(40, 20, [])),
    ]
    split_dir = write_split(tmp_path, 'S', entries)
    manifest, _out, err = convert(tmp_path, tmp_path / 'out')
    records = read_records(tmp_path / 'out')
    np.testing.assert_allclose(records['clip.jpg'][0]['boxes'],
                               [[1 / 20, 1 / 40, 1.0, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(records['bad.jpg'][0]['boxes'],
                               [[2 / 20, 4 / 40, 10 / 20, 8 / 40]], rtol=1e-6)
    np.testing.assert_array_equal(records['bad.jpg'][0]['labels'], [3])
    for name in ('allbad.jpg', 'none.jpg'):                # kept as background images
        assert records[name][0]['boxes'].shape == (0, 4)
    bad_xml = os.path.join(split_dir, 'Annotations', 'bad.xml')
    assert ('dropping object 0 of %s: inverted box (30, 5, 10, 15) (xmin, ymin, xmax, ymax)'
            % bad_xml) in err
    assert 'dropping object 1 of %s: zero-area box (10, 5, 10, 15)' % bad_xml in err
    assert 'dropping object 2 of %s: zero-area box (45, 5, 60, 15) after clipping' % bad_xml in err
    assert 'clip.xml: box (-5, 0, 50, 25) clipped to (1, 1, 40, 20)' in err
    train = manifest['splits']['train']
    assert train['images'] == 4 and train['background_only_images'] == 2
    assert train['clipped_boxes'] == 1
    assert [(d['image'], d['object']) for d in train['dropped_boxes']] == [
        ('allbad', 0), ('bad', 0), ('bad', 1), ('bad', 2)]


def test_xml_size_disagreeing_with_image_uses_the_image(tmp_path):
    entries = [('big', image_bytes(80, 40), xml_text(80, 40, [('dog', 20, 10, 60, 30)],
                                                        size=(40, 20)))]
    write_split(tmp_path, 'S', entries)
    _manifest, _out, err = convert(tmp_path, tmp_path / 'out')
    assert 'big.xml says 40x20 but the image is 80x40; using the image size.' in err
    np.testing.assert_allclose(read_records(tmp_path / 'out')['big.jpg'][0]['boxes'],
                               [[0.25, 0.25, 0.75, 0.75]], rtol=1e-6)


def test_zero_records_and_missing_paths_fail_with_one_line(tmp_path, capsys):
    write_split(tmp_path, 'S', [('x', b'junk', xml_text(4, 4, [])), ('y', None, None)])
    with pytest.raises(conv.ConversionError, match="no records were written for split 'train'"):
        convert(tmp_path, tmp_path / 'out')
    assert not glob.glob(str(tmp_path / 'out' / '*'))       # nothing half-written

    args = ['--dataset_directory', str(tmp_path), '--output_directory', str(tmp_path / 'o')]
    assert conv.main(args + ['--train_splits', 'Nope', '--validation_splits', '']) == 1
    err = capsys.readouterr().err
    assert err == 'ERROR: split directory not found: %s; check --dataset_directory and the ' \
                  'split names (make the sample with python3 dataset/make_voc_sample.py)\n' \
                  % os.path.join(str(tmp_path), 'Nope')
    # The sample profile reads val.txt, which this split lacks: checked before any writing.
    write_split(tmp_path, 'T', [good('a')])
    assert conv.main(args + ['--train_splits', 'T', '--validation_splits', 'T']) == 1
    err = capsys.readouterr().err
    assert err.startswith('ERROR: image list not found: %s;'
                          % os.path.join(str(tmp_path), 'T', 'ImageSets', 'Main', 'val.txt'))
    assert err.count('\n') == 1 and 'Traceback' not in err
    assert not os.path.exists(tmp_path / 'o' / 'train-00000-of-00016')
    assert conv.main(args + ['--train_splits', '', '--validation_splits', ' ']) == 1
    assert 'nothing to convert' in capsys.readouterr().err
    assert conv.main(args + ['--train_splits', 'T', '--validation_splits', '',
                             '--train_shards', '0']) == 1
    assert 'shards and threads must be >= 1 (got 0 train shards' in capsys.readouterr().err


def test_full_voc_profile_lists_and_fallback(tmp_path, capsys):
    parser = conv.build_parser('voc')
    defaults = parser.parse_args([])
    assert defaults.train_splits == 'VOC2007, VOC2012'
    assert defaults.validation_splits == 'VOC2007TEST'
    assert (defaults.train_shards, defaults.validation_shards, defaults.num_threads) == (16, 16, 8)
    assert defaults.output_directory == './tfrecords' and defaults.skip_unknown_classes is False
    sample = conv.build_parser('sample').parse_args(['--train_splits=A', '--num_threads', '3',
                                                     '--skip_unknown_classes'])
    assert (sample.train_splits, sample.num_threads, sample.skip_unknown_classes) == ('A', 3, True)
    assert conv.build_parser('sample').parse_args(
        ['--skip_unknown_classes=false']).skip_unknown_classes is False

    write_split(tmp_path, 'VOC2007', [good('000001'), good('000002')], lists=('trainval',))
    write_split(tmp_path, 'VOC2012', [good('2008_000001')], lists=('trainval',))
    # VOC2007TEST has no ImageSets/Main/test.txt: all its annotations are used.
    write_split(tmp_path, 'VOC2007TEST', [good('000003'), good('000004')], lists=())
    args = ['--dataset_directory=%s' % tmp_path, '--output_directory=%s' % (tmp_path / 'out'),
            '--train_shards=2', '--validation_shards=1', '--num_threads=2']
    assert conv.main(args, profile='voc') == 0
    out = capsys.readouterr().out
    assert 'NOTE: %s is missing; using all 2 annotations in %s instead.' % (
        os.path.join(str(tmp_path), 'VOC2007TEST', 'ImageSets', 'Main', 'test.txt'),
        os.path.join(str(tmp_path), 'VOC2007TEST', 'Annotations')) in out
    assert sorted(read_records(tmp_path / 'out', 'train')) == ['000001.jpg', '000002.jpg',
                                                               '2008_000001.jpg']
    assert sorted(read_records(tmp_path / 'out', 'val')) == ['000003.jpg', '000004.jpg']
    manifest = read_manifest(str(tmp_path / 'out'))
    assert manifest['splits']['train']['source_splits'] == ['VOC2007', 'VOC2012']


# ----------------------------------------------------------------------------- output files


def test_separate_runs_merge_the_manifest_and_replace_stale_shards(tmp_path):
    write_split(tmp_path, 'S', [good('a'), good('b'), good('c')], lists=('train', 'val'))
    first, _o, _e = convert(tmp_path, tmp_path / 'out', train=('S',), val=(), train_shards=3)
    second, _o, _e = convert(tmp_path, tmp_path / 'out', train=(), val=('S',))
    assert set(second['splits']) == {'train', 'val'}
    assert second['splits']['train'] == first['splits']['train']
    assert count_against_manifest(str(tmp_path / 'out'), 'val', 0)[0] == 3
    _m, out, _e = convert(tmp_path, tmp_path / 'out', train=('S',), val=(), train_shards=2)
    assert 'removed stale shard train-00002-of-00003' in out
    assert sorted(f for f in os.listdir(tmp_path / 'out') if f.startswith('train')) == [
        'train-00000-of-00002', 'train-00001-of-00002']
    assert read_manifest(str(tmp_path / 'out'))['splits']['val']['images'] == 3


def test_shuffle_and_sharding_are_deterministic(voc_sample_dir, tmp_path):
    root = os.path.dirname(voc_sample_dir)
    contents = []
    for threads, out in ((1, 'one'), (4, 'four')):
        convert(root, tmp_path / out, train=('VOC2012_sample',), train_shards=4,
                num_threads=threads)
        contents.append({f: open(os.path.join(tmp_path, out, f), 'rb').read()
                         for f in os.listdir(tmp_path / out) if f.startswith('train')})
    assert contents[0] == contents[1] and len(contents[0]) == 4
    # Images are shuffled across shards, not written in list order.
    names = []
    for shard in sorted(contents[0]):
        for raw in tf.data.TFRecordDataset(os.path.join(tmp_path, 'one', shard)):
            names.append(tf.train.Example.FromString(raw.numpy()).features
                         .feature['image/filename'].bytes_list.value[0].decode())
    assert sorted(names) != names and len(names) == 10


def test_progress_lines(tmp_path):
    write_split(tmp_path, 'S', [good('a'), good('b'), good('c')])
    stdout = io.StringIO()
    reporter = conv.Reporter(out=stdout, err=io.StringIO(), progress_every=1)
    conv.convert_dataset(str(tmp_path), str(tmp_path / 'out'), ['S'], [], train_shards=1,
                         num_threads=1, reporter=reporter)
    lines = stdout.getvalue().splitlines()
    assert [ln.split(' (')[0] for ln in lines if '/3 images' in ln] == [
        'train: 1/3 images', 'train: 2/3 images']
    assert all(ln.endswith('images/s)') for ln in lines if '/3 images' in ln)


@pytest.mark.slow
def test_entry_scripts_run_from_the_dataset_folder_and_the_repo_root(voc_sample_dir, tmp_path):
    work = tmp_path / 'work'
    shutil.copytree(voc_sample_dir, work / 'VOC2012_sample')
    # As in the README: cd dataset && python3 convert_voc_sample_tfrecords.py ... (the
    # script is run from a folder that is not the repository root).
    script = os.path.join(REPO_ROOT, 'dataset', 'convert_voc_sample_tfrecords.py')
    result = run_script([script, '--dataset_directory=./', '--output_directory=tfrecords',
                         '--train_splits', 'VOC2012_sample', '--validation_splits',
                         'VOC2012_sample'], cwd=work)
    assert result.returncode == 0, result.stderr
    assert 'train: wrote 10 images' in result.stdout and 'val: wrote 2 images' in result.stdout
    assert len(glob.glob(str(work / 'tfrecords' / 'train-*-of-00016'))) == 16
    assert count_against_manifest(str(work / 'tfrecords'), 'val', 0)[0] == 2

    result = run_script(['dataset/convert_voc_sample_tfrecords.py',
                         '--dataset_directory=%s' % work, '--output_directory=%s' % (work / 'o2'),
                         '--train_splits', 'VOC2012_sample, VOC2012_missing',
                         '--validation_splits', 'VOC2012_sample'], cwd=REPO_ROOT)
    assert result.returncode == 1
    # the one error line (TF 2.16+ may add its own start-up log lines to stderr)
    assert [line for line in result.stderr.splitlines() if line.startswith('ERROR')] == [
        'ERROR: split directory not found: %s; check --dataset_directory and the split names '
        '(make the sample with python3 dataset/make_voc_sample.py)'
        % os.path.join(str(work), 'VOC2012_missing')]

    result = run_script(['dataset/convert_tfrecords.py', '--dataset_directory=%s' % work,
                         '--output_directory=%s' % (work / 'o3'),
                         '--train_splits=VOC2012_sample', '--validation_splits=',
                         '--train_shards=1'], cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert count_against_manifest(str(work / 'o3'), 'train', 0)[0] == 12  # trainval.txt
