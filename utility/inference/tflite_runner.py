"""Runs the TFLite models export_ssd.py --format tflite writes (utility/inference/tflite_export.py).

A model takes one image, float32 [1, S, S, 3] RGB on the 0-255 scale, resized as the eval
preprocessing does (ssd_model.preprocess_eval(..., normalize=False)); channel order and mean
subtraction are inside the model. It returns the SavedModel's outputs for that image: boxes
[1, K, 4] normalized [ymin, xmin, ymax, xmax], classes int32 [1, K], scores [1, K],
num_detections int32 [1].

`predict` yields the same per-image dicts as utility/drivers.predict, so the demo and
eval_ssd.py draw and score a TFLite model with their own code. The interpreter is LiteRT's
(`ai_edge_litert`, requirements.txt); where it is not installed, tf.lite.Interpreter.
"""
import json
import os

import numpy as np

OUTPUT_NAMES = ('boxes', 'classes', 'scores', 'num_detections')
INPUT_NAME = 'image'


def sidecar_path(model_path):
    """The JSON file beside a .tflite file (<stem>.json): what it was exported from, its
    input, its post-processing settings and class names (utility/inference/tflite_export.py)."""
    return os.path.splitext(model_path)[0] + '.json'


def define_flags(flags_module):
    """--model and --num_threads, for eval_ssd.py and simple_ssd_demo.py."""
    flags_module.DEFINE_string(
        'model', '', 'A .tflite file from export_ssd.py --format tflite: run it with the '
        'TFLite interpreter instead of a checkpoint. Its post-processing settings are those '
        'it was exported with (the post-processing flags do not apply).')
    flags_module.DEFINE_integer('num_threads', 2, 'With --model: interpreter CPU threads.')


def interpreter_class():
    """LiteRT's Interpreter, or tf.lite.Interpreter where ai_edge_litert is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
    return Interpreter


def read_sidecar(model_path):
    """The <stem>.json beside `model_path` as a dict ({} when absent)."""
    path = sidecar_path(model_path)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding='utf-8') as f:
        return json.load(f)


class Detector:
    """One TFLite SSD model in an interpreter: detect(image [1, S, S, 3]) -> output dict."""

    def __init__(self, model_path, num_threads=None):
        if not os.path.isfile(model_path):
            raise ValueError('--model %s: no such file; pass a .tflite file written by '
                             'export_ssd.py --format tflite.' % model_path)
        self.path = model_path
        if num_threads is not None and int(num_threads) < 1:
            raise ValueError('--num_threads must be >= 1, got %d.' % num_threads)
        try:
            self._interpreter = interpreter_class()(
                model_path=model_path,
                num_threads=int(num_threads) if num_threads else None)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise ValueError('--model %s is not a loadable TFLite model (%s); export one with '
                             'export_ssd.py --format tflite.'
                             % (model_path, str(err).strip().splitlines()[0])) from None
        inputs = self._interpreter.get_input_details()
        self._input = inputs[0]
        self._outputs = {}
        for detail in self._interpreter.get_output_details():
            for name in OUTPUT_NAMES:
                if detail['name'] == name or detail['name'].endswith(':' + name) or \
                        detail['name'].split(':')[0].split('/')[-1] == name:
                    self._outputs[name] = detail['index']
        missing = [n for n in OUTPUT_NAMES if n not in self._outputs]
        if len(inputs) != 1 or missing:
            raise ValueError('--model %s is not an SSD export (outputs %s missing); export one '
                             'with export_ssd.py --format tflite.'
                             % (model_path, ', '.join(missing)))

    @property
    def image_size(self):
        """S of the [1, S, S, 3] input."""
        return int(self._input['shape'][1])

    def detect(self, image):
        """image: float32 [1, S, S, 3] RGB 0-255 -> {name: numpy array} (OUTPUT_NAMES)."""
        self._interpreter.set_tensor(self._input['index'],
                                     np.asarray(image, self._input['dtype']))
        self._interpreter.invoke()
        return {name: self._interpreter.get_tensor(index).copy()
                for name, index in self._outputs.items()}


def float_ops(model_path):
    """Sorted {op name: count} of the ops of a .tflite file that compute in float32
    (QUANTIZE / DEQUANTIZE, the boundaries, not counted): for an int8 model the ops that have
    no int8 kernel."""
    interpreter = interpreter_class()(model_path=model_path)
    tensors = {t['index']: t['dtype'] for t in interpreter.get_tensor_details()}
    counts = {}
    for op in interpreter._get_ops_details():  # no public op listing in either interpreter
        if op['op_name'] in ('QUANTIZE', 'DEQUANTIZE'):
            continue
        dtypes = [tensors.get(i) for i in list(op['inputs']) + list(op['outputs']) if i >= 0]
        if any(d == np.float32 for d in dtypes):
            counts[op['op_name']] = counts.get(op['op_name'], 0) + 1
    return dict(sorted(counts.items()))


def class_names_of(model_path, num_classes=None):
    """The class names exported with `model_path` (its <stem>.json), or None."""
    names = read_sidecar(model_path).get('class_names')
    if names and num_classes is not None and len(names) != int(num_classes):
        raise ValueError('--model %s detects %d classes (background included), the data has '
                         '%d; evaluate it on records of the classes it was trained on.'
                         % (model_path, len(names), num_classes))
    return names


def predict(detector, input_fn):
    """Yields one dict per image, as drivers.predict: the model's outputs (batch dimension
    removed) and the other features of `input_fn` (filename, shape, gt_*).

    detector: a Detector. input_fn: () -> tf.data.Dataset of feature dicts, batched, whose
    'image' is the TFLite input, [B, S, S, 3] with S = detector.image_size
    (ssd_model.make_input_fn / image_files.make_image_files_input_fn with normalize=False).
    """
    import tensorflow as tf
    model_path = detector.path
    with tf.Graph().as_default():
        features = tf.compat.v1.data.make_one_shot_iterator(input_fn()).get_next()
        size = features['image'].shape[1]
        if size is not None and int(size) != detector.image_size:
            raise ValueError('--model %s takes %dx%d images, the input pipeline makes %dx%d; '
                             'pass --train_image_size %d.' % (
                                 model_path, detector.image_size, detector.image_size,
                                 size, size, detector.image_size))
        with tf.compat.v1.Session() as session:
            while True:
                try:
                    batch = session.run(features)
                except tf.errors.OutOfRangeError:
                    return
                for i in range(len(batch['image'])):
                    out = detector.detect(batch['image'][i:i + 1])
                    prediction = {name: value[0] for name, value in out.items()}
                    for key, value in batch.items():
                        if key != 'image':
                            prediction[key] = value[i]
                    yield prediction


def _model_params(detector, values, log, **overrides):
    """inference_params for feeding `detector`: its image size, and the post-processing
    settings its <stem>.json records (so eval's metrics.json states what the model ran)."""
    from utility.inference import checkpoint_params
    settings = read_sidecar(detector.path).get('post_processing') or {}
    return checkpoint_params.inference_params(
        values, log=log, **settings, **dict(overrides, train_image_size=detector.image_size))


def record_predictions(model_path, pattern, num_records, class_names, values, num_threads,
                       log=None):
    """(predictions, params) of eval_ssd.py --model: the model run over the records matching
    `pattern`; `values` the parsed flags (checkpoint_params.inference_params)."""
    from common.console import notify
    from utility import ssd_model
    class_names_of(model_path, len(class_names))
    detector = Detector(model_path, num_threads)
    params = _model_params(detector, values, log, data_dir=values.data_dir,
                           batch_size=values.batch_size, num_classes=len(class_names),
                           class_names=list(class_names), num_readers=values.num_readers)
    notify(log, 'Evaluating %s on %d images of %s (TFLite interpreter, %d thread(s)).'
           % (model_path, num_records, pattern, num_threads))
    input_fn = ssd_model.make_input_fn(params, is_training=False, file_pattern=pattern,
                                       normalize=False)
    return predict(detector, input_fn), params


def file_predictions(model_path, paths, values, num_threads, log=None):
    """(predictions, class names) of simple_ssd_demo.py --model over image files."""
    from utility.inference import image_files
    from dataset.labels import VOC_LABELS
    detector = Detector(model_path, num_threads)
    names = class_names_of(model_path) or list(VOC_LABELS)
    params = _model_params(detector, values, log, batch_size=values.batch_size,
                           num_classes=len(names), class_names=names)
    input_fn = image_files.make_image_files_input_fn(params, paths, values.batch_size,
                                                    normalize=False)
    return predict(detector, input_fn), names
