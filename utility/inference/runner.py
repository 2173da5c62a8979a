"""Runs the models export_ssd.py writes for other runtimes, one interface for every format,
chosen by the file's suffix (SUFFIXES):

  .tflite  TFLite float32 / int8 (utility/inference/tflite_export.py), LiteRT's interpreter
           (`ai_edge_litert`, requirements.txt), tf.lite.Interpreter where it is missing
  .onnx    ONNX (utility/inference/graph_export.py), onnxruntime's CPU provider
  .xml     OpenVINO IR, .xml + .bin (utility/inference/graph_export.py), OpenVINO's runtime

onnxruntime and openvino are optional (requirements-export.txt): a model of a format whose
runtime is not installed is a one-line error (MissingPackage, a ValueError).

Every format takes one image, float32 [1, S, S, 3] RGB on the 0-255 scale, resized as the eval
preprocessing does (ssd_model.preprocess_eval(..., normalize=False)); channel order and mean
subtraction are inside the model. It returns the SavedModel's outputs for that image: boxes
[1, K, 4] normalized [ymin, xmin, ymax, xmax], classes int32 [1, K], scores [1, K],
num_detections int32 [1].

`predict` yields the same per-image dicts as utility/drivers.predict, so the demo and
eval_ssd.py draw and score an exported model with their own code.
"""
import json
import os

import numpy as np

OUTPUT_NAMES = ('boxes', 'classes', 'scores', 'num_detections')
INPUT_NAME = 'image'
# The optional packages (requirements-export.txt) and the line that installs them.
INSTALL_HINT = 'pip install -r requirements-export.txt'


class MissingPackage(ValueError):
    """An optional package a format needs is not installed (a configuration problem: exit 2)."""


def require(module, package, purpose):
    """The imported `module`; MissingPackage naming `package` and `purpose` where it is missing."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingPackage('%s needs the optional package %s, which is not installed; %s '
                             '(README "What runs where" lists the TensorFlow lines it runs on).'
                             % (purpose, package, INSTALL_HINT)) from None


def sidecar_path(model_path):
    """The JSON file beside an exported model (<stem>.json): what it was exported from, its
    input, its post-processing settings and class names (tflite_export.sidecar)."""
    return os.path.splitext(model_path)[0] + '.json'


def define_flags(flags_module):
    """--model and --num_threads, for eval_ssd.py and simple_ssd_demo.py."""
    flags_module.DEFINE_string(
        'model', '', 'An exported model to run instead of a checkpoint: a .tflite (TFLite '
        'interpreter), .onnx (onnxruntime) or .xml (OpenVINO) file from export_ssd.py '
        '--format tflite|onnx|openvino. Its post-processing settings are those it was exported '
        'with (the post-processing flags do not apply).')
    flags_module.DEFINE_integer('num_threads', 2, 'With --model: the runtime\'s CPU threads.')


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
    """One exported SSD model in its runtime: detect(image [1, S, S, 3]) -> output dict.

    Subclasses (one per format, SUFFIXES) load the model in `_load(num_threads)`, returning
    the input's [1, S, S, 3] shape and the output names it has, and run it in `_run(image)`,
    returning {output name: array}.
    """
    FORMAT = ''  # export_ssd.py --format that writes it
    RUNTIME = ''  # what runs it, for the log

    def __init__(self, model_path, num_threads=None):
        self.path = model_path
        self.num_threads = int(num_threads) if num_threads else None
        if num_threads is not None and int(num_threads) < 1:
            raise ValueError('--num_threads must be >= 1, got %d.' % num_threads)
        if not os.path.isfile(model_path):
            raise ValueError('--model %s: no such file; pass a %s file written by export_ssd.py '
                             '--format %s.' % (model_path, self.SUFFIX, self.FORMAT))
        try:
            shape, names = self._load(self.num_threads)
        except MissingPackage:
            raise
        except Exception as err:  # each runtime has its own exception types
            raise ValueError('--model %s is not a loadable %s model (%s); export one with '
                             'export_ssd.py --format %s.'
                             % (model_path, self.FORMAT_NAME, _first_line(err), self.FORMAT)
                             ) from None
        self._shape = [int(d) for d in shape]
        missing = [n for n in OUTPUT_NAMES if n not in names]
        if len(self._shape) != 4 or missing:
            raise ValueError('--model %s is not an SSD export (outputs %s missing); export one '
                             'with export_ssd.py --format %s.'
                             % (model_path, ', '.join(missing) or 'none', self.FORMAT))

    @property
    def image_size(self):
        """S of the [1, S, S, 3] input."""
        return self._shape[1]

    def detect(self, image):
        """image: float32 [1, S, S, 3] RGB 0-255 -> {name: numpy array} (OUTPUT_NAMES)."""
        return self._run(np.asarray(image, np.float32))


def _first_line(err):
    """The first informative line of a runtime's error (OpenVINO's start with the source
    location: 'Exception from src/...:')."""
    lines = [l.strip() for l in str(err).strip().splitlines() if l.strip()]
    told = [l for l in lines if not l.startswith('Exception from ')]
    return ((told or lines)[0] if lines else type(err).__name__)[:300]


def _output_name(name):
    """OUTPUT_NAMES entry a runtime's tensor name stands for ('scores', 'scores:0',
    'serving_default:scores', 'StatefulPartitionedCall:2;scores' ...), or None."""
    for part in str(name).replace(';', ' ').split():
        for base in (part.split(':')[0].split('/')[-1], part.split(':')[-1]):
            if base in OUTPUT_NAMES:
                return base
    return None


class TFLiteDetector(Detector):
    """A .tflite file in LiteRT's interpreter (tf.lite.Interpreter where it is missing)."""
    SUFFIX, FORMAT, FORMAT_NAME = '.tflite', 'tflite', 'TFLite'
    RUNTIME = 'TFLite interpreter'

    def _load(self, num_threads):
        self._interpreter = interpreter_class()(model_path=self.path, num_threads=num_threads)
        self._interpreter.allocate_tensors()
        inputs = self._interpreter.get_input_details()
        self._input = inputs[0]
        self._outputs = {}
        for detail in self._interpreter.get_output_details():
            name = _output_name(detail['name'])
            if name:
                self._outputs[name] = detail['index']
        return (self._input['shape'] if len(inputs) == 1 else []), self._outputs

    def _run(self, image):
        self._interpreter.set_tensor(self._input['index'],
                                     np.asarray(image, self._input['dtype']))
        self._interpreter.invoke()
        return {name: self._interpreter.get_tensor(index).copy()
                for name, index in self._outputs.items()}


class OnnxDetector(Detector):
    """A .onnx file in onnxruntime's CPU execution provider, `num_threads` intra-op threads."""
    SUFFIX, FORMAT, FORMAT_NAME = '.onnx', 'onnx', 'ONNX'
    RUNTIME = 'onnxruntime'

    def _load(self, num_threads):
        ort = require('onnxruntime', 'onnxruntime', '--model %s' % self.path)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(self.path, options,
                                             providers=['CPUExecutionProvider'])
        inputs = self._session.get_inputs()
        self._input = inputs[0].name
        self._outputs = {}
        for output in self._session.get_outputs():
            name = _output_name(output.name)
            if name:
                self._outputs[name] = output.name
        return (inputs[0].shape if len(inputs) == 1 else []), self._outputs

    def _run(self, image):
        names = list(self._outputs)
        values = self._session.run([self._outputs[n] for n in names], {self._input: image})
        return dict(zip(names, values))


class OpenVinoDetector(Detector):
    """An OpenVINO IR (.xml, its weights in the .bin beside it) compiled for the CPU with
    `num_threads` inference threads."""
    SUFFIX, FORMAT, FORMAT_NAME = '.xml', 'openvino', 'OpenVINO IR'
    RUNTIME = 'OpenVINO runtime'

    def _load(self, num_threads):
        ov = require('openvino', 'openvino', '--model %s' % self.path)
        config = {'PERFORMANCE_HINT': 'LATENCY'}
        if num_threads:
            config['INFERENCE_NUM_THREADS'] = num_threads
        self._compiled = ov.Core().compile_model(self.path, 'CPU', config)
        self._request = self._compiled.create_infer_request()
        self._outputs = {}
        for output in self._compiled.outputs:
            for tensor_name in output.get_names():
                name = _output_name(tensor_name)
                if name and name == tensor_name:
                    self._outputs[name] = output
        inputs = self._compiled.inputs
        return (list(inputs[0].get_shape()) if len(inputs) == 1 else []), self._outputs

    def _run(self, image):
        results = self._request.infer({0: image})
        return {name: np.array(results[output]) for name, output in self._outputs.items()}


# File suffix -> the Detector that runs it.
SUFFIXES = {cls.SUFFIX: cls for cls in (TFLiteDetector, OnnxDetector, OpenVinoDetector)}


def open_detector(model_path, num_threads=None):
    """The Detector of `model_path`'s format (SUFFIXES, by its suffix).

    Raises:
      ValueError: an unknown suffix, a missing or unloadable file, not an SSD export;
        MissingPackage where the format's runtime is not installed.
    """
    suffix = os.path.splitext(model_path)[1].lower()
    if suffix not in SUFFIXES:
        raise ValueError('--model %s: unknown model format %r; pass a file written by '
                         'export_ssd.py: %s.' % (model_path, suffix or '(no suffix)', ', '.join(
                             '%s (--format %s)' % (s, c.FORMAT) for s, c in SUFFIXES.items())))
    return SUFFIXES[suffix](model_path, num_threads)


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

    detector: a Detector (open_detector). input_fn: () -> tf.data.Dataset of feature dicts,
    batched, whose 'image' is the exported models' input, [B, S, S, 3] with S = detector.image_size
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
    detector = open_detector(model_path, num_threads)
    params = _model_params(detector, values, log, data_dir=values.data_dir,
                           batch_size=values.batch_size, num_classes=len(class_names),
                           class_names=list(class_names), num_readers=values.num_readers)
    notify(log, 'Evaluating %s on %d images of %s (%s, %d thread(s)).'
           % (model_path, num_records, pattern, detector.RUNTIME, num_threads))
    input_fn = ssd_model.make_input_fn(params, is_training=False, file_pattern=pattern,
                                       normalize=False)
    return predict(detector, input_fn), params


def file_predictions(model_path, paths, values, num_threads, log=None):
    """(predictions, class names) of simple_ssd_demo.py --model over image files."""
    from utility.inference import image_files
    from dataset.labels import VOC_LABELS
    detector = open_detector(model_path, num_threads)
    names = class_names_of(model_path) or list(VOC_LABELS)
    params = _model_params(detector, values, log, batch_size=values.batch_size,
                           num_classes=len(names), class_names=names)
    input_fn = image_files.make_image_files_input_fn(params, paths, values.batch_size,
                                                    normalize=False)
    return predict(detector, input_fn), names
