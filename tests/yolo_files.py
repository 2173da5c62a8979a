"""Small YOLO-layout data sets made by tests (images/<split>, labels/<split>, data.yaml) and the
YOLO converter run with captured output; imported, never collected."""
import io
import os
import random

from voc_files import image_bytes

NAMES = ('cat', 'dog', 'bird')


def yolo_line(label, box, width, height):
    """'label cx cy w h' of pixel box (xmin, ymin, xmax, ymax) in a width x height image."""
    xmin, ymin, xmax, ymax = box
    return '%d %.8f %.8f %.8f %.8f' % (label, (xmin + xmax) / 2 / width,
                                       (ymin + ymax) / 2 / height, (xmax - xmin) / width,
                                       (ymax - ymin) / height)


def make_yolo_set(root, counts=(('train', 6), ('val', 2)), seed=0, names_form='list',
                  names=NAMES, side=(0.2, 0.5)):
    """A YOLO data set under `root`: per split, images of 64x48 or 96x64 pixels with 1-3 boxes
    whose sides are `side` (fractions of the image) and whose corners are whole pixels. Returns
    {split: {file name: (width, height, [(label, (xmin, ymin, xmax, ymax)), ...])}}; the yaml
    is <root>/data.yaml with 'names' as a list or (names_form='dict') an index mapping."""
    rng = random.Random(seed)
    truth = {}
    for split, count in counts:
        os.makedirs(os.path.join(root, 'images', split), exist_ok=True)
        os.makedirs(os.path.join(root, 'labels', split), exist_ok=True)
        truth[split] = {}
        for k in range(count):
            width, height = rng.choice([(64, 48), (96, 64)])
            boxes = []
            for _ in range(rng.randint(1, 3)):
                w = max(2, int(width * rng.uniform(*side)))
                h = max(2, int(height * rng.uniform(*side)))
                x, y = rng.randint(0, width - w), rng.randint(0, height - h)
                boxes.append((rng.randrange(len(names)), (x, y, x + w, y + h)))
            name = '%s_%03d.jpg' % (split, k)
            with open(os.path.join(root, 'images', split, name), 'wb') as f:
                f.write(image_bytes(width, height, (rng.randrange(256), 90, 160)))
            write_labels(root, split, name, [yolo_line(label, box, width, height)
                                             for label, box in boxes])
            truth[split][name] = (width, height, boxes)
    if names_form == 'dict':
        names_text = 'names:\n' + ''.join('  %d: %s\n' % (k, n) for k, n in enumerate(names))
    else:
        names_text = 'names: [%s]\n' % ', '.join(names)
    with open(os.path.join(root, 'data.yaml'), 'w') as f:
        f.write('# a test set\npath: .  # the yaml\'s folder\ntrain: images/train\n'
                'val: images/val\nnc: %d\n%s' % (len(names), names_text))
    return truth


def write_labels(root, split, image_name, lines):
    path = os.path.join(root, 'labels', split, os.path.splitext(image_name)[0] + '.txt')
    with open(path, 'w') as f:
        f.write(''.join(line + '\n' for line in lines))
    return path


def convert(data_yaml, out, **kwargs):
    """yolo_to_tfrecords.convert_yolo with captured output: (manifest, stdout, stderr)."""
    from dataset import yolo_to_tfrecords
    stdout, stderr = io.StringIO(), io.StringIO()
    kwargs.setdefault('train_shards', 2)
    kwargs.setdefault('validation_shards', 1)
    kwargs.setdefault('num_threads', 2)
    manifest = yolo_to_tfrecords.convert_yolo(
        str(data_yaml), str(out), reporter=yolo_to_tfrecords.Reporter(out=stdout, err=stderr),
        **kwargs)
    return manifest, stdout.getvalue(), stderr.getvalue()
