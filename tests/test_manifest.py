"""Tests of dataset/manifest.py: reading manifest.json (and the counts the shard checks take
from it)."""
import json

import pytest

from dataset import manifest, shard_checks


def test_manifest_reading(tfrecord_dir, tmp_path):
    assert shard_checks.count_against_manifest(tfrecord_dir, 'train', 0)[0] == 10
    assert shard_checks.count_against_manifest(tfrecord_dir, 'val', 0)[0] == 2
    assert shard_checks.count_against_manifest(tfrecord_dir, 'validation', 0)[0] == 2
    assert set(manifest.read_manifest(tfrecord_dir)['splits']) == {'train', 'val'}
    assert shard_checks.count_against_manifest(tfrecord_dir, 'bogus', 5) == (None, 5)
    with pytest.raises(FileNotFoundError, match='No manifest.json in .*convert_voc_sample'):
        manifest.read_manifest(str(tmp_path))
    (tmp_path / 'manifest.json').write_text('{"splits": ')
    with pytest.raises(ValueError, match='not valid JSON'):
        manifest.read_manifest(str(tmp_path))
    (tmp_path / 'manifest.json').write_text(json.dumps({'splits': {'train': {'images': 3}}}))
    assert shard_checks.count_against_manifest(str(tmp_path), 'train', 0)[0] == 3
