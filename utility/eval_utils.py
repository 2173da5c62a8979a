"""The work behind eval_ssd.py, simple_ssd_demo.py and export_ssd.py (importable, tested).

* checkpoints: `find_checkpoint` (latest in a model directory, or a given directory / prefix);
* what the three scripts share: flags (`define_inference_flags`, `inference_params`,
  `check_num_classes`; predictions run through `utility/drivers.predict`) and the runner that
  turns configuration errors into one line and exit status 2 (`run_entry_point`);
* ground truth: `scan_records` (from the TFRecords, without decoding images) and
  `ground_truth_from_annotations` (VOC XML files, matched by image id);
* predictions: `collect_predictions` turns Estimator.predict output into pixel detections and
  ground truth for `evaluation/voc_metric.evaluate`;
* results: `summarize`, `format_table`, `write_metrics_json`, the VOC devkit results files
  (`write_results_files`, `read_results_files`), the PNG of voc_metric's precision-recall
  curves (`draw_pr_curves`);
* image files for the demo: `list_image_files`, `ImageDecoder`, `make_image_files_input_fn`.

Box conventions (docs/INTERFACES.md): the model gives normalized `[ymin, xmin, ymax, xmax]`
boxes; pixel boxes are VOC `[xmin, ymin, xmax, ymax]`, 1-based and inclusive, obtained as
`normalized * width` / `normalized * height` (`voc_metric.normalized_to_pixels`).
"""
import json
import math
import os
import sys
import time

import cv2
import numpy as np
import tensorflow as tf

from dataset import dataset_common
from dataset import voc_to_tfrecords
from preprocessing import ssd_preprocessing
from utility import checkpoint_utils
from evaluation import draw
from evaluation import voc_metric

RESULTS_PREFIX = 'comp4_det_test_'
METRICS_FILE = 'metrics.json'
PR_CURVES_FILE = 'pr_curves.png'
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')
METRIC_NAMES = {'ap_07': 'VOC07 11-point', 'ap_area': 'VOC2010+ area'}


def _log(log, message):
    if log is not None:
        log(message)


# ----------------------------------------------------------------------------- checkpoints


def _newest_prefix_in(directory):
    """Newest '<prefix>.index' checkpoint in `directory` (by training step, then time)."""
    def step(prefix):
        tail = prefix.rsplit('-', 1)[-1]
        return int(tail) if tail.isdigit() else -1
    prefixes = [p[:-len('.index')] for p in tf.io.gfile.glob(os.path.join(directory, '*.index'))]
    if not prefixes:
        return None
    return max(prefixes, key=lambda p: (step(p), os.path.getmtime(p + '.index')))


def find_checkpoint(checkpoint_path, model_dir):
    """The checkpoint prefix to run: `checkpoint_path` if given, else the latest in `model_dir`.

    Args:
      checkpoint_path: '' / None, a directory (its latest checkpoint), a prefix
        ('logs/model.ckpt-120000') or one of its files ('.index', '.meta', '.data-*').
      model_dir: the training directory searched when `checkpoint_path` is empty.
    Returns:
      str checkpoint prefix (its '.index' file exists). A checkpoint of the original
      SSD.TensorFlow code comes back as its project-layout copy
      (checkpoint_utils.as_project_checkpoint).
    Raises:
      ValueError: no checkpoint there; the message names the directory or prefix.
    """
    path = checkpoint_path or model_dir
    if not path:
        raise ValueError('No checkpoint given: pass --model_dir (a training directory) or '
                         '--checkpoint_path.')
    path = os.path.expanduser(str(path))
    if tf.io.gfile.isdir(path):
        prefix = tf.train.latest_checkpoint(path)
        if not (prefix and tf.io.gfile.exists(prefix + '.index')):
            prefix = _newest_prefix_in(path)
        if prefix is None:
            raise ValueError('No checkpoint found in %s; train first (python3 train_ssd.py '
                             '--model_dir=%s) or pass --checkpoint_path.' % (path, path))
        return checkpoint_utils.as_project_checkpoint(prefix)
    for suffix in ('.index', '.meta'):
        if path.endswith(suffix):
            path = path[:-len(suffix)]
    if '.data-' in os.path.basename(path):
        path = path[:path.rindex('.data-')]
    if tf.io.gfile.exists(path + '.index'):
        return checkpoint_utils.as_project_checkpoint(path)
    if not checkpoint_path:
        raise ValueError('Model directory %s does not exist; train first (python3 train_ssd.py '
                         '--model_dir=%s) or pass --checkpoint_path.' % (path, path))
    raise ValueError('No checkpoint at %s (no directory, no %s.index); pass a training '
                     'directory or a prefix such as logs/model.ckpt-120000.' % (path, path))


# ----------------------------------------------------------------------------- flags


def define_inference_flags(flags_module):
    """Defines the model and post-processing flags shared by eval, demo and export.

    `flags_module` is `absl.flags`; call once from an entry script before parsing. The
    defaults are the model's (`ssd_model.DEFAULT_PARAMS`; post-processing:
    net/postprocess.DEFAULTS).
    """
    from utility import ssd_model
    from net import postprocess, ssd_net
    f = flags_module
    defaults = ssd_model.DEFAULT_PARAMS
    f.DEFINE_integer('num_classes', defaults['num_classes'],
                     'Number of classes, background included (VOC: 21).')
    f.DEFINE_integer('train_image_size', defaults['train_image_size'],
                     'Input image size (SSD300: 300).')
    f.DEFINE_enum('data_format', defaults['data_format'], list(ssd_net.DATA_FORMAT_CHOICES),
                  "'auto': channels_first (NCHW, fastest on GPU) when a GPU is visible, else "
                  "channels_last (NHWC). channels_first without a GPU falls back to "
                  'channels_last, with a notice.')
    f.DEFINE_string('model_scope', defaults['model_scope'], 'Variable scope of the model.')
    f.DEFINE_float('select_threshold', defaults['select_threshold'],
                   'Class score a detection needs to enter non-maximum suppression.')
    f.DEFINE_float('min_size', defaults['min_size'],
                   'Detections whose normalized height or width is not above this are dropped.')
    f.DEFINE_float('nms_threshold', defaults['nms_threshold'],
                   'IoU above which NMS suppresses the lower-scored box of a class.')
    f.DEFINE_integer('nms_topk', defaults['nms_topk'],
                     'Detections kept per class by NMS and per image.')
    f.DEFINE_integer('keep_topk', defaults['keep_topk'], 'Candidates per class that enter NMS.')
    f.DEFINE_enum('driver', 'auto', ['auto', 'estimator', 'session'],
                  'What runs the model: tf.estimator (TensorFlow <= 2.15) or a plain session '
                  '(any TensorFlow 2.x); auto = the Estimator where TensorFlow has it.')
    f.DEFINE_enum('keep_per', defaults['keep_per'], list(postprocess.KEEP_PER),
                  "'image': the --nms_topk best detections of each image; 'class': "
                  '--nms_topk per class (up to nms_topk * (num_classes - 1) per image), '
                  "the original SSD.TensorFlow eval's selection.")


# Keys of a model directory's params.json that define the network a checkpoint holds.
MODEL_IDENTITY_KEYS = ('backbone', 'anchor_spec', 'num_classes')


def model_dir_params(checkpoint_prefix):
    """The params.json train_ssd.py wrote beside `checkpoint_prefix` (a dict), or {} if none.

    ValueError (naming the file) when it exists but is not a JSON object
    (utility/model_dir.load_params).
    """
    from utility import model_dir
    if not checkpoint_prefix:
        return {}
    return model_dir.load_params(os.path.dirname(str(checkpoint_prefix))) or {}


def _flag_given(values, name):
    """True when flag `name` was given on the command line (absl FlagValues), else False."""
    try:
        return bool(values[name].present)
    except (KeyError, TypeError, AttributeError):
        return False


def inference_params(values, log=None, checkpoint=None, **overrides):
    """Model params for prediction from the parsed flag values defined above.

    Args:
      values: the parsed `absl.flags.FLAGS` (passed in; this module never reads FLAGS).
      log: callable(str) told when the data format falls back to channels_last (no GPU).
      checkpoint: the checkpoint prefix to run; the 'backbone' and 'anchor_spec' of the
        params.json beside it (model_dir_params) are used, and its 'num_classes' unless
        --num_classes is given, so a model trained with --backbone resnet50 runs without
        repeating flags.
      **overrides: further `ssd_model.make_params` keys (data_dir, batch_size, ...).
    Returns:
      the params dict, data format resolved for this machine (`ssd_net.resolve_data_format`).
    """
    from utility import ssd_model
    from net import ssd_net
    data_format = ssd_net.resolve_data_format(values.data_format)
    if values.data_format == 'channels_first' and data_format != values.data_format:
        _log(log, 'Using data_format=%s instead of %s: no GPU is visible.'
             % (data_format, values.data_format))
    params = dict(
        num_classes=values.num_classes, train_image_size=values.train_image_size,
        data_format=data_format,
        model_scope=values.model_scope, select_threshold=values.select_threshold,
        min_size=values.min_size, nms_threshold=values.nms_threshold,
        nms_topk=values.nms_topk, keep_topk=values.keep_topk,
        keep_per=getattr(values, 'keep_per', ssd_model.DEFAULT_PARAMS['keep_per']))
    trained = model_dir_params(checkpoint)
    for key in MODEL_IDENTITY_KEYS:
        if key in trained and not (key == 'num_classes' and _flag_given(values, key)):
            params[key] = trained[key]
    if trained.get('backbone'):
        _log(log, 'Backbone %s (from the params.json beside %s).'
             % (trained['backbone'], checkpoint))
    params.update(overrides)
    return ssd_model.make_params(**params)


def check_positive(value, flag):
    """Raises ValueError unless `value` (the flag `flag`'s) is a positive integer."""
    if value is None or int(value) < 1:
        raise ValueError('--%s=%s must be a positive integer.' % (flag, value))


def check_directory_target(path, flag):
    """Raises ValueError when `path` exists but is not a directory (checked before any work)."""
    if path and os.path.exists(path) and not os.path.isdir(path):
        raise ValueError('--%s=%s is a file, not a directory; pass a directory (it is created '
                         'if missing).' % (flag, path))


def check_checkpoint_classes(checkpoint, params):
    """Raises ValueError when `checkpoint`'s class head disagrees with params['num_classes'].

    The first class head holds k * num_classes output channels (k anchors per location).
    """
    from net import anchors as anchor_lib
    name = '%s/multibox_head/cls_0/biases' % params['model_scope']
    shapes = tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map()
    if name not in shapes:
        return
    per_location = anchor_lib.anchors_per_location(params['anchor_spec'])[0]
    trained = shapes[name][-1] // per_location
    if trained != params['num_classes']:
        raise ValueError('%s was trained with %d classes (background included) but '
                         '--num_classes=%d; pass --num_classes=%d or another checkpoint.'
                         % (checkpoint, trained, params['num_classes'], trained))


def check_num_classes(num_classes, class_names, source=None):
    """Raises ValueError when --num_classes disagrees with the label table `class_names`.

    `source` says where the names come from (e.g. 'the manifest.json of <data_dir>'); None:
    the VOC labels of dataset/dataset_common.py.
    """
    if num_classes != len(class_names):
        if source is None:
            raise ValueError('--num_classes=%d does not match the %d VOC labels of '
                             'dataset/dataset_common.py; use --num_classes=%d.'
                             % (num_classes, len(class_names), len(class_names)))
        raise ValueError('--num_classes=%d does not match the %d class names (background '
                         'included) of %s; use --num_classes=%d.'
                         % (num_classes, len(class_names), source, len(class_names)))


def checkpoint_class_names(checkpoint):
    """(class names, source) of the model a checkpoint holds: the 'class_names' train_ssd.py
    wrote to the params.json beside it, or the VOC labels (source None) for a checkpoint
    without them (the original SSD.TensorFlow's, or one trained before they were recorded)."""
    names = model_dir_params(checkpoint).get('class_names')
    if isinstance(names, list) and len(names) >= 2:
        return [str(n) for n in names], os.path.join(os.path.dirname(str(checkpoint)),
                                                     'params.json')
    return list(dataset_common.VOC_LABELS), None


def run_entry_point(main):
    """Runs an entry script's `main(argv)` under absl.app (flags parsed first); never returns.

    TF's Python logging is set to ERROR. A ValueError is a configuration problem whose
    message names the cause and the fix: it is printed as 'error: <message>' on stderr,
    without a traceback, and the exit status is 2. Otherwise the status is main's return.
    """
    from absl import app

    def checked_main(argv):
        tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
        try:
            return main(argv)
        except ValueError as err:
            print('error: %s' % err, file=sys.stderr, flush=True)
            return 2
    app.run(checked_main)


# ----------------------------------------------------------------------------- ground truth


def image_id(filename):
    """'2012_000011.jpg' (str or bytes, with or without folders) -> '2012_000011'."""
    if isinstance(filename, bytes):
        filename = filename.decode('utf-8', 'replace')
    return os.path.splitext(os.path.basename(str(filename)))[0]


def _run_dataset(make_dataset):
    """All elements of `make_dataset()` as numpy, in a private graph (works eager or not)."""
    elements = []
    with tf.Graph().as_default():
        get_next = tf.compat.v1.data.make_one_shot_iterator(make_dataset()).get_next()
        with tf.compat.v1.Session() as sess:
            while True:
                try:
                    elements.append(sess.run(get_next))
                except tf.errors.OutOfRangeError:
                    return elements


def scan_records(file_pattern):
    """Ground truth of every record matched by `file_pattern`, without decoding the images.

    Args:
      file_pattern: glob of TFRecord shards (e.g. 'dataset/tfrecords/val-*').
    Returns:
      list (shard order, sorted file names) of dicts: 'image_id' str, 'filename' str,
      'height'/'width' int (0 when the record lacks them), 'boxes' float32 [N, 4]
      normalized [ymin, xmin, ymax, xmax], 'labels' int32 [N], 'difficult' int32 [N].
    Raises:
      ValueError: no file matches (from dataset_common.list_shards), or a shard is
        truncated or corrupt (the message names it).
    """
    files = dataset_common.list_shards(file_pattern)
    records = []
    try:
        elements = _run_dataset(
            lambda: tf.data.TFRecordDataset(files).map(dataset_common.parse_ground_truth))
    except tf.errors.DataLossError as e:  # name the damaged shard in one line
        raise dataset_common.explain_data_loss(files, e) or e
    for element in elements:
        filename = element['filename'].decode('utf-8', 'replace')
        records.append({'image_id': image_id(filename), 'filename': filename,
                        'height': int(element['height']), 'width': int(element['width']),
                        'boxes': element['boxes'], 'labels': element['labels'],
                        'difficult': element['difficult']})
    return records


def count_objects(ground_truth, num_classes):
    """(objects, difficult objects) with a label in 1..num_classes-1 in `voc_metric` records."""
    objects = difficult = 0
    for record in ground_truth:
        labels = np.asarray(record['labels']).reshape(-1)
        valid = (labels > 0) & (labels < num_classes)
        flags = record.get('difficult')
        flags = np.zeros(len(labels), bool) if flags is None else np.asarray(flags, bool)
        objects += int(valid.sum())
        difficult += int((valid & flags.reshape(-1)).sum())
    return objects, difficult


def check_has_ground_truth(ground_truth, num_classes, where):
    """Raises ValueError when no image of `where` (a split / folder name) has a gt box."""
    objects, difficult = count_objects(ground_truth, num_classes)
    if objects - difficult == 0:
        raise ValueError('%s has no ground-truth boxes%s (%d images), so there is nothing to '
                         'score; evaluate a split converted from annotated images or pass '
                         '--annotations_dir.' % (where, ' that are not difficult' if objects
                                                 else '', len(ground_truth)))


def ground_truth_from_annotations(image_ids, annotations_dir, class_names=None, log=None):
    """VOC ground truth for `image_ids` from '<annotations_dir>/<image id>.xml'.

    Boxes are the XML's 1-based pixel boxes as written (the devkit's ground truth).
    Objects of classes not in `class_names` are skipped with one notice.

    Returns:
      list, in `image_ids` order, of dicts 'boxes_pixels' float64 [N, 4]
      [xmin, ymin, xmax, ymax], 'labels' int64 [N], 'difficult' bool [N] (voc_metric layout).
    Raises:
      ValueError: a file is missing or unreadable; the message names it.
    """
    class_names = list(class_names or dataset_common.VOC_LABELS)
    label_ids = {name: index for index, name in enumerate(class_names) if index > 0}
    ground_truth, unknown = [], {}
    for name in image_ids:
        path = os.path.join(annotations_dir, name + '.xml')
        if not os.path.isfile(path):
            raise ValueError('No annotation %s for image %s; --annotations_dir must hold '
                             '<image id>.xml for every evaluated image.' % (path, name))
        try:
            annotation = voc_to_tfrecords.parse_annotation(path)
        except voc_to_tfrecords.AnnotationError as err:
            raise ValueError('Annotation %s is unusable (%s); fix or regenerate it.'
                             % (path, err)) from None
        boxes, labels, difficult = [], [], []
        for obj in annotation['objects']:
            if obj['name'] not in label_ids:
                unknown[obj['name']] = unknown.get(obj['name'], 0) + 1
                continue
            boxes.append(obj['bbox_pixels'])
            labels.append(label_ids[obj['name']])
            difficult.append(bool(obj['difficult']))
        ground_truth.append({'boxes_pixels': np.asarray(boxes, np.float64).reshape(-1, 4),
                             'labels': np.asarray(labels, np.int64),
                             'difficult': np.asarray(difficult, bool)})
    if unknown:
        _log(log, 'Skipped %d annotated objects of unknown classes: %s.' % (
            sum(unknown.values()), ', '.join('%s (%d)' % kv for kv in sorted(unknown.items()))))
    return ground_truth


# ----------------------------------------------------------------------------- predictions


def prediction_detections(prediction, score_threshold=None):
    """Pixel detections of one image from one Estimator.predict dict.

    Args:
      prediction: dict with 'boxes' [K, 4] normalized, 'scores' [K], 'classes' [K],
        'num_detections' scalar and 'shape' [3] (original height, width, channels).
      score_threshold: keep only scores >= this (None keeps all num_detections).
    Returns:
      (boxes_pixels float64 [n, 4] [xmin, ymin, xmax, ymax], labels int64 [n],
       scores float64 [n]), best first.
    """
    count = int(prediction['num_detections'])
    height, width = int(prediction['shape'][0]), int(prediction['shape'][1])
    boxes = voc_metric.normalized_to_pixels(prediction['boxes'][:count], height, width)
    labels = np.asarray(prediction['classes'][:count], np.int64)
    scores = np.asarray(prediction['scores'][:count], np.float64)
    if score_threshold is not None:
        keep = scores >= score_threshold
        boxes, labels, scores = boxes[keep], labels[keep], scores[keep]
    return boxes.reshape(-1, 4), labels, scores


class Collection(object):
    """Detections and ground truth of an evaluation, images in prediction order.

    Attributes:
      image_ids: list of I str; heights, widths: int64 [I].
      det_image int64 [D] (index into image_ids), det_labels int64 [D], det_scores float64 [D],
      det_boxes float64 [D, 4]: VOC pixel boxes [xmin, ymin, xmax, ymax].
      ground_truth: list of I dicts in voc_metric layout ('boxes_pixels', 'labels',
        'difficult'), from the predictions' gt_* features (empty dicts when absent).
    """

    def __init__(self, image_ids, heights, widths, det_image, det_labels, det_scores, det_boxes,
                 ground_truth):
        self.image_ids = list(image_ids)
        self.heights = np.asarray(heights, np.int64)
        self.widths = np.asarray(widths, np.int64)
        self.det_image = np.asarray(det_image, np.int64).reshape(-1)
        self.det_labels = np.asarray(det_labels, np.int64).reshape(-1)
        self.det_scores = np.asarray(det_scores, np.float64).reshape(-1)
        self.det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
        self.ground_truth = list(ground_truth)

    @property
    def num_images(self):
        return len(self.image_ids)

    def detections(self, num_classes):
        """Per-class [n_c, 6] arrays for voc_metric.evaluate (see detections_by_class)."""
        return voc_metric.detections_by_class(self.det_image, self.det_labels, self.det_scores,
                                              self.det_boxes, num_classes)


def collect_predictions(predictions, total=None, log=None, log_every_secs=5.0,
                        clock=time.monotonic):
    """Consumes Estimator.predict output (yield_single_examples=True), one dict per image.

    Each dict holds 'boxes' [K, 4] normalized [ymin, xmin, ymax, xmax], 'scores' [K],
    'classes' [K], 'num_detections', 'filename', 'shape' [3] and, when evaluating on records,
    'gt_boxes' [N, 4] normalized, 'gt_labels' [N] (padding <= 0) and 'gt_difficult' [N].
    Logs 'images done, images/s' every `log_every_secs` seconds and once at the end.

    Returns:
      a Collection.
    """
    image_ids, heights, widths, ground_truth = [], [], [], []
    det_image, det_labels, det_scores, det_boxes = [], [], [], []
    start = last = clock()
    for index, prediction in enumerate(predictions):
        height, width = int(prediction['shape'][0]), int(prediction['shape'][1])
        image_ids.append(image_id(prediction.get('filename', b'%d' % index)))
        heights.append(height)
        widths.append(width)
        boxes, labels, scores = prediction_detections(prediction)
        det_image.append(np.full(len(labels), index, np.int64))
        det_labels.append(labels)
        det_scores.append(scores)
        det_boxes.append(boxes)
        if 'gt_labels' in prediction:
            gt_labels = np.asarray(prediction['gt_labels'], np.int64).reshape(-1)
            valid = gt_labels > 0
            gt_boxes = np.asarray(prediction['gt_boxes']).reshape(-1, 4)[valid]
            difficult = np.asarray(prediction.get('gt_difficult', np.zeros(len(gt_labels))))
            ground_truth.append({
                'boxes_pixels': voc_metric.normalized_to_pixels(gt_boxes, height, width),
                'labels': gt_labels[valid],
                'difficult': difficult.reshape(-1)[valid].astype(bool)})
        else:
            ground_truth.append({'boxes_pixels': np.zeros([0, 4]),
                                 'labels': np.zeros(0, np.int64)})
        now = clock()
        if log is not None and now - last >= log_every_secs:
            last = now
            done = index + 1
            _log(log, 'eval: %d%s images, %.2f images/s' % (
                done, '/%d' % total if total else '', done / max(now - start, 1e-9)))
    elapsed = clock() - start
    done = len(image_ids)
    _log(log, 'eval: %d images in %.1f s (%.2f images/s)'
         % (done, elapsed, done / max(elapsed, 1e-9)))
    if len(set(image_ids)) != len(image_ids):
        _log(log, 'Warning: some image ids repeat; the results files cannot tell them apart.')

    def join(parts, shape, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)
    return Collection(image_ids, heights, widths, join(det_image, [0], np.int64),
                      join(det_labels, [0], np.int64), join(det_scores, [0], np.float64),
                      join(det_boxes, [0, 4], np.float64), ground_truth)


# ----------------------------------------------------------------------------- metrics


def _number(value):
    value = float(value)
    return None if math.isnan(value) else value


def summarize(result, ground_truth, num_images, class_names, extra=None):
    """JSON-ready summary of a voc_metric.evaluate `result`.

    Returns:
      dict: 'metrics' (the two metric names), 'num_images', 'num_objects',
      'num_difficult', 'num_detections', 'map_07', 'map_area', 'classes' (one dict per class
      1..C-1: 'label', 'name', 'num_gt' (not difficult), 'num_detections', 'ap_07',
      'ap_area'; AP null for a class without gt) and the entries of `extra`.
      NaN (no gt at all) becomes null.
    """
    num_classes = len(result['ap_07'])
    objects, difficult = count_objects(ground_truth, num_classes)
    summary = {
        'metrics': dict(METRIC_NAMES),
        'iou_threshold': 0.5,
        'num_images': int(num_images),
        'num_objects': objects,
        'num_difficult': difficult,
        'num_detections': int(np.sum(result['num_detections'])),
        'map_07': _number(result['map_07']),
        'map_area': _number(result['map_area']),
        'classes': [{'label': c, 'name': class_names[c], 'num_gt': int(result['num_gt'][c]),
                     'num_detections': int(result['num_detections'][c]),
                     'ap_07': _number(result['ap_07'][c]),
                     'ap_area': _number(result['ap_area'][c])}
                    for c in range(1, num_classes)],
    }
    summary.update(extra or {})
    return summary


def format_table(summary):
    """The printed table: AP per class and mAP in both metrics, with image and object counts."""
    def ap(value):
        return '%14s' % ('n/a' if value is None else '%.4f' % value)
    lines = [
        'Pascal VOC detection AP at IoU > %.1f: %d images, %d gt objects (%d difficult), '
        '%d detections' % (summary['iou_threshold'], summary['num_images'],
                           summary['num_objects'], summary['num_difficult'],
                           summary['num_detections']),
        '%-13s %6s %8s %14s %14s' % ('class', 'gt', 'dets', 'AP VOC07 11pt', 'AP VOC10 area'),
    ]
    for row in summary['classes']:
        lines.append('%-13s %6d %8d %s %s' % (row['name'], row['num_gt'], row['num_detections'],
                                             ap(row['ap_07']), ap(row['ap_area'])))
    lines.append('%-13s %6d %8d %s %s' % ('mAP', sum(r['num_gt'] for r in summary['classes']),
                                         summary['num_detections'], ap(summary['map_07']),
                                         ap(summary['map_area'])))
    lines.append('mAP VOC07 11-point: %s   mAP VOC2010+ area: %s   (mean over classes with '
                 'non-difficult gt; n/a = no gt)' % (ap(summary['map_07']).strip(),
                                                     ap(summary['map_area']).strip()))
    return '\n'.join(lines)


def write_metrics_json(path, summary):
    """Writes `summary` as indented JSON (null for n/a); returns the path."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(summary, f, indent=2, allow_nan=False)
        f.write('\n')
    return path


# ----------------------------------------------------------------------------- results files


def results_file(output_dir, class_name, prefix=RESULTS_PREFIX):
    return os.path.join(output_dir, '%s%s.txt' % (prefix, class_name))


def write_results_files(output_dir, collection, class_names, prefix=RESULTS_PREFIX):
    """Writes the VOC devkit results files, one per class (also when empty).

    '<output_dir>/comp4_det_test_<class>.txt', one line per detection, best first:
    '<image id> <score> <xmin> <ymin> <xmax> <ymax>' in 1-based VOC pixels (the dataset's
    convention, normalized * width / height).
    Returns:
      list of the paths, class 1..C-1 order.
    """
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for c, rows in enumerate(collection.detections(len(class_names))):
        if c == 0:
            continue
        rows = rows[np.argsort(-rows[:, 1], kind='stable')]  # voc_metric's ranking
        path = results_file(output_dir, class_names[c], prefix)
        with open(path, 'w', encoding='utf-8') as f:
            for row in rows:
                f.write('%s %.6f %.3f %.3f %.3f %.3f\n' % (
                    collection.image_ids[int(row[0])], row[1], row[2], row[3], row[4], row[5]))
        paths.append(path)
    return paths


def read_results_files(output_dir, image_ids, class_names, prefix=RESULTS_PREFIX):
    """Reads devkit results files back into voc_metric.evaluate's per-class layout.

    Args:
      image_ids: the evaluated image ids; a line's image id becomes its index here.
    Returns:
      list of len(class_names) float64 arrays [n_c, 6] (image index, score, xmin, ymin, xmax,
      ymax); a missing file counts as no detections.
    Raises:
      ValueError: a line is malformed or names an image not in `image_ids`.
    """
    index = {name: i for i, name in enumerate(image_ids)}
    detections = [np.zeros([0, 6])]
    for c in range(1, len(class_names)):
        path = results_file(output_dir, class_names[c], prefix)
        rows = []
        if os.path.isfile(path):
            with open(path, 'r', encoding='utf-8') as f:
                for number, line in enumerate(f, 1):
                    fields = line.split()
                    if not fields:
                        continue
                    if len(fields) != 6 or fields[0] not in index:
                        raise ValueError('%s line %d is not "<image id> <score> <xmin> <ymin> '
                                         '<xmax> <ymax>" for an evaluated image: %r; rewrite '
                                         'the file.' % (path, number, line.strip()))
                    rows.append([index[fields[0]]] + [float(v) for v in fields[1:]])
        detections.append(np.asarray(rows, np.float64).reshape(-1, 6))
    return detections


# ----------------------------------------------------------------------------- PR curves


def draw_pr_curves(path, curves, summary, columns=5, panel=(240, 200)):
    """Draws one precision-recall panel per class (1..C-1) into a PNG; returns the path.

    Args:
      curves: per-class (recall, precision) or None, as
        `voc_metric.evaluate(..., return_curves=True)['curves']`.
      summary: summarize output (class names and APs in the panel titles, mAPs in the header).
      panel: (width, height) of a class panel in pixels.
    """
    classes = summary['classes']
    rows = int(math.ceil(len(classes) / float(columns)))
    pw, ph = panel
    header = 52
    canvas = np.full((header + rows * ph, columns * pw, 3), 255, np.uint8)

    def fmt(value):
        return 'n/a' if value is None else '%.3f' % value
    for line, text in enumerate((
            'Precision (y) against recall (x) at IoU > 0.5; panel titles: class, AP VOC07 '
            '11-point / AP VOC2010+ area.',
            'mAP VOC07 11-point %s, mAP VOC2010+ area %s, %d images, %d gt objects.' % (
                fmt(summary['map_07']), fmt(summary['map_area']), summary['num_images'],
                summary['num_objects']))):
        cv2.putText(canvas, text, (8, 20 + 20 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 0), 1, cv2.LINE_AA)
    left, right, top, bottom = 30, 10, 28, 22  # plot margins inside a panel
    for k, row in enumerate(classes):
        x0, y0 = (k % columns) * pw, header + (k // columns) * ph
        ax0, ay0, ax1, ay1 = x0 + left, y0 + top, x0 + pw - right, y0 + ph - bottom

        def point(recall, precision):
            return (int(round(ax0 + recall * (ax1 - ax0))),
                    int(round(ay1 - precision * (ay1 - ay0))))
        for t in (0.25, 0.5, 0.75):
            cv2.line(canvas, point(t, 0), point(t, 1), (225, 225, 225), 1)
            cv2.line(canvas, point(0, t), point(1, t), (225, 225, 225), 1)
        cv2.rectangle(canvas, (ax0, ay0), (ax1, ay1), (0, 0, 0), 1)
        for text, org in (('0', (ax0 - 12, ay1 + 4)), ('1', (ax0 - 12, ay0 + 8)),
                          ('1', (ax1 - 4, ay1 + 16))):
            cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1,
                        cv2.LINE_AA)
        title = '%s %s / %s' % (row['name'], fmt(row['ap_07']), fmt(row['ap_area']))
        cv2.putText(canvas, title, (x0 + 6, y0 + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (0, 0, 0), 1, cv2.LINE_AA)
        curve = curves[row['label']] if row['label'] < len(curves) else None
        color = draw.class_color(row['label'])[::-1]  # the canvas is written as BGR
        if curve is None:
            cv2.putText(canvas, 'no gt', point(0.35, 0.5), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (128, 128, 128), 1, cv2.LINE_AA)
        elif len(curve[0]):
            recall = np.concatenate([[0.], curve[0]])
            precision = np.concatenate([curve[1][:1], curve[1]])
            pts = np.array([point(r, p) for r, p in zip(recall, precision)], np.int32)
            cv2.polylines(canvas, [pts.reshape(-1, 1, 2)], False, color, 2, cv2.LINE_AA)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    if not cv2.imwrite(path, canvas):
        raise ValueError('Could not write %s; check that the folder is writable.' % path)
    return path


# ----------------------------------------------------------------------------- image files


def list_image_files(inputs, extensions=IMAGE_EXTENSIONS):
    """Expands files and directories (their images, not recursive, sorted) into a file list.

    Returns:
      (files: list of str, missing: list of (path, reason) for inputs that do not exist).
    """
    files, missing = [], []
    for item in inputs:
        if os.path.isdir(item):
            names = sorted(n for n in os.listdir(item) if n.lower().endswith(tuple(extensions)))
            if not names:
                missing.append((item, 'directory holds no %s files' % '/'.join(extensions)))
            files.extend(os.path.join(item, n) for n in names)
        elif os.path.isfile(item):
            files.append(item)
        else:
            missing.append((item, 'no such file or directory'))
    return files, missing


def _op_error_reason(err):
    """The kernel's own sentence from a graph-mode OpError ('Unknown image file format...')."""
    lines = [line.strip() for line in (err.message or '').splitlines()]
    for k, line in enumerate(lines):
        if line.startswith('[[') and k > 0 and lines[k - 1]:
            return lines[k - 1].rstrip('.')
    lines = [line for line in lines if line]
    return lines[-1].rstrip('.') if lines else type(err).__name__


class ImageDecoder(object):
    """Decodes image files with tf.io.decode_image, as the demo's input_fn and the SavedModel do.

    Runs in a private graph and session (works whether or not eager execution is on). Use as
    a context manager or call close().
    """

    def __init__(self):
        self._graph = tf.Graph()
        with self._graph.as_default():
            self._data = tf.compat.v1.placeholder(tf.string, [])
            self._image = tf.io.decode_image(self._data, channels=3, expand_animations=False)
        self._sess = tf.compat.v1.Session(graph=self._graph)

    def decode(self, path):
        """uint8 [H, W, 3] RGB of the file at `path`.

        Raises:
          ValueError: the file cannot be read or is not a JPEG/PNG/BMP/GIF image.
        """
        try:
            with open(path, 'rb') as f:
                data = f.read()
        except OSError as err:
            raise ValueError('cannot read the file (%s)' % err.strerror) from None
        try:
            return self._sess.run(self._image, {self._data: data})
        except tf.errors.OpError as err:
            raise ValueError('not a decodable JPEG/PNG/BMP/GIF image (%s)'
                             % _op_error_reason(err)) from None

    def close(self):
        self._sess.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_image_files_input_fn(params, paths, batch_size=1):
    """PREDICT input_fn over image files (decodable ones; see ImageDecoder).

    Features per batch: 'image' float32 [B, S, S, 3] (preprocess_for_eval, S =
    params['train_image_size']), 'filename' string [B] (the path), 'shape' int32 [B, 3]
    (original height, width, 3). Files come in `paths` order.
    """
    paths = [str(p) for p in paths]
    out_size = int(params['train_image_size'])
    order = params['channel_order']

    def load(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        shape = tf.shape(image, out_type=tf.int32)
        image = ssd_preprocessing.preprocess_for_eval(image, out_size=out_size,
                                                      channel_order=order,
                                                      mean_rgb=params.get('mean_rgb'))
        return {'image': image, 'filename': path, 'shape': shape}

    def input_fn():
        dataset = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
        return dataset.map(load).batch(int(batch_size)).prefetch(1)

    return input_fn
