"""Evaluated images with their ground truth and their detections side by side, as one picture.

Each evaluated image becomes a pair of panels: the ground-truth boxes (captioned with the class
name) on the left, the detections scoring at least a threshold (class name and score) on the
right, each under a one-line heading. `figure` puts the pairs in a grid. Boxes are drawn by
evaluation/draw.py, as in the demo, after the image is scaled to the panel width, so that
lines and captions keep their size whatever the photo's resolution.

Images are uint8 [H, W, 3] RGB; boxes are VOC pixel boxes [xmin, ymin, xmax, ymax] (1-based,
inclusive) of the full-size image, as evaluation/detections.py and the results files give them.
"""
import cv2
import numpy as np

from evaluation import draw

PANEL_WIDTH = 320
HEADING_PIXELS = 16
GAP_PIXELS = 6


def _scaled(image, boxes_pixels, width):
    """(image resized to `width` pixels wide, boxes in its pixels: 1-based coordinates scaled
    from pixel 1, so that the first column stays the first)."""
    height = int(round(image.shape[0] * width / float(image.shape[1])))
    scale = np.array([width / float(image.shape[1]), height / float(image.shape[0])] * 2)
    small = cv2.resize(np.asarray(image), (width, height), interpolation=cv2.INTER_AREA)
    boxes = (np.asarray(boxes_pixels, np.float64).reshape(-1, 4) - 1.0) * scale + 1.0
    return small, boxes


def _with_heading(panel, text, warn=None):
    """`panel` under a white strip holding `text` (black, one line, cut at the panel's width)."""
    from PIL import Image, ImageDraw
    font, _ = draw.caption_font(text, HEADING_PIXELS - 4, warn)
    strip = Image.new('RGB', (panel.shape[1], HEADING_PIXELS), (255, 255, 255))
    ImageDraw.Draw(strip).text((3, 1), text, font=font, fill=(0, 0, 0))
    return np.concatenate([np.asarray(strip), panel], axis=0)


def pair(image, truth, detections, class_names, score_threshold, width=PANEL_WIDTH,
         title='', warn=None):
    """One image's two panels, ground truth left and detections right, as one uint8 image.

    Args:
      image: uint8 [H, W, 3] RGB.
      truth: (boxes_pixels [N, 4], labels [N]) of the ground truth.
      detections: (boxes_pixels [D, 4], labels [D], scores [D]); only scores >=
        `score_threshold` are drawn.
      class_names: index = label id ('none' first).
      width: each panel's width in pixels.
      title: the image's name, put in front of both headings.
    Returns:
      uint8 [HEADING_PIXELS + h, 2 * width + GAP_PIXELS, 3].
    """
    gt_boxes, gt_labels = truth
    boxes, labels, scores = (np.asarray(a) for a in detections)
    keep = np.asarray(scores, np.float64).reshape(-1) >= score_threshold
    prefix = title + ': ' if title else ''
    small, gt_small = _scaled(image, gt_boxes, width)
    left = _with_heading(
        draw.draw_detections(small, gt_small, gt_labels, None, class_names, thickness=1,
                             font_scale=0.35, warn=warn),
        '%sground truth, %d boxes' % (prefix, len(np.asarray(gt_labels).reshape(-1))), warn)
    _, det_small = _scaled(image, np.asarray(boxes).reshape(-1, 4)[keep], width)
    right = _with_heading(
        draw.draw_detections(small, det_small, np.asarray(labels).reshape(-1)[keep],
                             np.asarray(scores).reshape(-1)[keep], class_names, thickness=1,
                             font_scale=0.35, warn=warn),
        '%s%d detections >= %.2f' % (prefix, int(keep.sum()), score_threshold), warn)
    gap = np.full((left.shape[0], GAP_PIXELS, 3), 255, np.uint8)
    return np.concatenate([left, gap, right], axis=1)


def figure(pairs, columns=1):
    """The pairs (pair's outputs) in a grid of `columns` pairs per row, white between them;
    pairs of different sizes are padded white to the largest."""
    if not pairs:
        raise ValueError('no images to draw; evaluate a split that has images first.')
    height = max(p.shape[0] for p in pairs)
    width = max(p.shape[1] for p in pairs)
    columns = max(1, min(int(columns), len(pairs)))
    rows = -(-len(pairs) // columns)
    canvas = np.full((rows * (height + GAP_PIXELS) - GAP_PIXELS,
                      columns * (width + GAP_PIXELS) - GAP_PIXELS, 3), 255, np.uint8)
    for index, picture in enumerate(pairs):
        top = (index // columns) * (height + GAP_PIXELS)
        left = (index % columns) * (width + GAP_PIXELS)
        canvas[top:top + picture.shape[0], left:left + picture.shape[1]] = picture
    return canvas
