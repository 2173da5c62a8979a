"""Seeded generator of a small synthetic dataset in exact Pascal VOC layout.

Writes::

    <output_dir>/<name>/JPEGImages/<id>.jpg
    <output_dir>/<name>/Annotations/<id>.xml
    <output_dir>/<name>/ImageSets/Main/{train,val,trainval}.txt

Each of the 20 VOC classes has its own appearance: one of five shape families
(box, ellipse, triangle, cross, ring) in one of four colours (red, green, blue,
yellow), drawn over a textured, noisy, low-saturation background, so that a
detector can learn them from a few dozen images. Every image holds 1-4 objects
of varied size (some small); objects cut by the image border are marked
``truncated``, a few small ones ``difficult``.

Boxes in the XML are VOC pixel boxes: ``xmin, ymin, xmax, ymax``, 1-based and
inclusive (the left-most image column is x = 1, the right-most x = width); they
are the tight box of the drawn pixels.

Output is byte-for-byte reproducible for a given seed (same numpy/OpenCV), and
image ``i`` does not depend on how many images are generated.

Usage::

    python3 dataset/make_voc_sample.py --output_dir dataset --num_images 64 --seed 0
    python3 dataset/make_voc_sample.py --format coco --output_dir dataset   # the same images
        # as a COCO dataset (make_coco_sample): dataset/COCO_sample/{images,annotations}
"""

import argparse
import json
import os
import re
import sys

import cv2
import numpy as np

# Kept here (not imported from dataset/labels.py) so that `python3 dataset/make_voc_sample.py`
# runs without the repository on sys.path; tests check it equals labels.VOC_LABELS[1:].
CLASS_NAMES = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
    'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
    'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')

SHAPE_FAMILIES = ('box', 'ellipse', 'triangle', 'cross', 'ring')
# RGB colours, far apart from each other and from the grey background.
COLOURS = ((220, 35, 35), (35, 175, 45), (40, 70, 230), (235, 210, 25))

MIN_SIDE, MAX_SIDE = 300, 500          # image width/height range in pixels
MIN_OBJECT, SMALL_OBJECT = 20, 32      # object size (longest side) in pixels
VAL_FRACTION = 0.2
JPEG_QUALITY = 92
ID_PATTERN = re.compile(r'^2012_\d{6}$')


def class_appearance(class_index):
    """(shape family, RGB colour) of VOC class ``class_index`` in 1..20."""
    if not 1 <= class_index <= len(CLASS_NAMES):
        raise ValueError('class_index %r is outside 1..20; pass a VOC label id.'
                         % (class_index,))
    k = class_index - 1
    return SHAPE_FAMILIES[k // len(COLOURS)], COLOURS[k % len(COLOURS)]


def image_id(index):
    """VOC-style image id of the ``index``-th (0-based) sample image."""
    return '2012_%06d' % (index + 1)


def _background(rng, height, width):
    """Textured low-saturation background, uint8 RGB [height, width, 3]."""
    grid_h, grid_w = rng.integers(3, 8, size=2)
    grey = rng.uniform(70.0, 180.0, size=(grid_h, grid_w, 1))
    tint = rng.uniform(-14.0, 14.0, size=(grid_h, grid_w, 3))
    field = cv2.resize((grey + tint).astype(np.float32), (int(width), int(height)),
                       interpolation=cv2.INTER_CUBIC)
    image = field + rng.normal(0.0, 11.0, size=(height, width, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    # A few grey strokes for clutter that belongs to no class.
    for _ in range(int(rng.integers(2, 7))):
        p0 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        value = int(rng.integers(40, 220))
        cv2.line(image, p0, p1, (value, value, value), int(rng.integers(1, 4)),
                 lineType=cv2.LINE_8)
    return image


def _shape_mask(family, height, width, cx, cy, w, h):
    """uint8 mask [height, width] (255 inside) of one shape centred at (cx, cy)
    with extent w x h pixels; parts outside the image are cut off."""
    mask = np.zeros((height, width), np.uint8)
    x0, y0 = int(round(cx - w / 2.0)), int(round(cy - h / 2.0))
    x1, y1 = x0 + int(w) - 1, y0 + int(h) - 1
    if family == 'box':
        cv2.rectangle(mask, (x0, y0), (x1, y1), 255, thickness=-1)
    elif family == 'ellipse':
        cv2.ellipse(mask, (int(round(cx)), int(round(cy))),
                    (max(int(w) // 2, 1), max(int(h) // 2, 1)), 0, 0, 360, 255,
                    thickness=-1, lineType=cv2.LINE_8)
    elif family == 'triangle':
        pts = np.array([[(x0 + x1) // 2, y0], [x1, y1], [x0, y1]], np.int32)
        cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_8)
    elif family == 'cross':
        tw, th = max(int(w) // 3, 2), max(int(h) // 3, 2)
        mx, my = (x0 + x1) // 2, (y0 + y1) // 2
        cv2.rectangle(mask, (mx - tw // 2, y0), (mx - tw // 2 + tw - 1, y1), 255, -1)
        cv2.rectangle(mask, (x0, my - th // 2), (x1, my - th // 2 + th - 1), 255, -1)
    elif family == 'ring':
        axes = (max(int(w) // 2, 1), max(int(h) // 2, 1))
        centre = (int(round(cx)), int(round(cy)))
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 255, -1, cv2.LINE_8)
        inner = (max(int(axes[0] * 0.5), 1), max(int(axes[1] * 0.5), 1))
        cv2.ellipse(mask, centre, inner, 0, 0, 360, 0, -1, cv2.LINE_8)
    else:
        raise ValueError('unknown shape family %r; use one of %s.'
                         % (family, ', '.join(SHAPE_FAMILIES)))
    return mask


def _overlaps(box, boxes, margin=4):
    xmin, ymin, xmax, ymax = box
    for bx0, by0, bx1, by1 in boxes:
        if (xmin <= bx1 + margin and bx0 <= xmax + margin and
                ymin <= by1 + margin and by0 <= ymax + margin):
            return True
    return False


def _draw_image(index, seed, class_stream, class_names=CLASS_NAMES):
    """Draws image ``index``; returns (rgb uint8 [H, W, 3], list of objects)."""
    rng = np.random.default_rng([seed, index])
    width = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    height = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    image = _background(rng, height, width)

    num_objects = int(rng.integers(1, 5))
    force_truncated = index % 5 == 0      # a border-crossing object every 5th image
    force_difficult = index % 8 == 2      # a tiny difficult object every 8th image
    plans = []
    for j in range(num_objects):
        plans.append(('truncated' if (j == 0 and force_truncated) else 'normal'))
    if force_difficult:
        plans.append('difficult')

    objects, taken = [], []
    for plan in plans:
        for _attempt in range(60):
            if plan == 'difficult':
                size = rng.uniform(12.0, 18.0)
            else:
                # Log-uniform: many small and medium objects, a few large ones.
                size = np.exp(rng.uniform(np.log(MIN_OBJECT),
                                          np.log(0.6 * min(width, height))))
            aspect = rng.uniform(0.6, 1.6)
            w = max(int(round(size * min(aspect, 1.0))), 8)
            h = max(int(round(size / max(aspect, 1.0))), 8)
            if plan == 'truncated':
                side = int(rng.integers(0, 4))   # 0 left, 1 top, 2 right, 3 bottom
                cut = rng.uniform(0.2, 0.45)     # fraction of the object outside
                cx = rng.uniform(w / 2.0, width - w / 2.0)
                cy = rng.uniform(h / 2.0, height - h / 2.0)
                if side == 0:
                    cx = w / 2.0 - cut * w
                elif side == 1:
                    cy = h / 2.0 - cut * h
                elif side == 2:
                    cx = width - w / 2.0 + cut * w
                else:
                    cy = height - h / 2.0 + cut * h
            else:
                cx = rng.uniform(w / 2.0 + 1, width - w / 2.0 - 1)
                cy = rng.uniform(h / 2.0 + 1, height - h / 2.0 - 1)
            class_index = class_stream.peek()
            family, colour = class_appearance(class_index)
            mask = _shape_mask(family, height, width, cx, cy, w, h)
            ys, xs = np.nonzero(mask)
            if xs.size < 30:
                continue
            box0 = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
            if _overlaps(box0, taken):
                continue
            class_stream.take()
            taken.append(box0)
            shade = rng.uniform(-18.0, 18.0)
            pixels = (np.array(colour, np.float64) + shade +
                      rng.normal(0.0, 8.0, size=(xs.size, 3)))
            image[ys, xs] = np.clip(pixels, 0, 255).astype(np.uint8)
            touches = (box0[0] == 0 or box0[1] == 0 or
                       box0[2] == width - 1 or box0[3] == height - 1)
            small = max(box0[2] - box0[0], box0[3] - box0[1]) + 1 < SMALL_OBJECT
            difficult = plan == 'difficult' or (small and rng.random() < 0.25)
            objects.append({
                'name': class_names[class_index - 1],
                'truncated': int(touches),
                'difficult': int(difficult),
                # 0-based pixel indices -> VOC 1-based inclusive coordinates.
                'bbox': (box0[0] + 1, box0[1] + 1, box0[2] + 1, box0[3] + 1),
            })
            break
    return image, objects


class _ClassStream:
    """Balanced class order: each run of ``num_classes`` (20) objects holds every class
    once, in an order drawn from the seed."""

    def __init__(self, seed, num_classes=len(CLASS_NAMES)):
        self._seed = seed
        self._num_classes = num_classes
        self._cycle = 0
        self._order = []

    def peek(self):
        if not self._order:
            rng = np.random.default_rng([self._seed, 1000003, self._cycle])
            self._order = [int(c) + 1 for c in rng.permutation(self._num_classes)]
            self._cycle += 1
        return self._order[0]

    def take(self):
        self.peek()
        return self._order.pop(0)


def annotation_xml(folder, filename, width, height, objects):
    """VOC annotation text for one image; boxes are 1-based inclusive pixels."""
    lines = ['<annotation>',
             '\t<folder>%s</folder>' % folder,
             '\t<filename>%s</filename>' % filename,
             '\t<source>',
             '\t\t<database>Synthetic VOC-format sample</database>',
             '\t</source>',
             '\t<size>',
             '\t\t<width>%d</width>' % width,
             '\t\t<height>%d</height>' % height,
             '\t\t<depth>3</depth>',
             '\t</size>',
             '\t<segmented>0</segmented>']
    for obj in objects:
        xmin, ymin, xmax, ymax = obj['bbox']
        lines += ['\t<object>',
                  '\t\t<name>%s</name>' % obj['name'],
                  '\t\t<pose>%s</pose>' % obj.get('pose', 'Unspecified'),
                  '\t\t<truncated>%d</truncated>' % obj['truncated'],
                  '\t\t<difficult>%d</difficult>' % obj['difficult'],
                  '\t\t<bndbox>',
                  '\t\t\t<xmin>%d</xmin>' % xmin,
                  '\t\t\t<ymin>%d</ymin>' % ymin,
                  '\t\t\t<xmax>%d</xmax>' % xmax,
                  '\t\t\t<ymax>%d</ymax>' % ymax,
                  '\t\t</bndbox>',
                  '\t</object>']
    lines.append('</annotation>')
    return '\n'.join(lines) + '\n'


def parse_classes(text):
    """'cat, dog,bird' -> ('cat', 'dog', 'bird'); ValueError for none, duplicates, more than
    20 (one appearance each) or a name that is not plain XML text."""
    names = tuple(n.strip() for n in (text or '').split(',') if n.strip())
    if not names:
        raise ValueError('no class names given; pass e.g. --classes cat,dog,bird.')
    if len(set(names)) != len(names):
        raise ValueError('--classes lists a name twice: %s.' % ', '.join(names))
    if len(names) > len(CLASS_NAMES):
        raise ValueError('--classes names %d classes; at most %d have their own appearance.'
                         % (len(names), len(CLASS_NAMES)))
    if any(ch in n for n in names for ch in '<>&') or 'none' in names:
        raise ValueError("--classes names must not contain <, > or & nor be 'none'.")
    return names


def _val_indices(num_images, seed):
    """The image indices of the val split (about VAL_FRACTION of them, at least one)."""
    order = np.random.default_rng([seed, 2000003]).permutation(num_images)
    return set(int(k) for k in order[:max(1, int(round(VAL_FRACTION * num_images)))])


def _encode_jpeg(rgb, name):
    ok, jpeg = cv2.imencode('.jpg', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError('OpenCV could not encode %s; check the OpenCV installation.' % name)
    return jpeg.tobytes()


def _sample_size_and_classes(num_images, classes):
    """(num_images as int, class names) of both generators; `classes` None gives the VOC
    classes. Raises ValueError (one line) for fewer than 2 images (a train and a val split)."""
    num_images = int(num_images)
    class_names = CLASS_NAMES if classes is None else parse_classes(
        classes if isinstance(classes, str) else ','.join(classes))
    if num_images < 2:
        raise ValueError('num_images=%d is too small for a train and a val split; '
                         'use --num_images 2 or more.' % num_images)
    return num_images, class_names


def make_voc_sample(output_dir, num_images=64, seed=0, name='VOC2012_sample', classes=None):
    """Generates the sample; returns the path ``<output_dir>/<name>``.

    Args:
      output_dir: folder that receives the ``<name>`` split folder.
      num_images: number of images (>= 2; about 80% train, 20% val).
      seed: integer seed; the same seed gives byte-identical files.
      name: name of the split folder (used as the XML ``folder`` too).
      classes: optional class names (a sequence or 'a,b,c', up to 20) written in the XML
        instead of the 20 VOC names; class k looks like VOC class k. Default: the VOC classes.
    Returns:
      The split folder path (pass its parent as the converter's
      ``--dataset_directory`` and ``name`` as its ``--train_splits``).
    """
    num_images, class_names = _sample_size_and_classes(num_images, classes)
    root = os.path.join(output_dir, name)
    image_dir = os.path.join(root, 'JPEGImages')
    ann_dir = os.path.join(root, 'Annotations')
    sets_dir = os.path.join(root, 'ImageSets', 'Main')
    for d in (image_dir, ann_dir, sets_dir):
        os.makedirs(d, exist_ok=True)

    ids = [image_id(i) for i in range(num_images)]
    # Remove files a previous, larger run left behind (only names we generate).
    keep = set(ids)
    for d, ext in ((image_dir, '.jpg'), (ann_dir, '.xml')):
        for fname in os.listdir(d):
            stem, e = os.path.splitext(fname)
            if e == ext and ID_PATTERN.match(stem) and stem not in keep:
                os.remove(os.path.join(d, fname))

    stream = _ClassStream(seed, len(class_names))
    for i, img_id in enumerate(ids):
        rgb, objects = _draw_image(i, seed, stream, class_names)
        with open(os.path.join(image_dir, img_id + '.jpg'), 'wb') as f:
            f.write(_encode_jpeg(rgb, img_id + '.jpg'))
        xml = annotation_xml(name, img_id + '.jpg', rgb.shape[1], rgb.shape[0], objects)
        with open(os.path.join(ann_dir, img_id + '.xml'), 'w', encoding='utf-8',
                  newline='\n') as f:
            f.write(xml)

    val_indices = _val_indices(num_images, seed)
    val = sorted(ids[k] for k in val_indices)
    train = sorted(ids[k] for k in range(num_images) if k not in val_indices)
    for split, members in (('train', train), ('val', val), ('trainval', ids)):
        with open(os.path.join(sets_dir, split + '.txt'), 'w', newline='\n') as f:
            f.write(''.join(m + '\n' for m in members))
    return root


# COCO category ids of the sample's classes: class k (1-based) gets 3k - 1 (2, 5, 8, ...), so
# the ids are not contiguous and not the label ids, as in COCO (1..90 with gaps).
def coco_category_id(class_index):
    return 3 * int(class_index) - 1


COCO_IMAGE_ID_BASE = 1000  # image i has COCO image id 1000 + i (not its index)


def make_coco_sample(output_dir, num_images=64, seed=0, name='COCO_sample', classes=None):
    """The same synthetic images as a COCO dataset; returns the folder ``<output_dir>/<name>``.

    Writes ``images/<12-digit image id>.jpg`` and ``annotations/instances_train.json`` and
    ``instances_val.json`` (the train/val split of make_voc_sample). COCO's features are all
    there: category ids 2, 5, 8, ... (coco_category_id: not contiguous), image ids 1000 + i,
    bboxes ``[x, y, w, h]`` in 0-based continuous pixels (the tight box of the drawn pixels:
    VOC's 1-based inclusive ``xmin`` becomes ``x = xmin - 1``, ``w = xmax - xmin + 1``), one
    ``iscrowd=1`` annotation per split (the first object of the split's first image with two
    or more objects) and one image without annotations per split (background only, image
    ids 1000 + num_images and + num_images + 1). VOC's 'difficult' has no COCO counterpart and
    is not written.
    """
    num_images, class_names = _sample_size_and_classes(num_images, classes)
    root = os.path.join(output_dir, name)
    image_dir = os.path.join(root, 'images')
    ann_dir = os.path.join(root, 'annotations')
    for d in (image_dir, ann_dir):
        os.makedirs(d, exist_ok=True)
    categories = [{'id': coco_category_id(k), 'name': n, 'supercategory': 'shape'}
                  for k, n in enumerate(class_names, 1)]
    val_indices = _val_indices(num_images, seed)
    splits = {'train': {'images': [], 'annotations': [], 'categories': categories},
              'val': {'images': [], 'annotations': [], 'categories': categories}}
    stream = _ClassStream(seed, len(class_names))
    names = {n: k for k, n in enumerate(class_names, 1)}
    drawn = [(i, _draw_image(i, seed, stream, class_names)) for i in range(num_images)]
    for extra, split in enumerate(('train', 'val')):  # one image without annotations each
        rng = np.random.default_rng([seed, 3000017, extra])
        height = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
        width = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
        drawn.append((num_images + extra, (_background(rng, height, width), [])))
    for i, (rgb, objects) in drawn:
        split = ('val' if i in val_indices or i == num_images + 1 else 'train')
        data = splits[split]
        iid = COCO_IMAGE_ID_BASE + i
        file_name = '%012d.jpg' % iid
        with open(os.path.join(image_dir, file_name), 'wb') as f:
            f.write(_encode_jpeg(rgb, file_name))
        data['images'].append({'id': iid, 'file_name': file_name, 'width': rgb.shape[1],
                               'height': rgb.shape[0]})
        crowd_done = any(a['iscrowd'] for a in data['annotations'])
        for j, obj in enumerate(objects):
            xmin, ymin, xmax, ymax = obj['bbox']
            w, h = xmax - xmin + 1, ymax - ymin + 1
            data['annotations'].append({
                'id': 100 * iid + j, 'image_id': iid,
                'category_id': coco_category_id(names[obj['name']]),
                'bbox': [float(xmin - 1), float(ymin - 1), float(w), float(h)],
                'area': float(w * h), 'segmentation': [],
                'iscrowd': int(not crowd_done and j == 0 and len(objects) >= 2)})
    for split, data in splits.items():
        with open(os.path.join(ann_dir, 'instances_%s.json' % split), 'w',
                  encoding='utf-8') as f:
            json.dump(data, f, indent=1)
    return root


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--output_dir', default=os.path.dirname(os.path.abspath(__file__)),
                        help='folder that receives the sample split folder '
                             '(default: the dataset/ folder of this script)')
    parser.add_argument('--num_images', type=int, default=64)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--name', default=None,
                        help='name of the sample folder (default: VOC2012_sample, or '
                             'COCO_sample with --format coco)')
    parser.add_argument('--format', default='voc', choices=('voc', 'coco'),
                        help='voc: VOC layout (JPEGImages, Annotations, ImageSets); coco: '
                             'images/ and annotations/instances_{train,val}.json with '
                             'non-contiguous category ids, a crowd annotation and an image '
                             'without annotations per split')
    parser.add_argument('--classes', default=None,
                        help='comma-separated class names to use instead of the 20 VOC '
                             'classes (at most 20), e.g. --classes cat,dog,bird')
    args = parser.parse_args(argv)
    try:
        make = make_coco_sample if args.format == 'coco' else make_voc_sample
        name = args.name or ('COCO_sample' if args.format == 'coco' else 'VOC2012_sample')
        path = make(args.output_dir, args.num_images, args.seed, name, classes=args.classes)
    except (ValueError, OSError) as e:
        print('ERROR: %s' % e, file=sys.stderr)
        return 1
    print('Wrote %d images in %s layout to %s' % (args.num_images, args.format.upper(), path))
    return 0


if __name__ == '__main__':
    sys.exit(main())
