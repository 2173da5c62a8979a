"""COCO instances json + image folder -> sharded TFRecords plus a manifest (the COCO adapter).

    python3 dataset/convert_coco_tfrecords.py --annotations_file instances_val2017.json \\
        --images_dir val2017 --output_directory coco_tfrecords --split val

Writes the same ``tf.train.Example`` keys and ``manifest.json`` as the VOC converter
(dataset/shard_writer.py does the writing for both), so train_ssd.py and eval_ssd.py take the
folder as they take a VOC one. What is COCO's:

* Labels: the categories sorted by category id; label k is the k-th (1-based, 0 is the
  background). The manifest's 'category_ids' lists each label's COCO category id (COCO's ids
  run 1..90 with gaps), 'source' is 'coco' and 'anchor_preset' is 'coco' (net/anchors.py).
* Each record keeps its COCO image id as 'image/source_id' (and its file name), so results map
  back exactly.
* Boxes: COCO's ``bbox [x, y, w, h]`` is in 0-based continuous pixels; it is stored exactly as
  ``[y / H, x / W, (y + h) / H, (x + w) / W]`` (no 1-pixel shift: the VOC converter's shift
  comes from VOC's 1-based inclusive pixels, which COCO does not use). Boxes reaching outside
  the image are clipped to it; boxes with w <= 0 or h <= 0, or nothing left inside the image,
  are skipped. Both are counted in the manifest.
* ``iscrowd=1`` annotations are stored with 'image/object/bbox/iscrowd' = 1. Training drops
  them from its targets (utility/ssd_model.py: never positives); the metrics ignore detections
  on them, as COCO's own evaluation does.
* Images without annotations are kept (COCO negatives) and counted as
  'images_without_annotations'.

Bad input: a json that does not parse or lacks 'images' / 'annotations' / 'categories', a
duplicate image or category id, or two categories of one name stop the conversion with one
line and write nothing. An annotation naming an unknown image or category, an image entry
without id or file name, a missing or unreadable image file, and bad boxes are warnings naming
the image id / file (and annotation id) and are counted in the manifest. Shards and manifest are
written under temporary names and moved into place at the end.
"""

import argparse
import json
import math
import os
import sys

from dataset import shard_writer
from dataset.shard_writer import (SHUFFLE_SEED, ConversionError, ImageError, Reporter,
                                  make_example, objects_per_class, prepare_image,
                                  write_split)

SOURCE = 'coco'
ANCHOR_PRESET = 'coco'
PIXEL_CONVENTION = (
    'Boxes are stored as [ymin, xmin, ymax, xmax] lists normalized by the decoded image size: '
    'a COCO bbox [x, y, w, h] in 0-based continuous pixels (clipped to the image) is stored '
    'as [y / height, x / width, (y + h) / height, (x + w) / width], so normalized * width (or '
    'height) gives COCO pixel coordinates back exactly (no 1-pixel shift).')
_REQUIRED = ('images', 'annotations', 'categories')


# --------------------------------------------------------------------------- the json


def load_coco(path):
    """Parses and checks a COCO instances json.

    Returns:
      dict 'labels' (('none', name of the lowest category id, ...)), 'category_ids' (list, the
      COCO id of label 1, 2, ...), 'images' (list of {'id', 'file_name', 'width', 'height'}
      in file order), 'annotations' (the json's list).
    Raises:
      ConversionError: unreadable or invalid json, a missing top-level list, a category
        without integer id or name, a duplicate category id or name, a duplicate image id.
    """
    try:
        with open(path, 'r', encoding='utf-8') as f:
            data = json.load(f)
    except OSError as e:
        raise ConversionError('cannot read the annotations file %s (%s); check '
                              '--annotations_file' % (path, e.strerror or e))
    except ValueError as e:
        raise ConversionError('the annotations file %s is not valid JSON (%s); pass a COCO '
                              'instances json such as instances_val2017.json' % (path, e))
    if not isinstance(data, dict):
        raise ConversionError('the annotations file %s holds a %s, not a COCO json object; pass '
                              'a COCO instances json' % (path, type(data).__name__))
    missing = [k for k in _REQUIRED if not isinstance(data.get(k), list)]
    if missing:
        raise ConversionError('the annotations file %s lacks the %s list%s of a COCO instances '
                              'json; pass an instances_*.json (not a captions or panoptic file)'
                              % (path, ', '.join(repr(k) for k in missing),
                                 's' if len(missing) > 1 else ''))
    categories = {}
    names = {}
    for k, category in enumerate(data['categories']):
        cid = category.get('id') if isinstance(category, dict) else None
        name = category.get('name') if isinstance(category, dict) else None
        if not isinstance(cid, int) or isinstance(cid, bool) or not isinstance(name, str) \
                or not name.strip():
            raise ConversionError('category %d of %s has no integer "id" and "name" (%r); fix '
                                  'the categories list' % (k, path, category))
        if cid in categories:
            raise ConversionError('%s lists category id %d twice (%r and %r); each category id '
                                  'must be unique' % (path, cid, categories[cid], name))
        if name in names or name == 'none':
            raise ConversionError('%s names two categories %r (ids %s and %d); category names '
                                  'must be unique and not "none"'
                                  % (path, name, names.get(name, 'background'), cid))
        categories[cid] = name
        names[name] = cid
    if not categories:
        raise ConversionError('the annotations file %s has no categories; a COCO instances '
                              'json lists its classes under "categories"' % path)
    ids = sorted(categories)
    images, seen = [], {}
    for k, image in enumerate(data['images']):
        image = image if isinstance(image, dict) else {}
        iid, file_name = image.get('id'), image.get('file_name')
        if not isinstance(iid, int) or isinstance(iid, bool) or not isinstance(file_name, str):
            images.append({'bad': 'image entry %d of %s has no integer "id" and "file_name" '
                                  '(%r)' % (k, path, image)})
            continue
        if iid in seen:
            raise ConversionError('%s lists image id %d twice (%s and %s); image ids must be '
                                  'unique' % (path, iid, seen[iid], file_name))
        seen[iid] = file_name
        images.append({'id': iid, 'file_name': file_name,
                       'width': image.get('width'), 'height': image.get('height')})
    return {'labels': ('none',) + tuple(categories[c] for c in ids), 'category_ids': ids,
            'images': images, 'annotations': data['annotations']}


def group_annotations(coco, reporter):
    """{image id: [annotation dicts in file order]} and the list of dropped annotations
    ({'image', 'annotation', 'reason'}) for annotations naming an unknown image or category
    or without a usable bbox (each one warned about)."""
    known_images = {image['id'] for image in coco['images'] if 'id' in image}
    label_of = {cid: k + 1 for k, cid in enumerate(coco['category_ids'])}
    by_image, dropped = {}, []

    def drop(annotation, k, image, reason):
        aid = annotation.get('id', 'at index %d' % k) if isinstance(annotation, dict) else k
        dropped.append({'image': image, 'annotation': aid, 'reason': reason})
        reporter.warn('dropping annotation %s of image %s: %s' % (aid, image, reason))

    for k, annotation in enumerate(coco['annotations']):
        if not isinstance(annotation, dict):
            drop(annotation, k, None, 'not a json object')
            continue
        image = annotation.get('image_id')
        if image not in known_images:
            drop(annotation, k, image, 'unknown image id %r (not in "images")' % (image,))
            continue
        category = annotation.get('category_id')
        if category not in label_of:
            drop(annotation, k, image, 'unknown category id %r (not in "categories")'
                 % (category,))
            continue
        bbox = annotation.get('bbox')
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in bbox)):
            drop(annotation, k, image, 'bbox %r is not 4 finite numbers [x, y, w, h]' % (bbox,))
            continue
        item = {'id': annotation.get('id'), 'index': k, 'bbox': [float(v) for v in bbox],
                'label': label_of[category], 'iscrowd': 1 if annotation.get('iscrowd') else 0}
        by_image.setdefault(image, []).append(item)
    return by_image, dropped


def normalize_coco_boxes(annotations, width, height):
    """COCO pixel boxes -> stored boxes.

    Args:
      annotations: dicts with 'bbox' [x, y, w, h] (0-based continuous pixels).
      width, height: the decoded image size.
    Returns:
      (kept, dropped, clipped): kept annotations with 'bbox_normalized' (ymin, xmin, ymax,
      xmax) = the box clipped to [0, width] x [0, height], divided by the image size;
      [(annotation, reason)] for boxes with w <= 0 or h <= 0 or nothing inside the image;
      [(annotation, description)] for clipped boxes.
    """
    kept, dropped, clipped = [], [], []
    for annotation in annotations:
        x, y, w, h = annotation['bbox']
        if w <= 0 or h <= 0:
            dropped.append((annotation, 'zero-area or negative box [x, y, w, h] = %s'
                            % _fmt(annotation['bbox'])))
            continue
        x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
        x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
        if x1 <= x0 or y1 <= y0:
            dropped.append((annotation, 'box [x, y, w, h] = %s lies outside the %dx%d image'
                            % (_fmt(annotation['bbox']), width, height)))
            continue
        if (x0, y0, x1, y1) != (x, y, x + w, y + h):
            clipped.append((annotation, 'box [x, y, w, h] = %s clipped to the %dx%d image'
                            % (_fmt(annotation['bbox']), width, height)))
        item = dict(annotation)
        item['bbox_normalized'] = (y0 / height, x0 / width, y1 / height, x1 / width)
        kept.append(item)
    return kept, dropped, clipped


def _fmt(values):
    return '[%s]' % ', '.join('%g' % v for v in values)


# --------------------------------------------------------------------------- converting


def _process_record(record, reporter):
    """Reads one image, builds its Example; a result dict for shard_writer.write_shards."""
    result = {'id': record['id'], 'file': record['file_name'], 'skip': record.get('bad'),
              'dropped': [], 'clipped': 0, 'note': None, 'labels': [], 'crowd': 0,
              'serialized': None}
    if result['skip']:
        return result
    path = record['path']
    try:
        with open(path, 'rb') as f:
            data = f.read()
        jpeg, height, width, note = prepare_image(data)
    except (OSError, ImageError) as e:
        result['skip'] = 'missing or unreadable image file %s: %s' % (
            path, getattr(e, 'strerror', None) or e)
        reporter.warn('skipping image %s: %s' % (record['id'], result['skip']))
        return result
    if note:
        result['note'] = note
        reporter.warn('image %s (%s): %s' % (record['id'], path, note))
    if record.get('width') and record.get('height') and (
            record['width'], record['height']) != (width, height):
        reporter.warn('image %s: the json says %sx%s but %s is %dx%d; using the image size.'
                      % (record['id'], record['width'], record['height'], path, width, height))
    kept, dropped, clipped = normalize_coco_boxes(record['annotations'], width, height)
    for annotation, reason in dropped:
        result['dropped'].append({'image': record['id'], 'annotation': annotation['id'],
                                  'reason': reason})
        reporter.warn('dropping annotation %s of image %s (%s): %s'
                      % (annotation['id'], record['id'], path, reason))
    for annotation, description in clipped:
        reporter.warn('annotation %s of image %s (%s): %s'
                      % (annotation['id'], record['id'], path, description))
    result['clipped'] = len(clipped)
    result['labels'] = [a['label'] for a in kept]
    result['crowd'] = sum(a['iscrowd'] for a in kept)
    objects = [{'bbox': a['bbox_normalized'], 'label': a['label'],
                'name': record['labels'][a['label']], 'difficult': 0, 'truncated': 0,
                'iscrowd': a['iscrowd']} for a in kept]
    example = make_example(os.path.basename(record['file_name']), jpeg, height, width, objects,
                           source_id=record['id'])
    result['serialized'] = example.SerializeToString()
    return result


def convert_coco(annotations_file, images_dir, output_directory, split='train', num_shards=16,
                 num_threads=8, reporter=None):
    """Converts one COCO split to ``<split>-SSSSS-of-NNNNN`` shards and its manifest entry.

    Returns:
      The manifest dict (also written to ``<output_directory>/manifest.json``).
    Raises:
      ConversionError: see the module docstring; nothing is written then.
    """
    reporter = reporter or Reporter()
    if split not in ('train', 'val'):
        raise ConversionError('--split %r is not train or val; the shards are named after it '
                              '(train-* for train_ssd.py, val-* for eval_ssd.py)' % split)
    if num_shards < 1 or num_threads < 1:
        raise ConversionError('shards and threads must be >= 1 (got %d shards, %d threads); '
                              'fix --num_shards / --num_threads' % (num_shards, num_threads))
    if not os.path.isdir(images_dir):
        raise ConversionError('images folder not found: %s; pass --images_dir, the folder '
                              'that holds the file_name paths of the json' % images_dir)
    coco = load_coco(annotations_file)
    labels = coco['labels']
    by_image, dropped = group_annotations(coco, reporter)
    records = []
    for image in coco['images']:
        if 'bad' in image:
            reporter.warn('skipping %s' % image['bad'])
            records.append({'id': None, 'file_name': None, 'bad': image['bad']})
            continue
        records.append(dict(image, path=os.path.join(images_dir, image['file_name']),
                            annotations=by_image.get(image['id'], []), labels=labels))
    reporter.info('Saving results to %s' % output_directory)
    summary = write_split(
        records, _process_record, split, output_directory, num_shards, num_threads, reporter,
        lambda results, names, written: _summarize(results, dropped, labels, annotations_file,
                                                   images_dir, names, written),
        '%d images, %d annotations, %d categories from %s'
        % (len(records), len(coco['annotations']), len(labels) - 1, annotations_file),
        lambda summary: '%d objects, %d crowd; %d images without annotations' % (
            summary['objects'], summary['crowd_boxes'], summary['images_without_annotations']))
    return shard_writer.update_manifest(
        output_directory, split, summary, reporter, labels, source=SOURCE,
        pixel_convention=PIXEL_CONVENTION,
        source_info={'category_ids': coco['category_ids'], 'anchor_preset': ANCHOR_PRESET})


def _summarize(results, dropped, labels, annotations_file, images_dir, names, written):
    kept, per_class = objects_per_class(results, labels)
    dropped = list(dropped) + [d for r in kept for d in r['dropped']]
    return {
        'images': len(kept),
        'listed_images': len(results),
        'objects': sum(per_class.values()),
        'objects_per_class': per_class,
        'crowd_boxes': sum(r['crowd'] for r in kept),
        'difficult': 0,
        'truncated': 0,
        'images_without_annotations': sum(1 for r in kept if not r['labels']),
        'background_only_images': sum(1 for r in kept if not r['labels']),
        'skipped_images': sorted(({'image': r['id'], 'file': r['file'], 'reason': r['skip']}
                                  for r in results if r['skip']),
                                 key=lambda d: (d['image'] is None, str(d['image']))),
        'dropped_boxes': sorted(dropped, key=lambda d: (str(d['image']), str(d['annotation']))),
        'clipped_boxes': sum(r['clipped'] for r in kept),
        're_encoded_images': sorted(({'image': r['id'], 'reason': r['note']}
                                     for r in kept if r['note']), key=lambda d: d['image']),
        'annotations_file': os.path.abspath(annotations_file),
        'images_dir': os.path.abspath(images_dir),
        'shards': len(names),
        'shard_files': names,
        'images_per_shard': written,
        'shuffle_seed': SHUFFLE_SEED,
    }


# --------------------------------------------------------------------------- command line


def build_parser():
    parser = argparse.ArgumentParser(description=(
        'Convert a COCO instances json and its images to TFRecord shards (<split>-*) and '
        'manifest.json, the format train_ssd.py and eval_ssd.py read.'))
    parser.add_argument('--annotations_file', required=True,
                        help='COCO instances json, e.g. annotations/instances_train2017.json')
    parser.add_argument('--images_dir', required=True,
                        help='folder the json\'s file_name paths are relative to, e.g. '
                             'train2017')
    parser.add_argument('--output_directory', default='./coco_tfrecords',
                        help='where shards and manifest.json go (default: %(default)s)')
    parser.add_argument('--split', default='train', choices=('train', 'val'),
                        help='shard name prefix: train-* (training) or val-* (evaluation); '
                             'convert each split in its own run into the same folder')
    parser.add_argument('--num_shards', type=int, default=16,
                        help='number of shards (default: %(default)s)')
    parser.add_argument('--num_threads', type=int, default=8,
                        help='threads writing shards (default: %(default)s)')
    return parser


def main(argv=None):
    """Command-line entry; returns the exit status (0 ok, 1 conversion error)."""
    args = build_parser().parse_args(argv)
    try:
        convert_coco(args.annotations_file, args.images_dir, args.output_directory,
                     split=args.split, num_shards=args.num_shards,
                     num_threads=args.num_threads)
    except ConversionError as e:
        print('ERROR: %s' % e, file=sys.stderr, flush=True)
        return 1
    return 0
