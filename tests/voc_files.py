"""Small VOC folders and records made by tests: image bytes, VOC XML, split folders, the
converter run with captured output, records read back. Shared by the converter and data-check
tests (and any test that needs a hand-made VOC folder); imported, never collected."""
import glob
import io
import os

import tensorflow as tf
from PIL import Image

from dataset.records import parse_example
from dataset import voc_to_tfrecords as conv


def image_bytes(width, height, colour=(200, 40, 40), mode='RGB', fmt='JPEG'):
    image = Image.new('RGB', (width, height), colour)
    if mode != 'RGB':
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({'quality': 95} if fmt == 'JPEG' else {}))
    return buffer.getvalue()


def xml_text(width, height, objects, size=None):
    """VOC XML; objects are (name, xmin, ymin, xmax, ymax[, difficult, truncated])."""
    w, h = size or (width, height)
    parts = ['<annotation><folder>T</folder><filename>x.jpg</filename>',
             '<size><width>%s</width><height>%s</height><depth>3</depth></size>' % (w, h)]
    for obj in objects:
        name, x0, y0, x1, y1 = obj[:5]
        difficult, truncated = (obj[5], obj[6]) if len(obj) > 5 else (0, 0)
        parts.append('<object><name>%s</name><pose>Left</pose><truncated>%d</truncated>'
                     '<difficult>%d</difficult><bndbox><xmin>%s</xmin><ymin>%s</ymin>'
                     '<xmax>%s</xmax><ymax>%s</ymax></bndbox></object>'
                     % (name, truncated, difficult, x0, y0, x1, y1))
    parts.append('</annotation>')
    return ''.join(parts)


def write_split(root, split, entries, lists=('train',)):
    """entries: (image_id, image bytes or None, xml text/bytes or None); every id is
    listed in ImageSets/Main/<list>.txt for each list name."""
    base = os.path.join(root, split)
    for sub in ('JPEGImages', 'Annotations', os.path.join('ImageSets', 'Main')):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    for image_id, data, xml in entries:
        if data is not None:
            with open(os.path.join(base, 'JPEGImages', image_id + '.jpg'), 'wb') as f:
                f.write(data)
        if xml is not None:
            with open(os.path.join(base, 'Annotations', image_id + '.xml'), 'wb') as f:
                f.write(xml.encode() if isinstance(xml, str) else xml)
    for name in lists:
        with open(os.path.join(base, 'ImageSets', 'Main', name + '.txt'), 'w') as f:
            f.write(''.join(e[0] + '\n' for e in entries))
    return base


def good(image_id, colour=(200, 40, 40)):
    return (image_id, image_bytes(40, 20, colour), xml_text(40, 20, [('dog', 10, 5, 30, 15)]))


def convert(root, out, train=('S',), val=(), **kwargs):
    """Runs the converter with captured output: (manifest, stdout text, stderr text)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    kwargs.setdefault('train_shards', 2)
    kwargs.setdefault('validation_shards', 1)
    kwargs.setdefault('num_threads', 2)
    manifest = conv.convert_dataset(str(root), str(out), list(train), list(val),
                                    reporter=conv.Reporter(out=stdout, err=stderr),
                                    **kwargs)
    return manifest, stdout.getvalue(), stderr.getvalue()


def read_records(out, split='train'):
    """{filename: (parsed numpy dict, tf.train.Example)} of all shards of a split."""
    records = {}
    for path in sorted(glob.glob(os.path.join(str(out), split + '-*'))):
        for raw in tf.data.TFRecordDataset(path):
            parsed = {k: v.numpy() for k, v in parse_example(raw).items()}
            example = tf.train.Example.FromString(raw.numpy())
            records[parsed['filename'].decode()] = (parsed, example)
    return records


def feature(example, key):
    f = example.features.feature[key]
    return list(f.int64_list.value or f.float_list.value or f.bytes_list.value)
