"""Reading a converted data folder's ``manifest.json`` (written by dataset/shard_writer.py):
the file, its split entries, and what it says about the source and the class names.
"""

import json
import os

import tensorflow as tf

MANIFEST_NAME = 'manifest.json'

CONVERTER_HINT = ('python3 dataset/convert_voc_sample_tfrecords.py --dataset_directory=dataset/ '
                  '--output_directory=dataset/tfrecords --train_splits VOC2012_sample '
                  '--validation_splits VOC2012_sample')

_SPLIT_ALIASES = {'validation': 'val', 'eval': 'val', 'test': 'val'}


def split_name(split):
    """The shard and manifest name of `split`: 'validation', 'eval' and 'test' are 'val';
    any other name is itself."""
    return _SPLIT_ALIASES.get(split, split)


def read_manifest(data_dir):
    """Loads ``<data_dir>/manifest.json`` written by the converter.

    Returns:
      dict with 'splits' -> {'train': {...}, 'val': {...}} (images, objects per
      class, difficult, truncated, skipped images, dropped boxes, shards, ...)
      and 'pixel_convention'.
    Raises:
      FileNotFoundError / ValueError: the manifest is missing or unreadable; the
        message says to run the converter.
    """
    path = os.path.join(data_dir, MANIFEST_NAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError('No %s in %s; convert the data first with: %s'
                                % (MANIFEST_NAME, data_dir, CONVERTER_HINT))
    with tf.io.gfile.GFile(path, 'r') as f:
        text = f.read()
    try:
        manifest = json.loads(text)
    except ValueError as e:
        raise ValueError('%s is not valid JSON (%s); rerun the converter to rewrite it.'
                         % (path, e))
    if not isinstance(manifest, dict) or not isinstance(manifest.get('splits'), dict):
        raise ValueError('%s has no "splits" table; rerun the converter to rewrite it.' % path)
    return manifest


def manifest_split(data_dir, split):
    """The manifest entry of `split`, or None when there is no readable manifest or no
    such split in it."""
    try:
        splits = read_manifest(data_dir)['splits']
    except (FileNotFoundError, ValueError):
        return None
    name = split if split in splits else split_name(split)
    entry = splits.get(name)
    return entry if isinstance(entry, dict) else None


def source_from_manifest(data_dir):
    """What ``<data_dir>/manifest.json`` says about where the records came from:
    {'source': 'voc' | 'coco', 'category_ids': [the source's category id of label 1, 2, ...]
    or None, 'anchor_preset': the preset the converter suggests or None}. Without a manifest
    (or for a manifest of an older converter) the source is 'voc'."""
    try:
        manifest = read_manifest(data_dir)
    except (FileNotFoundError, ValueError):
        manifest = {}
    ids = manifest.get('category_ids')
    return {'source': manifest.get('source') or 'voc',
            'category_ids': [int(i) for i in ids] if isinstance(ids, list) else None,
            'anchor_preset': manifest.get('anchor_preset')}


def labels_from_manifest(data_dir):
    """The class names (index = label id, 'none' first) recorded in ``<data_dir>/manifest.json``
    by the converter, or None when there is no manifest or it has no 'labels' list (records
    of the original scripts: VOC names)."""
    try:
        manifest = read_manifest(data_dir)
    except FileNotFoundError:
        return None
    labels = manifest.get('labels')
    if not isinstance(labels, list) or len(labels) < 2 or not all(
            isinstance(name, str) for name in labels):
        return None
    return tuple(labels)
