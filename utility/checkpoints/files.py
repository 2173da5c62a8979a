"""Checkpoint hygiene of a model directory: readable checkpoints, no leftovers, finite weights.

Pure helpers the training drivers (Estimator and session loop) call before and after
training, holding the trainer lock (lock.py); none reads flags, none acts at import. Each
problem ends in a ValueError with one line naming the cause, the file and the fix, or in a
notice passed to `log`.

* `remove_stale_temp(model_dir)`: deletes `model.ckpt-N_temp*` leftovers of a killed save.
* `newest_readable_checkpoint(model_dir)`: falls back from an unreadable newest checkpoint
  to the newest readable one and points the `checkpoint` state file at it.
* `checkpoint_is_finite(prefix)`, `roll_back_to_finite(model_dir, nan_step=...)`: after a
  NaN stop, makes the newest checkpoint with finite (and sane) weights the one training
  resumes from.
* `describe_full_disk(model_dir, error)`: a save that hit ENOSPC, in one line naming the
  checkpoint, the folder, the free space and the intact checkpoint to resume from.
* `list_checkpoints`, `checkpoint_problem`, `has_checkpoint`: what is there and whether it reads.

Call order in a driver (all after parsing flags, before building the model)::

    with lock.ModelDirLock(model_dir, log=log):
        files.remove_stale_temp(model_dir, log)
        latest = files.newest_readable_checkpoint(model_dir, log)
        params_file.check_params_identity(model_dir, params, defaults=DEFAULT_PARAMS,
                                          checkpoint=latest)
        params_file.save_params(params, model_dir)
        ... train ...
"""
import os
import re
import shutil

import numpy as np
import tensorflow as tf

from common.console import notify as _log
from utility.checkpoints.locate import newest_first, step_in_name

STATE_NAME = 'checkpoint'
UNREADABLE_SUFFIX = '.unreadable'
NONFINITE_SUFFIX = '.nonfinite'
# Weights larger than this in magnitude count as diverged (VGG/SSD weights and their
# momentum stay many orders of magnitude below it).
DIVERGED_ABS = 1e8


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


# ----------------------------------------------------------------------------- full disk


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


def has_checkpoint(model_dir):
    """True when `model_dir` has a `checkpoint` state file or any `*.index` file."""
    return (tf.io.gfile.exists(os.path.join(model_dir, STATE_NAME))
            or bool(tf.io.gfile.glob(os.path.join(model_dir, '*.index'))))
