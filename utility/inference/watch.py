"""Watch mode of eval_ssd.py: evaluate each checkpoint as training writes it.

`watch_checkpoints` polls a model directory, calls an `evaluate(checkpoint) -> summary`
function (eval_ssd.py's per-checkpoint evaluation, which writes metrics.json) for every new
checkpoint in step order, and after each one

* appends one JSON line to `<output_dir>/metrics_history.jsonl` (`append_history`):
  {"global_step", "checkpoint", "map_07", "map_area", "ap_07": {class: AP}, "ap_area": {...},
   "num_detections", "evaluated_at"}; metrics.json keeps the full summary of the latest one;
* writes TensorBoard scalars at the checkpoint's global step in `<model_dir>/eval`
  (`ScalarWriter`): 'mAP/VOC07', 'mAP/VOC2010', 'AP_VOC07/<class>', 'AP_VOC2010/<class>' (VOC
  metric) and 'COCO/AP', 'COCO/AP50', 'COCO/AP75', 'COCO/AP_small', ... 'COCO/AR100' (COCO
  metric; the history line holds them under "coco", and AP@[.5:.95] per class under
  "coco_ap", written as 'AP_COCO/<class>'), so that TensorBoard on <model_dir> shows
  train and eval curves side by side.

A checkpoint that the trainer deletes (its --keep_checkpoint_max rotation) between the listing
and the restore is skipped with a notice; the watch goes on with the newest checkpoint there is.
It stops when a checkpoint at or past `max_step` has been evaluated, or when no new
checkpoint appeared for `timeout_secs`.
"""
import json
import os
import time

import tensorflow as tf

from utility.checkpoints import locate

HISTORY_FILE = 'metrics_history.jsonl'


def checkpoint_step(prefix):
    """Global step of a checkpoint prefix ('.../model.ckpt-120' -> 120), read from its name
    or, failing that, from its 'global_step' variable; None when neither has it."""
    step = locate.step_in_name(prefix)
    if step is not None:
        return step
    try:
        return int(tf.train.load_checkpoint(prefix).get_tensor('global_step'))
    except (tf.errors.OpError, ValueError):
        return None


def list_checkpoints(model_dir):
    """[(global_step, prefix)] of the complete checkpoints in `model_dir`, by step.

    A checkpoint counts once its '.index' file exists (TF writes it after the data files).
    """
    found = {}
    for index in tf.io.gfile.glob(os.path.join(model_dir, '*.index')):
        prefix = index[:-len('.index')]
        step = checkpoint_step(prefix)
        if step is not None:
            found[step] = prefix
    return sorted(found.items())


def history_record(summary, checkpoint, step):
    """The one-line history entry of an eval summary (evaluation/metrics.run_metrics): the VOC
    figures when the VOC metric ran (None otherwise) and the COCO stats under 'coco' when the
    COCO metric ran."""
    classes = [c for c in summary.get('classes', []) if c['ap_07'] is not None]
    record = {
        'global_step': int(step),
        'checkpoint': checkpoint,
        'map_07': summary.get('map_07'),
        'map_area': summary.get('map_area'),
        'ap_07': {c['name']: c['ap_07'] for c in classes},
        'ap_area': {c['name']: c['ap_area'] for c in classes},
        'num_detections': summary.get('num_detections',
                                      summary.get('coco', {}).get('num_detections')),
        'evaluated_at': summary.get('evaluated_at') or time.strftime('%Y-%m-%d %H:%M:%S'),
    }
    if 'coco' in summary:
        from evaluation.coco_metric import STAT_NAMES
        record['coco'] = {name: summary['coco'][name] for name in STAT_NAMES}
        record['coco_ap'] = {name: ap for name, ap in
                             summary['coco'].get('ap_per_class', {}).items() if ap is not None}
    return record


def append_history(path, record):
    """Appends `record` as one JSON line to `path` (created with its folder); returns path."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, 'a', encoding='utf-8') as f:
        f.write(json.dumps(record, allow_nan=False, sort_keys=True) + '\n')
    return path


def read_history(path):
    """The records of a metrics_history.jsonl file, oldest first ([] when absent)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding='utf-8') as f:
        return [json.loads(line) for line in f if line.strip()]


def scalar_values(record):
    """{tag: value} TensorBoard scalars of a history record."""
    values = {'mAP/VOC07': record['map_07'], 'mAP/VOC2010': record['map_area']}
    for name, value in (record.get('coco') or {}).items():
        values['COCO/' + name] = value
    for name, ap in record['ap_07'].items():
        values['AP_VOC07/' + name] = ap
    for name, ap in record['ap_area'].items():
        values['AP_VOC2010/' + name] = ap
    for name, ap in (record.get('coco_ap') or {}).items():
        values['AP_COCO/' + name] = ap
    return {tag: float(v) for tag, v in values.items() if v is not None}


class ScalarWriter:
    """Writes {tag: float} TensorBoard scalars at a step into one events file in `event_dir`.

    One writer per session: several writers opened in the same second would write files of
    the same name. Built in a private graph, so it works whether or not the caller runs
    eagerly. Use as a context manager, or call close().
    """

    def __init__(self, event_dir):
        tf.io.gfile.makedirs(event_dir)
        with tf.Graph().as_default():
            self._writer = tf.compat.v1.summary.FileWriter(event_dir)

    def write(self, step, values):
        summary = tf.compat.v1.Summary(value=[
            tf.compat.v1.Summary.Value(tag=tag, simple_value=value)
            for tag, value in sorted(values.items())])
        self._writer.add_summary(summary, global_step=int(step))
        self._writer.flush()

    def close(self):
        self._writer.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def watch_checkpoints(model_dir, evaluate, output_dir, event_dir=None, interval_secs=30.0,
                      timeout_secs=600.0, max_step=None, log=print, sleep=time.sleep,
                      clock=time.time):
    """Evaluates each new checkpoint of `model_dir` as it appears; returns the history records.

    Args:
      model_dir: the training directory to poll.
      evaluate: callable(checkpoint prefix) -> eval summary dict (evaluation/report.summarize).
      output_dir: where metrics_history.jsonl is appended.
      event_dir: TensorBoard folder for the scalars; default <model_dir>/eval.
      interval_secs: polling period.
      timeout_secs: stop after this long without a new checkpoint (counted from the start,
        then from the last checkpoint seen).
      max_step: stop once a checkpoint at or past this global step was evaluated (None or 0:
        unknown; only the timeout stops).
      log, sleep, clock: injectable for tests.
    """
    event_dir = event_dir or os.path.join(model_dir, 'eval')
    history_path = os.path.join(output_dir, HISTORY_FILE)
    with ScalarWriter(event_dir) as writer:
        return _watch(model_dir, evaluate, history_path, event_dir, writer, interval_secs,
                      timeout_secs, max_step, log, sleep, clock)


def _watch(model_dir, evaluate, history_path, event_dir, writer, interval_secs, timeout_secs,
           max_step, log, sleep, clock):
    done = set()
    records = []
    last_new = clock()
    log('Watching %s for checkpoints (every %gs; stops %gs after the last new one%s).'
        % (model_dir, interval_secs, timeout_secs,
           ' or at global step %d' % max_step if max_step else ''))
    while True:
        pending = [(s, p) for s, p in list_checkpoints(model_dir) if s not in done]
        vanished = False
        for step, prefix in pending:
            done.add(step)
            if not tf.io.gfile.exists(prefix + '.index'):
                log('Checkpoint %s was deleted before it could be evaluated; skipped.' % prefix)
                continue
            summary = _evaluate_unless_deleted(evaluate, prefix)
            if summary is None:
                newest = list_checkpoints(model_dir)
                done.update(s for s, _ in newest[:-1])
                log('Checkpoint %s was deleted while it was being evaluated (the trainer keeps '
                    'only its --keep_checkpoint_max newest); skipped, going on with %s.'
                    % (prefix, newest[-1][1] if newest else 'the next one written'))
                vanished = True
                break
            record = history_record(summary, prefix, step)
            append_history(history_path, record)
            writer.write(step, scalar_values(record))
            records.append(record)
            figures = []
            if record['map_07'] is not None:
                figures.append('mAP VOC07 %.4f, VOC2010+ %.4f'
                               % (record['map_07'], record['map_area'] or 0.0))
            if record.get('coco'):
                figures.append('COCO AP %.4f, AP50 %.4f'
                               % (record['coco']['AP'], record['coco']['AP50']))
            log('global step %d: %s (history: %s, TensorBoard: %s)'
                % (step, '; '.join(figures) or 'mAP VOC07 0.0000', history_path, event_dir))
            if max_step and step >= max_step:
                log('Reached global step %d (>= %d): watch finished.' % (step, max_step))
                return records
        if pending:
            last_new = clock()
        if vanished:
            continue
        if clock() - last_new >= timeout_secs:
            log('No new checkpoint in %s for %gs: watch finished after %d evaluation(s).'
                % (model_dir, timeout_secs, len(records)))
            return records
        sleep(interval_secs)


def _evaluate_unless_deleted(evaluate, prefix):
    """`evaluate(prefix)`, or None when it failed because the checkpoint's files were deleted
    meanwhile (a trainer's --keep_checkpoint_max rotation); any other failure propagates."""
    try:
        return evaluate(prefix)
    except (ValueError, tf.errors.OpError):
        if tf.io.gfile.exists(prefix + '.index') and tf.io.gfile.glob(prefix + '.data-*'):
            raise
        return None
