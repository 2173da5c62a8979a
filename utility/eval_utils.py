"""Entry-script support for eval_ssd.py, simple_ssd_demo.py and export_ssd.py (importable,
tested). The evaluation itself (ground truth, detections, report, figures) is in evaluation/.

* checkpoints: `find_checkpoint` (latest in a model directory, or a given directory / prefix;
  located by utility/checkpoints/locate.locate_checkpoint);
* what the three scripts share: flags (`define_inference_flags`), the checkpoint's params
  and class names (`checkpoint_model`: `inference_params`,
  `check_num_classes`; predictions run through `utility/drivers.predict`), input checks
  (`check_positive`, `check_directory_target`, `check_checkpoint_classes`,
  `checkpoint_identity`: the checkpoint's variables against the params.json beside it);
* image files for the demo: `list_image_files`, `exif_orientation`, `ImageDecoder`,
  `make_image_files_input_fn` (photos turned upright by their EXIF orientation).
"""
import os
import sys

import tensorflow as tf

from common import defaults
from common.console import VERBOSE_FLAG, VERBOSE_HELP, notify
from dataset.labels import VOC_LABELS
from utility.checkpoints import locate, original_layout, params_file, restore


IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')


# ----------------------------------------------------------------------------- checkpoints


def find_checkpoint(checkpoint_path, model_dir):
    """The checkpoint prefix to run: `checkpoint_path` if given, else the latest in `model_dir`.

    Args:
      checkpoint_path: '' / None, a directory (its latest checkpoint), a prefix
        ('logs/model.ckpt-120000') or one of its files ('.index', '.meta', '.data-*');
        located by locate.locate_checkpoint (the rules every script shares).
      model_dir: the training directory searched when `checkpoint_path` is empty.
    Returns:
      str checkpoint prefix. A checkpoint of the original SSD.TensorFlow code comes back as
      its project-layout copy (original_layout.as_project_checkpoint).
    Raises:
      ValueError: no checkpoint there; the message names the directory or prefix.
    """
    path = checkpoint_path or model_dir
    if not path:
        raise ValueError('No checkpoint given: pass --model_dir (a training directory) or '
                         '--checkpoint_path.')
    path = os.path.expanduser(str(path))
    prefix = locate.locate_checkpoint(path)
    if prefix is not None:
        return original_layout.as_project_checkpoint(prefix)
    if tf.io.gfile.isdir(path):
        raise ValueError('No checkpoint found in %s; train first (python3 train_ssd.py '
                         '--model_dir=%s) or pass --checkpoint_path.' % (path, path))
    if not checkpoint_path:
        raise ValueError('Model directory %s does not exist; train first (python3 train_ssd.py '
                         '--model_dir=%s) or pass --checkpoint_path.' % (path, path))
    raise ValueError('No checkpoint at %s (no directory, no %s.index); pass a training '
                     'directory or a prefix such as logs/model.ckpt-120000.' % (path, path))


# ----------------------------------------------------------------------------- flags


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


def define_precision_flag(flags_module):
    """--precision for the entry scripts that run a checkpoint (eval, demo)."""
    flags_module.DEFINE_enum(
        'precision', defaults.INFERENCE_PRECISION, list(defaults.PRECISIONS),
        'Arithmetic of the convolutions and matmuls while predicting: bf16 = bfloat16 through '
        'the oneDNN graph rewrite (CPUs with AVX512-BF16 or AMX), fp32 = float32; auto = bf16 '
        'where the CPU has it. Detections of the two differ slightly (docs/learning.md).')


def predict_session_config(precision, log=None):
    """The session config drivers.predict runs a checkpoint with: `precision` resolved for this
    machine (precision_lib.configure_precision), logged in one line; None (the driver's
    default) for fp32."""
    import tensorflow as tf
    from utility.training import precision as precision_lib
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    if precision_lib.configure_precision(config, precision, log=log or (lambda *_: None)) == 'fp32':
        return None
    return config


def model_dir_params(checkpoint_prefix):
    """The params.json train_ssd.py wrote beside `checkpoint_prefix` (a dict), or {} if none.

    ValueError (naming the file) when it exists but is not a JSON object
    (utility/checkpoints/params_file.load_params).
    """
    if not checkpoint_prefix:
        return {}
    return params_file.load_params(os.path.dirname(str(checkpoint_prefix))) or {}


def checkpoint_identity(checkpoint):
    """The model `checkpoint` holds, from its variables (restore.ssd_checkpoint_identity),
    checked against the params.json beside it (params_file.check_stored_params). None for no
    checkpoint or one without heads.

    Raises:
      ValueError: that params.json lacks the identity keys or disagrees with the checkpoint
        (one line naming both and `tools.rebuild_params`).
    """
    if not checkpoint:
        return None
    # A checkpoint that is not there: nothing to read; the restore names it.
    located = locate.locate_checkpoint(checkpoint)
    identity = restore.ssd_checkpoint_identity(located) if located else None
    folder = os.path.dirname(str(checkpoint))
    stored = params_file.load_params(folder)
    params_file.check_stored_params(folder, stored, identity, checkpoint)
    return identity


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
      checkpoint: the checkpoint prefix to run; what defines the model
        (params_file.MODEL_KEYS: backbone, anchors, class count, ...) comes from the
        params.json beside it (model_dir_params) unless its flag is given (--num_classes,
        --train_image_size, --model_scope), so a model trained with --backbone resnet50 runs
        without repeating flags.
      **overrides: further `ssd_model.make_params` keys (data_dir, batch_size, ...).
    Returns:
      the params dict, data format resolved for this machine (`ssd_net.resolve_data_format`).
    """
    from utility import ssd_model
    from net import ssd_net
    data_format = ssd_net.resolve_data_format(values.data_format)
    if values.data_format == 'channels_first' and data_format != values.data_format:
        notify(log, 'Using data_format=%s instead of %s: no GPU is visible.'
               % (data_format, values.data_format))
    params = dict(
        num_classes=values.num_classes, train_image_size=values.train_image_size,
        data_format=data_format,
        model_scope=values.model_scope, select_threshold=values.select_threshold,
        min_size=values.min_size, nms_threshold=values.nms_threshold,
        nms_topk=values.nms_topk, keep_topk=values.keep_topk,
        keep_per=getattr(values, 'keep_per', defaults.DEFAULT_PARAMS['keep_per']))
    trained = model_dir_params(checkpoint)
    identity = checkpoint_identity(checkpoint)
    for key in params_file.MODEL_KEYS:
        if key in trained and not _flag_given(values, key):
            params[key] = trained[key]
    if trained.get('backbone'):
        notify(log, 'Backbone %s (from the params.json beside %s).'
               % (trained['backbone'], checkpoint))
    elif identity and identity['backbone']:
        # No params.json (or an older one without the key): the checkpoint's own variables.
        params['backbone'] = identity['backbone']
        notify(log, 'Backbone %s (read from the variables of %s).'
               % (identity['backbone'], checkpoint))
    if identity and 'num_classes' not in trained and not _flag_given(values, 'num_classes'):
        params['num_classes'] = identity['num_classes']
    if identity and 'model_scope' not in trained and not _flag_given(values, 'model_scope'):
        params['model_scope'] = identity['model_scope']
    params.update(overrides)
    warning = checkpoint and young_batch_norm_warning(checkpoint, trained)
    if warning:
        notify(log, warning)
    return ssd_model.make_params(**params)


def checkpoint_model(values, checkpoint, log=None, class_names=None, **overrides):
    """(params, class names) to run `checkpoint` with: the one checkpoint -> inference-params
    sequence of eval, demo and export.

    Args:
      values: the parsed flags (`inference_params`).
      checkpoint: the checkpoint prefix to run.
      log: callable(str) for notices (the backbone read, numbered class names, ...).
      class_names: the names the caller evaluates against (eval: the records'), which set the
        class count; a model that recorded other names gets a warning on stderr. None (demo,
        export): the names training recorded beside the checkpoint (checkpoint_class_names;
        numbered for a non-VOC class count without names, VOC's otherwise), checked against
        --num_classes.
      **overrides: further `ssd_model.make_params` keys (batch_size, data_dir, ...).
    Raises:
      ValueError: --num_classes disagrees with the names or with the checkpoint's class head.
    """
    given = class_names is not None
    if not given:
        identity = checkpoint_identity(checkpoint)
        count = (None if _flag_given(values, 'num_classes') or identity is None
                 else identity['num_classes'])
        class_names, source = checkpoint_class_names(checkpoint, count, log=log)
    else:
        class_names = list(class_names)
        overrides['num_classes'] = len(class_names)
    params = inference_params(values, log=log, checkpoint=checkpoint, class_names=class_names,
                              **overrides)
    if not given:
        check_num_classes(params['num_classes'], class_names, source)
    check_checkpoint_classes(checkpoint, params)
    if given:
        trained, source = checkpoint_class_names(checkpoint)
        if source and trained != class_names:
            print('warning: %s names the classes %s, the records %s; the table uses the '
                  'records\' names.' % (source, ', '.join(trained[1:]),
                                        ', '.join(class_names[1:])), file=sys.stderr, flush=True)
    return params, class_names


def young_batch_norm_warning(checkpoint, trained):
    """A warning (str) when `checkpoint`'s batch-norm moving averages still hold much of their
    initial values, else None.

    Each moving average keeps decay**step of its initial value (mean 0, variance 1), so below
    step 1 / (1 - decay) (333 at the default 0.997) more than a third of it is still the
    initial value, and inference, which normalizes with the moving statistics, sees features
    unlike the ones training saw: a model that fits its images can then detect nothing.

    Args:
      checkpoint: the checkpoint prefix about to run.
      trained: its params.json (model_dir_params); 'batch_norm_decay' defaults to the
        default (common/defaults.BATCH_NORM_DECAY), 'freeze_batch_norm' (statistics never
        updated: they are the restored ones) to False.
    """
    if trained.get('freeze_batch_norm'):
        return None
    try:
        reader = tf.train.load_checkpoint(checkpoint)
    except (tf.errors.OpError, ValueError):
        return None  # no such checkpoint: the restore that follows says so
    names = reader.get_variable_to_shape_map()
    if not any(name.endswith('/moving_mean') for name in names) or 'global_step' not in names:
        return None
    decay = float(trained.get('batch_norm_decay', defaults.BATCH_NORM_DECAY))
    step = int(reader.get_tensor('global_step'))
    if decay <= 0 or step >= 1.0 / (1.0 - decay):
        return None
    return ('warning: %s is at global step %d and its batch-norm moving averages (decay %g) '
            'still hold %.0f%% of their initial values, so its detections can be far worse '
            'than its training loss suggests; train past step %d, or fit short runs with '
            'train_ssd.py --batch_norm_decay=0.9.'
            % (checkpoint, step, decay, 100 * decay ** step, int(1.0 / (1.0 - decay)) + 1))


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
    the VOC labels of dataset/labels.py.
    """
    if num_classes != len(class_names):
        if source is None:
            raise ValueError('--num_classes=%d does not match the %d VOC labels of '
                             'dataset/labels.py; use --num_classes=%d.'
                             % (num_classes, len(class_names), len(class_names)))
        raise ValueError('--num_classes=%d does not match the %d class names (background '
                         'included) of %s; use --num_classes=%d.'
                         % (num_classes, len(class_names), source, len(class_names)))


def checkpoint_class_names(checkpoint, num_classes=None, log=None):
    """(class names, source) of the model a checkpoint holds: the 'class_names' train_ssd.py
    wrote to the params.json beside it, or the VOC labels (source None) for a checkpoint
    without them (the original SSD.TensorFlow's, or one trained before they were recorded).

    With `num_classes` (the model's, e.g. read from the checkpoint) other than VOC's and no
    names recorded, the names are 'class_1', 'class_2', ... (source: a phrase saying so) and
    `log` is told how to record the real ones (tools.rebuild_params --data_dir)."""
    names = model_dir_params(checkpoint).get('class_names')
    if isinstance(names, list) and len(names) >= 2:
        return [str(n) for n in names], os.path.join(os.path.dirname(str(checkpoint)),
                                                     defaults.PARAMS_NAME)
    if num_classes is not None and num_classes != len(VOC_LABELS):
        folder = os.path.dirname(str(checkpoint))
        notify(log, 'No class names are recorded beside %s (its %d classes are not VOC\'s); '
                    'numbering them. Record them with `python3 -m tools.rebuild_params '
                    '--model_dir %s --data_dir <its records>`.' % (checkpoint, num_classes,
                                                                  folder))
        return ([VOC_LABELS[0]] + ['class_%d' % k for k in range(1, num_classes)],
                'the numbered names of %s' % checkpoint)
    return list(VOC_LABELS), None


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


def exif_orientation(path):
    """The EXIF orientation tag (1..8) of the image file at `path`, 1 when it has none or
    cannot be read (PNG, BMP, GIF, a JPEG without EXIF): what phones write instead of
    turning the pixels of a photo taken on its side."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            value = image.getexif().get(0x0112, 1)
    except Exception:  # pylint: disable=broad-except  (not an image PIL reads: decoded later)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


class ImageDecoder:
    """Decodes image files with tf.io.decode_image, as the demo's input_fn does, turned upright
    by their EXIF orientation (`exif_orientation`, ssd_model.apply_exif_orientation).

    Runs in a private graph and session (works whether or not eager execution is on). Use as
    a context manager or call close().
    """

    def __init__(self):
        from utility import ssd_model
        self._graph = tf.Graph()
        with self._graph.as_default():
            self._data = tf.compat.v1.placeholder(tf.string, [])
            self._orientation = tf.compat.v1.placeholder_with_default(1, [])
            self._image = ssd_model.apply_exif_orientation(
                tf.io.decode_image(self._data, channels=3, expand_animations=False),
                self._orientation)
        self._sess = tf.compat.v1.Session(graph=self._graph)

    def decode(self, path):
        """uint8 [H, W, 3] RGB of the file at `path`, upright (its EXIF orientation applied).

        Raises:
          ValueError: the file cannot be read or is not a JPEG/PNG/BMP/GIF image.
        """
        try:
            with open(path, 'rb') as f:
                data = f.read()
        except OSError as err:
            raise ValueError('cannot read the file (%s)' % err.strerror) from None
        try:
            return self._sess.run(self._image, {self._data: data,
                                                self._orientation: exif_orientation(path)})
        except tf.errors.OpError as err:
            raise ValueError('not a decodable JPEG/PNG/BMP/GIF image (%s)'
                             % _op_error_reason(err)) from None

    def close(self):
        self._sess.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_image_files_input_fn(params, paths, batch_size=1, normalize=True):
    """PREDICT input_fn over image files (decodable ones; see ImageDecoder).

    Features per batch: 'image' float32 [B, S, S, 3] (ssd_model.decode_for_network, S =
    params['train_image_size'], turned upright by the file's EXIF orientation), 'filename'
    string [B] (the path), 'shape' int32 [B, 3] (height, width, 3 of the upright image).
    Files come in `paths` order. normalize=False: images resized only, the TFLite models'
    input (ssd_model.preprocess_eval).
    """
    from utility import ssd_model
    paths = [str(p) for p in paths]
    orientations = [exif_orientation(p) for p in paths]

    def load(path, orientation):
        image, shape = ssd_model.decode_for_network(tf.io.read_file(path), params, orientation,
                                                    normalize)
        return {'image': image, 'filename': path, 'shape': shape}

    def input_fn():
        dataset = tf.data.Dataset.from_tensor_slices((tf.constant(paths, tf.string),
                                                      tf.constant(orientations, tf.int32)))
        return dataset.map(load).batch(int(batch_size)).prefetch(1)

    return input_fn
