"""The params.json of a model directory, all of it in one place: its name, what defines a
model, writing it, reading it and checking it against the checkpoint it describes.

* `save_params(params, model_dir)`: writes `<model_dir>/params.json` (train_ssd.py,
  tools/rebuild_params.py).
* `load_params(model_dir)`: reads it (None when there is none).
* `MODEL_KEYS`: the one list of what defines a model, used by resume
  (`check_params_identity`) and by eval, demo and export
  (utility/inference/checkpoint_params.inference_params).
* `check_params_identity(model_dir, params, checkpoint=...)`: compares the settings that
  define the model with `<model_dir>/params.json` and with what the checkpoint's variables
  say (backbone, class count, anchors per cell, model scope) before a run reuses a
  checkpoint; `check_stored_params` refuses a params.json without REQUIRED_KEYS or one that
  disagrees with the checkpoint (eval, demo and export use it too); the repair is
  REBUILD_COMMAND.

None reads flags, none acts at import; each problem ends in a ValueError with one line naming
the cause, the file and the fix.
"""
import json
import os

import tensorflow as tf

from common.defaults import PARAMS_NAME
from utility.checkpoints import restore
from utility.checkpoints.files import has_checkpoint

# What defines a model: the params a checkpoint is trained with that every later use of it
# must share (the graph's variables, the anchors its heads predict for, its input size). Resume
# refuses a run that changes one (check_params_identity); eval, demo and export take each from
# the params.json beside the checkpoint unless its flag is given
# (checkpoint_params.inference_params).
# data_format is not among them: tf_slim stores convolution kernels as [h, w, in, out] in both
# layouts, so a model trained channels_first resumes (and runs) channels_last.
MODEL_KEYS = ('backbone', 'num_classes', 'train_image_size', 'model_scope', 'anchor_preset',
              'anchor_spec', 'head')
_FLAG_OF = {'backbone': '--backbone', 'num_classes': '--num_classes', 'head': '--head',
            'train_image_size': '--train_image_size', 'model_scope': '--model_scope',
            'anchor_preset': '--anchor_preset'}
# The keys every params.json train_ssd.py writes has and a resumed run relies on; a file without
# them (e.g. replaced by `{}`) is refused rather than read as the defaults.
REQUIRED_KEYS = ('num_classes', 'anchor_spec')
# The repair every identity error advises: params.json rebuilt from the checkpoint itself.
REBUILD_COMMAND = 'python3 -m tools.rebuild_params --model_dir %s'


def save_params(params, model_dir):
    """Writes the resolved params to `model_dir`/params.json so a run can be understood later."""
    tf.io.gfile.makedirs(model_dir)
    path = os.path.join(model_dir, PARAMS_NAME)
    with tf.io.gfile.GFile(path, 'w') as f:
        json.dump(params, f, indent=2, sort_keys=True, default=str)
    return path


def load_params(model_dir):
    """`<model_dir>/params.json` as a dict, or None when there is none.

    Raises:
      ValueError: the file is not a JSON object; the message names it and the fix.
    """
    path = os.path.join(model_dir, PARAMS_NAME)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, 'r') as f:
        text = f.read()
    try:
        params = json.loads(text)
    except ValueError as e:
        params, error = None, str(e)
    else:
        error = 'not a JSON object'
    if not isinstance(params, dict):
        raise ValueError('%s is unreadable (%s); restore it from a backup, or rebuild it from '
                         'the checkpoint with `%s`.' % (path, error, REBUILD_COMMAND % model_dir))
    return params


def _anchors_per_location(spec):
    from net import anchors as anchor_lib
    return list(anchor_lib.anchors_per_location(spec))


def identity_difference(params, identity, defaults=None):
    """The first identity key on which `params` (a params dict; a key it lacks reads from
    `defaults`) and a checkpoint's `identity` (restore.ssd_checkpoint_identity)
    disagree, as (key, params' value, checkpoint's value), or None when they agree. Keys
    the checkpoint cannot tell (an unrecognised backbone) are skipped."""
    defaults = defaults or {}
    get = lambda key: params.get(key, defaults.get(key))  # noqa: E731
    pairs = [('model_scope', get('model_scope'), identity['model_scope']),
             ('backbone', get('backbone'), identity['backbone']),
             ('num_classes', get('num_classes'), identity['num_classes'])]
    if get('anchor_spec') is not None:
        pairs.append(('anchors per cell', _anchors_per_location(get('anchor_spec')),
                      identity['anchors_per_location']))
    for key, mine, theirs in pairs:
        if mine is not None and theirs is not None and _normalize(mine) != _normalize(theirs):
            return key, mine, theirs
    return None


def check_stored_params(model_dir, stored, identity=None, checkpoint=None, defaults=None):
    """Refuses a params.json that cannot be trusted as the model's identity.

    Args:
      model_dir: the folder holding the params.json (for the messages).
      stored: its contents (load_params), or None when there is none (nothing to check).
      identity: restore.ssd_checkpoint_identity of `checkpoint`, or None.
      checkpoint: the checkpoint prefix the identity was read from (for the messages).
      defaults: values of keys an older params.json lacks (e.g. its default backbone).
    Raises:
      ValueError: one line, when the file lacks REQUIRED_KEYS or disagrees with the
        checkpoint, naming both and the repair (`tools.rebuild_params`).
    """
    if stored is None:
        return
    path = os.path.join(model_dir, PARAMS_NAME)
    fix = REBUILD_COMMAND % model_dir
    missing = [key for key in REQUIRED_KEYS if key not in stored]
    if missing:
        raise ValueError('%s lacks %s, so it cannot say which model %s holds; rebuild it from '
                         'the checkpoint with `%s`.' % (path, ' and '.join(missing), model_dir,
                                                        fix))
    if identity is None:
        return
    difference = identity_difference(stored, identity, defaults)
    if difference:
        key, mine, theirs = difference
        says = ('says' if key not in MODEL_KEYS or key in stored
                else 'has no %s, read as the default,' % key)
        raise ValueError('%s %s %s=%s but checkpoint %s holds %s (%s=%s); rebuild %s from the '
                         'checkpoint with `%s`.'
                         % (path, says, key, json.dumps(mine), checkpoint,
                            restore.describe_identity(identity), key,
                            json.dumps(theirs), PARAMS_NAME, fix))


def _normalize(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _first_difference(key, stored, new):
    """(dotted key, stored value, new value) of the first difference (dicts recursed)."""
    if isinstance(stored, dict) and isinstance(new, dict):
        for sub in sorted(set(stored) | set(new)):
            if stored.get(sub) != new.get(sub):
                return _first_difference('%s.%s' % (key, sub), stored.get(sub), new.get(sub))
    return key, stored, new


def check_params_identity(model_dir, new_params, defaults=None, keys=MODEL_KEYS,
                          checkpoint=None):
    """Refuses to resume a checkpoint with settings that define another model.

    Run it BEFORE params.json is rewritten. Compares `keys` (MODEL_KEYS: backbone,
    num_classes, train_image_size, model_scope, anchor_preset, anchor_spec; not data_format)
    of `new_params` with `<model_dir>/params.json`, when both that
    file and a checkpoint exist. A key missing on one side takes its value from
    `defaults` (e.g. the model's DEFAULT_PARAMS, so an older params.json without
    'backbone' reads as the default backbone); a key missing on both sides is skipped.

    With `checkpoint` (the prefix the run resumes from), the model it holds is read from its
    variables (restore.ssd_checkpoint_identity: backbone, class count, anchors per
    cell, model scope), and params.json (`check_stored_params`: it must have REQUIRED_KEYS
    and agree with the checkpoint) and then `new_params` are checked against it, so a
    missing params.json never lets a run with other settings (the defaults) resume it.

    Returns:
      The stored params (dict), or None when there was nothing to compare.
    Raises:
      ValueError: one line naming the key, the stored value, the new value and the fix.
    """
    if not has_checkpoint(model_dir):
        return None
    stored = load_params(model_dir)
    identity = restore.ssd_checkpoint_identity(checkpoint) if checkpoint else None
    check_stored_params(model_dir, stored, identity, checkpoint, defaults)
    if stored is not None:
        _check_new_params(model_dir, stored, new_params, defaults, keys)
    difference = identity and identity_difference(new_params, identity, defaults)
    if difference:
        key, mine, theirs = difference
        flag = _FLAG_OF.get(key)
        fix = ('pass %s %s to resume it' % (flag, theirs) if flag
               else 'use the settings it was trained with to resume it')
        raise ValueError('--model_dir %s holds checkpoint %s of %s, but this run has %s=%s; %s, '
                         'or pass a new --model_dir to train another model.'
                         % (model_dir, os.path.basename(checkpoint),
                            restore.describe_identity(identity), key,
                            json.dumps(mine), fix))
    return stored


def _check_new_params(model_dir, stored, new_params, defaults, keys):
    """check_params_identity's comparison of params.json (`stored`) with this run's."""
    defaults = defaults or {}
    path = os.path.join(model_dir, PARAMS_NAME)
    for key in keys:
        old = stored.get(key, defaults.get(key))
        new = new_params.get(key, defaults.get(key))
        if old is None or new is None:
            continue
        old, new = _normalize(old), _normalize(new)
        if old == new:
            continue
        name, old_value, new_value = _first_difference(key, old, new)
        flag = _FLAG_OF.get(key)
        show = lambda v: json.dumps(v, sort_keys=True)  # noqa: E731
        fix = ('pass %s %s to resume it' % (flag, old if isinstance(old, (int, float))
                                            else show(old).strip('"')) if flag
               else 'use the settings it was trained with (see %s) to resume it' % path)
        if flag and isinstance(old, dict):  # a fitted anchor preset, recorded whole
            fix = ('pass %s=FILE.json with the "%s" of %s in FILE.json to resume it'
                   % (flag, key, path))
        raise ValueError('--model_dir %s holds a checkpoint trained with %s=%s (%s), but this '
                         'run has %s=%s; %s, or pass a new --model_dir to train another model.'
                         % (model_dir, name, show(old_value), path, name, show(new_value),
                            fix))
    return stored
