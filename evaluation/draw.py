"""Drawing detections on images (numpy + OpenCV boxes, Pillow captions), for the demo and the
evaluation pictures.

Captions are drawn with a TrueType font (`caption_font`): DejaVu Sans, which matplotlib ships,
covers Latin, Greek and Cyrillic names ('café'); for other scripts ('人物') the first system
font that has every character is used, and when none has them the caption is drawn with the
missing characters as boxes and `warn` is told once per set of characters.

Images are numpy uint8 arrays [H, W, 3] in RGB order. Boxes are VOC pixel boxes
`[xmin, ymin, xmax, ymax]`, 1-based and inclusive (the convention of docs/INTERFACES.md:
`normalized * width`), so the pixel in array column `x - 1` is drawn for a coordinate `x`.
Use `normalized_to_pixels` (evaluation/voc_metric.py) to turn the model's normalized
`[ymin, xmin, ymax, xmax]` boxes into such pixel boxes.
"""
import colorsys
import functools
import os

import cv2
import numpy as np

# Caption height in pixels per unit of font_scale (0.5 -> 13 px, about OpenCV's simplex size).
_FONT_PIXELS_PER_SCALE = 26
_WARNED = set()


def _font_files():
    """TrueType fonts to try, best first: matplotlib's DejaVu Sans, then the system's."""
    import matplotlib
    from matplotlib import font_manager
    bundled = os.path.join(matplotlib.get_data_path(), 'fonts', 'ttf', 'DejaVuSans.ttf')
    yield bundled
    for path in sorted(font_manager.findSystemFonts(fontext='ttf')):
        if path != bundled:
            yield path


@functools.lru_cache(maxsize=None)
def _characters_of(path):
    """The set of code points the font file at `path` has glyphs for (empty if unreadable)."""
    from fontTools.ttLib import TTFont
    try:
        with TTFont(path, fontNumber=0, lazy=True) as font:
            return frozenset(font.getBestCmap() or ())
    except Exception:  # pylint: disable=broad-except  (not a font fontTools can read)
        return frozenset()


@functools.lru_cache(maxsize=None)
def find_font(characters):
    """Path of the first font (`_font_files` order) with a glyph for every one of
    `characters` (a string; spaces and digits included), or None."""
    needed = {ord(c) for c in characters}
    for path in _font_files():
        if needed <= _characters_of(path):
            return path
    return None


@functools.lru_cache(maxsize=None)
def _load_font(path, size):
    from PIL import ImageFont
    return ImageFont.truetype(path, size)


def caption_font(text, size, warn=None):
    """(PIL font, path) to draw `text` at `size` pixels: the first font that has all its
    characters, else DejaVu Sans after telling `warn` (once per set of missing characters)
    which characters will show as boxes and how to fix it."""
    path = find_font(''.join(sorted(set(text))))
    if path is None:
        path = next(_font_files())
        missing = ''.join(sorted(set(text) - {chr(c) for c in _characters_of(path)}))
        if missing not in _WARNED:
            _WARNED.add(missing)
            if warn is not None:
                warn('no installed font has the characters %r of the caption %r; they are drawn '
                     'as boxes. Install a font that has them (e.g. fonts-noto-cjk for Chinese, '
                     'Japanese and Korean) and run again.' % (missing, text))
    return _load_font(path, size), path


def class_color(label):
    """A fixed, bright RGB colour (3 ints in 0..255) for an integer class label.

    Hues step by the golden ratio so that neighbouring labels get clearly different colours.
    """
    hue = (int(label) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def format_label(name, score=None):
    """'dog 0.88': the caption drawn above a box (score with two decimals); 'dog' without a
    score (ground truth)."""
    return name if score is None else '%s %.2f' % (name, float(score))


def _text_color(background):
    """Black or white, whichever reads better on an RGB background."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def draw_detections(image, boxes_pixels, labels, scores, class_names, thickness=2,
                    font_scale=0.5, warn=None):
    """Draws boxes with "<class name> <score>" captions; returns a new image.

    Args:
      image: uint8 [H, W, 3] RGB (not modified).
      boxes_pixels: float [D, 4] VOC pixel boxes [xmin, ymin, xmax, ymax] (1-based, inclusive).
      labels: int [D] class labels, indices into `class_names`.
      scores: float [D], or None to caption the boxes with their class names only (ground
        truth).
      class_names: sequence of names, index = label (e.g. dataset.labels.VOC_LABELS).
      thickness: box line width in pixels.
      font_scale: caption size (0.5: 13-pixel text).
      warn: callable(str) told once when a class name has characters no installed font has.
    Returns:
      uint8 [H, W, 3] RGB copy of `image` with the detections drawn, lowest score first so
      that the best boxes end up on top (without scores: in the given order).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError('draw_detections needs a uint8 [H, W, 3] RGB image, got %s %s; '
                         'decode the image with 3 channels first.' % (image.dtype, image.shape))
    canvas = np.ascontiguousarray(image.copy())
    boxes = np.asarray(boxes_pixels, np.float64).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    scored = scores is not None
    scores = (np.asarray(scores, np.float64).reshape(-1) if scored
              else np.zeros(len(labels), np.float64))
    if not len(boxes) == len(labels) == len(scores):
        raise ValueError('draw_detections got %d boxes, %d labels and %d scores; pass one '
                         'label and score per box.' % (len(boxes), len(labels), len(scores)))
    height, width = canvas.shape[:2]
    for index in np.argsort(scores, kind='stable'):
        label = int(labels[index])
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        color = class_color(label)
        # 1-based inclusive pixel coordinates -> 0-based array columns/rows, kept on the image.
        x0, y0, x1, y1 = (int(round(v)) - 1 for v in boxes[index])
        x0, x1 = (min(max(v, 0), width - 1) for v in (x0, x1))
        y0, y1 = (min(max(v, 0), height - 1) for v in (y0, y1))
        cv2.rectangle(canvas, (x0, y0), (x1, y1), color, thickness)
        _draw_caption(canvas, format_label(name, scores[index] if scored else None), x0, y0,
                      color, max(int(round(_FONT_PIXELS_PER_SCALE * font_scale)), 6), warn)
    return canvas


def _draw_caption(canvas, caption, x0, y0, color, size, warn):
    """Draws `caption` on a filled `color` label above (x0, y0), in place (Pillow text)."""
    from PIL import Image, ImageDraw
    font, _ = caption_font(caption, size, warn)
    left_px, top_px, right_px, bottom_px = font.getbbox(caption)
    text_w, text_h = right_px - left_px, bottom_px - top_px
    height, width = canvas.shape[:2]
    box_w, box_h = min(text_w + 2, width), min(text_h + 2, height)
    # Above the box when there is room, else just inside its top edge.
    top = y0 - box_h if y0 - box_h >= 0 else min(y0, max(height - box_h, 0))
    left = min(x0, max(width - box_w, 0))
    patch = Image.new('RGB', (box_w, box_h), tuple(color))
    ImageDraw.Draw(patch).text((1 - left_px, 1 - top_px), caption, font=font,
                               fill=_text_color(color))
    patch = np.asarray(patch)[:height - top, :width - left]
    canvas[top:top + patch.shape[0], left:left + patch.shape[1]] = patch


def write_image(path, image):
    """Writes a uint8 [H, W, 3] RGB image; the format follows the extension (.jpg, .png).

    Raises:
      ValueError: OpenCV could not write the file (unknown extension or unwritable folder).
    """
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    if not cv2.imwrite(path, np.ascontiguousarray(np.asarray(image)[..., ::-1])):
        raise ValueError('Could not write the image %s; use a .jpg or .png name in a writable '
                         'folder.' % path)
    return path
