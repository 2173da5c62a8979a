"""The precision-recall figure of an evaluation (matplotlib, headless 'Agg' backend).

`draw_pr_curves` draws one panel per class with ground truth (voc_metric's curves; a class
without non-difficult ground truth has no curve and no AP, and is only counted in the figure
title): recall on x, precision on y, both 0..1 with ticks and grid, a legend, and the class
name with its two APs in the panel title. The figure title holds the mAPs and the counts.
"""
import math
import os
import textwrap

import numpy as np

from evaluation import draw

PR_CURVES_FILE = 'pr_curves.png'


def _pyplot():
    """matplotlib.pyplot on the headless 'Agg' backend (no display needed)."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot
    return pyplot


def _fmt(value):
    return 'n/a' if value is None else '%.3f' % value


def pr_figure(curves, summary, columns=5, panel_inches=(3.0, 2.6)):
    """The matplotlib Figure of `curves` (see draw_pr_curves); the caller closes it.

    Returns:
      a matplotlib.figure.Figure with one visible axes per class of summary['classes'] that
      has a curve (ground truth), in label order, titled '<name>: AP07 <ap_07> / area
      <ap_area>'; unused grid cells are hidden. With no curve at all every class gets a panel.
    """
    pyplot = _pyplot()

    def curve_of(label):
        return curves[label] if label < len(curves) else None
    classes = [row for row in summary['classes'] if curve_of(row['label']) is not None]
    hidden = len(summary['classes']) - len(classes)
    if not classes:
        classes, hidden = summary['classes'], 0
    columns = max(1, min(int(columns), len(classes) or 1))
    rows = max(1, int(math.ceil(len(classes) / float(columns))))
    width = max(panel_inches[0] * columns, 6.0)  # room for the title with few panels
    title = textwrap.fill(
        'Precision-recall at IoU > 0.5: mAP VOC07 11-point %s, VOC2010+ area %s (%d images, '
        '%d gt objects%s)' % (_fmt(summary['map_07']), _fmt(summary['map_area']),
                              summary['num_images'], summary['num_objects'],
                              '; %d classes without gt not shown' % hidden if hidden else ''),
        width=int(width * 13))
    title_inches = 0.2 + 0.22 * (title.count('\n') + 1)
    height = panel_inches[1] * rows + title_inches
    figure, grid = pyplot.subplots(rows, columns, squeeze=False, figsize=(width, height))
    figure.suptitle(title, fontsize=10)
    cells = list(grid.reshape(-1))
    for axes, row in zip(cells, classes):
        label = row['label']
        axes.set_title('%s: AP07 %s / area %s' % (row['name'], _fmt(row['ap_07']),
                                                  _fmt(row['ap_area'])), fontsize=9)
        axes.set_xlim(0.0, 1.0)
        axes.set_ylim(0.0, 1.05)
        axes.set_xticks([0.0, 0.25, 0.5, 0.75, 1.0])
        axes.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
        axes.tick_params(labelsize=7)
        axes.grid(True, color='0.9')
        axes.set_xlabel('recall', fontsize=8)
        axes.set_ylabel('precision', fontsize=8)
        curve = curve_of(label)
        if curve is None:
            axes.text(0.5, 0.5, 'no gt', ha='center', va='center', color='0.5')
        elif len(curve[0]):
            recall = np.concatenate([[0.0], curve[0]])
            precision = np.concatenate([curve[1][:1], curve[1]])
            axes.plot(recall, precision, color=np.asarray(draw.class_color(label)) / 255.0,
                      linewidth=1.5, label='%s (%d gt)' % (row['name'], row['num_gt']))
            axes.legend(loc='lower left', fontsize=7)
        else:
            axes.text(0.5, 0.5, 'no detections', ha='center', va='center', color='0.5')
    for axes in cells[len(classes):]:
        axes.set_visible(False)
    figure.tight_layout(rect=(0, 0, 1, 1 - title_inches / height))
    return figure


def draw_pr_curves(path, curves, summary, columns=5):
    """Writes the precision-recall figure (one panel per class) as a PNG; returns the path.

    Args:
      path: the PNG to write (folders are created); eval_ssd.py uses PR_CURVES_FILE.
      curves: per-class (recall, precision) or None, as
        `voc_metric.evaluate(..., return_curves=True)['curves']`.
      summary: evaluation/report.summarize output (class names and APs in the panel titles,
        mAPs in the figure title).
      columns: panels per row.
    Raises:
      ValueError: the file cannot be written (the message names it).
    """
    figure = pr_figure(curves, summary, columns)
    folder = os.path.dirname(path)
    try:
        if folder:
            os.makedirs(folder, exist_ok=True)
        figure.savefig(path, format='png', dpi=80)
    except OSError as err:
        raise ValueError('Could not write %s (%s); check that the folder is writable.'
                         % (path, err.strerror or err)) from None
    finally:
        _pyplot().close(figure)
    return path
