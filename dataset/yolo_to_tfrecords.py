"""YOLO-layout data set (images/ + labels/ + data.yaml) -> sharded TFRecords plus a manifest.

    python3 dataset/convert_yolo_tfrecords.py --data_yaml data.yaml --output_directory out

Writes the same ``tf.train.Example`` keys and ``manifest.json`` as the VOC and COCO converters
(dataset/shard_writer.py does the writing for all three), so train_ssd.py and eval_ssd.py take
the folder as they take a VOC one. What is YOLO's:

* ``data.yaml`` (dataset/yolo_yaml.py reads it): ``path`` (the data set's folder; relative to the
  yaml's folder; default that folder), ``train`` and ``val`` (an image folder, searched
  recursively, or a .txt file listing image paths, or a list of those; relative to ``path``,
  else to the yaml's folder), ``names`` (a list, or an index -> name mapping), optionally
  ``nc``. ``train`` is written as ``train-*``, ``val`` as ``val-*``; a ``test`` entry is not
  converted (evaluation reads ``val-*``).
* Labels: the image path with its last ``images`` folder replaced by ``labels`` and the
  extension by ``.txt`` (beside the image when there is no ``images`` folder). One line per box,
  ``class cx cy w h``, the centre and size normalized to the image. An image without a label file
  (or with an empty one) is a negative, kept and counted.
* Classes: in index order; label k + 1 is ``names``' k-th entry (0 is the background). The
  manifest's 'source' is 'yolo'.
* Boxes: ``[cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2]``, the normalized corners (pixels are
  normalized * width or height, 0-based continuous as COCO's). Image sizes come from the decoded
  image files.

Bad input: a yaml that cannot be read or lacks ``names`` (or names a class twice), a ``train`` /
``val`` folder or list that does not exist, or a split without images stop the conversion with one
line, before anything is written. Each of these is a warning naming the file (and line) and is
counted in the manifest: a line that is not 5 numbers ('bad_label_lines'), a class index
outside ``names`` ('unknown_class_boxes'), a box of zero width or height ('zero_size_boxes') (all
three dropped, and listed in 'dropped_boxes' with file and line), coordinates outside [0, 1]
(clipped: 'clipped_boxes'), an image that does not decode (skipped: 'skipped_images'; PNG or
other data behind a .jpg name is re-encoded: 're_encoded_images').
"""

import argparse
import math
import os
import sys

from dataset import shard_writer
from dataset.shard_writer import (SHUFFLE_SEED, ConversionError, ImageError, IncompleteMarker,
                                  Reporter, make_example, objects_per_class, prepare_image,
                                  write_split)
from dataset.yolo_yaml import YamlError, load_data_yaml

SOURCE = 'yolo'
PIXEL_CONVENTION = (
    'Boxes are stored as [ymin, xmin, ymax, xmax] lists normalized by the image size: a YOLO '
    'label "class cx cy w h" (normalized centre and size) is stored as [cy - h / 2, cx - w / 2, '
    'cy + h / 2, cx + w / 2] clipped to [0, 1], so normalized * width (or height) gives 0-based '
    'continuous pixel coordinates.')
# The image files a YOLO split folder holds (what Pillow decodes among YOLO's formats).
IMAGE_EXTENSIONS = ('.bmp', '.jpg', '.jpeg', '.png', '.tif', '.tiff', '.webp', '.mpo')
SPLITS = (('train', 'train'), ('val', 'val'))  # (data.yaml key, shard name)
_YAML_KEYS = ('path', 'train', 'val', 'test', 'names', 'nc')


# --------------------------------------------------------------------------- data.yaml


def read_data_yaml(data_yaml):
    """The data set a data.yaml describes.

    Returns:
      dict 'labels' (('none', name of class 0, ...)), 'root' (the data set's folder), 'splits'
      {'train' / 'val': [image folders or list files]} (only the keys the yaml gives),
      'yaml_dir'.
    Raises:
      ConversionError: unreadable yaml, no or unusable 'names', 'nc' disagreeing with it,
        neither 'train' nor 'val'.
    """
    try:
        data = load_data_yaml(data_yaml, keys=_YAML_KEYS)
    except OSError as e:
        raise ConversionError('cannot read the data yaml %s (%s); pass --data_yaml, the '
                              'data.yaml of a YOLO-layout data set' % (data_yaml,
                                                                       e.strerror or e))
    except YamlError as e:
        raise ConversionError('%s; fix the data yaml' % e)
    names = data.get('names')
    if names is None:
        raise ConversionError('%s has no "names"; list the class names, e.g. names: [cat, dog] '
                              'or names: {0: cat, 1: dog}' % data_yaml)
    if isinstance(names, dict):
        try:
            keyed = sorted((int(k), v) for k, v in names.items())
        except (TypeError, ValueError):
            raise ConversionError('%s: "names" maps %r; its keys must be the class indices 0, '
                                  '1, ...' % (data_yaml, sorted(names, key=str)))
        if [k for k, _ in keyed] != list(range(len(keyed))):
            raise ConversionError('%s: "names" has indices %s; give every index from 0 to %d '
                                  'once' % (data_yaml, [k for k, _ in keyed], len(keyed) - 1))
        names = [v for _, v in keyed]
    if not isinstance(names, list) or not names:
        raise ConversionError('%s: "names" is %r, not a list or an index -> name mapping of the '
                              'classes' % (data_yaml, names))
    names = [str(n).strip() if n is not None else '' for n in names]
    for k, name in enumerate(names):
        if not name or name == 'none' or names.index(name) != k:
            raise ConversionError('%s: class %d is named %r; names must be unique, non-empty and '
                                  'not "none" (the background)' % (data_yaml, k, name))
    nc = data.get('nc')
    if nc is not None and nc != len(names):
        raise ConversionError('%s says nc: %s but "names" lists %d classes; make them agree'
                              % (data_yaml, nc, len(names)))
    yaml_dir = os.path.dirname(os.path.abspath(data_yaml))
    root = data.get('path')
    root = os.path.join(yaml_dir, str(root)) if root else yaml_dir
    splits = {}
    for key, _ in SPLITS:
        value = data.get(key)
        if value:
            splits[key] = [str(v) for v in (value if isinstance(value, list) else [value])]
    if not splits:
        raise ConversionError('%s names neither "train" nor "val" images; add e.g. train: '
                              'images/train and val: images/val' % data_yaml)
    return {'labels': ('none',) + tuple(names), 'root': os.path.normpath(root),
            'splits': splits, 'yaml_dir': yaml_dir, 'has_test': bool(data.get('test'))}


def _locate(entry, root, yaml_dir, key, data_yaml):
    tried = []
    for base in (root, yaml_dir):
        path = os.path.normpath(os.path.join(base, os.path.expanduser(entry)))
        if os.path.exists(path):
            return path
        if path not in tried:
            tried.append(path)
    raise ConversionError('the %s images %r of %s do not exist (looked for %s); fix "%s" (or '
                          '"path") in the yaml' % (key, entry, data_yaml, ' and '.join(tried),
                                                   key))


def list_images(entries, root, yaml_dir, key, data_yaml):
    """The image files of one split: every image under each folder (sorted, recursively) and
    every path of each list file (relative ones from the list's folder), duplicates once.

    Raises:
      ConversionError: an entry that does not exist, or no image at all.
    """
    images = []
    for entry in entries:
        path = _locate(entry, root, yaml_dir, key, data_yaml)
        if os.path.isdir(path):
            for folder, _, files in sorted(os.walk(path)):
                images.extend(os.path.join(folder, f) for f in sorted(files)
                              if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
        else:
            with open(path, 'r', encoding='utf-8') as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith('#'):
                        images.append(os.path.normpath(os.path.join(os.path.dirname(path),
                                                                    line)))
    images = list(dict.fromkeys(images))
    if not images:
        raise ConversionError('the %s entry %s of %s holds no images (%s); point "%s" at the '
                              'image folder or list' % (key, ', '.join(entries), data_yaml,
                                                        '/'.join(IMAGE_EXTENSIONS), key))
    return images


def label_path(image_path):
    """The YOLO label file of an image: its last 'images' folder replaced by 'labels', '.txt'."""
    parts = os.path.normpath(image_path).split(os.sep)
    folders = parts[:-1]
    for k in range(len(folders) - 1, -1, -1):
        if folders[k] == 'images':
            folders[k] = 'labels'
            break
    return os.sep.join(folders + [os.path.splitext(parts[-1])[0] + '.txt'])


# --------------------------------------------------------------------------- labels


def parse_label_file(path, num_classes):
    """Reads one YOLO label file.

    Returns:
      (boxes, problems): boxes are dicts 'label' (1-based), 'bbox' (ymin, xmin, ymax, xmax,
      normalized, clipped to [0, 1]), 'line', 'clipped' (bool); problems are (line, kind,
      message) with kind 'bad_line' (not 5 numbers), 'unknown_class' (a class index outside
      names), 'zero_size' (all three: the box is dropped) or 'clipped' (coordinates outside
      [0, 1], clipped).
    """
    boxes, problems = [], []
    with open(path, 'r', encoding='utf-8', errors='replace') as f:
        lines = f.read().splitlines()
    for n, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = None
        if values is None or len(values) != 5 or not all(math.isfinite(v) for v in values):
            problems.append((n, 'bad_line', 'expected 5 numbers "class cx cy w h", got %r%s'
                             % (line.strip(), ' (segment polygons are not read)'
                                if values and len(values) > 5 else '')))
            continue
        index, cx, cy, w, h = values
        if index != int(index) or not 0 <= index < num_classes:
            problems.append((n, 'unknown_class', 'class index %s is outside names (0..%d)'
                             % (fields[0], num_classes - 1)))
            continue
        corners = (cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2)
        clipped = tuple(min(max(v, 0.0), 1.0) for v in corners)
        if w <= 0 or h <= 0 or clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            problems.append((n, 'zero_size', 'box "%s" has no area%s' % (
                line.strip(), ' inside the image' if w > 0 and h > 0 else '')))
            continue
        if clipped != corners:
            problems.append((n, 'clipped', 'box "%s" reaches outside [0, 1]; clipped'
                             % line.strip()))
        boxes.append({'label': int(index) + 1, 'bbox': clipped, 'line': n,
                      'clipped': clipped != corners})
    return boxes, problems


def _load_record(image_path, root, labels, reporter):
    """Label pre-pass for one image: a record dict for write_shards (warnings printed here)."""
    name = os.path.relpath(image_path, root) if image_path.startswith(root + os.sep) \
        else image_path
    record = {'id': name, 'image_path': image_path, 'label_path': label_path(image_path),
              'objects': [], 'dropped': [], 'clipped': 0,
              'problems': {'bad_line': 0, 'unknown_class': 0, 'zero_size': 0}}
    if not os.path.isfile(record['label_path']):
        return record
    try:
        boxes, problems = parse_label_file(record['label_path'], len(labels) - 1)
    except OSError as e:
        reporter.warn('%s: unreadable label file (%s); the image is kept as a negative'
                      % (record['label_path'], e.strerror or e))
        return record
    for line, kind, message in problems:
        reporter.warn('%s:%d: %s' % (record['label_path'], line, message))
        if kind in record['problems']:
            record['problems'][kind] += 1
            record['dropped'].append({'image': name, 'line': line, 'reason': message})
    record['clipped'] = sum(1 for b in boxes if b['clipped'])
    record['objects'] = [{'bbox': b['bbox'], 'label': b['label'], 'name': labels[b['label']],
                          'difficult': 0, 'truncated': 0} for b in boxes]
    return record


def _process_record(record, reporter):
    """Decodes one image and builds its Example; a result dict for shard_writer.write_shards."""
    result = {'id': record['id'], 'skip': None, 'note': None, 'serialized': None,
              'labels': [o['label'] for o in record['objects']],
              'dropped': record['dropped'], 'problems': record['problems'],
              'clipped': record['clipped'], 'has_label_file': os.path.isfile(
                  record['label_path'])}
    try:
        with open(record['image_path'], 'rb') as f:
            data = f.read()
        jpeg, height, width, note = prepare_image(data)
    except (OSError, ImageError) as e:
        result['skip'] = 'unreadable image %s: %s' % (record['image_path'],
                                                      getattr(e, 'strerror', None) or e)
        reporter.warn('skipping %s' % result['skip'])
        return result
    if note:
        result['note'] = note
        reporter.warn('%s: %s' % (record['image_path'], note))
    example = make_example(os.path.basename(record['image_path']), jpeg, height, width,
                           record['objects'])
    result['serialized'] = example.SerializeToString()
    return result


def _summarize(results, labels, data_yaml, entries, names, written):
    kept, per_class = objects_per_class(results, labels)
    return {
        'images': len(kept),
        'listed_images': len(results),
        'objects': sum(per_class.values()),
        'objects_per_class': per_class,
        'difficult': 0,
        'truncated': 0,
        'images_without_labels': sum(1 for r in kept if not r['has_label_file']),
        'background_only_images': sum(1 for r in kept if not r['labels']),
        'skipped_images': sorted(({'image': r['id'], 'reason': r['skip']}
                                  for r in results if r['skip']), key=lambda d: d['image']),
        'bad_label_lines': sum(r['problems']['bad_line'] for r in results),
        'unknown_class_boxes': sum(r['problems']['unknown_class'] for r in results),
        'zero_size_boxes': sum(r['problems']['zero_size'] for r in results),
        'dropped_boxes': sorted((d for r in results for d in r['dropped']),
                                key=lambda d: (d['image'], d['line'])),
        'clipped_boxes': sum(r['clipped'] for r in kept),
        're_encoded_images': sorted(({'image': r['id'], 'reason': r['note']}
                                     for r in kept if r['note']), key=lambda d: d['image']),
        'data_yaml': os.path.abspath(data_yaml),
        'image_sources': list(entries),
        'shards': len(names),
        'shard_files': names,
        'images_per_shard': written,
        'shuffle_seed': SHUFFLE_SEED,
    }


def convert_yolo(data_yaml, output_directory, train_shards=16, validation_shards=16,
                 num_threads=8, reporter=None):
    """Converts the train and val images of a YOLO data set to shards and the manifest.

    Everything that can stop the conversion (the yaml, the split folders and lists, empty
    splits) is checked before anything is written; the label files are read and their problems
    warned about before the first shard.

    Returns:
      The manifest dict (also written to ``<output_directory>/manifest.json``).
    Raises:
      ConversionError: see the module docstring; nothing is written then.
    """
    reporter = reporter or Reporter()
    if min(train_shards, validation_shards, num_threads) < 1:
        raise ConversionError('shards and threads must be >= 1 (got %d train shards, %d '
                              'validation shards, %d threads); fix --train_shards, '
                              '--validation_shards or --num_threads'
                              % (train_shards, validation_shards, num_threads))
    info = read_data_yaml(data_yaml)
    labels = info['labels']
    jobs = []
    for key, name in SPLITS:
        if key in info['splits']:
            images = list_images(info['splits'][key], info['root'], info['yaml_dir'], key,
                                 data_yaml)
            jobs.append((key, name, images, train_shards if name == 'train'
                         else validation_shards))
    if 'val' not in info['splits']:
        reporter.warn('%s names no "val" images: only train-* is written (eval_ssd.py reads '
                      'val-*)' % data_yaml)
    if info['has_test']:
        reporter.info('%s: "test" is not converted (eval_ssd.py evaluates val-*).' % data_yaml)
    reporter.info('%d classes from %s: %s' % (len(labels) - 1, data_yaml,
                                              ', '.join(labels[1:])))
    prepared = []
    for key, name, images, shards in jobs:
        records = [_load_record(path, info['root'], labels, reporter) for path in images]
        prepared.append((key, name, records, shards))
    reporter.info('Saving results to %s' % output_directory)
    manifest = None
    with IncompleteMarker(output_directory, [name for _, name, _, _ in prepared]) as marker:
        for key, name, records, shards in prepared:
            entries = info['splits'][key]
            summary = write_split(
                records, _process_record, name, output_directory, shards, num_threads,
                reporter,
                lambda results, names, written: _summarize(results, labels, data_yaml, entries,
                                                           names, written),
                '%d images of %s' % (len(records), ', '.join(entries)),
                lambda summary: '%d objects; %d images without a label file, %d bad label '
                                'lines' % (summary['objects'], summary['images_without_labels'],
                                           summary['bad_label_lines']))
            manifest = shard_writer.update_manifest(
                output_directory, name, summary, reporter, labels, source=SOURCE,
                pixel_convention=PIXEL_CONVENTION)
            marker.split_written()
    return manifest


# --------------------------------------------------------------------------- command line


def build_parser():
    parser = argparse.ArgumentParser(description=(
        'Convert a YOLO-layout data set (data.yaml, images/, labels/) to TFRecord shards '
        '(train-*, val-*) and manifest.json, the format train_ssd.py and eval_ssd.py read.'))
    parser.add_argument('--data_yaml', required=True,
                        help='the data set\'s data.yaml (path, train, val, names)')
    parser.add_argument('--output_directory', default='./yolo_tfrecords',
                        help='where shards and manifest.json go (default: %(default)s)')
    parser.add_argument('--train_shards', type=int, default=16,
                        help='shards of train-* (default: %(default)s)')
    parser.add_argument('--validation_shards', type=int, default=16,
                        help='shards of val-* (default: %(default)s)')
    parser.add_argument('--num_threads', type=int, default=8,
                        help='threads writing shards (default: %(default)s)')
    return parser


def main(argv=None):
    """Command-line entry; returns the exit status (0 ok, 2 bad input: one ERROR line)."""
    args = build_parser().parse_args(argv)
    try:
        convert_yolo(args.data_yaml, args.output_directory, train_shards=args.train_shards,
                     validation_shards=args.validation_shards, num_threads=args.num_threads)
    except ConversionError as e:
        print('ERROR: %s' % e, file=sys.stderr, flush=True)
        return 2
    return 0
