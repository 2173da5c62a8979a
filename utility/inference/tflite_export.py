"""TFLite export of an SSD300 checkpoint: float32, or full-integer int8 post-training quantization.

The graph is the SavedModel's (utility/drivers.export_saved_model): the one model_fn of
utility/ssd_model.py in PREDICT mode, restored from the checkpoint the same way, with the same
post-processing settings, except that
  * the input is one image resized as the eval preprocessing does, float32 [1, S, S, 3] RGB on
    the 0-255 scale (ssd_model.preprocess_eval(..., normalize=False)); the channel order and
    mean subtraction (ssd_preprocessing.normalize_for_network) are folded into the model;
  * NMS runs as one NonMaxSuppressionV4 per class (net/postprocess nms_ops='per_class'), which
    TFLite has as builtin kernels, instead of TF's combined op, which it lacks. The selection
    is the same (tests/test_postprocess.py).
Outputs, in this order: boxes [1, K, 4], classes int32 [1, K], scores [1, K], num_detections
int32 [1] (utility/inference/runner.py runs them).

int8: weights and activations int8 with int8 builtin kernels, calibrated on
`calibration_images` images (TFRecord shards or image files) through the same eval
preprocessing; ops without an int8 kernel stay float (runner.float_ops lists them).
"""
import json
import os
import tempfile

import numpy as np
import tensorflow as tf

from utility.inference import runner

FORMATS = ('saved_model', 'tflite')
QUANTIZE = ('none', 'int8')
FILE_NAMES = {'none': 'model.tflite', 'int8': 'model_int8.tflite'}
LABELS_FILE = 'labels.txt'


def tflite_params(params):
    """The export's params: one image per call, NHWC, builtin NMS ops."""
    return dict(params, batch_size=1, data_format='channels_last', nms_ops='per_class')


def build_graph(params):
    """In the current graph: (input placeholder [1, S, S, 3], [outputs in OUTPUT_NAMES order],
    the PREDICT ModelSpec)."""
    from preprocessing import ssd_preprocessing
    from utility import ssd_model
    from utility.drivers import ModeKeys
    size = int(params['train_image_size'])
    image = tf.compat.v1.placeholder(tf.float32, [1, size, size, 3],
                                     name=runner.INPUT_NAME)
    network_input = ssd_preprocessing.normalize_for_network(
        image, params['channel_order'], params['mean_rgb'])
    spec = ssd_model.model_fn({'image': network_input}, None, ModeKeys.PREDICT, params)
    outputs = [tf.identity(spec.export_outputs[name], name=name)
               for name in runner.OUTPUT_NAMES]
    return image, outputs, spec


# ----------------------------------------------------------------------------- calibration


def calibration_source(path):
    """('records', [shard files]) or ('images', [image files]) of a calibration folder.

    Raises:
      ValueError: the folder is missing, or holds neither TFRecord shards (*-of-*) nor
        image files.
    """
    from utility.inference import image_files
    if not path:
        raise ValueError('--quantize int8 needs --calibration_data: a folder of TFRecord '
                         'shards (e.g. dataset/tfrecords) or of images.')
    if not os.path.isdir(path):
        raise ValueError('--calibration_data %s is not a folder; pass a folder of TFRecord '
                         'shards (e.g. dataset/tfrecords) or of images.' % path)
    names = sorted(os.listdir(path))
    shards = [os.path.join(path, n) for n in names if '-of-' in n
              and os.path.isfile(os.path.join(path, n))]
    if shards:
        return 'records', shards
    images, _ = image_files.list_image_files([path])
    if images:
        return 'images', images
    raise ValueError('--calibration_data %s holds no TFRecord shards (*-of-*) and no '
                     'JPEG/PNG/BMP/GIF images (%d other file(s)); pass a folder of either.'
                     % (path, len(names)))


def calibration_images(path, params, count, log=None):
    """Up to `count` calibration inputs, float32 [1, S, S, 3] each, from `path` (a folder of
    TFRecord shards or images) through ssd_model.preprocess_eval(normalize=False): the TFLite
    input. Unreadable images are skipped.

    Raises:
      ValueError: no usable image (calibration_source's errors; every image unreadable).
    """
    from dataset.records import parse_example
    from common.console import notify
    from utility import ssd_model
    from utility.inference import image_files
    kind, files = calibration_source(path)
    images = []
    with tf.Graph().as_default():
        if kind == 'records':
            dataset = tf.data.TFRecordDataset(files).map(parse_example).take(count)
            item = tf.compat.v1.data.make_one_shot_iterator(dataset).get_next()
            resized = ssd_model.preprocess_eval(item['image'], params, normalize=False)
            with tf.compat.v1.Session() as session:
                try:
                    while len(images) < count:
                        images.append(session.run(resized)[np.newaxis])
                except tf.errors.OutOfRangeError:
                    pass
                except tf.errors.OpError as err:
                    raise ValueError('--calibration_data %s: a TFRecord shard cannot be read '
                                     '(%s); pass shards made by the converter.'
                                     % (path, str(err).splitlines()[0][:200])) from None
        else:
            raw = tf.compat.v1.placeholder(tf.uint8, [None, None, 3])
            resized = ssd_model.preprocess_eval(raw, params, normalize=False)
            skipped = 0
            with image_files.ImageDecoder() as decoder, tf.compat.v1.Session() as session:
                for name in files:
                    if len(images) >= count:
                        break
                    try:
                        pixels = decoder.decode(name)
                    except ValueError:
                        skipped += 1
                        continue
                    images.append(session.run(resized, {raw: pixels})[np.newaxis])
            if skipped:
                notify(log, 'Calibration: skipped %d unreadable image(s) in %s.'
                       % (skipped, path))
    if not images:
        raise ValueError('--calibration_data %s holds no readable image; pass a folder of '
                         'TFRecord shards or JPEG/PNG/BMP/GIF images.' % path)
    notify(log, 'Calibrating on %d image(s) from %s.' % (len(images), path))
    return images


# ----------------------------------------------------------------------------- conversion


def convert(params, checkpoint, quantize='none', calibration=None):
    """The .tflite bytes of `checkpoint` (params from tflite_params).

    quantize 'int8': full-integer post-training quantization, calibrated on `calibration`
    (a list of [1, S, S, 3] float32 inputs, calibration_images); builtin float kernels only
    where no int8 one exists.
    """
    from utility import drivers
    if quantize not in QUANTIZE:
        raise ValueError('--quantize %r is not one of %s.' % (quantize, ', '.join(QUANTIZE)))
    with tf.Graph().as_default():
        image, outputs, spec = build_graph(params)
        with tf.compat.v1.Session() as session:
            drivers.restore_predict(session, spec, checkpoint)
            converter = tf.compat.v1.lite.TFLiteConverter.from_session(session, [image],
                                                                       outputs)
            if quantize == 'int8':
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.representative_dataset = lambda: ([x] for x in calibration)
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                                       tf.lite.OpsSet.TFLITE_BUILTINS]
            with _quiet_stderr() as captured:
                try:
                    return converter.convert()
                except Exception as err:  # the converter's reasons are on stderr
                    raise RuntimeError('TFLite conversion failed: %s\n%s'
                                       % (err, captured.read()[-3000:])) from None


def export(params, checkpoint, export_dir, class_names, quantize='none', calibration_data='',
           calibration_count=200, log=None):
    """Writes <export_dir>/model.tflite (or model_int8.tflite), labels.txt and the sidecar
    <stem>.json (runner.read_sidecar); returns the model's path.

    Calibration inputs are read before anything is written, and each file is written under
    a temporary name and renamed, so an error leaves the folder as it was.
    """
    from common.console import notify
    if quantize not in QUANTIZE:
        raise ValueError('--quantize %r is not one of %s.' % (quantize, ', '.join(QUANTIZE)))
    params = tflite_params(params)
    path = os.path.join(export_dir, FILE_NAMES[quantize])
    check_sidecar_target(path)
    calibration = None
    if quantize == 'int8':
        calibration = calibration_images(calibration_data, params, int(calibration_count), log)
    notify(log, 'Converting %s to TFLite (%s)...' % (
        checkpoint, 'full-integer int8' if quantize == 'int8' else 'float32'))
    model = convert(params, checkpoint, quantize, calibration)
    tf.io.gfile.makedirs(export_dir)
    write_atomic(path, model)
    write_labels_and_sidecar(path, sidecar(
        params, checkpoint, class_names, format='tflite', quantize=quantize,
        calibration=({'data': calibration_data, 'images': len(calibration)}
                     if calibration else None)))
    return path


def sidecar(params, checkpoint, class_names, **extra):
    """The <stem>.json of an exported model (runner.read_sidecar): the checkpoint, the class
    names, the input and its preprocessing, the outputs and the post-processing settings baked
    in (export params: tflite_params), and `extra` (format, quantization, converter)."""
    settings = {key: params[key] for key in ('select_threshold', 'min_size', 'keep_topk',
                                            'nms_threshold', 'nms_topk', 'keep_per')}
    size = int(params['train_image_size'])
    return dict({
        'checkpoint': checkpoint, 'backbone': params['backbone'],
        'num_classes': int(params['num_classes']), 'class_names': list(class_names),
        'input': {'name': runner.INPUT_NAME, 'shape': [1, size, size, 3],
                  'dtype': 'float32',
                  'preprocessing': 'RGB 0-255 resized to %dx%d by bilinear resize without '
                                   'half-pixel centres (ssd_preprocessing.resize_for_eval); '
                                   'channel order %s and mean %s are applied inside the model'
                                   % (size, size, params['channel_order'],
                                      list(params['mean_rgb']))},
        'outputs': list(runner.OUTPUT_NAMES), 'post_processing': settings}, **extra)


def check_sidecar_target(path):
    """Raises ValueError when another exported model beside `path` has its stem, so that their
    <stem>.json would be one file (model.tflite and model.onnx in one folder)."""
    stem = os.path.splitext(path)[0]
    for suffix in runner.SUFFIXES:
        other = stem + suffix
        if other != path and os.path.exists(other):
            raise ValueError('%s already holds %s, whose %s would be overwritten; pass another '
                             '--export_dir for each format.' % (
                                 os.path.dirname(path) or '.', os.path.basename(other),
                                 os.path.basename(runner.sidecar_path(path))))


def write_labels_and_sidecar(path, contents):
    """Writes labels.txt (line k = class k) and <stem>.json (`contents`) beside `path`."""
    folder = os.path.dirname(path)
    write_atomic(os.path.join(folder, LABELS_FILE),
                 ('\n'.join(contents['class_names']) + '\n').encode('utf-8'))
    write_atomic(runner.sidecar_path(path),
                 (json.dumps(contents, indent=2) + '\n').encode('utf-8'))


class _quiet_stderr:
    """Sends file descriptor 2 to a temporary file for the block (the converter's C++ side
    prints op statistics there); `read()` gives what was printed."""

    def __enter__(self):
        import sys
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile(mode='w+')
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def read(self):
        self._file.flush()
        self._file.seek(0)
        return self._file.read()

    def __exit__(self, *exc):
        import sys
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.close()


def write_atomic(path, data):
    """Writes `data` (bytes) to `path` under a temporary name, then renames it."""
    folder = os.path.dirname(path) or '.'
    handle, scratch = tempfile.mkstemp(prefix='.tmp-', dir=folder)
    try:
        with os.fdopen(handle, 'wb') as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(scratch, 0o666 & ~umask)
        os.replace(scratch, path)
    except BaseException:
        if os.path.exists(scratch):
            os.remove(scratch)
        raise
