"""Export an SSD300 checkpoint as a TensorFlow SavedModel for serving.

    python3 export_ssd.py --model_dir ./logs/ --export_dir ./logs/export

Writes <export_dir>/<timestamp>/ (saved_model.pb, variables/, assets.extra/labels.txt) with
utility/drivers.export_saved_model (tf.estimator's exporter or a SavedModelBuilder: --driver),
the one model_fn of utility/ssd_model.py in PREDICT mode and its serving input
(ssd_model.serving_inputs): decoding, resizing and mean
subtraction happen inside the graph, the post-processing flags below are baked in.

Serving signature 'serving_default' (also under the key 'predict'; both drivers write the same):

  inputs:
    encoded_image   string [batch]           JPEG, PNG, BMP or GIF file bytes, any size,
                                             decoded as stored: the graph ignores the EXIF
                                             orientation of phone photos, so send upright
                                             images (see `upright_jpeg_bytes` below)
  outputs (K = --nms_topk, or nms_topk x (num_classes - 1) with --keep_per=class; entries
  from num_detections[b] on are padding):
    boxes           float32 [batch, K, 4]    [ymin, xmin, ymax, xmax] normalized to [0, 1];
                                             VOC pixels: x * width, y * height
    scores          float32 [batch, K]       descending
    classes         int32   [batch, K]       1..num_classes-1, index into the class names
                                             listed in assets.extra/labels.txt (line k =
                                             class k, line 0 = background 'none'): those
                                             training recorded in params.json, VOC's without
    num_detections  int32   [batch]

Loading it back (TF2):

    model = tf.saved_model.load(path)
    out = model.signatures['serving_default'](encoded_image=tf.constant([jpeg_bytes]))

A phone photo stores its pixels sideways with an EXIF orientation tag; turn it upright before
sending it (what `simple_ssd_demo.py` does for its inputs):

    import io
    from PIL import Image, ImageOps
    def upright_jpeg_bytes(path):
        image = ImageOps.exif_transpose(Image.open(path)).convert('RGB')
        buffer = io.BytesIO()
        image.save(buffer, 'JPEG', quality=95)
        return buffer.getvalue()

TFLite (utility/inference/tflite_export.py; run with utility/inference/runner.py,
eval_ssd.py --model, simple_ssd_demo.py --model):

    python3 export_ssd.py --model_dir ./logs/ --format tflite          # <export_dir>/model.tflite
    python3 export_ssd.py --model_dir ./logs/ --format tflite --quantize int8 \
        --calibration_data dataset/tfrecords --calibration_images 200   # model_int8.tflite

write the file, labels.txt and <stem>.json (input, post-processing, class names) straight into
--export_dir. Input: image float32 [1, 300, 300, 3], RGB 0-255, resized bilinearly without
half-pixel centres (ssd_preprocessing.resize_for_eval); channel order and mean subtraction are
inside. Outputs: boxes [1, K, 4], classes int32 [1, K], scores [1, K], num_detections int32 [1],
as the SavedModel's. int8: full-integer post-training quantization calibrated on
--calibration_images images of --calibration_data (TFRecord shards or image files) through the
eval preprocessing; the ops left in float are printed.

ONNX and OpenVINO (utility/inference/graph_export.py; the optional packages of
requirements-export.txt; run with the same --model of eval_ssd.py and simple_ssd_demo.py):

    python3 export_ssd.py --model_dir ./logs/ --format onnx --export_dir ./logs/onnx  # model.onnx
    python3 export_ssd.py --model_dir ./logs/ --format openvino --export_dir ./logs/ov \
        [--compress fp16]                                  # model.xml + .bin (model_fp16.xml)

convert the TFLite export's graph (same input, same four outputs, NMS inside as one
NonMaxSuppression per class); each writes labels.txt and <stem>.json beside the model. Give
each format its own --export_dir: two models with one stem (model.tflite, model.onnx) would
share model.json, which the export refuses.

Exit status: 0 on success (the export path is printed last), 2 when no checkpoint is found,
the calibration data is unusable or an optional package of the format is missing.
"""
import os
import tempfile

from absl import flags

from common import console
from common.console import log
console.quiet_logs()  # before TensorFlow is imported; --verbose keeps its lines

from utility.inference import checkpoint_params
from utility.inference import cli

FLAGS = flags.FLAGS

cli.define_checkpoint_flags(flags, 'export', 'exported')
flags.DEFINE_string('export_dir', '',
                    'Base directory of the export; the SavedModel goes into a new timestamped '
                    'folder in it. Empty: <model_dir>/export.')
flags.DEFINE_enum('format', 'saved_model', ['saved_model', 'tflite', 'onnx', 'openvino'],
                  "'saved_model': a timestamped SavedModel folder in --export_dir; 'tflite': "
                  '<export_dir>/model.tflite (float32), or model_int8.tflite with --quantize int8; '
                  "'onnx': <export_dir>/model.onnx (tf2onnx, onnxruntime); 'openvino': "
                  '<export_dir>/model.xml + model.bin (OpenVINO IR). onnx and openvino need '
                  'the optional packages of requirements-export.txt.')
flags.DEFINE_enum('quantize', 'none', ['none', 'int8'],
                  "With --format tflite: 'int8' = full-integer post-training quantization "
                  '(calibrated on --calibration_data).')
flags.DEFINE_enum('compress', 'none', ['none', 'fp16'],
                  "With --format openvino: 'fp16' stores the weights as FP16 (model_fp16.xml, "
                  'half the size; the CPU computes in FP32).')
flags.DEFINE_string('calibration_data', '',
                    'With --quantize int8: a folder of TFRecord shards (*-of-*, e.g. '
                    'dataset/tfrecords) or of images to calibrate the int8 ranges on.')
flags.DEFINE_integer('calibration_images', 200,
                     'With --quantize int8: how many images of --calibration_data to use.')
cli.define_inference_flags(flags)
flags.adopt_module_key_flags(cli)


def main(_):
    from utility import ssd_model
    from utility import drivers

    checkpoint = checkpoint_params.find_checkpoint(FLAGS.checkpoint_path, FLAGS.model_dir)
    driver = drivers.resolve_driver(FLAGS.driver)
    params, class_names = checkpoint_params.checkpoint_model(FLAGS, checkpoint, log=log,
                                                             batch_size=1)
    export_base = FLAGS.export_dir or os.path.join(FLAGS.model_dir, 'export')
    cli.check_directory_target(export_base, 'export_dir')
    if FLAGS.quantize != 'none' and FLAGS.format != 'tflite':
        raise ValueError('--quantize %s needs --format tflite; the other formats are float32.'
                         % FLAGS.quantize)
    if FLAGS.compress != 'none' and FLAGS.format != 'openvino':
        raise ValueError('--compress %s needs --format openvino.' % FLAGS.compress)
    if FLAGS.format == 'tflite':
        return export_tflite(params, checkpoint, export_base, class_names)
    if FLAGS.format in ('onnx', 'openvino'):
        from utility.inference import graph_export
        log('Exporting %s to %s (%s).' % (checkpoint, export_base, FLAGS.format))
        path = graph_export.export(params, checkpoint, export_base, class_names, FLAGS.format,
                                   compress=FLAGS.compress, log=log)
        files = [path] + ([path[:-len('.xml')] + '.bin'] if FLAGS.format == 'openvino' else [])
        log('%s model (%.1f MB) written to %s' % (
            'ONNX' if FLAGS.format == 'onnx' else 'OpenVINO',
            sum(os.path.getsize(f) for f in files) / 1e6, path))
        return 0
    log('Exporting %s to %s.' % (checkpoint, export_base))
    with tempfile.TemporaryDirectory() as scratch:
        labels_path = os.path.join(scratch, 'labels.txt')
        with open(labels_path, 'w', encoding='utf-8') as f:
            f.write('\n'.join(class_names) + '\n')
        path = drivers.export_saved_model(
            driver, ssd_model.model_fn, lambda: ssd_model.serving_inputs(params), params,
            checkpoint, export_base, assets_extra={'labels.txt': labels_path})
    log('Note: the SavedModel decodes encoded_image as stored and ignores EXIF orientation; '
        'turn phone photos upright before sending them (export_ssd.py docstring, README).')
    log('SavedModel written to %s' % path)
    return 0


def export_tflite(params, checkpoint, export_dir, class_names):
    from utility.inference import runner
    from utility.inference import tflite_export
    if FLAGS.quantize == 'int8':
        cli.check_positive(FLAGS.calibration_images, 'calibration_images')
    log('Exporting %s to %s (TFLite).' % (checkpoint, export_dir))
    path = tflite_export.export(params, checkpoint, export_dir, class_names,
                                quantize=FLAGS.quantize, calibration_data=FLAGS.calibration_data,
                                calibration_count=FLAGS.calibration_images, log=log)
    if FLAGS.quantize == 'int8':
        ops = runner.float_ops(path)
        log('Ops left in float32 (no int8 kernel): %s.' % (
            ', '.join('%s x%d' % item for item in ops.items()) or 'none'))
    log('TFLite model (%.1f MB) written to %s' % (os.path.getsize(path) / 1e6, path))
    return 0


if __name__ == '__main__':
    from utility import entry
    entry.run(main)
