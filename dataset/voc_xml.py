"""Reading VOC annotation XML: the one parser the converter (dataset/voc_to_tfrecords.py) and
the evaluation's ground truth (evaluation/ground_truth.py) both use.

Hardened: a DOCTYPE / ENTITY declaration is refused in any encoding (no entity expansion),
malformed XML and missing or non-numeric box coordinates raise `AnnotationError` naming the
object; `<size>` is advisory (None when absent or unusable).
"""
import math
import xml.etree.ElementTree as ElementTree
from xml.parsers import expat

_DTD_MESSAGE = 'DOCTYPE/ENTITY declarations are not allowed in annotations'


class AnnotationError(Exception):
    """An annotation file that cannot be used (the image is skipped)."""


def _text(element, tag):
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        return None
    return child.text.strip()


def _number(element, tag, default=None):
    text = _text(element, tag)
    if text is None:
        if default is None:
            raise AnnotationError('<%s> is missing or empty' % tag)
        return default
    try:
        value = float(text)
    except ValueError:
        raise AnnotationError('<%s> is not a number: %r' % (tag, text))
    if not math.isfinite(value):
        raise AnnotationError('<%s> is not finite: %r' % (tag, text))
    return value


class _DeclarationRefused(Exception):
    """Raised from inside expat when a document declares a DTD or an entity."""


def _refuse_declarations(data):
    """Runs expat over ``data`` and raises AnnotationError at the first DOCTYPE,
    ENTITY, notation or external-entity declaration.

    Expat decodes the bytes itself (UTF-8, UTF-16 with or without a byte order
    mark, or the encoding the XML declaration names), so the refusal holds in
    every encoding expat accepts, unlike a byte search for ``<!DOCTYPE``. The
    handlers fire before any entity could be expanded.
    """
    def refuse(*_args):
        raise _DeclarationRefused()

    parser = expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.NotationDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    try:
        parser.Parse(data, True)
    except _DeclarationRefused:
        raise AnnotationError(_DTD_MESSAGE) from None
    except expat.ExpatError as e:
        raise AnnotationError('not well-formed XML (%s)' % e) from None
    except ValueError as e:  # pyexpat: an encoding name it cannot decode
        raise AnnotationError('unsupported XML encoding (%s)' % e) from None


def parse_annotation_bytes(data):
    """Parses VOC annotation XML (bytes) without expanding entities.

    Any DOCTYPE (and so any ENTITY) declaration is refused in whatever encoding
    the file uses (checked by expat before the tree is built).

    Returns:
      dict(width, height, depth (int or None when <size> is absent),
           objects=[dict(name, pose, truncated, difficult,
                         bbox_pixels=(xmin, ymin, xmax, ymax) floats, 1-based)])
    Raises:
      AnnotationError: not XML, has a DOCTYPE/ENTITY declaration, or an object
        lacks its name or a numeric bndbox coordinate.
    """
    _refuse_declarations(data)
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as e:
        raise AnnotationError('not well-formed XML (%s)' % e)
    size = root.find('size')
    width = height = depth = None
    if size is not None:
        try:
            width = int(_number(size, 'width', default=0)) or None
            height = int(_number(size, 'height', default=0)) or None
            depth = int(_number(size, 'depth', default=0)) or None
        except AnnotationError:
            width = height = depth = None  # <size> is advisory; the image decides
    objects = []
    for k, obj in enumerate(root.findall('object')):
        name = _text(obj, 'name')
        if name is None:
            raise AnnotationError('object %d has no <name>' % k)
        box = obj.find('bndbox')
        if box is None:
            raise AnnotationError('object %d (%s) has no <bndbox>' % (k, name))
        try:
            bbox = tuple(_number(box, tag) for tag in ('xmin', 'ymin', 'xmax', 'ymax'))
            truncated = int(_number(obj, 'truncated', default=0.0))
            difficult = int(_number(obj, 'difficult', default=0.0))
        except AnnotationError as e:
            raise AnnotationError('object %d (%s): %s' % (k, name, e))
        objects.append({'name': name, 'pose': _text(obj, 'pose') or 'Unspecified',
                        'truncated': truncated, 'difficult': difficult,
                        'bbox_pixels': bbox})
    return {'width': width, 'height': height, 'depth': depth, 'objects': objects}


def parse_annotation(path):
    """``parse_annotation_bytes`` of the file at ``path`` (AnnotationError if unreadable)."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise AnnotationError('cannot read the file (%s)' % e.strerror)
    return parse_annotation_bytes(data)
