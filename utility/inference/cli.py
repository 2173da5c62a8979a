"""The flags and input checks eval_ssd.py, simple_ssd_demo.py and export_ssd.py share: the model
and post-processing flags (defaults from common/defaults.py), --precision, and the checks
that fail before any work with one line naming the flag."""
import os

from common import defaults
from common.console import VERBOSE_FLAG, VERBOSE_HELP


def define_inference_flags(flags_module):
    """Defines the model and post-processing flags shared by eval, demo and export.

    `flags_module` is `absl.flags`; call once from an entry script before parsing. The
    defaults are the model's (common/defaults.DEFAULT_PARAMS).
    """
    f = flags_module
    model = defaults.DEFAULT_PARAMS
    f.DEFINE_boolean(VERBOSE_FLAG, False, VERBOSE_HELP)  # read by console.quiet_logs
    f.DEFINE_integer('num_classes', model['num_classes'],
                     'Number of classes, background included (VOC: 21).')
    f.DEFINE_integer('train_image_size', model['train_image_size'],
                     'Input image size (SSD300: 300).')
    f.DEFINE_enum('data_format', model['data_format'], list(defaults.DATA_FORMATS),
                  defaults.DATA_FORMAT_HELP)
    f.DEFINE_string('model_scope', model['model_scope'], 'Variable scope of the model.')
    f.DEFINE_float('select_threshold', model['select_threshold'],
                   'Class score a detection needs to enter non-maximum suppression.')
    f.DEFINE_float('min_size', model['min_size'],
                   'Detections whose normalized height or width is not above this are dropped.')
    f.DEFINE_float('nms_threshold', model['nms_threshold'],
                   'IoU above which NMS suppresses the lower-scored box of a class.')
    f.DEFINE_integer('nms_topk', model['nms_topk'],
                     'Detections kept per class by NMS and per image.')
    f.DEFINE_integer('keep_topk', model['keep_topk'], 'Candidates per class that enter NMS.')
    f.DEFINE_enum('driver', defaults.AUTO, list(defaults.DRIVERS),
                  'What runs the model: tf.estimator (TensorFlow <= 2.15) or a plain session '
                  '(any TensorFlow 2.x); auto = the Estimator where TensorFlow has it.')
    f.DEFINE_enum('keep_per', model['keep_per'], list(defaults.KEEP_PER),
                  "'image': the --nms_topk best detections of each image; 'class': "
                  '--nms_topk per class (up to nms_topk * (num_classes - 1) per image), '
                  "the original SSD.TensorFlow eval's selection.")


def define_checkpoint_flags(flags_module, verb, participle):
    """--model_dir and --checkpoint_path of eval and export, which `verb` the checkpoint
    ('evaluate', 'evaluated'; 'export', 'exported')."""
    flags_module.DEFINE_string(
        'model_dir', defaults.MODEL_DIR,
        'Training directory; its latest checkpoint is %s unless --checkpoint_path is given.'
        % participle)
    flags_module.DEFINE_string(
        'checkpoint_path', '',
        'Checkpoint to %s: a directory (its latest checkpoint) or a prefix such as '
        'logs/model.ckpt-120000. Empty: the latest in --model_dir.' % verb)


def define_precision_flag(flags_module):
    """--precision for the entry scripts that run a checkpoint (eval, demo)."""
    flags_module.DEFINE_enum(
        'precision', defaults.INFERENCE_PRECISION, list(defaults.PRECISIONS),
        'Arithmetic of the convolutions and matmuls while predicting: bf16 = bfloat16 through '
        'the oneDNN graph rewrite (CPUs with AVX512-BF16 or AMX), fp32 = float32; auto = bf16 '
        'where the CPU has it. Detections of the two differ slightly (docs/learning.md).')


def check_positive(value, flag):
    """Raises ValueError unless `value` (the flag `flag`'s) is a positive integer."""
    if value is None or int(value) < 1:
        raise ValueError('--%s=%s must be a positive integer.' % (flag, value))


def check_directory_target(path, flag):
    """Raises ValueError when `path` exists but is not a directory (checked before any work)."""
    if path and os.path.exists(path) and not os.path.isdir(path):
        raise ValueError('--%s=%s is a file, not a directory; pass a directory (it is created '
                         'if missing).' % (flag, path))
