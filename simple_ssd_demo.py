"""Detect objects in image files with an SSD300 checkpoint and draw them.

    python3 simple_ssd_demo.py --input demo/ --input street.jpg --checkpoint_path ./logs

Each --input is an image file (JPEG, PNG, BMP or GIF) or a directory (its images, not
recursive). The detector runs the one model_fn (tf.estimator or a session: --driver) and
post-processing of utility/ssd_model.py; detections with a score >= --score_threshold are drawn
with their class names (those training recorded in the checkpoint's params.json; the VOC
names for a checkpoint without them) and scores, one output image per input, written to --output_dir as
<name>_ssd.jpg. A line per image lists its detections: class, score and the VOC pixel box
[xmin, ymin, xmax, ymax] (1-based). Unreadable images are reported and skipped. Photos with
an EXIF orientation (phones) are turned upright first, as a photo viewer shows them; boxes
refer to the upright image. Class names in any script are drawn with a font that has them
(a warning says when none is installed).

With --model <file> an exported model runs instead of a checkpoint: .tflite (TFLite
interpreter), .onnx (onnxruntime) or .xml (OpenVINO), chosen by the suffix
(utility/inference/runner.py, --num_threads); the drawing is the same, the post-processing
settings are those baked into the model.

Exit status: 0 when at least one image was processed, 2 for configuration problems (no
checkpoint, no readable image).
"""
import os
import sys

from absl import flags

from common import console, defaults
from common.console import log
console.quiet_logs()  # before TensorFlow is imported; --verbose keeps its lines

from evaluation.detections import prediction_detections
from utility.inference import checkpoint_params
from utility.inference import cli
from utility.inference import image_files
from utility.inference import runner

FLAGS = flags.FLAGS
MAX_LISTED = 10  # detections listed per image in the progress line (all are drawn)

flags.DEFINE_multi_string('input', [], 'Image file or directory of images; repeat the flag '
                                       'for more (--input a.jpg --input photos/).')
flags.DEFINE_string('checkpoint_path', defaults.MODEL_DIR,
                    'Checkpoint: a training directory (its latest checkpoint) or a prefix such '
                    'as logs/model.ckpt-120000.')
flags.DEFINE_string('output_dir', './demo_output', 'Where the drawn images are written.')
flags.DEFINE_float('score_threshold', 0.5, 'Draw and list detections scoring at least this.')
flags.DEFINE_integer('batch_size', 1, 'Images per prediction batch.')
cli.define_inference_flags(flags)
cli.define_precision_flag(flags)
flags.adopt_module_key_flags(cli)
runner.define_flags(flags)


def warn(message):
    print('warning: %s' % message, file=sys.stderr, flush=True)


def output_name(path, used):
    """'<stem>_ssd.jpg', made unique within `used` (a set, updated)."""
    stem = os.path.splitext(os.path.basename(path))[0] or 'image'
    name, k = stem + '_ssd.jpg', 1
    while name in used:
        k += 1
        name = '%s_%d_ssd.jpg' % (stem, k)
    used.add(name)
    return name


def main(_):
    from utility import ssd_model
    from evaluation import draw
    from utility import drivers

    if not FLAGS.input:
        raise ValueError('No --input given; pass image files or directories, e.g. '
                         '--input dataset/VOC2012_sample/JPEGImages.')
    cli.check_positive(FLAGS.batch_size, 'batch_size')
    cli.check_directory_target(FLAGS.output_dir, 'output_dir')
    checkpoint = (None if FLAGS.model
                  else checkpoint_params.find_checkpoint(FLAGS.checkpoint_path, None))
    files, missing = image_files.list_image_files(FLAGS.input)
    for path, reason in missing:
        warn('skipping %s: %s.' % (path, reason))
    readable = []
    with image_files.ImageDecoder() as decoder:
        for path in files:
            try:
                decoder.decode(path)
                readable.append(path)
            except ValueError as err:
                warn('skipping %s: %s.' % (path, err))
    if not readable:
        raise ValueError('None of the --input paths is a readable image; pass JPEG, PNG, BMP or '
                         'GIF files or directories holding them.')

    if FLAGS.model:
        log('Detecting with %s on %d image(s); drawing scores >= %.2f into %s.'
            % (FLAGS.model, len(readable), FLAGS.score_threshold, FLAGS.output_dir))
        predictions, class_names = runner.file_predictions(
            FLAGS.model, readable, FLAGS, FLAGS.num_threads, log)
    else:
        driver = drivers.resolve_driver(FLAGS.driver)
        params, class_names = checkpoint_params.checkpoint_model(FLAGS, checkpoint, log=log,
                                                                 batch_size=FLAGS.batch_size)
        log('Detecting with %s on %d image(s); drawing scores >= %.2f into %s.'
            % (checkpoint, len(readable), FLAGS.score_threshold, FLAGS.output_dir))
        predictions = drivers.predict(
            driver, ssd_model.model_fn,
            image_files.make_image_files_input_fn(params, readable, FLAGS.batch_size),
            params, checkpoint,
            session_config=checkpoint_params.predict_session_config(FLAGS.precision, log))
    used = set()
    with image_files.ImageDecoder() as decoder:
        for prediction in predictions:
            path = prediction['filename'].decode('utf-8')
            boxes, labels, scores = prediction_detections(
                prediction, score_threshold=FLAGS.score_threshold)
            image = decoder.decode(path)
            out = os.path.join(FLAGS.output_dir, output_name(path, used))
            draw.write_image(out, draw.draw_detections(image, boxes, labels, scores,
                                                       class_names, warn=warn))
            # detections come sorted by score; list the best few on the line
            found = ', '.join('%s %.2f [%.0f %.0f %.0f %.0f]' % ((class_names[l], s) + tuple(b))
                              for b, l, s in list(zip(boxes, labels, scores))[:MAX_LISTED])
            if len(labels) > MAX_LISTED:
                found += ', ... (%d more)' % (len(labels) - MAX_LISTED)
            turned = image_files.exif_orientation(path)
            log('%s%s: %d detection(s)%s -> %s' % (
                path, ' (turned upright: EXIF orientation %d)' % turned if turned != 1 else '',
                len(labels), ': ' + found if found else '', out))
    return 0


if __name__ == '__main__':
    from utility import entry
    entry.run(main)
