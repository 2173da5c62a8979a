"""Evaluate an SSD300 checkpoint on Pascal VOC TFRecords: AP per class and mAP.

    python3 eval_ssd.py                      # latest checkpoint in ./logs/, ./dataset/tfrecords/val-*

Runs the one model_fn and post-processing of utility/ssd_model.py (under tf.estimator or a plain
session: --driver) over the --split shards of --data_dir with the latest checkpoint in
--model_dir (or --checkpoint_path), and scores the detections with the Pascal VOC metric (evaluation/voc_metric.py) and/or the COCO
metric (--metric coco|voc|both; pycocotools, evaluation/coco_metric.py) against the
ground truth stored in the records, difficult flags included, and the class names the
converter recorded in <data_dir>/manifest.json (--labels; without a manifest, the names the
records carry; the VOC names by default) (or, with --annotations_dir,
against the VOC XML files matched by image id). Prints a table of AP per class and mAP under
both the VOC2007 11-point and the VOC2010+ area metric, and writes to --output_dir:

    metrics.json                  the same numbers (null = class without ground truth)
    comp4_det_test_<class>.txt    VOC devkit results files: '<image id> <score> <xmin> <ymin>
                                  <xmax> <ymax>' in 1-based VOC pixels (normalized * width)
    pr_curves.png                 precision-recall curve of every class
    coco_results.json             (--metric coco/both) COCO results: image_id, category_id (the
                                  COCO id from the manifest), bbox [x, y, w, h] pixels, score;
                                  at most 100 detections per image
    coco_ground_truth.json        (--metric coco/both) the COCO ground truth scored against

With --model <file> it scores an exported model instead of a checkpoint: a .tflite file
(export_ssd.py --format tflite; TFLite interpreter), .onnx (--format onnx; onnxruntime) or .xml
(--format openvino; OpenVINO runtime), through utility/inference/runner.py (--num_threads),
with the post-processing settings baked into the model; the tables and files are the same.

With --watch it evaluates every checkpoint of --model_dir as training writes it, appends one
line per checkpoint to <output_dir>/metrics_history.jsonl and writes mAP and per-class AP as
TensorBoard scalars at the checkpoint's global step in <model_dir>/eval
(utility/inference/watch.py); it stops at --watch_max_step or after --watch_timeout_secs without a
new checkpoint:

    python3 eval_ssd.py --watch --model_dir=logs --watch_max_step=120000 &
    python3 train_ssd.py --model_dir=logs

Exit status: 0 on success, 2 for configuration problems (no checkpoint, no records, a split
without ground truth), with a one-line message.
"""
import os
import sys
import time

from absl import flags

from common import console, defaults
from common.console import log
console.quiet_logs()  # before TensorFlow is imported; --verbose keeps its lines

from evaluation.detections import collect_predictions
from evaluation.ground_truth import (check_has_ground_truth, ground_truth_from_annotations,
                                     scan_records)
from evaluation.metrics import METRIC_CHOICES, default_metric, metric_names, run_metrics
from utility.inference import checkpoint_params
from utility.inference import cli
from utility.inference import runner

FLAGS = flags.FLAGS

flags.DEFINE_string('data_dir', defaults.DATA_DIR,
                    'Directory with the <split>-*-of-* TFRecord shards made by '
                    'dataset/convert_voc_sample_tfrecords.py or dataset/convert_tfrecords.py.')
flags.DEFINE_string('split', 'val', 'Shard name prefix to evaluate: val reads val-*.')
cli.define_checkpoint_flags(flags, 'evaluate', 'evaluated')
flags.DEFINE_string('annotations_dir', '',
                    'Optional folder of VOC XML files (<image id>.xml): score against them '
                    'instead of the ground truth stored in the records.')
flags.DEFINE_string('output_dir', '',
                    'Where metrics.json, the comp4_det_test_<class>.txt results files and '
                    'pr_curves.png go. Empty: <model_dir>/eval.')
flags.DEFINE_integer('batch_size', 8, 'Images per prediction batch.')
flags.DEFINE_integer('num_readers', 8, 'Number of TFRecord shards read in parallel.')
flags.DEFINE_float('log_every_secs', 5.0, 'Print progress (images done, images/s) this often.')
flags.DEFINE_boolean('watch', False,
                     'Evaluate each new checkpoint in --model_dir as training writes it: '
                     'metrics.json holds the latest, metrics_history.jsonl one line per '
                     'checkpoint, and mAP / per-class AP go to TensorBoard in <model_dir>/eval.')
flags.DEFINE_float('watch_interval_secs', 30.0, 'With --watch: poll --model_dir this often.')
flags.DEFINE_float('watch_timeout_secs', 900.0,
                   'With --watch: stop after this long without a new checkpoint.')
flags.DEFINE_integer('watch_max_step', 0,
                     'With --watch: stop once the checkpoint at this global step (training\'s '
                     '--max_number_of_steps) is evaluated; 0 = unknown, only the timeout stops.')
flags.DEFINE_string('metric', '',
                    'Metric(s) to report: coco (pycocotools AP@[.5:.95], AP50, ...; writes '
                    'coco_results.json), voc (VOC07 / VOC2010+ AP per class) or both. Empty: '
                    'coco when <data_dir>/manifest.json says the data came from COCO, else '
                    'voc.')
flags.DEFINE_enum('coco_backend', 'pycocotools', ['pycocotools', 'faster-coco-eval'],
                  'What computes the COCO metric: pycocotools, or faster-coco-eval (pip install '
                  'faster-coco-eval; same figures, about 5x faster on a val2017-sized set).')
cli.define_inference_flags(flags)
cli.define_precision_flag(flags)
flags.adopt_module_key_flags(cli)
runner.define_flags(flags)


def main(_):
    from dataset.class_names import class_names_of
    from dataset.manifest import source_from_manifest
    from dataset.shard_checks import check_conversion_complete, count_mismatch_message
    from utility.inference import watch as eval_watch

    cli.check_positive(FLAGS.batch_size, 'batch_size')
    if FLAGS.model and FLAGS.watch:
        raise ValueError('--watch follows checkpoints; drop it to evaluate --model %s.'
                         % FLAGS.model)
    checkpoint = (FLAGS.model if FLAGS.model else None if FLAGS.watch
                  else checkpoint_params.find_checkpoint(FLAGS.checkpoint_path, FLAGS.model_dir))
    check_conversion_complete(FLAGS.data_dir)
    # The class names of the records evaluated: the converter's manifest; without one, the
    # names the records carry (those the model recorded, or VOC's, when they agree).
    trained = checkpoint_params.checkpoint_class_names(checkpoint) if checkpoint else (None, None)
    recorded, source = class_names_of(FLAGS.data_dir, FLAGS.split, known=trained, log=log)
    class_names = list(recorded)
    num_classes = FLAGS.num_classes if FLAGS['num_classes'].present else len(class_names)
    checkpoint_params.check_num_classes(num_classes, class_names, source)
    if source:
        log('%d classes (background included) from %s: %s'
            % (num_classes, source, ', '.join(class_names[1:])))
    data_source = source_from_manifest(FLAGS.data_dir)
    if FLAGS.metric and FLAGS.metric not in METRIC_CHOICES:
        raise ValueError('--metric=%s is not one of %s.' % (FLAGS.metric,
                                                            ', '.join(METRIC_CHOICES)))
    metrics = metric_names(FLAGS.metric or default_metric(data_source['source']))
    pattern = os.path.join(FLAGS.data_dir, FLAGS.split + '-*')
    records = scan_records(pattern)
    mismatch = count_mismatch_message(FLAGS.data_dir, FLAGS.split, len(records))
    if mismatch:
        print('warning: %s' % mismatch, file=sys.stderr, flush=True)
    where = 'Split %r (%s)' % (FLAGS.split, pattern)
    image_ids = [r['image_id'] for r in records]
    xml_truth = None
    if FLAGS.annotations_dir:
        xml_truth = dict(zip(image_ids, ground_truth_from_annotations(
            image_ids, FLAGS.annotations_dir, class_names, log=log)))
        check_has_ground_truth(list(xml_truth.values()), num_classes,
                               'The annotations in %s for %s' % (FLAGS.annotations_dir, where))
    else:
        check_has_ground_truth(
            [{'labels': r['labels'], 'difficult': r['difficult'] | r['iscrowd']}
             for r in records],
            num_classes, where)
    output_dir = FLAGS.output_dir or os.path.join(FLAGS.model_dir, 'eval')
    cli.check_directory_target(output_dir, 'output_dir')

    def evaluate(checkpoint):
        return evaluate_checkpoint(checkpoint, pattern, len(records), xml_truth, class_names,
                                   output_dir, metrics, data_source['category_ids'])

    if FLAGS.watch:
        eval_watch.watch_checkpoints(
            FLAGS.model_dir, evaluate, output_dir, interval_secs=FLAGS.watch_interval_secs,
            timeout_secs=FLAGS.watch_timeout_secs, max_step=FLAGS.watch_max_step, log=log)
    else:
        evaluate(checkpoint)
    return 0


def evaluate_checkpoint(checkpoint, pattern, num_records, xml_truth, class_names, output_dir,
                        metrics=('voc',), category_ids=None):
    """Predicts, scores, prints and writes the results of one checkpoint; returns the summary."""
    from utility import ssd_model
    from utility import drivers

    if FLAGS.model:
        predictions, params = runner.record_predictions(
            FLAGS.model, pattern, num_records, class_names, FLAGS, FLAGS.num_threads, log)
    else:
        driver = drivers.resolve_driver(FLAGS.driver)
        params, _ = checkpoint_params.checkpoint_model(
            FLAGS, checkpoint, log=log, class_names=class_names, data_dir=FLAGS.data_dir,
            batch_size=FLAGS.batch_size, num_readers=FLAGS.num_readers)
        log('Evaluating %s on %d images of %s (%s driver).'
            % (checkpoint, num_records, pattern, driver))
        predictions = drivers.predict(
            driver, ssd_model.model_fn,
            ssd_model.make_input_fn(params, is_training=False, file_pattern=pattern),
            params, checkpoint,
            session_config=checkpoint_params.predict_session_config(FLAGS.precision, log))
    collection = collect_predictions(
        predictions, total=num_records, log=log, log_every_secs=FLAGS.log_every_secs)

    ground_truth = collection.ground_truth
    if xml_truth is not None:
        ground_truth = [xml_truth[name] for name in collection.image_ids]
    return run_metrics(metrics, collection, ground_truth, class_names, output_dir, {
        'checkpoint': checkpoint, 'data_dir': FLAGS.data_dir, 'split': FLAGS.split,
        'ground_truth': FLAGS.annotations_dir or 'tfrecords',
        'post_processing': {k: params[k] for k in ('select_threshold', 'min_size', 'keep_per',
                                                   'nms_threshold', 'nms_topk', 'keep_topk')},
        'evaluated_at': time.strftime('%Y-%m-%d %H:%M:%S')}, category_ids=category_ids,
        log=log, coco_backend=FLAGS.coco_backend)


if __name__ == '__main__':
    from utility import entry
    entry.run(main)
