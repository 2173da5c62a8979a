"""Drawing detections on images (numpy + OpenCV), for the demo and the evaluation pictures.

Images are numpy uint8 arrays [H, W, 3] in RGB order. Boxes are VOC pixel boxes
`[xmin, ymin, xmax, ymax]`, 1-based and inclusive (the convention of docs/INTERFACES.md:
`normalized * width`), so the pixel in array column `x - 1` is drawn for a coordinate `x`.
Use `normalized_to_pixels` (evaluation/voc_metric.py) to turn the model's normalized
`[ymin, xmin, ymax, xmax]` boxes into such pixel boxes.
"""
import colorsys
import os

import cv2
import numpy as np

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def class_color(label):
    """A fixed, bright RGB colour (3 ints in 0..255) for an integer class label.

    Hues step by the golden ratio so that neighbouring labels get clearly different colours.
    """
    hue = (int(label) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def format_label(name, score):
    """'dog 0.88': the caption drawn above a box (score with two decimals)."""
    return '%s %.2f' % (name, float(score))


def _text_color(background):
    """Black or white, whichever reads better on an RGB background."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def draw_detections(image, boxes_pixels, labels, scores, class_names, thickness=2,
                    font_scale=0.5):
    """Draws boxes with "<class name> <score>" captions; returns a new image.

    Args:
      image: uint8 [H, W, 3] RGB (not modified).
      boxes_pixels: float [D, 4] VOC pixel boxes [xmin, ymin, xmax, ymax] (1-based, inclusive).
      labels: int [D] class labels, indices into `class_names`.
      scores: float [D].
      class_names: sequence of names, index = label (e.g. dataset_common.VOC_LABELS).
      thickness: box line width in pixels.
      font_scale: OpenCV font scale of the captions.
    Returns:
      uint8 [H, W, 3] RGB copy of `image` with the detections drawn, lowest score first so
      that the best boxes end up on top.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError('draw_detections needs a uint8 [H, W, 3] RGB image, got %s %s; '
                         'decode the image with 3 channels first.' % (image.dtype, image.shape))
    canvas = np.ascontiguousarray(image.copy())
    boxes = np.asarray(boxes_pixels, np.float64).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    scores = np.asarray(scores, np.float64).reshape(-1)
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
        caption = format_label(name, scores[index])
        (text_w, text_h), baseline = cv2.getTextSize(caption, _FONT, font_scale, 1)
        box_h = text_h + baseline + 2
        # Above the box when there is room, else just inside its top edge.
        top = y0 - box_h if y0 - box_h >= 0 else min(y0, max(height - box_h, 0))
        left = min(x0, max(width - text_w - 2, 0))
        cv2.rectangle(canvas, (left, top), (left + text_w + 2, top + box_h), color, cv2.FILLED)
        cv2.putText(canvas, caption, (left + 1, top + text_h + 1), _FONT, font_scale,
                    _text_color(color), 1, cv2.LINE_AA)
    return canvas


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
