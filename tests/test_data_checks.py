"""Bad data ends in one line naming the file and the fix (issue 16, data side).

XML declarations in any encoding, ImageSets ids with spaces, and the one parser of comma
lists; damaged shards are tests/test_shard_checks.py's.
"""
import json
import os

import pytest

from dataset import voc_xml
from voc_files import convert, good, image_bytes, read_records, write_split, xml_text


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
    from common import console
    from utility.checkpoints import restore
    assert console.parse_comma_list(' VOC2007, ,VOC2012 ,') == ['VOC2007', 'VOC2012']
    assert console.parse_comma_list(None) == [] and console.parse_comma_list('') == []
    assert console.parse_comma_list(['a ', ' ', 'b']) == ['a', 'b']
    assert conv_splits('VOC2007, VOC2012') == ['VOC2007', 'VOC2012']
    assert console.parse_number_list('500, 80000,100000', int) == [500, 80000, 100000]
    with pytest.raises(ValueError, match='--decay_boundaries must be comma-separated numbers'):
        console.parse_number_list('500, x', int, '--decay_boundaries')
    assert restore._parse_scopes('ssd300/multibox_head/, ssd300/conv4_3_scale') == [
        'ssd300/multibox_head', 'ssd300/conv4_3_scale']
    got = []
    console.notify(got.append, 'shown')
    console.notify(None, 'dropped')
    assert got == ['shown']


def conv_splits(text):
    from dataset import voc_to_tfrecords
    return voc_to_tfrecords.parse_comma_list(text)
