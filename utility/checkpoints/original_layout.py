"""Full SSD checkpoints of the original SSD.TensorFlow code, read in this project's names.

Full SSD300 checkpoints written by the original SSD.TensorFlow code (HiKapok's, DeepSparkHub's)
name the same layers differently (Keras / tf.layers 'kernel'/'bias'):

  this project (model scope S)                  original, TF1 ('original_tf1')
  S/conv1/conv1_1/weights                       S/conv1/conv1_1/kernel
  S/fc6/weights, S/fc7/biases                   S/fc6/kernel, S/fc7/bias
  S/conv4_3_scale/weights                       S/conv4_3_scale/weights
  S/additional_layers/conv8/conv8_1/weights     S/additional_layers/conv8/conv8_1/kernel
  S/multibox_head/loc_0/biases                  S/multibox_head/loc_0/bias

Under TF 2.x the same code loses the block scopes of layers built in one variable_scope and
called in another ('original_tf2'): S/conv1_1/kernel, S/conv8_1/kernel (fc6, fc7,
conv4_3_scale and multibox_head names are unchanged). Shapes are identical (HWIO kernels in
both data formats; the heads' cls_i/loc_i index is the source layer: 0 conv4_3, 1 fc7,
2 conv8, 3 conv9, 4 conv10, 5 conv11, and both codes reshape the heads in NHWC order), so a
checkpoint converts by renaming alone.

* `detect_original_layout(names)`, `original_to_project_name`, `original_name_map`: the
  renaming (pure string work; the restore in restore.py reads an original checkpoint through
  `original_name_map`).
* `convert_original_checkpoint(path, output_prefix)`: writes a project-layout copy
  (tools/convert_original_ssd.py).
* `as_project_checkpoint(prefix)`: the copy eval, demo and export run, converted once into a
  cache.

Importing this module has no side effects.
"""
import hashlib
import os
import re
import tempfile

import numpy as np
import tensorflow as tf

from common import defaults
from utility.checkpoints.files import STATE_NAME
from utility.checkpoints.locate import resolve_checkpoint

ORIGINAL_LAYOUTS = ('original_tf1', 'original_tf2')
# The original code's model scope (its checkpoints' names start with it).
ORIGINAL_SCOPE = 'ssd300'

_VGG_CONV = re.compile(r'^conv([1-5])/conv\1_([1-3])/(kernel|bias)$')
_EXTRA_CONV = re.compile(r'^additional_layers/conv(8|9|10|11)/conv\1_([12])/(kernel|bias)$')
_FLAT_CONV = re.compile(r'^conv([1-9]|10|11)_([1-3])/(kernel|bias)$')
_FC = re.compile(r'^(fc6|fc7)/(kernel|bias)$')
_HEAD = re.compile(r'^multibox_head/((?:loc|cls)_\d+)/(kernel|bias)$')
_PROJECT_SUFFIX = {'kernel': 'weights', 'bias': 'biases'}


def join_scope(scope, rest):
    """'<scope>/<rest>', or `rest` when `scope` is empty."""
    return scope + '/' + rest if scope else rest


def detect_original_layout(names):
    """Which layout of the original SSD.TensorFlow code a checkpoint's variable names use.

    Args:
      names: the checkpoint's variable names (any iterable; e.g. the keys of
        reader.get_variable_to_shape_map()).
    Returns:
      (layout, scope): layout 'original_tf1' (conv1/conv1_1/kernel), 'original_tf2'
      (conv1_1/kernel) or None (this project's layout, a backbone in TF-slim naming, or
      anything else); scope is the original's model scope ('ssd300') or None.
    """
    names = set(names)
    for name in sorted(names):
        if name == 'fc6/kernel' or name.endswith('/fc6/kernel'):
            scope = name[:-len('fc6/kernel')].rstrip('/')
            if join_scope(scope, 'conv1/conv1_1/kernel') in names:
                return 'original_tf1', scope
            if join_scope(scope, 'conv1_1/kernel') in names:
                return 'original_tf2', scope
    return None, None


def original_to_project_name(name, layout, original_scope=ORIGINAL_SCOPE,
                             model_scope=defaults.MODEL_SCOPE):
    """Project variable name of an original checkpoint variable, or None if it is not a network
    weight (global_step, optimizer slots, ...). Pure string mapping (the module's table).

    >>> original_to_project_name('ssd300/conv8_1/bias', 'original_tf2')
    'ssd300/additional_layers/conv8/conv8_1/biases'
    """
    if layout not in ORIGINAL_LAYOUTS:
        raise ValueError('layout=%r is not one of %s; detect it with detect_original_layout.'
                         % (layout, ORIGINAL_LAYOUTS))
    if original_scope:
        if not name.startswith(original_scope + '/'):
            return None
        name = name[len(original_scope) + 1:]
    rest = None
    if name == 'conv4_3_scale/weights':
        rest = name
    elif _FC.match(name):
        layer, kind = _FC.match(name).groups()
        rest = '%s/%s' % (layer, _PROJECT_SUFFIX[kind])
    elif _HEAD.match(name):
        head, kind = _HEAD.match(name).groups()
        rest = 'multibox_head/%s/%s' % (head, _PROJECT_SUFFIX[kind])
    elif layout == 'original_tf1' and (_VGG_CONV.match(name) or _EXTRA_CONV.match(name)):
        rest = name.rsplit('/', 1)[0] + '/' + _PROJECT_SUFFIX[name.rsplit('/', 1)[1]]
    elif layout == 'original_tf2' and _FLAT_CONV.match(name):
        block, index, kind = _FLAT_CONV.match(name).groups()
        block = int(block)
        if block <= 5 and int(index) <= (2 if block <= 2 else 3):
            rest = 'conv%d/conv%d_%s' % (block, block, index)
        elif block >= 8 and int(index) <= 2:
            rest = 'additional_layers/conv%d/conv%d_%s' % (block, block, index)
        if rest is not None:
            rest += '/' + _PROJECT_SUFFIX[kind]
    return join_scope(model_scope, rest) if rest is not None else None


def original_name_map(names, model_scope=defaults.MODEL_SCOPE):
    """{project name: checkpoint name} for a checkpoint in an original layout.

    Args:
      names: the checkpoint's variable names.
      model_scope: the project's model scope (the project names' prefix).
    Returns:
      (layout, scope, name_map): layout/scope as detect_original_layout; name_map empty
      when the layout is not an original one.
    """
    names = list(names)
    layout, scope = detect_original_layout(names)
    if layout is None:
        return None, None, {}
    name_map = {}
    for name in names:
        project = original_to_project_name(name, layout, scope, model_scope)
        if project is not None:
            name_map[project] = name
    return layout, scope, name_map


def _save_tensors(tensors, prefix):
    """Writes {name: numpy array} as a V2 checkpoint at `prefix` (one SaveV2 op, fed arrays)."""
    names = sorted(tensors)
    with tf.Graph().as_default():
        feeds = [tf.compat.v1.placeholder(tf.as_dtype(tensors[n].dtype), tensors[n].shape)
                 for n in names]
        save = tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                                 shape_and_slices=[''] * len(names), tensors=feeds)
        with tf.compat.v1.Session() as session:
            session.run(save, feed_dict=dict(zip(feeds, (tensors[n] for n in names))))


def convert_original_checkpoint(checkpoint_path, output_prefix, model_scope=defaults.MODEL_SCOPE,
                                write_state_file=True):
    """Writes a copy of an original-layout SSD checkpoint in this project's names.

    Args:
      checkpoint_path: the original checkpoint (directory, prefix or file; resolve_checkpoint).
      output_prefix: prefix of the V2 checkpoint to write (its directory is created).
      model_scope: the project's model scope for the written names ('ssd300').
      write_state_file: also write '<output dir>/checkpoint' naming it, so the directory can be
        given as --checkpoint_path.
    Returns:
      (output_prefix, report): report has 'layout', 'scope', 'converted' (number of network
      variables), 'skipped' (checkpoint names that are not network weights: optimizer slots
      and the like), 'global_step' (copied, or 0 when the checkpoint has none).
    Raises:
      ValueError: not an original-layout checkpoint, or one without the multibox heads (a
        backbone only: give it to train_ssd.py --checkpoint_path instead).
    """
    prefix = resolve_checkpoint(checkpoint_path)
    reader = tf.compat.v1.train.NewCheckpointReader(prefix)
    shapes = reader.get_variable_to_shape_map()
    layout, scope, name_map = original_name_map(shapes, model_scope)
    if layout is None:
        raise ValueError('%s is not in the original SSD.TensorFlow layout (no <scope>/fc6/kernel '
                         'with <scope>/conv1/conv1_1/kernel or <scope>/conv1_1/kernel); it needs '
                         'no conversion: pass it as --checkpoint_path directly.' % prefix)
    if not any('/multibox_head/' in name for name in name_map):
        raise ValueError('%s (%s layout) has no multibox_head variables: it is a backbone, not '
                         'a full SSD model. Fine-tune from it with train_ssd.py '
                         '--checkpoint_path=%s instead.' % (prefix, layout, prefix))
    tensors = {project: reader.get_tensor(original) for project, original in name_map.items()}
    step = 0
    if 'global_step' in shapes:
        step = int(reader.get_tensor('global_step'))
    tensors['global_step'] = np.array(step, np.int64)
    output_prefix = os.path.abspath(output_prefix)
    tf.io.gfile.makedirs(os.path.dirname(output_prefix))
    _save_tensors(tensors, output_prefix)
    if write_state_file:
        name = os.path.basename(output_prefix)
        with tf.io.gfile.GFile(os.path.join(os.path.dirname(output_prefix), STATE_NAME),
                               'w') as state:
            state.write('model_checkpoint_path: "%s"\nall_model_checkpoint_paths: "%s"\n'
                        % (name, name))
    mapped = set(name_map.values())
    report = {'layout': layout, 'scope': scope, 'converted': len(name_map),
              'skipped': sorted(n for n in shapes if n not in mapped and n != 'global_step'),
              'global_step': step}
    return output_prefix, report


def _cache_key(prefix):
    """Identity of a checkpoint's contents for the conversion cache: path, size, mtime."""
    parts = [os.path.abspath(prefix)]
    for path in sorted(tf.io.gfile.glob(prefix + '.*')):
        stat = tf.io.gfile.stat(path)
        parts.append('%s:%d:%d' % (os.path.basename(path), stat.length, stat.mtime_nsec))
    return hashlib.sha1('|'.join(parts).encode('utf-8')).hexdigest()[:16]


def as_project_checkpoint(prefix, cache_dir=None, model_scope=defaults.MODEL_SCOPE):
    """A checkpoint prefix the project's model_fn can restore as it is (eval, demo, export).

    A checkpoint in this project's layout (or anything that is not an original SSD.TensorFlow
    checkpoint) comes back unchanged. An original-layout checkpoint (TF1 or TF 2.x names) is
    converted once (convert_original_checkpoint) into `cache_dir` (default: <system temp
    dir>/ssd300_converted_checkpoints), in a folder keyed by the checkpoint's path, size and
    modification time, and the converted prefix is returned; later calls reuse it.

    Args:
      prefix: a checkpoint prefix (checkpoint_params.find_checkpoint's result).
      cache_dir: where converted copies live.
      model_scope: the project's model scope ('ssd300').
    Returns:
      str checkpoint prefix.
    Raises:
      ValueError: an original checkpoint that cannot serve as a full model (see
        convert_original_checkpoint).
    """
    try:
        names = tf.compat.v1.train.NewCheckpointReader(prefix).get_variable_to_shape_map()
    except Exception:  # pylint: disable=broad-except
        return prefix  # unreadable: the caller's restore reports it with its own message
    layout, _ = detect_original_layout(names)
    if layout is None:
        return prefix
    cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), 'ssd300_converted_checkpoints')
    folder = os.path.join(cache_dir, '%s-%s' % (os.path.basename(prefix), _cache_key(prefix)))
    converted = os.path.join(folder, os.path.basename(prefix))
    if tf.io.gfile.exists(converted + '.index'):
        tf.compat.v1.logging.info('Using %s, the project-layout copy of original checkpoint %s.',
                                  converted, prefix)
        return converted
    partial = '%s.tmp-%d' % (folder, os.getpid())
    _, report = convert_original_checkpoint(
        prefix, os.path.join(partial, os.path.basename(prefix)), model_scope)
    try:
        os.replace(partial, folder)
    except OSError:  # another process converted it first
        tf.io.gfile.rmtree(partial)
    tf.compat.v1.logging.info(
        'Checkpoint %s is in the original SSD.TensorFlow layout (%s); converted %d variables to '
        'this project\'s names in %s (skipped: %s).', prefix, report['layout'],
        report['converted'], converted, ', '.join(report['skipped'][:5]) or 'none')
    return converted
