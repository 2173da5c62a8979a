"""Copies the images of a VOC-layout split whose objects are all large into a new split folder.

Used by the overfit check (tests/test_learning.py, `make learn`) and `make demo`: a detector
fitted on a few images with few, large, non-difficult objects reaches mAP ~1.0 within
minutes on a CPU, which small objects (below the smallest anchor, 30 px at 300x300) would not.

    python3 dataset/select_images.py --split_dir dataset/VOC2012_sample \
        --output_name VOC2012_fit --num_images 2 --min_object 0.15

takes the first N image ids (sorted) whose every object is non-difficult and at least
--min_object of the image width and height, and copies their JPEGs and XMLs into the sibling
folder <output_name> with train.txt = val.txt = trainval.txt = those ids, so that the
converter (--train_splits VOC2012_fit --validation_splits VOC2012_fit) makes train and val
shards of the same images.
"""
import argparse
import os
import shutil
import sys

if __package__ in (None, ''):  # run as a script (make fit): make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dataset import voc_xml  # noqa: E402


def image_objects(annotation_path):
    """[(name, width fraction, height fraction, difficult)] of one VOC XML file (parsed by
    dataset/voc_xml.py, as the converter does); [] when its <size> is missing."""
    annotation = voc_xml.parse_annotation(annotation_path)
    width, height = annotation['width'], annotation['height']
    if not (width and height):
        return []
    objects = []
    for obj in annotation['objects']:
        xmin, ymin, xmax, ymax = obj['bbox_pixels']
        objects.append((obj['name'], (xmax - xmin + 1) / float(width),
                        (ymax - ymin + 1) / float(height), int(obj['difficult'])))
    return objects


def select_images(split_dir, num_images, min_object=0.15, output_name='VOC2012_fit'):
    """Selects the images and writes the new split folder; returns the selected image ids.

    Raises ValueError naming the folder when fewer than `num_images` images qualify.
    """
    ann_dir = os.path.join(split_dir, 'Annotations')
    if not os.path.isdir(ann_dir):
        raise ValueError('%s has no Annotations/ folder; make the sample first with '
                         'dataset/make_voc_sample.py.' % split_dir)
    chosen = []
    for fname in sorted(os.listdir(ann_dir)):
        if not fname.endswith('.xml'):
            continue
        objects = image_objects(os.path.join(ann_dir, fname))
        if objects and all(not d and w >= min_object and h >= min_object
                           for _, w, h, d in objects):
            chosen.append(fname[:-4])
        if len(chosen) == num_images:
            break
    if len(chosen) < num_images:
        raise ValueError('Only %d image(s) in %s have all objects >= %.2f of the image; '
                         'generate more images or lower --min_object.'
                         % (len(chosen), ann_dir, min_object))
    out = os.path.join(os.path.dirname(os.path.abspath(split_dir)), output_name)
    if os.path.abspath(out) == os.path.abspath(split_dir):
        raise ValueError('--output_name %s is the source split itself; choose another name.'
                         % output_name)
    shutil.rmtree(out, ignore_errors=True)
    for sub in ('JPEGImages', 'Annotations', os.path.join('ImageSets', 'Main')):
        os.makedirs(os.path.join(out, sub))
    for i in chosen:
        shutil.copy(os.path.join(split_dir, 'JPEGImages', i + '.jpg'),
                    os.path.join(out, 'JPEGImages'))
        shutil.copy(os.path.join(ann_dir, i + '.xml'), os.path.join(out, 'Annotations'))
    for name in ('train', 'val', 'trainval'):
        with open(os.path.join(out, 'ImageSets', 'Main', name + '.txt'), 'w',
                  newline='\n') as f:
            f.write(''.join(i + '\n' for i in chosen))
    return chosen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--split_dir', required=True,
                        help='VOC-layout folder with Annotations/ and ImageSets/Main/')
    parser.add_argument('--output_name', default='VOC2012_fit',
                        help='new split folder, next to --split_dir')
    parser.add_argument('--num_images', type=int, default=2)
    parser.add_argument('--min_object', type=float, default=0.15,
                        help='smallest object side, as a fraction of the image side')
    args = parser.parse_args(argv)
    try:
        ids = select_images(args.split_dir, args.num_images, args.min_object, args.output_name)
    except ValueError as err:
        print('error: %s' % err, file=sys.stderr)
        return 2
    print('Copied %d image(s) into %s: %s' % (len(ids), os.path.join(
        os.path.dirname(os.path.abspath(args.split_dir)), args.output_name), ' '.join(ids)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
