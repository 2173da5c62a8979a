"""Bad data ends in one line naming the file and the fix (issue 16, data side).

XML declarations in any encoding, ImageSets ids with spaces, truncated / corrupt / random /
empty shards (found at start or named when tf.data hits them), eval counts against the
manifest, and labels that do not fit --num_classes.
"""
import json
import os
import shutil

import pytest
import tensorflow as tf

from dataset import dataset_common as dc
from dataset import voc_xml
from voc_files import convert, good, image_bytes, read_records, write_split, xml_text
from evaluation import ground_truth

BOMB = ('<!DOCTYPE annotation [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        '<annotation><object><name>&b;</name><bndbox><xmin>1</xmin><ymin>1</ymin>'
        '<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>')


# ----------------------------------------------------------------------------- XML and lists


@pytest.mark.parametrize('encoding', ['utf-16', 'utf-16-le', 'utf-16-be', 'utf-8'])
def test_doctype_is_refused_in_any_encoding(encoding):
    for declaration in ('', '<?xml version="1.0" encoding="%s"?>' % encoding.upper()):
        data = (declaration + BOMB).encode(encoding)
        assert b'<!DOCTYPE' not in data or encoding == 'utf-8'   # a byte search misses it
        with pytest.raises(voc_xml.AnnotationError) as info:
            voc_xml.parse_annotation_bytes(data)
        assert 'DOCTYPE/ENTITY declarations are not allowed' in str(info.value) or (
            declaration and 'unsupported XML encoding' in str(info.value)), str(info.value)


def test_utf16_doctype_file_is_skipped_and_a_plain_utf16_file_converts(tmp_path):
    plain = ('<?xml version="1.0" encoding="UTF-16"?>'
             + xml_text(40, 20, [('cat', 2, 2, 30, 15)])).encode('utf-16')
    entries = [good('ok'), ('plain16', image_bytes(40, 20), plain),
               ('bomb16', image_bytes(40, 20), BOMB.encode('utf-16'))]
    split_dir = write_split(tmp_path, 'S', entries)
    manifest, _out, err = convert(tmp_path, tmp_path / 'out', train_shards=1)
    assert sorted(read_records(tmp_path / 'out')) == ['ok.jpg', 'plain16.jpg']
    skipped = manifest['splits']['train']['skipped_images']
    assert [s['image'] for s in skipped] == ['bomb16']
    assert skipped[0]['reason'] == ('malformed annotation %s: DOCTYPE/ENTITY declarations are '
                                    'not allowed in annotations'
                                    % os.path.join(split_dir, 'Annotations', 'bomb16.xml'))
    assert 'aaaaaaaa' not in err and 'aaaaaaaa' not in json.dumps(manifest)
    assert manifest['splits']['train']['objects_per_class']['cat'] == 1


def test_imagesets_lines_are_whole_ids_even_with_spaces(tmp_path):
    entries = [good('my photo 1'), good('plain')]
    split_dir = write_split(tmp_path, 'S', entries)
    with open(os.path.join(split_dir, 'ImageSets', 'Main', 'train.txt'), 'w') as f:
        f.write('\ufeffmy photo 1  \r\n\n  plain\r\n')      # BOM, CRLF, blank, padding
    manifest, _out, err = convert(tmp_path, tmp_path / 'out', train_shards=1)
    assert sorted(read_records(tmp_path / 'out')) == ['my photo 1.jpg', 'plain.jpg']
    assert manifest['splits']['train']['images'] == 2
    assert manifest['splits']['train']['skipped_images'] == [] and 'WARNING' not in err


def test_comma_lists_and_optional_log_have_one_helper():
    from dataset import helpers
    from utility import train_utils
    from utility.checkpoints import restore
    assert helpers.parse_comma_list(' VOC2007, ,VOC2012 ,') == ['VOC2007', 'VOC2012']
    assert helpers.parse_comma_list(None) == [] and helpers.parse_comma_list('') == []
    assert helpers.parse_comma_list(['a ', ' ', 'b']) == ['a', 'b']
    assert conv_splits('VOC2007, VOC2012') == ['VOC2007', 'VOC2012']
    assert train_utils.parse_number_list('500, 80000,100000', int) == [500, 80000, 100000]
    with pytest.raises(ValueError, match='--decay_boundaries must be comma-separated numbers'):
        train_utils.parse_number_list('500, x', int, '--decay_boundaries')
    assert restore._parse_scopes('ssd300/multibox_head/, ssd300/conv4_3_scale') == [
        'ssd300/multibox_head', 'ssd300/conv4_3_scale']
    got = []
    helpers.notify(got.append, 'shown')
    helpers.notify(None, 'dropped')
    assert got == ['shown']


def conv_splits(text):
    from dataset import voc_to_tfrecords
    return voc_to_tfrecords.parse_comma_list(text)


# ----------------------------------------------------------------------------- shards


@pytest.fixture
def records_copy(tfrecord_dir, tmp_path):
    out = str(tmp_path / 'records')
    shutil.copytree(tfrecord_dir, out)
    return out


def _shard(data_dir, split='train', index=1):
    return sorted(tf.io.gfile.glob(os.path.join(data_dir, split + '-*')))[index]


def _record_spans(path):
    """[(start, end)] byte spans of the records of a TFRecord file (headers parsed here)."""
    spans, data, offset = [], open(path, 'rb').read(), 0
    while offset < len(data):
        length = int.from_bytes(data[offset:offset + 8], 'little')
        spans.append((offset, offset + 16 + length))
        offset += 16 + length
    return spans


def test_good_shards_pass_and_counts_match_the_manifest(records_copy):
    files = dc.check_shards(records_copy, 'train')
    manifest = dc.read_manifest(records_copy)['splits']['train']
    counts = dc.validate_shards(files)
    assert [counts[f] for f in files] == manifest['images_per_shard']
    assert sum(counts.values()) == manifest['images'] == 10
    assert dc.find_bad_shard(files) is None
    assert dc.explain_data_loss(files, None) is None


def test_truncated_shard_is_named_at_start(records_copy):
    bad = _shard(records_copy)
    spans = _record_spans(bad)
    with open(bad, 'r+b') as f:
        f.truncate(spans[-1][0] + 100)            # last record cut in the middle
    with pytest.raises(ValueError) as info:
        dc.check_shards(records_copy, 'train')
    message = str(info.value)
    assert message.startswith('TFRecord shard %s is truncated: record %d at byte %d'
                              % (bad, len(spans) - 1, spans[-1][0]))
    assert 're-run the converter' in message and '\n' not in message


def test_random_bytes_shard_is_named_at_start(records_copy):
    bad = _shard(records_copy, index=0)
    with open(bad, 'wb') as f:
        f.write(os.urandom(5000))
    with pytest.raises(ValueError) as info:
        dc.check_shards(records_copy, 'train')
    assert str(info.value).startswith('TFRecord shard %s is corrupt: the header of record 0 '
                                      'at byte 0 fails its checksum (is it a TFRecord file' % bad)


def test_zero_byte_shard_disagrees_with_the_manifest(records_copy):
    bad = _shard(records_copy, 'val', 0)
    expected = dc.read_manifest(records_copy)['splits']['val']['images_per_shard'][0]
    assert expected > 0
    open(bad, 'wb').close()
    with pytest.raises(ValueError) as info:
        dc.check_shards(records_copy, 'val')
    assert str(info.value).startswith('TFRecord shard %s holds 0 records but %s says %d;'
                                      % (bad, os.path.join(records_copy, 'manifest.json'),
                                         expected))
    # Eval counts what it read against the manifest and says when they differ.
    records = ground_truth.scan_records(os.path.join(records_copy, 'val-*'))
    total = dc.read_manifest(records_copy)['splits']['val']['images']
    assert dc.count_against_manifest(records_copy, 'val', len(records)) == (
        total, total - expected)
    message = dc.count_mismatch_message(records_copy, 'validation', len(records))
    assert message.startswith('%d images were read from the validation shards in %s but %s '
                              'says %d;' % (total - expected, records_copy,
                                            os.path.join(records_copy, 'manifest.json'), total))
    assert dc.count_mismatch_message(records_copy, 'val', total) is None


def test_all_train_shards_empty_is_an_error_not_a_zero_step_run(records_copy):
    os.remove(os.path.join(records_copy, 'manifest.json'))   # nothing to compare against
    files = sorted(tf.io.gfile.glob(os.path.join(records_copy, 'train-*')))
    for path in files:
        open(path, 'wb').close()
    with pytest.raises(ValueError) as info:
        dc.check_shards(records_copy, 'train')
    assert str(info.value) == (
        'The 2 TFRecord shard(s) %s ... %s hold no records, so there is nothing to read; %s.'
        % (files[0], os.path.basename(files[1]), dc.CONVERTER_FIX))


def test_corrupt_payload_is_named_when_tf_data_hits_it(records_copy):
    bad = _shard(records_copy)
    before = {path: list(tf.data.TFRecordDataset(path).as_numpy_iterator())
              for path in dc.list_shards(os.path.join(records_copy, 'train-*'))}
    start, end = _record_spans(bad)[-1]
    with open(bad, 'r+b') as f:                    # flip a byte inside the last payload:
        f.seek((start + end) // 2)                 # headers stay valid, the payload CRC fails
        byte = f.read(1)
        f.seek((start + end) // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    files = dc.check_shards(records_copy, 'train')  # the cheap start-up check passes
    with pytest.raises(tf.errors.DataLossError) as info:
        list(tf.data.TFRecordDataset(files).as_numpy_iterator())
    assert bad not in str(info.value)              # TF's own error never names the file
    error = dc.explain_data_loss(files, info.value)
    assert isinstance(error, ValueError)
    assert str(error).startswith('TFRecord shard %s is damaged (corrupted record at' % bad)
    assert '\n' not in str(error)
    # The good shard is untouched and still reads.
    good_shard = [p for p in files if p != bad][0]
    assert list(tf.data.TFRecordDataset(good_shard).as_numpy_iterator()) == before[good_shard]
    # Eval's ground-truth scan names it too.
    with pytest.raises(ValueError) as info:
        ground_truth.scan_records(os.path.join(records_copy, 'train-*'))
    assert str(info.value).startswith('TFRecord shard %s is damaged' % bad)


def test_first_record_must_be_an_image_example(tmp_path):
    path = str(tmp_path / 'train-00000-of-00001')
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(b'not an example at all')
    with pytest.raises(ValueError) as info:
        dc.check_shards(str(tmp_path), 'train')
    assert str(info.value).startswith('TFRecord shard %s does not hold images' % path)


# ----------------------------------------------------------------------------- labels


def _write_manifest(data_dir, per_class, split='train'):
    os.makedirs(data_dir, exist_ok=True)
    with open(os.path.join(data_dir, 'manifest.json'), 'w') as f:
        json.dump({'labels': list(dc.VOC_LABELS),
                   'splits': {split: {'images': 3, 'objects_per_class': per_class}}}, f)


def test_labels_outside_num_classes_are_caught_from_the_manifest(tmp_path):
    data_dir = str(tmp_path / 'd')
    _write_manifest(data_dir, {'aeroplane': 2, 'dog': 3, 'tvmonitor': 0, 'cat': 1})
    assert dc.check_labels_fit(data_dir, 21) == 12
    assert dc.check_labels_fit(data_dir, 13) == 12
    with pytest.raises(ValueError) as info:
        dc.check_labels_fit(data_dir, 12)
    assert str(info.value) == (
        "The train split in %s has objects of class 'dog' (label 12), but --num_classes 12 "
        "only allows labels up to 11; pass --num_classes 21 (20 classes + background) or "
        "convert data with fewer classes." % os.path.join(data_dir, 'manifest.json'))
    assert dc.check_labels_fit(data_dir, 5, splits=('val',)) is None   # split not recorded
    assert dc.check_labels_fit(str(tmp_path / 'nomanifest'), 5) is None


def test_labels_check_on_the_converted_sample(tfrecord_dir):
    per_class = dc.read_manifest(tfrecord_dir)['splits']['train']['objects_per_class']
    largest = max(dc.VOC_LABELS.index(name) for name, n in per_class.items() if n)
    assert dc.check_labels_fit(tfrecord_dir, 21) == largest
    with pytest.raises(ValueError, match=r"label %d\), but --num_classes 5 " % largest):
        dc.check_labels_fit(tfrecord_dir, 5)
