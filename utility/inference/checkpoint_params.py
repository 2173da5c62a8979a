"""The checkpoint eval, demo and export run, and the params and class names to run it with:
`checkpoint_model` is the one sequence (params.json beside the checkpoint, the checkpoint's
own variables, --num_classes and the class names, checked against each other)."""
import os
import sys

import tensorflow as tf

from common import defaults
from common.console import notify
from dataset.labels import VOC_LABELS
from utility.checkpoints import locate, original_layout, params_file, restore


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
