"""What every source converter (VOC XML, COCO json) shares: the record, the shards, the manifest.

* `make_example`: the one ``tf.train.Example`` layout (keys in dataset/records.py's docstring);
* `prepare_image`: image bytes checked and, where needed, re-encoded as RGB JPEG;
* `write_shards`: records cut into ``<name>-SSSSS-of-NNNNN`` shards by a thread pool, with
  progress lines, written under temporary names and moved into place only when every shard
  is complete (nothing half-written); `write_split`: one split shuffled, written and
  summarized, with its two progress lines; `objects_per_class`: the summaries' class counts;
* `IncompleteMarker`: ``conversion.incomplete`` (`INCOMPLETE_NAME`) in the output folder
  while a conversion runs (shard_checks.check_conversion_complete refuses such a folder);
* `update_manifest`: ``manifest.json`` (counts per split, class names, the source and what
  the source says about the data: its category ids, the anchor preset it suggests);
* `Reporter`, `ConversionError`, `ImageError`: messages and the errors converters raise.
"""

import io
import json
import os
import random
import re
import sys
import threading
import time
from concurrent import futures

import tensorflow as tf
from PIL import Image

from dataset.labels import VOC_LABELS
from dataset.manifest import MANIFEST_NAME

MANIFEST_VERSION = 1
SHUFFLE_SEED = 180428  # the original's RANDOM_SEED: records are shuffled with it before sharding
# Present in a converter's output folder while a conversion runs; removed when every split is
# written. Still there: the conversion was killed and the splits may come from two runs.
INCOMPLETE_NAME = 'conversion.incomplete'
_SHARD_RE = r'^%s-\d{5}-of-\d{5}$'


class ConversionError(Exception):
    """A problem that stops the conversion; the message is one line naming the
    cause and the fix (the entry scripts print it and exit 1)."""


class ImageError(Exception):
    """An image file that cannot be decoded (the image is skipped)."""


class Reporter:
    """Thread-safe progress and warning printer."""

    def __init__(self, out=None, err=None, progress_every=500, progress_seconds=10.0):
        self._out = out
        self._err = err
        self._lock = threading.Lock()
        self.progress_every = progress_every
        self.progress_seconds = progress_seconds

    def info(self, message):
        with self._lock:
            print(message, file=self._out or sys.stdout, flush=True)

    def warn(self, message):
        with self._lock:
            print('WARNING: %s' % message, file=self._err or sys.stderr, flush=True)



def prepare_image(data):
    """Checks encoded image bytes and returns RGB JPEG bytes.

    A complete baseline/progressive RGB JPEG is kept byte for byte; PNG (or any
    other format Pillow reads), CMYK or grayscale data are re-encoded as RGB JPEG.

    Returns:
      (jpeg_bytes, height, width, note) where note is None or says what was
      converted.
    Raises:
      ImageError: the data is truncated, empty or not an image.
    """
    try:
        image = Image.open(io.BytesIO(data))
        image_format, mode = image.format, image.mode
        image.load()
    except Exception as e:  # Pillow raises many types for bad data
        raise ImageError('unreadable or truncated image data (%s)' % (str(e) or type(e).__name__))
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError('image has no pixels (%dx%d)' % (width, height))
    if image_format == 'JPEG' and mode == 'RGB':
        return data, height, width, None
    if image_format != 'JPEG':
        note = '%s data (mode %s) behind a .jpg name' % (image_format, mode)
    else:
        note = '%s JPEG' % {'L': 'grayscale', 'CMYK': 'CMYK'}.get(mode, mode)
    buffer = io.BytesIO()
    image.convert('RGB').save(buffer, format='JPEG', quality=95)
    return buffer.getvalue(), height, width, 'converted %s to RGB JPEG' % note



def make_example(filename, jpeg_bytes, height, width, objects, source_id=None):
    """``tf.train.Example`` with the original's keys plus 'image/object/bbox/iscrowd' (and
    'image/source_id' when `source_id` is given: the source's image id, e.g. COCO's, as text).

    Objects carry 'bbox' (ymin, xmin, ymax, xmax normalized), 'label', 'name', 'difficult',
    'truncated' and optionally 'iscrowd' (0 when absent)."""
    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    def byte_list(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    feature = {
        'image/encoded': byte_list([jpeg_bytes]),
        'image/format': byte_list([b'jpeg']),
        'image/filename': byte_list([filename.encode('utf-8')]),
        'image/height': ints([height]),
        'image/width': ints([width]),
        'image/channels': ints([3]),
        'image/shape': ints([height, width, 3]),
        'image/object/bbox/ymin': floats([o['bbox'][0] for o in objects]),
        'image/object/bbox/xmin': floats([o['bbox'][1] for o in objects]),
        'image/object/bbox/ymax': floats([o['bbox'][2] for o in objects]),
        'image/object/bbox/xmax': floats([o['bbox'][3] for o in objects]),
        'image/object/bbox/label': ints([o['label'] for o in objects]),
        'image/object/bbox/label_text': byte_list([o['name'].encode('utf-8') for o in objects]),
        'image/object/bbox/difficult': ints([o['difficult'] for o in objects]),
        'image/object/bbox/truncated': ints([o['truncated'] for o in objects]),
        'image/object/bbox/iscrowd': ints([int(o.get('iscrowd', 0)) for o in objects]),
    }
    if source_id is not None:
        feature['image/source_id'] = byte_list([str(source_id).encode('utf-8')])
    return tf.train.Example(features=tf.train.Features(feature=feature))


class _Progress:
    def __init__(self, name, total, reporter):
        self.name, self.total, self.reporter = name, total, reporter
        self.count = 0
        self.start = self.last = time.time()
        self.lock = threading.Lock()

    def tick(self):
        with self.lock:
            self.count += 1
            now = time.time()
            due = (self.count % max(1, self.reporter.progress_every) == 0 or
                   now - self.last >= self.reporter.progress_seconds)
            if not due or self.count == self.total:
                return
            self.last = now
            count, rate = self.count, self.count / max(now - self.start, 1e-9)
        self.reporter.info('%s: %d/%d images (%.1f images/s)' % (self.name, count,
                                                                self.total, rate))



def shard_names(name, num_shards):
    """['<name>-00000-of-000NN', ...] for ``num_shards`` shards."""
    return ['%s-%05d-of-%05d' % (name, s, num_shards) for s in range(num_shards)]


def write_shards(records, process_record, name, output_directory, num_shards, num_threads,
                 reporter):
    """Writes `records` (in this order) into ``<name>-SSSSS-of-NNNNN`` shards.

    The records are cut into ``num_shards`` contiguous runs, each written by one of up to
    ``num_threads`` threads through ``process_record(record, reporter)``, which returns a
    result dict with 'skip' (None or the reason the image was left out) and 'serialized'
    (the Example bytes, or None). Shards are written as hidden temporary files and renamed
    only when all of them are complete and at least one record was written; stale shards of
    `name` with another shard count are removed then. On any error no shard of this run is
    left behind (earlier shards in the folder stay as they were).

    Returns:
      (results: every result dict, shard order, 'serialized' removed; names: the shard file
       names; written: records per shard; elapsed seconds).
    Raises:
      ConversionError: nothing was written (every record skipped, or no record).
    """
    bounds = [len(records) * s // num_shards for s in range(num_shards + 1)]
    names = shard_names(name, num_shards)
    os.makedirs(output_directory, exist_ok=True)
    temps = [os.path.join(output_directory, '.%s.tmp' % n) for n in names]
    if len(records) < num_shards:
        reporter.warn('%s: %d images for %d shards; some shards will be empty.'
                      % (name, len(records), num_shards))
    progress = _Progress(name, len(records), reporter)

    def write_shard(s):
        results = []
        with tf.io.TFRecordWriter(temps[s]) as writer:
            for record in records[bounds[s]:bounds[s + 1]]:
                result = process_record(record, reporter)
                serialized = result.pop('serialized', None)
                if serialized is not None:
                    writer.write(serialized)
                results.append(result)
                progress.tick()
        return results

    try:
        with futures.ThreadPoolExecutor(max_workers=min(num_threads, num_shards)) as pool:
            per_shard = list(pool.map(write_shard, range(num_shards)))
        written = [sum(1 for r in rs if not r['skip']) for rs in per_shard]
        if sum(written) == 0:
            raise ConversionError(
                'no records were written for split %r: all %d listed images were skipped or '
                'none were listed (see the warnings above); fix the inputs and rerun'
                % (name, len(records)))
        pattern = re.compile(_SHARD_RE % re.escape(name))
        for stale in sorted(os.listdir(output_directory)):
            if pattern.match(stale) and stale not in names:
                os.remove(os.path.join(output_directory, stale))
                reporter.info('removed stale shard %s' % stale)
        for temp, final in zip(temps, names):
            os.replace(temp, os.path.join(output_directory, final))
    finally:
        for temp in temps:
            if os.path.exists(temp):
                os.remove(temp)
    results = [r for rs in per_shard for r in rs]
    return results, names, written, max(time.time() - progress.start, 1e-9)


def write_split(records, process_record, name, output_directory, num_shards, num_threads,
                reporter, summarize, what, objects):
    """One split of a conversion: shuffles `records` in place with `SHUFFLE_SEED`, writes them
    with `write_shards` between a 'converting' and a 'wrote' progress line, and returns
    ``summarize(results, names, written)`` (the split's manifest entry).

    `what` ends the 'converting' line's '<name>: converting ...' part (what is converted, from
    where); `objects(summary)` fills the parentheses after 'wrote N images'. The summary needs
    'images', 'skipped_images', 'dropped_boxes', 'clipped_boxes' and 're_encoded_images'.

    Raises:
      ConversionError: see `write_shards`.
    """
    random.Random(SHUFFLE_SEED).shuffle(records)
    reporter.info('%s: converting %s into %d shards with %d threads'
                  % (name, what, num_shards, min(num_threads, num_shards)))
    results, names, written, elapsed = write_shards(records, process_record, name,
                                                    output_directory, num_shards, num_threads,
                                                    reporter)
    summary = summarize(results, names, written)
    reporter.info('%s: wrote %d images (%s) to %d shards in %s; skipped %d images, dropped %d '
                  'boxes, clipped %d boxes, re-encoded %d images; %.1f images/s'
                  % (name, summary['images'], objects(summary), num_shards, output_directory,
                     len(summary['skipped_images']), len(summary['dropped_boxes']),
                     summary['clipped_boxes'], len(summary['re_encoded_images']),
                     len(results) / elapsed))
    return summary


def objects_per_class(results, labels):
    """(the result dicts of the images written, {class name: objects written} in label order)
    from `write_shards` results, each with 'skip' and 'labels' (the label ids it holds)."""
    per_class = {name: 0 for name in labels[1:]}
    kept = [r for r in results if not r['skip']]
    for r in kept:
        for label in r['labels']:
            per_class[labels[label]] += 1
    return kept, per_class


class IncompleteMarker:
    """``with IncompleteMarker(output_directory, splits) as marker:`` keeps
    `INCOMPLETE_NAME` in `output_directory` while a conversion runs, so a run killed between
    its splits does not pass for a complete one (training and eval refuse the folder:
    shard_checks.check_conversion_complete). The file records when the run started, its pid
    and `splits`.

    The marker goes when the block ends normally. When it ends with a ConversionError (which
    writes nothing), it goes too unless a split of this run was written (the caller says so
    with `marker.split_written()`) or the marker was already there from an earlier killed run.
    Any other exception leaves it.
    """

    def __init__(self, output_directory, splits):
        self._directory = output_directory
        self.path = os.path.join(output_directory, INCOMPLETE_NAME)
        self._splits = list(splits)
        self._changed = False
        self._was_there = False

    def __enter__(self):
        os.makedirs(self._directory, exist_ok=True)
        self._was_there = os.path.exists(self.path)
        with open(self.path, 'w', encoding='utf-8') as f:
            json.dump({'started': time.strftime('%Y-%m-%d %H:%M:%S'), 'pid': os.getpid(),
                       'splits': self._splits}, f)
        return self

    def split_written(self):
        """Records that a split of this run changed the folder (shards and manifest)."""
        self._changed = True

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None or (issubclass(exc_type, ConversionError) and
                                not self._changed and not self._was_there):
            os.remove(self.path)
        return False


def update_manifest(output_directory, name, summary, reporter=None, labels=VOC_LABELS,
                    source='voc', pixel_convention='', source_info=None):
    """Writes ``summary`` as split ``name`` of ``<output_directory>/manifest.json``,
    keeping the other splits already recorded there, and ``labels`` (the class names, index =
    label id, 'none' first) as its 'labels' list.

    `source` ('voc' or 'coco') is recorded as 'source', `pixel_convention` (how the source's
    pixel boxes became the stored normalized boxes) as 'pixel_convention', and the entries of
    `source_info` at the top level (COCO: 'category_ids', the source's id of each label, and
    'anchor_preset'). Splits recorded with other labels or from another source are dropped
    (their label ids mean other classes), with a warning. Returns the manifest."""
    reporter = reporter or Reporter()
    source_info = dict(source_info or {})
    path = os.path.join(output_directory, MANIFEST_NAME)
    manifest = {}
    if os.path.isfile(path):
        try:
            with open(path, 'r', encoding='utf-8') as f:
                manifest = json.load(f)
            if not isinstance(manifest.get('splits'), dict):
                raise ValueError('no "splits" table')
        except ValueError as e:
            reporter.warn('%s is unreadable (%s); writing a new one.' % (path, e))
            manifest = {}
    splits = dict(manifest.get('splits') or {})
    previous = manifest.get('labels')
    same = (previous is None or list(previous) == list(labels)) and (
        manifest.get('source', 'voc') == source and
        manifest.get('category_ids') == source_info.get('category_ids'))
    if splits and not same:
        others = sorted(k for k in splits if k != name)
        if others:
            reporter.warn('%s recorded split(s) %s with other class names or from another '
                          'source; dropping them from the manifest (convert them again with '
                          'the same classes).' % (path, ', '.join(others)))
        splits = {}
    splits[name] = summary
    manifest = {
        'format': 'voc-tfrecords',
        'version': MANIFEST_VERSION,
        'source': source,
        'pixel_convention': pixel_convention,
        'labels': list(labels),
    }
    manifest.update(source_info)
    manifest['splits'] = {k: splits[k] for k in sorted(splits)}
    temp = path + '.tmp'
    with open(temp, 'w', encoding='utf-8') as f:
        json.dump(manifest, f, indent=2)
        f.write('\n')
    os.replace(temp, path)
    return manifest
