"""Pascal VOC folders -> sharded TFRecords plus a manifest (the one converter).

Two thin entry points call ``main`` with a profile:

* ``dataset/convert_voc_sample_tfrecords.py`` (profile 'sample'): train images
  listed in ``<split>/ImageSets/Main/train.txt``, validation images in
  ``<split>/ImageSets/Main/val.txt``; a missing list file is an error.
* ``dataset/convert_tfrecords.py`` (profile 'voc', full VOC): train from
  ``trainval.txt`` of 'VOC2007, VOC2012', validation from ``test.txt`` of
  'VOC2007TEST'; a missing list file falls back to every ``Annotations/*.xml``.

Layout expected under ``--dataset_directory``::

    <split>/JPEGImages/<id>.jpg  <split>/Annotations/<id>.xml  <split>/ImageSets/Main/<list>.txt

Output in ``--output_directory``: ``train-00000-of-00016`` ... and
``val-00000-of-00016`` ... (one ``tf.train.Example`` per image, keys listed in
``dataset/records.py``), and ``manifest.json`` with the counts per split and the class names.

Classes: ``--labels FILE`` names them, one per line (label k = the k-th name; 0 is the implied
background 'none'); without it the 20 VOC classes. The names go into the manifest's 'labels'
list, where training, evaluation, the demo and the export find them.

The record layout, the threaded shard writer and the manifest are dataset/shard_writer.py's,
shared with the COCO converter (dataset/coco_to_tfrecords.py).

Boxes: an annotation's 1-based inclusive pixel box is clipped to
``[1, width] x [1, height]`` and stored as ``v / width`` (x) and ``v / height``
(y) (the original's convention); inverted or zero-area boxes are dropped.
"""

import argparse
import io
import os
import sys

from common.console import parse_comma_list
from dataset.labels import VOC_LABELS, LabelMapError, read_label_map
from dataset.shard_writer import (SHUFFLE_SEED, ConversionError, ImageError, IncompleteMarker,
                                  Reporter, make_example, objects_per_class, prepare_image,
                                  write_split)
from dataset import shard_writer
from dataset.voc_xml import AnnotationError, parse_annotation

PIXEL_CONVENTION = (
    'Boxes are stored as [ymin, xmin, ymax, xmax] lists normalized by the decoded image '
    'size: a VOC 1-based inclusive pixel coordinate v (clipped to [1, width] or '
    '[1, height]) is stored as v / width for x and v / height for y, so '
    'normalized * width (or height) gives the VOC pixel coordinate back.')

PROFILES = {
    'sample': {
        'description': 'Convert the VOC-format sample (or any VOC-layout folder) to '
                       'TFRecords: train images from ImageSets/Main/train.txt, '
                       'validation images from ImageSets/Main/val.txt.',
        'train_splits': 'VOC2012_sample',
        'validation_splits': 'VOC2012_sample',
        'train_list': 'train',
        'validation_list': 'val',
        'list_fallback': False,
    },
    'voc': {
        'description': 'Convert Pascal VOC to TFRecords: train images from '
                       'ImageSets/Main/trainval.txt, validation images from '
                       'ImageSets/Main/test.txt (every Annotations/*.xml if a list is '
                       'missing).',
        'train_splits': 'VOC2007, VOC2012',
        'validation_splits': 'VOC2007TEST',
        'train_list': 'trainval',
        'validation_list': 'test',
        'list_fallback': True,
    },
}

# --------------------------------------------------------------------------- images


def normalize_objects(objects, width, height):
    """Clips pixel boxes to the image and normalizes them.

    Args:
      objects: parsed objects (``bbox_pixels`` = 1-based xmin, ymin, xmax, ymax)
        that have a 'label' entry.
      width, height: decoded image size in pixels.
    Returns:
      (kept, dropped, clipped): kept objects with 'bbox' = (ymin, xmin, ymax,
      xmax) normalized, [(object index, reason)] for dropped boxes, and
      [(object index, description)] for clipped boxes.
    """
    kept, dropped, clipped = [], [], []
    for k, obj in enumerate(objects):
        xmin, ymin, xmax, ymax = obj['bbox_pixels']
        if xmax < xmin or ymax < ymin:
            dropped.append((k, 'inverted box %s (xmin, ymin, xmax, ymax)'
                            % (_fmt_box(obj['bbox_pixels']),)))
            continue
        cx = (min(max(xmin, 1.0), width), min(max(xmax, 1.0), width))
        cy = (min(max(ymin, 1.0), height), min(max(ymax, 1.0), height))
        box = (cx[0], cy[0], cx[1], cy[1])
        if box[2] <= box[0] or box[3] <= box[1]:
            dropped.append((k, 'zero-area box %s after clipping to the %dx%d image'
                            % (_fmt_box(obj['bbox_pixels']), width, height)))
            continue
        if box != tuple(obj['bbox_pixels']):
            clipped.append((k, 'box %s clipped to %s' % (_fmt_box(obj['bbox_pixels']),
                                                        _fmt_box(box))))
        item = dict(obj)
        item['bbox'] = (box[1] / height, box[0] / width, box[3] / height, box[2] / width)
        kept.append(item)
    return kept, dropped, clipped


def _fmt_box(box):
    return '(%s)' % ', '.join('%g' % v for v in box)


# --------------------------------------------------------------------------- listing


def _split_dir(dataset_directory, split):
    path = os.path.join(dataset_directory, split)
    if not os.path.isdir(path):
        raise ConversionError('split directory not found: %s; check --dataset_directory and '
                              'the split names (make the sample with python3 '
                              'dataset/make_voc_sample.py)' % path)
    return path


def read_image_ids(split_dir, list_name, allow_fallback, reporter):
    """Image ids of one split folder, in list order (duplicates removed).

    Reads ``<split_dir>/ImageSets/Main/<list_name>.txt``: each non-blank line is one
    whole image id (surrounding whitespace stripped, so an id may contain spaces);
    when it is missing, lists ``Annotations/*.xml`` if ``allow_fallback``, or
    raises ConversionError.
    """
    list_path = os.path.join(split_dir, 'ImageSets', 'Main', list_name + '.txt')
    if os.path.isfile(list_path):
        with open(list_path, 'r', encoding='utf-8-sig', errors='replace') as f:
            raw = [line.strip() for line in f if line.strip()]
        source = list_path
    elif allow_fallback:
        ann_dir = os.path.join(split_dir, 'Annotations')
        if not os.path.isdir(ann_dir):
            raise ConversionError('neither %s nor %s exists; point --dataset_directory at the '
                                  'folder that holds the VOC split folders'
                                  % (list_path, ann_dir))
        raw = sorted(os.path.splitext(n)[0] for n in os.listdir(ann_dir) if n.endswith('.xml'))
        source = ann_dir
        reporter.info('NOTE: %s is missing; using all %d annotations in %s instead.'
                      % (list_path, len(raw), ann_dir))
    else:
        raise ConversionError('image list not found: %s; create it (one image id per line) '
                              'or check the split name' % list_path)
    ids, seen = [], set()
    for image_id in raw:
        if image_id in seen:
            reporter.warn('%s lists %s more than once; converting it once.' % (source, image_id))
            continue
        seen.add(image_id)
        ids.append(image_id)
    return ids, source


# --------------------------------------------------------------------------- converting


def _label_source(label_file):
    """How an unknown-class message names the label map in use."""
    return ('a class of the label file %s' % label_file if label_file
            else 'one of the 20 VOC class names (or pass --labels FILE naming your classes)')


def _load_record(dataset_directory, split, image_id, skip_unknown_classes, reporter,
                 labels=VOC_LABELS, label_file=None):
    """Annotation pre-pass for one listed image: a record dict, with 'skip'
    set to a reason when the image cannot be used. `labels`: the label map (index = label id,
    'none' first); `label_file`: where it came from (None: the VOC default), for messages."""
    split_dir = os.path.join(dataset_directory, split)
    record = {'split': split, 'id': image_id,
              'image_path': os.path.join(split_dir, 'JPEGImages', image_id + '.jpg'),
              'xml_path': os.path.join(split_dir, 'Annotations', image_id + '.xml'),
              'skip': None, 'dropped': [], 'annotation': None}
    if not os.path.isfile(record['xml_path']):
        record['skip'] = 'missing annotation file %s' % record['xml_path']
    elif not os.path.isfile(record['image_path']):
        record['skip'] = 'missing image file %s' % record['image_path']
    else:
        try:
            record['annotation'] = parse_annotation(record['xml_path'])
        except AnnotationError as e:
            record['skip'] = 'malformed annotation %s: %s' % (record['xml_path'], e)
    if record['skip']:
        reporter.warn('skipping image %s: %s' % (image_id, record['skip']))
        return record
    objects = []
    label_ids = {name: index for index, name in enumerate(labels) if index}
    for k, obj in enumerate(record['annotation']['objects']):
        label = label_ids.get(obj['name'], 0)
        if label == 0:
            if not skip_unknown_classes:
                raise ConversionError(
                    'unknown class %r in %s; use %s or rerun with --skip_unknown_classes '
                    'to drop such objects'
                    % (obj['name'], record['xml_path'], _label_source(label_file)))
            reason = 'unknown class %r' % obj['name']
            if label_file:
                reason += ' (not in the label file %s)' % label_file
            record['dropped'].append((k, reason))
            reporter.warn('dropping object %d of %s: %s' % (k, record['xml_path'], reason))
            continue
        item = dict(obj)
        item['label'] = label
        item['index'] = k
        objects.append(item)
    record['objects'] = objects
    return record


def _process_record(record, reporter):
    """Decodes the image and builds the serialized Example; returns a result dict."""
    result = {'split': record['split'], 'id': record['id'], 'skip': record['skip'],
              'dropped': list(record['dropped']), 'clipped': 0, 'note': None,
              'labels': [], 'difficult': 0, 'truncated': 0, 'serialized': None}
    if result['skip']:
        return result
    try:
        with open(record['image_path'], 'rb') as f:
            data = f.read()
        jpeg, height, width, note = prepare_image(data)
    except (OSError, ImageError) as e:
        result['skip'] = 'bad image %s: %s' % (record['image_path'], e)
        reporter.warn('skipping image %s: %s' % (record['id'], result['skip']))
        return result
    if note:
        result['note'] = note
        reporter.warn('%s: %s' % (record['image_path'], note))
    ann = record['annotation']
    if ann['width'] and ann['height'] and (ann['width'], ann['height']) != (width, height):
        reporter.warn('%s says %dx%d but the image is %dx%d; using the image size.'
                      % (record['xml_path'], ann['width'], ann['height'], width, height))
    kept, dropped, clipped = normalize_objects(record['objects'], width, height)
    for k, reason in dropped:
        index = record['objects'][k]['index']
        result['dropped'].append((index, reason))
        reporter.warn('dropping object %d of %s: %s' % (index, record['xml_path'], reason))
    for k, description in clipped:
        reporter.warn('object %d of %s: %s' % (record['objects'][k]['index'],
                                               record['xml_path'], description))
    result['clipped'] = len(clipped)
    result['labels'] = [o['label'] for o in kept]
    result['difficult'] = sum(1 for o in kept if o['difficult'])
    result['truncated'] = sum(1 for o in kept if o['truncated'])
    example = make_example(record['id'] + '.jpg', jpeg, height, width, kept)
    result['serialized'] = example.SerializeToString()
    return result


def convert_split(dataset_directory, source_splits, list_name, name, output_directory,
                  num_shards, num_threads, skip_unknown_classes=False, list_fallback=False,
                  reporter=None, labels=VOC_LABELS, label_file=None):
    """Converts the images of ``source_splits`` into ``<name>-SSSSS-of-NNNNN`` shards.

    Images are ordered (split order, list order), shuffled with a fixed seed and
    cut into ``num_shards`` contiguous shards written by up to ``num_threads``
    threads; bad images are skipped, never their neighbours.

    `labels` is the label map (index = label id, 'none' first; default the VOC classes) and
    `label_file` its file (None for the default), named in unknown-class messages.

    Returns:
      The manifest entry for the split (a dict of counts and lists).
    Raises:
      ConversionError: missing split folder or list, unknown class (without
        ``skip_unknown_classes``), or zero records written.
    """
    reporter = reporter or Reporter()
    if num_shards < 1 or num_threads < 1:
        raise ConversionError('shards and threads must be >= 1 (got %d shards, %d threads); '
                              'fix --%s_shards / --num_threads' % (num_shards, num_threads,
                                                                  'train' if name == 'train'
                                                                  else 'validation'))
    listed, lists = [], []
    for split in source_splits:
        ids, source = read_image_ids(_split_dir(dataset_directory, split), list_name,
                                     list_fallback, reporter)
        lists.append(os.path.relpath(source, dataset_directory))
        listed.extend((split, image_id) for image_id in ids)
    records = [_load_record(dataset_directory, split, image_id, skip_unknown_classes, reporter,
                            labels, label_file)
               for split, image_id in listed]
    return write_split(
        records, _process_record, name, output_directory, num_shards, num_threads, reporter,
        lambda results, names, written: _summarize(results, source_splits, lists, names,
                                                   written, labels),
        '%d listed images from %s' % (len(records), ', '.join(source_splits)),
        lambda summary: '%d objects: %d difficult, %d truncated' % (
            summary['objects'], summary['difficult'], summary['truncated']))


def _summarize(results, source_splits, lists, names, written, labels=VOC_LABELS):
    kept, per_class = objects_per_class(results, labels)
    by_id = lambda item: (item['split'], item['image'])  # noqa: E731
    return {
        'images': len(kept),
        'listed_images': len(results),
        'objects': sum(per_class.values()),
        'objects_per_class': per_class,
        'difficult': sum(r['difficult'] for r in kept),
        'truncated': sum(r['truncated'] for r in kept),
        'background_only_images': sum(1 for r in kept if not r['labels']),
        'skipped_images': sorted(({'split': r['split'], 'image': r['id'], 'reason': r['skip']}
                                  for r in results if r['skip']), key=by_id),
        'dropped_boxes': sorted(({'split': r['split'], 'image': r['id'], 'object': k,
                                  'reason': reason}
                                 for r in results for k, reason in r['dropped']),
                                key=lambda d: (d['split'], d['image'], d['object'])),
        'clipped_boxes': sum(r['clipped'] for r in kept),
        're_encoded_images': sorted(({'split': r['split'], 'image': r['id'], 'reason': r['note']}
                                     for r in kept if r['note']), key=by_id),
        'source_splits': list(source_splits),
        'image_lists': lists,
        'shards': len(names),
        'shard_files': names,
        'images_per_shard': written,
        'shuffle_seed': SHUFFLE_SEED,
    }


def update_manifest(output_directory, name, summary, reporter=None, labels=VOC_LABELS):
    """shard_writer.update_manifest for VOC data (source 'voc', the VOC pixel convention)."""
    return shard_writer.update_manifest(output_directory, name, summary, reporter, labels,
                                        source='voc', pixel_convention=PIXEL_CONVENTION)


def convert_dataset(dataset_directory, output_directory, train_splits, validation_splits,
                    train_shards=16, validation_shards=16, num_threads=8, train_list='train',
                    validation_list='val', skip_unknown_classes=False, list_fallback=False,
                    reporter=None, labels=None, label_file=None):
    """Converts the train and validation splits; an empty split list skips that
    split (so train and val can be converted in separate runs).

    While it runs, ``<output_directory>/conversion.incomplete`` marks the folder unfinished
    (removed once every split and the manifest are written), so a run killed between the
    splits does not pass for a complete one.

    Args:
      train_splits / validation_splits: lists of split folder names (or
        comma-separated strings) under ``dataset_directory``.
      train_list / validation_list: ImageSets/Main list names ('train', 'val',
        'trainval', 'test').
      labels: the class names, index = label id with 'none' first (dataset.labels.
        read_label_map); None: read `label_file`, or the 20 VOC classes without one.
      label_file: the label file (read when `labels` is None; named in messages).
    Returns:
      The manifest dict (also written to ``<output_directory>/manifest.json``).
    Raises:
      ConversionError: see ``convert_split``; paths are checked for both splits
        before anything is written.
    """
    reporter = reporter or Reporter()
    if labels is None:
        try:
            labels = read_label_map(label_file) if label_file else VOC_LABELS
        except LabelMapError as e:
            raise ConversionError(str(e)) from None
    labels = tuple(labels)
    if isinstance(train_splits, str):
        train_splits = parse_comma_list(train_splits)
    if isinstance(validation_splits, str):
        validation_splits = parse_comma_list(validation_splits)
    jobs = [('train', list(train_splits), train_list, train_shards),
            ('val', list(validation_splits), validation_list, validation_shards)]
    jobs = [job for job in jobs if job[1]]
    if not jobs:
        raise ConversionError('nothing to convert: --train_splits and --validation_splits are '
                              'both empty; name at least one split folder')
    for name, _splits, _list_name, shards in jobs:
        if shards < 1 or num_threads < 1:
            raise ConversionError('shards and threads must be >= 1 (got %d %s shards, %d '
                                  'threads); fix --%s_shards or --num_threads'
                                  % (shards, name, num_threads,
                                     'train' if name == 'train' else 'validation'))
    # Check every folder and list first so a typo fails before anything is written.
    quiet = Reporter(out=io.StringIO(), err=io.StringIO())
    for _name, splits, list_name, _shards in jobs:
        for split in splits:
            read_image_ids(_split_dir(dataset_directory, split), list_name, list_fallback, quiet)
    reporter.info('Saving results to %s' % output_directory)
    # The folder is marked incomplete until every split is written (a run killed between the
    # splits leaves the marker; training and eval then refuse the folder).
    with IncompleteMarker(output_directory, [name for name, _, _, _ in jobs]) as marker:
        for name, splits, list_name, shards in jobs:
            summary = convert_split(dataset_directory, splits, list_name, name,
                                    output_directory, shards, num_threads, skip_unknown_classes,
                                    list_fallback, reporter, labels, label_file)
            manifest = update_manifest(output_directory, name, summary, reporter, labels)
            marker.split_written()
    return manifest


# --------------------------------------------------------------------------- command line


def _bool_flag(text):
    value = str(text).strip().lower()
    if value in ('1', 'true', 't', 'yes', 'y'):
        return True
    if value in ('0', 'false', 'f', 'no', 'n'):
        return False
    raise argparse.ArgumentTypeError('expected true or false, got %r' % text)


def build_parser(profile='sample'):
    """argparse parser with the original's flags and this profile's defaults."""
    defaults = PROFILES[profile]
    script_dir = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=defaults['description'])
    parser.add_argument('--dataset_directory', default=script_dir,
                        help='folder holding the VOC split folders (default: %(default)s)')
    parser.add_argument('--output_directory', default='./tfrecords',
                        help='where shards and manifest.json go (default: %(default)s)')
    parser.add_argument('--train_splits', default=defaults['train_splits'],
                        help='comma-separated training split folders; empty skips training '
                             '(default: %(default)s)')
    parser.add_argument('--validation_splits', default=defaults['validation_splits'],
                        help='comma-separated validation split folders; empty skips '
                             'validation (default: %(default)s)')
    parser.add_argument('--train_shards', type=int, default=16)
    parser.add_argument('--validation_shards', type=int, default=16)
    parser.add_argument('--num_threads', type=int, default=8)
    parser.add_argument('--skip_unknown_classes', type=_bool_flag, nargs='?', const=True,
                        default=False,
                        help='drop objects whose class is not in the label map (--labels, or '
                             'the VOC classes) instead of failing')
    parser.add_argument('--labels', default='',
                        help='label file: one class name per line (label 1, 2, ...; the '
                             'background "none" is implied as label 0; blank lines ignored). '
                             'Default: the 20 Pascal VOC classes')
    parser.set_defaults(profile=profile)
    return parser


def main(argv=None, profile='sample'):
    """Command-line entry; returns the exit status (0 ok, 1 conversion error)."""
    args = build_parser(profile).parse_args(argv)
    settings = PROFILES[profile]
    try:
        convert_dataset(args.dataset_directory, args.output_directory,
                        args.train_splits, args.validation_splits,
                        train_shards=args.train_shards,
                        validation_shards=args.validation_shards,
                        num_threads=args.num_threads,
                        train_list=settings['train_list'],
                        validation_list=settings['validation_list'],
                        skip_unknown_classes=args.skip_unknown_classes,
                        list_fallback=settings['list_fallback'],
                        label_file=args.labels or None)
    except ConversionError as e:
        print('ERROR: %s' % e, file=sys.stderr, flush=True)
        return 1
    return 0
