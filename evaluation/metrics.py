"""The one evaluation step after prediction: each chosen metric reads the detections collected
once (evaluation/detections.Collection) and adds its table, files and summary entries.

* 'voc' (evaluation/voc_metric.py): the VOC07 11-point and VOC2010+ area AP table;
  comp4_det_test_<class>.txt results files and pr_curves.png; its numbers at the top level of
  the summary (map_07, map_area, classes, ...), as before.
* 'coco' (evaluation/coco_metric.py, pycocotools): the COCO table and the line
  'COCO AP@[.5:.95]: ...'; coco_results.json (the results format: image_id, category_id,
  bbox [x, y, w, h] pixels, score) and coco_ground_truth.json (what it was scored against);
  its numbers under summary['coco'].

`run_metrics` writes metrics.json with everything; eval_ssd.py --watch appends the same
numbers to its history and TensorBoard (utility/inference/watch.py).
"""
import os

from common.console import notify
from evaluation import coco_metric
from evaluation import voc_metric
from evaluation.detections import RESULTS_PREFIX, write_results_files
from evaluation.figures import PR_CURVES_FILE, draw_pr_curves
from evaluation.report import METRICS_FILE, format_table, summarize, write_metrics_json

METRIC_CHOICES = ('coco', 'voc', 'both')


def default_metric(source):
    """'coco' for data the manifest says came from COCO, else 'voc'."""
    return 'coco' if source == 'coco' else 'voc'


def metric_names(choice):
    """'voc' | 'coco' | 'both' -> the list of metrics to run (VOC first)."""
    if choice not in METRIC_CHOICES:
        raise ValueError('--metric=%s is not one of %s.' % (choice, ', '.join(METRIC_CHOICES)))
    return ['voc', 'coco'] if choice == 'both' else [choice]


def _voc(collection, ground_truth, class_names, output_dir, summary, log):
    result = voc_metric.evaluate(collection.detections(len(class_names)), ground_truth,
                                 len(class_names), return_curves=True)
    voc = summarize(result, ground_truth, collection.num_images, class_names)
    summary.update(voc)
    notify(log, format_table(voc))
    write_results_files(output_dir, collection, class_names)
    png = draw_pr_curves(os.path.join(output_dir, PR_CURVES_FILE), result['curves'], summary)
    return [RESULTS_PREFIX + '<class>.txt', os.path.basename(png)]


def _coco(collection, ground_truth, class_names, output_dir, summary, log, category_ids,
          backend):
    gt_document = coco_metric.ground_truth_json(collection, ground_truth, class_names,
                                                category_ids)
    results = coco_metric.results_json(collection, len(class_names), category_ids)
    coco_metric.write_json(os.path.join(output_dir, coco_metric.RESULTS_FILE), results)
    coco_metric.write_json(os.path.join(output_dir, coco_metric.GROUND_TRUTH_FILE),
                           gt_document)
    scored = coco_metric.evaluate(gt_document, results, backend)
    summary['coco'] = coco_metric.summarize(scored, class_names, category_ids)
    summary['coco']['backend'] = backend
    notify(log, coco_metric.format_table(scored, class_names, category_ids,
                                         collection.num_images))
    return [coco_metric.RESULTS_FILE, coco_metric.GROUND_TRUTH_FILE]


def run_metrics(metrics, collection, ground_truth, class_names, output_dir, extra=None,
                category_ids=None, log=None, coco_backend='pycocotools'):
    """Runs each metric of `metrics` ('voc', 'coco') on one collection; prints their tables
    through `log`, writes their files and `<output_dir>/metrics.json`.

    Args:
      collection: the detections (evaluation/detections.Collection).
      ground_truth: per-image dicts in voc_metric layout, in the collection's image order.
      class_names: index = label id, 'none' first.
      extra: entries added to the summary (checkpoint, data_dir, ...).
      category_ids: the COCO category id of label 1, 2, ... (the manifest's), or None.
      coco_backend: coco_metric.BACKENDS: 'pycocotools' or 'faster-coco-eval'.
    Returns:
      the summary dict written to metrics.json ('metrics_computed' lists the metrics run).
    """
    summary = {'metrics_computed': list(metrics)}
    files = []
    for name in metrics:
        if name == 'voc':
            files += _voc(collection, ground_truth, class_names, output_dir, summary, log)
        elif name == 'coco':
            files += _coco(collection, ground_truth, class_names, output_dir, summary, log,
                           category_ids, coco_backend)
        else:
            raise ValueError('unknown metric %r; use voc or coco.' % name)
    summary.update(extra or {})
    write_metrics_json(os.path.join(output_dir, METRICS_FILE), summary)
    notify(log, 'Wrote %s in %s.' % (', '.join([METRICS_FILE] + files), output_dir))
    return summary
