"""The label map: the VOC class table (the default) and label files (one class name per line).

No TensorFlow: the converters, the sample generator and the readers all take the class table
from here. Which names a converted data folder carries is dataset/class_names.py's.
"""

# Index = label id. 0 is background; 1..20 are the VOC classes in the
# standard (alphabetical) VOC order.
VOC_LABELS = (
    'none',
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle',
    'bus', 'car', 'cat', 'chair', 'cow',
    'diningtable', 'dog', 'horse', 'motorbike', 'person',
    'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor',
)
LABEL_IDS = {name: index for index, name in enumerate(VOC_LABELS)}
NUM_CLASSES = len(VOC_LABELS)  # 21, background included


class LabelMapError(ValueError):
    """A label file that cannot be used; the message is one line naming the file."""


def read_label_map(path):
    """Class names of a label file: one name per line, index = line order + 1.

    Blank lines and surrounding whitespace are ignored; the background 'none' is implied at
    index 0 (a 'none' line in the file is an error, as is any name listed twice).

    Returns:
      tuple ('none', name1, name2, ...): index = label id, like VOC_LABELS.
    Raises:
      LabelMapError (a ValueError): unreadable or empty file, a duplicate or a 'none' line;
        one line naming the file.
    """
    try:
        with open(path, 'r', encoding='utf-8-sig') as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LabelMapError('cannot read the label file %s (%s); pass a text file with one '
                            'class name per line' % (path, getattr(e, 'strerror', None) or e))
    names, seen = [], {}
    for number, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            continue
        if name == VOC_LABELS[0]:
            raise LabelMapError('label file %s line %d: %r is the implied background (label '
                                '0); list only the object classes' % (path, number, name))
        if name in seen:
            raise LabelMapError('label file %s lists class %r twice (lines %d and %d); list '
                                'each class once' % (path, name, seen[name], number))
        seen[name] = number
        names.append(name)
    if not names:
        raise LabelMapError('label file %s has no class names; write one class name per line'
                            % path)
    return (VOC_LABELS[0],) + tuple(names)
