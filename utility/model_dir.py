"""The model directory's guardian: readable checkpoints, one identity.

Pure helpers the training drivers (Estimator and session loop) call before and after
training; none reads flags, none acts at import. Each problem ends in a ValueError with one
line naming the cause, the file and the fix, or in a notice passed to `log`.

* `remove_stale_temp(model_dir)`: deletes `model.ckpt-N_temp*` leftovers of a killed save.
* `newest_readable_checkpoint(model_dir)`: falls back from an unreadable newest checkpoint
  to the newest readable one and points the `checkpoint` state file at it.
* `checkpoint_is_finite(prefix)`, `roll_back_to_finite(model_dir, nan_step=...)`: after a
  NaN stop, makes the newest checkpoint with finite (and sane) weights the one training
  resumes from.
* `describe_full_disk(model_dir, error)`: a save that hit ENOSPC, in one line naming the
  checkpoint, the folder, the free space and the intact checkpoint to resume from.
* `check_params_identity(model_dir, params, checkpoint=...)`: compares the settings that
  shape the graph with `<model_dir>/params.json` and with what the checkpoint's variables say
  (backbone, class count, anchors per cell, model scope) before a run reuses a checkpoint;
  `check_stored_params` refuses a params.json without REQUIRED_KEYS or one that disagrees with
  the checkpoint (eval, demo and export use it too); the repair is REBUILD_COMMAND.

Call order in a driver (all after parsing flags, before building the model)::

    with lock.ModelDirLock(model_dir, log=log):  # utility/checkpoints/lock.py
        model_dir.remove_stale_temp(model_dir, log)
        latest = model_dir.newest_readable_checkpoint(model_dir, log)
        model_dir.check_params_identity(model_dir, params, defaults=DEFAULT_PARAMS,
                                        checkpoint=latest)
        save_params(params, model_dir)
        ... train ...
"""
import json
import os
import re
import shutil

import numpy as np
import tensorflow as tf

from dataset.helpers import notify as _log
from utility import checkpoint_utils
from utility.checkpoints.locate import newest_first, step_in_name

PARAMS_NAME = 'params.json'
STATE_NAME = 'checkpoint'
UNREADABLE_SUFFIX = '.unreadable'
NONFINITE_SUFFIX = '.nonfinite'
# Weights larger than this in magnitude count as diverged (VGG/SSD weights and their
# momentum stay many orders of magnitude below it).
DIVERGED_ABS = 1e8
# The params that change the graph's variables: a checkpoint trained with other values
# cannot be restored. data_format is not among them: tf_slim stores convolution kernels as
# [h, w, in, out] in both layouts, so a model trained channels_first resumes channels_last.
GRAPH_KEYS = ('backbone', 'num_classes', 'train_image_size', 'model_scope', 'anchor_preset',
              'anchor_spec')
_FLAG_OF = {'backbone': '--backbone', 'num_classes': '--num_classes',
            'train_image_size': '--train_image_size', 'model_scope': '--model_scope',
            'anchor_preset': '--anchor_preset'}


# ----------------------------------------------------------------------------- temp files


_TEMP_RE = re.compile(r'^.+-\d+_temp(_[0-9a-fA-F]+)?(\..*)?$')
_STATE_TEMP_RE = re.compile(r'^%s\.tmp[0-9a-fA-F]{32}$' % STATE_NAME)


def _size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(root, name))
                   for root, _dirs, names in os.walk(path) for name in names)
    return os.path.getsize(path)


def remove_stale_temp(model_dir, log=None):
    """Deletes what a killed checkpoint save leaves in `model_dir`: `model.ckpt-N_temp*`
    folders and files, and half-written `checkpoint.tmp<hex>` state files.

    Call it while holding `ModelDirLock` (a running trainer's save in progress looks the
    same). Returns the removed paths (sorted) and logs one line naming them and the space
    freed.
    """
    if not os.path.isdir(model_dir):
        return []
    removed, freed = [], 0
    for name in sorted(os.listdir(model_dir)):
        if not (_TEMP_RE.match(name) or _STATE_TEMP_RE.match(name)):
            continue
        path = os.path.join(model_dir, name)
        try:
            freed += _size(path)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except OSError as e:
            _log(log, 'Could not remove the leftover %s (%s).' % (path, e.strerror))
            continue
        removed.append(path)
    if removed:
        _log(log, 'Removed %d leftover(s) of an interrupted checkpoint save (%.1f MB): %s.'
             % (len(removed), freed / 1e6, ', '.join(os.path.basename(p) for p in removed)))
    return removed


# ----------------------------------------------------------------------------- checkpoints


def _step_of(prefix):
    step = step_in_name(prefix)
    return -1 if step is None else step


def _checkpoint_state(model_dir):
    """The `checkpoint` state proto, or None when missing or unreadable."""
    try:
        return tf.train.get_checkpoint_state(model_dir)
    except Exception:  # a garbled state file: we rewrite it
        return None


def list_checkpoints(model_dir):
    """Checkpoint prefixes of `model_dir`, newest first: those the `checkpoint` state file
    lists and every `*.index` file, ordered by the step in the name, then by time."""
    prefixes = set()
    state = _checkpoint_state(model_dir)
    if state is not None:
        for path in list(state.all_model_checkpoint_paths) + [state.model_checkpoint_path]:
            if path:
                prefixes.add(os.path.normpath(path if os.path.isabs(path)
                                              else os.path.join(model_dir, path)))
    for index in tf.io.gfile.glob(os.path.join(model_dir, '*.index')):
        prefixes.add(os.path.normpath(index[:-len('.index')]))

    return newest_first(prefixes)


def _inspect(prefix, max_abs=None, check_values=False):
    """(kind, reason) for a checkpoint: (None, None) when every tensor reads (and, with
    `check_values`, every float tensor is finite and at most `max_abs` in magnitude);
    ('unreadable', why) or ('nonfinite', why) otherwise."""
    if not os.path.exists(prefix + '.index'):
        return 'unreadable', 'its .index file is missing'
    try:
        reader = tf.train.load_checkpoint(prefix)
        dtypes = reader.get_variable_to_dtype_map()
    except Exception as e:  # TF raises several types for a bad index
        return 'unreadable', 'it cannot be opened (%s)' % _one_line(e)
    for name in sorted(dtypes):
        try:
            value = reader.get_tensor(name)
        except Exception as e:  # truncated data: IndexError; bad checksum: OpError
            return 'unreadable', 'variable %s cannot be read (%s)' % (name, _one_line(e))
        if not check_values or not dtypes[name].is_floating:
            continue
        value = np.asarray(value)
        if value.size and not np.all(np.isfinite(value)):
            return 'nonfinite', 'variable %s holds NaN or Inf' % name
        if max_abs is not None and value.size and np.max(np.abs(value)) > max_abs:
            return 'nonfinite', ('variable %s holds %.3g (diverged: beyond %.0e)'
                                 % (name, float(np.max(np.abs(value))), max_abs))
    return None, None


def _one_line(error):
    text = getattr(error, 'message', None) or str(error) or type(error).__name__
    return ' '.join(text.split())[:200]


def checkpoint_problem(prefix):
    """Why the checkpoint `prefix` cannot be restored (a short phrase), or None when every
    variable's tensor reads back (sizes and checksums verified by TensorFlow)."""
    return _inspect(prefix)[1]


def checkpoint_is_finite(prefix, max_abs=None):
    """True when the checkpoint reads and all its float tensors (weights, optimizer slots)
    are finite and, if `max_abs` is given, at most `max_abs` in magnitude."""
    return _inspect(prefix, max_abs=max_abs, check_values=True)[0] is None


def _set_aside(prefix, suffix):
    """Renames every file of checkpoint `prefix` to `<file><suffix>`; returns their count."""
    directory, base = os.path.split(prefix)
    moved = 0
    for name in os.listdir(directory or '.'):
        if name.startswith(base + '.') and not name.endswith((UNREADABLE_SUFFIX,
                                                              NONFINITE_SUFFIX)):
            path = os.path.join(directory, name)
            os.replace(path, path + suffix)
            moved += 1
    return moved


def _write_state(model_dir, chosen, kept):
    """Points the `checkpoint` state file at `chosen` (kept: older good prefixes); removes
    the state file when `chosen` is None."""
    state_path = os.path.join(model_dir, STATE_NAME)
    if chosen is None:
        if os.path.exists(state_path):
            os.remove(state_path)
        return
    rel = lambda p: os.path.relpath(p, model_dir)  # noqa: E731
    older = sorted((p for p in kept if p != chosen), key=_step_of)
    tf.compat.v1.train.update_checkpoint_state(
        model_dir, rel(chosen), all_model_checkpoint_paths=[rel(p) for p in older + [chosen]])


def _state_points_at(model_dir, prefix, kept):
    state = _checkpoint_state(model_dir)
    if state is None:
        return False
    resolve = lambda p: os.path.normpath(p if os.path.isabs(p)  # noqa: E731
                                         else os.path.join(model_dir, p))
    listed = [resolve(p) for p in state.all_model_checkpoint_paths]
    return resolve(state.model_checkpoint_path) == prefix and set(listed) <= set(kept) | {
        prefix}


def newest_readable_checkpoint(model_dir, log=None, repair=True):
    """The newest checkpoint of `model_dir` whose every tensor reads back, made the one
    training resumes from.

    Checks the checkpoints newest first (`list_checkpoints`). Each unreadable one newer
    than the first readable one is named in a notice and, with `repair`, its files are
    renamed to `*.unreadable` (kept for inspection, never deleted). With `repair` the
    `checkpoint` state file is rewritten to name the readable one when it named anything
    else, so `tf.train.latest_checkpoint`, the Estimator and MonitoredTrainingSession all
    resume from it. Without `repair` (eval, demo) nothing on disk changes.

    Returns:
      The checkpoint prefix (a path), or None when `model_dir` holds no checkpoint.
    Raises:
      ValueError: checkpoints exist but none reads; the message names the newest, why,
        and the fix. Nothing is moved in that case.
    """
    candidates = list_checkpoints(model_dir) if os.path.isdir(model_dir) else []
    if not candidates:
        return None
    problems = []
    for prefix in candidates:
        reason = checkpoint_problem(prefix)
        if reason is None:
            break
        problems.append((prefix, reason))
    else:
        raise ValueError('No checkpoint in %s can be read: the newest, %s, fails because %s; '
                         'restore the folder from a backup, or move it away (or pass a new '
                         '--model_dir) to start again.'
                         % (model_dir, os.path.basename(problems[0][0]), problems[0][1]))
    chosen = prefix
    for bad, reason in problems:
        if repair and _set_aside(bad, UNREADABLE_SUFFIX):
            _log(log, 'Checkpoint %s cannot be read (%s); its files were renamed to '
                      '*%s (delete them when you no longer need them).'
                 % (bad, reason, UNREADABLE_SUFFIX))
        else:
            _log(log, 'Checkpoint %s cannot be read (%s).' % (bad, reason))
    kept = [p for p in candidates if p not in dict(problems)]
    if repair and not _state_points_at(model_dir, chosen, kept):
        _write_state(model_dir, chosen, [p for p in kept if os.path.exists(p + '.index')])
    if problems:
        _log(log, 'Resuming from %s, the newest readable checkpoint (step %d).'
             % (chosen, _step_of(chosen)))
    return chosen


def roll_back_to_finite(model_dir, log=None, nan_step=None, max_abs=DIVERGED_ABS):
    """After a NaN/Inf stop: makes the newest checkpoint with sane weights the one training
    resumes from, so a rerun does not fail again at once.

    Checkpoints newest first are set aside (files renamed to `*.nonfinite`, or
    `*.unreadable`) while they are saved at or after `nan_step` (their weights gave the
    non-finite loss), cannot be read, hold a NaN/Inf float tensor (weights or optimizer
    slots), or hold a value beyond `max_abs` in magnitude (diverged though finite, e.g.
    1e30 after a huge learning rate). The `checkpoint` state file is pointed at the first
    one that passes, or removed when none does.

    Args:
      model_dir: the model directory (hold `ModelDirLock`).
      log: callable for one notice per checkpoint set aside.
      nan_step: global step at which the loss was not finite, if known.
      max_abs: magnitude beyond which a weight counts as diverged (None: finiteness only).
    Returns:
      (prefix or None, one sentence saying what was done and what a rerun will do).
    """
    candidates = list_checkpoints(model_dir) if os.path.isdir(model_dir) else []
    chosen, moved = None, []
    for prefix in candidates:
        if nan_step is not None and _step_of(prefix) >= nan_step:
            kind, reason = 'nonfinite', 'saved at step %d, at or after the non-finite loss' % (
                _step_of(prefix))
        else:
            kind, reason = _inspect(prefix, max_abs=max_abs, check_values=True)
        if kind is None:
            chosen = prefix
            break
        suffix = UNREADABLE_SUFFIX if kind == 'unreadable' else NONFINITE_SUFFIX
        if _set_aside(prefix, suffix):
            moved.append((prefix, reason, suffix))
            _log(log, 'Set checkpoint %s aside as *%s: %s.' % (prefix, suffix, reason))
    kept = [p for p in candidates if p not in [m[0] for m in moved]
            and os.path.exists(p + '.index')]
    if moved or (chosen is not None and not _state_points_at(model_dir, chosen, kept)):
        _write_state(model_dir, chosen, kept)
    names = ', '.join('%s (*%s)' % (os.path.basename(p), s) for p, _r, s in moved)
    done = 'set aside %s; ' % names if moved else ''
    if chosen is not None:
        return chosen, ('%srerunning resumes from %s (step %d), whose weights are all finite.'
                        % (done, chosen, _step_of(chosen)))
    if candidates:
        return None, ('%sno checkpoint with finite weights is left in %s, so rerunning starts '
                      'training afresh (from --checkpoint_path, or from scratch).'
                      % (done, model_dir))
    return None, ('no checkpoint had been written to %s, so rerunning starts training '
                  'afresh.' % model_dir)


# ----------------------------------------------------------------------------- identity


NO_SPACE = 'No space left on device'
_NO_SPACE_PATH = re.compile(r'(\S+?);? ' + NO_SPACE)


def describe_full_disk(model_dir, error_text, log=None):
    """One line for a checkpoint save that ran out of disk space, or None for other errors.

    Removes the save's `model.ckpt-N_temp` leftovers (`remove_stale_temp`: the space they
    took is free again), then names the checkpoint that failed, `model_dir`, the space free
    there now and the newest intact checkpoint (`newest_readable_checkpoint`, nothing
    renamed), from which the same command resumes. Call it on the chief, still holding
    `ModelDirLock`.

    Args:
      error_text: the failed save's error message (TensorFlow's names the file being written
        and says 'No space left on device').
    """
    text = str(error_text or '')
    if NO_SPACE not in text:
        return None
    match = _NO_SPACE_PATH.search(text)
    where = match.group(1) if match else ''
    temp = re.search(r'([^/\\\s]+?-\d+)_temp', where)
    what = ('checkpoint %s' % temp.group(1) if temp
            else 'a checkpoint' if 'SaveV2' in text or not where
            else os.path.basename(where))
    remove_stale_temp(model_dir, log)
    try:
        free = '%.1f MB free there now' % (shutil.disk_usage(model_dir).free / 1e6)
    except OSError:
        free = 'free space unknown'
    try:
        intact = newest_readable_checkpoint(model_dir, log, repair=False)
    except ValueError:
        intact = None
    resume = ('%s (global step %d) is intact and the same command resumes from it'
              % (os.path.basename(intact), _step_of(intact)) if intact
              else 'no checkpoint was saved before, so the same command starts again from '
                   'the beginning')
    return ('No space left on device while saving %s in %s (%s); %s: free some space there '
            '(or lower --keep_checkpoint_max, or pass a --model_dir on a larger disk with a '
            'copy of this folder), then run the same command again.'
            % (what, model_dir, free, resume))
# The keys every params.json train_ssd.py writes has and a resumed run relies on; a file without
# them (e.g. replaced by `{}`) is refused rather than read as the defaults.
REQUIRED_KEYS = ('num_classes', 'anchor_spec')
# The repair every identity error advises: params.json rebuilt from the checkpoint itself.
REBUILD_COMMAND = 'python3 -m tools.rebuild_params --model_dir %s'


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
    `defaults`) and a checkpoint's `identity` (checkpoint_utils.ssd_checkpoint_identity)
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
      identity: checkpoint_utils.ssd_checkpoint_identity of `checkpoint`, or None.
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
        says = ('says' if key not in GRAPH_KEYS or key in stored
                else 'has no %s, read as the default,' % key)
        raise ValueError('%s %s %s=%s but checkpoint %s holds %s (%s=%s); rebuild %s from the '
                         'checkpoint with `%s`.'
                         % (path, says, key, json.dumps(mine), checkpoint,
                            checkpoint_utils.describe_identity(identity), key,
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


def has_checkpoint(model_dir):
    """True when `model_dir` has a `checkpoint` state file or any `*.index` file."""
    return (tf.io.gfile.exists(os.path.join(model_dir, STATE_NAME))
            or bool(tf.io.gfile.glob(os.path.join(model_dir, '*.index'))))


def check_params_identity(model_dir, new_params, defaults=None, keys=GRAPH_KEYS,
                          checkpoint=None):
    """Refuses to resume a checkpoint with settings that change the graph.

    Run it BEFORE params.json is rewritten. Compares `keys` (num_classes,
    train_image_size, anchor_preset, anchor_spec, model_scope, backbone; not data_format, which does not
    change variable shapes) of `new_params` with `<model_dir>/params.json`, when both that
    file and a checkpoint exist. A key missing on one side takes its value from
    `defaults` (e.g. the model's DEFAULT_PARAMS, so an older params.json without
    'backbone' reads as the default backbone); a key missing on both sides is skipped.

    With `checkpoint` (the prefix the run resumes from), the model it holds is read from its
    variables (checkpoint_utils.ssd_checkpoint_identity: backbone, class count, anchors per
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
    identity = checkpoint_utils.ssd_checkpoint_identity(checkpoint) if checkpoint else None
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
                            checkpoint_utils.describe_identity(identity), key,
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
        raise ValueError('--model_dir %s holds a checkpoint trained with %s=%s (%s), but this '
                         'run has %s=%s; %s, or pass a new --model_dir to train another model.'
                         % (model_dir, name, show(old_value), path, name, show(new_value),
                            fix))
    return stored
