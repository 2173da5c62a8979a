"""The one checkpoint locator: a path a user gives (directory, prefix or file) turned into a
checkpoint prefix, by the same rules for train_ssd.py --checkpoint_path, eval, demo, export
and tools/.

* `locate_checkpoint(path)`: the prefix, or None; reads nothing.
* `resolve_checkpoint(path)`: the prefix, verified readable, or a ValueError naming the path
  and how to get weights.
* `checkpoints_in_directory`, `newest_first`, `step_in_name`: the ordering (highest step in
  the name, then newest file) the locator, checkpoint hygiene (files.py) and
  eval_ssd.py --watch share.

Importing this module has no side effects.
"""
import os
import re

import tensorflow as tf

_HOW_TO_GET_WEIGHTS = (
    'Put the reduced-fc VGG-16 checkpoint in ./model (see model/README.md): use the public '
    'checkpoint, or convert one with `python3 -m tools.convert_vgg_weights --from_slim '
    'vgg_16.ckpt --output model/vgg16_reducedfc` (or `--from_pytorch vgg16_reducedfc.pth`); '
    'for --backbone resnet50/resnet101 pass TF-slim\'s resnet_v1_50.ckpt / resnet_v1_101.ckpt '
    '(same README); pass --checkpoint_path= (empty) to train from scratch instead.')

# The files a V2 checkpoint prefix owns; a user may pass one of these files for the prefix.
_V2_FILE = re.compile(r'(\.index|\.meta|\.data-\d{5}-of-\d{5})$')
# The global step at the end of a checkpoint name ('model.ckpt-120', V1 shard pattern too).
_STEP = re.compile(r'-(\d+)(?:-\?{5}-of-\d{5})?$')

# V1 checkpoint file names: shards '<prefix>-00000-of-00002', single files '<name>.ckpt-<step>'.
_V1_SHARD = re.compile(r'-\d{5}-of-\d{5}$')
_V1_STEP = re.compile(r'\.ckpt-\d+$')



def _is_v2_prefix(prefix):
    return tf.io.gfile.exists(prefix + '.index')


def _v1_path(prefix):
    """The path a V1 checkpoint is read by ('<prefix>' or '<prefix>-?????-of-0000N'), or None."""
    if '?' in prefix:
        return prefix if tf.io.gfile.glob(prefix) else None
    if tf.io.gfile.exists(prefix) and not tf.io.gfile.isdir(prefix):
        return prefix
    shards = tf.io.gfile.glob(prefix + '-?????-of-?????')
    return prefix + '-?????-of-' + shards[0][-5:] if shards else None


def step_in_name(prefix):
    """The global step a checkpoint name ends with ('logs/model.ckpt-120' -> 120), or None."""
    match = _STEP.search(str(prefix))
    return int(match.group(1)) if match else None


def newest_first(prefixes, file_of=lambda prefix: prefix + '.index'):
    """`prefixes` sorted newest first: by the step in the name (none counts as -1), then by
    the modification time of `file_of(prefix)` (missing: oldest), then by name."""
    def key(prefix):
        step = step_in_name(prefix)
        try:
            mtime = tf.io.gfile.stat(file_of(prefix)).mtime_nsec
        except tf.errors.OpError:
            mtime = 0
        return (-1 if step is None else step, mtime, prefix)
    return sorted(prefixes, key=key, reverse=True)


def checkpoints_in_directory(directory):
    """Checkpoint prefixes in `directory`, newest first (`newest_first`), without reading them.

    V2: '<prefix>.index'. V1: a single file '*.ckpt' / '*.ckpt-<step>', or shards
    '<prefix>-00000-of-00002' (returned as the pattern '<prefix>-?????-of-00002').
    """
    found = {}
    for path in tf.io.gfile.glob(os.path.join(directory, '*')):
        base = os.path.basename(path)
        if base.endswith('.index'):
            found.setdefault(path[:-len('.index')], path)
        elif '.data-' in base or base.endswith('.meta') or tf.io.gfile.isdir(path):
            continue
        elif _V1_SHARD.search(base):
            found.setdefault(path[:-len('00000-of-00000')] + '?????' + path[-9:], path)
        elif base.endswith('.ckpt') or _V1_STEP.search(base):
            found.setdefault(path, path)
    return newest_first(found, file_of=found.get)


def locate_checkpoint(path):
    """Turns a path into a checkpoint prefix, or None when there is none; reads nothing.

    The one set of rules for every script (train_ssd.py --checkpoint_path, eval, demo,
    export, tools):
      * a directory: the latest entry of its 'checkpoint' state file when that names an
        existing checkpoint, else the newest checkpoint file in it (`checkpoints_in_directory`:
        highest step in the name, then newest file), with a warning naming the others;
      * a V2 prefix ('logs/model.ckpt-120', its '.index' exists) or one of its files
        ('.index', '.meta', '.data-00000-of-00001'): the prefix;
      * a V1 checkpoint file or the prefix of V1 shards: what TensorFlow reads it by.
    """
    path = os.path.expanduser(str(path))
    if tf.io.gfile.isdir(path):
        state_prefix = tf.train.latest_checkpoint(path)
        if state_prefix and _is_v2_prefix(state_prefix):
            return state_prefix
        if state_prefix and _v1_path(state_prefix):
            return _v1_path(state_prefix)
        candidates = checkpoints_in_directory(path)
        if len(candidates) > 1:
            tf.compat.v1.logging.warning(
                '%s holds %d checkpoints and no usable "checkpoint" file; using the newest, '
                '%s (others: %s).', path, len(candidates), candidates[0],
                ', '.join(candidates[1:]))
        return candidates[0] if candidates else None
    match = _V2_FILE.search(path)
    if match and _is_v2_prefix(path[:match.start()]):
        return path[:match.start()]
    if _is_v2_prefix(path):
        return path
    return _v1_path(path)


def resolve_checkpoint(path):
    """Turns a checkpoint directory, prefix or file into a readable checkpoint prefix.

    Args:
      path: a directory, a prefix (V2 or V1) or one of a V2 checkpoint's files
        (`locate_checkpoint`'s rules).
    Returns:
      the checkpoint prefix (str), verified readable.
    Raises:
      ValueError: path empty, missing, holding no checkpoint, or unreadable; the message says
        how to get the weights and that --checkpoint_path= trains from scratch.
    """
    if not path:
        raise ValueError('No checkpoint path given. ' + _HOW_TO_GET_WEIGHTS)
    path = os.path.expanduser(str(path))
    prefix = locate_checkpoint(path)
    if prefix is None and tf.io.gfile.isdir(path):
        raise ValueError('Checkpoint directory %s holds no checkpoint (no *.index or '
                         '*.ckpt file). %s' % (path, _HOW_TO_GET_WEIGHTS))
    if prefix is None:
        raise ValueError('No checkpoint found at %s (neither a directory, a V2 prefix with a '
                         '.index file, nor a V1 checkpoint file). %s' % (path, _HOW_TO_GET_WEIGHTS))
    try:
        tf.compat.v1.train.NewCheckpointReader(prefix)
    except Exception as error:  # pylint: disable=broad-except
        raise ValueError('Checkpoint %s cannot be read (%s: %s); it may be truncated or not a '
                         'TensorFlow checkpoint. %s' % (prefix, type(error).__name__,
                                                        str(error).strip().splitlines()[0],
                                                        _HOW_TO_GET_WEIGHTS)) from None
    return prefix
