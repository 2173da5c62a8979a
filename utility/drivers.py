"""Two ways to run the one model_fn: tf.estimator (TF <= 2.15) and a session loop (any TF 2.x).

`model_fn(features, labels, mode, params) -> ModelSpec` (utility/ssd_model.py) knows nothing about
the driver. The Estimator driver wraps it into an `EstimatorSpec`; the session driver builds the
same graph itself (under the same MirroredStrategy, with the same replica loss scaling, hooks,
Scaffold, Saver and checkpoint layout) and runs it in a `MonitoredTrainingSession`. TensorFlow
2.16 removed `tf.estimator`, so there only the session driver exists; on 2.15 both run, and a
checkpoint written by either resumes, evaluates and exports under the other (same variable
names, same global step, same `checkpoint` state file).

Three jobs, each with the same signature for both drivers:

* `train(...)`: checkpoints every `save_checkpoints_secs` and at the end, keeps
  `keep_checkpoint_max`, summaries every `save_summary_steps`, resumes from the latest
  checkpoint in `model_dir` (the Scaffold's `init_fn`, e.g. the backbone restore, runs only
  when there is none);
* `predict(...)`: a generator of one dict per example, restored from a checkpoint prefix;
* `export_saved_model(...)`: a timestamped SavedModel whose `serving_default` (and `predict`)
  signature maps the serving inputs to `ModelSpec.export_outputs`.

This module imports nothing of the project but its names (common/defaults): it takes the model_fn
and input functions as arguments. It never touches flags.
"""
import collections
import contextlib
import os
import shutil
import time

import tensorflow as tf

from common import defaults

AUTO, ESTIMATOR, SESSION = defaults.DRIVERS


class ModeKeys:
    """The three modes, with tf.estimator.ModeKeys' values (so either may be passed)."""
    TRAIN = 'train'
    EVAL = 'eval'
    PREDICT = 'infer'


# What model_fn returns. Unused fields are None (predictions in TRAIN, train_op in PREDICT...).
#   predictions: dict name -> tensor [B, ...] (PREDICT)
#   loss: scalar tensor (TRAIN, EVAL); train_op: op (TRAIN)
#   eval_metric_ops: dict name -> (value, update_op) (EVAL)
#   export_outputs: dict name -> tensor, the serving signature's outputs (PREDICT)
#   scaffold: tf.compat.v1.train.Scaffold or None; training_hooks: list of SessionRunHook
ModelSpec = collections.namedtuple(
    'ModelSpec', ['mode', 'predictions', 'loss', 'train_op', 'eval_metric_ops',
                  'export_outputs', 'scaffold', 'training_hooks'])
ModelSpec.__new__.__defaults__ = (None,) * 7


def has_estimator():
    """True when this TensorFlow still ships tf.estimator (2.15 and older)."""
    try:
        return hasattr(tf, 'estimator') and hasattr(tf.estimator, 'Estimator')
    except ImportError:  # tensorflow_estimator missing or incompatible
        return False


def resolve_driver(name):
    """'auto' -> 'estimator' where tf.estimator exists, else 'session'.

    Raises:
      ValueError: an unknown name, or 'estimator' on a TensorFlow without it (one line).
    """
    name = (name or AUTO).strip().lower()
    if name not in defaults.DRIVERS:
        raise ValueError('--driver=%s is not one of %s.' % (name, ', '.join(defaults.DRIVERS)))
    if name == AUTO:
        return ESTIMATOR if has_estimator() else SESSION
    if name == ESTIMATOR and not has_estimator():
        raise ValueError('--driver=estimator needs tf.estimator, which TensorFlow %s does not '
                         'have (it was removed in 2.16); use --driver=session or auto, or '
                         'TensorFlow 2.15.' % tf.__version__)
    return name


# ----------------------------------------------------------------------------- Estimator


def as_estimator_model_fn(model_fn):
    """Wraps a ModelSpec-returning model_fn into a tf.estimator model_fn."""
    def estimator_model_fn(features, labels, mode, params):
        spec = model_fn(features, labels, mode, params)
        export_outputs = None
        if spec.export_outputs is not None:
            export_outputs = {'serving_default':
                              tf.estimator.export.PredictOutput(spec.export_outputs)}
        return tf.estimator.EstimatorSpec(
            mode, predictions=spec.predictions, loss=spec.loss, train_op=spec.train_op,
            eval_metric_ops=spec.eval_metric_ops, export_outputs=export_outputs,
            scaffold=spec.scaffold, training_hooks=spec.training_hooks)
    return estimator_model_fn


def _estimator(model_fn, params, model_dir, run_config=None):
    return tf.estimator.Estimator(model_fn=as_estimator_model_fn(model_fn),
                                  model_dir=model_dir, config=run_config, params=params)


# ----------------------------------------------------------------------------- training


def train(driver, model_fn, input_fn, params, model_dir, max_steps, strategy=None,
          session_config=None, save_checkpoints_secs=600, save_summary_steps=100,
          keep_checkpoint_max=5, tf_random_seed=None, hooks=(), cluster=None):
    """Trains until global step `max_steps` (or the input ends); checkpoints in `model_dir`.

    Args:
      driver: 'estimator' or 'session' (see `resolve_driver`).
      model_fn: (features, labels, mode, params) -> ModelSpec.
      input_fn: () -> tf.data.Dataset of (features, labels), batched PER REPLICA: under a
        strategy each replica draws its own batch, as Estimator + MirroredStrategy does.
      strategy: a MirroredStrategy or None (one device).
      save_checkpoints_secs: seconds between checkpoints; a checkpoint is also written when
        the session is created (global step as found) and at the end. None or 0: only then.
      hooks: extra SessionRunHooks (e.g. stop on a signal).
      cluster: None (one machine), or this worker's cluster
        (`utility.training.cluster.Cluster`: spec, task_type, task_index, is_chief; the same
        cluster TF_CONFIG describes) with `strategy`
        a graph-mode MultiWorkerMirroredStrategy configured for it
        (`utility.training.replicas.setup_multi_worker`). Every worker runs this same call; see
        `_train_multi_worker`.
    Returns:
      the latest checkpoint prefix in `model_dir` afterwards.
    """
    if cluster is not None and driver == ESTIMATOR:
        return _train_estimator_multi_worker(
            model_fn, input_fn, params, model_dir, max_steps, strategy, session_config,
            save_checkpoints_secs, save_summary_steps, keep_checkpoint_max, tf_random_seed,
            hooks, cluster)
    if driver == ESTIMATOR:
        run_config = _train_run_config(model_dir, strategy, session_config,
                                       save_checkpoints_secs, save_summary_steps,
                                       keep_checkpoint_max, tf_random_seed)
        estimator = _estimator(model_fn, params, model_dir, run_config)
        estimator.train(input_fn=input_fn, max_steps=max_steps, hooks=list(hooks))
        return tf.train.latest_checkpoint(model_dir)
    return _train_session(model_fn, input_fn, params, model_dir, max_steps, strategy,
                          session_config, save_checkpoints_secs, save_summary_steps,
                          keep_checkpoint_max, tf_random_seed, hooks, cluster)


def _train_run_config(model_dir, strategy, session_config, save_checkpoints_secs,
                      save_summary_steps, keep_checkpoint_max, tf_random_seed):
    """The Estimator's RunConfig for training, with `train`'s checkpoint semantics."""
    return tf.estimator.RunConfig(
        model_dir=model_dir, tf_random_seed=tf_random_seed,
        save_summary_steps=save_summary_steps,
        save_checkpoints_secs=save_checkpoints_secs or None,
        save_checkpoints_steps=None if save_checkpoints_secs else _NEVER,
        keep_checkpoint_max=keep_checkpoint_max, log_step_count_steps=None,
        session_config=session_config, train_distribute=strategy)


def _train_estimator_multi_worker(model_fn, input_fn, params, model_dir, max_steps, strategy,
                                  session_config, save_checkpoints_secs, save_summary_steps,
                                  keep_checkpoint_max, tf_random_seed, hooks, cluster):
    """tf.estimator.train_and_evaluate on every worker, the Estimator's multi-worker path.

    With `train_distribute` set and TF_CONFIG naming a cluster, RunConfig selects the
    distribute coordinator's independent-worker mode: it starts this worker's server and runs
    Estimator.train in a session on it. The chief checkpoints into `model_dir`; the others into
    `model_dir/tmp_worker_<i>` (the save ops must run on every worker). Estimator turns a
    seconds-based checkpoint period into every 1000 steps here (it says so in its log); the
    checkpoint at the end is always written. The EvalSpec is never used: there is no
    evaluator task (evaluate with eval_ssd.py).
    """
    # Estimator deep-copies the strategy (RunConfig.replace, the coordinator); in eager mode
    # that copy would try to place a variable on this worker's not yet started devices.
    with tf.Graph().as_default():
        run_config = _train_run_config(model_dir, strategy, session_config,
                                       save_checkpoints_secs, save_summary_steps,
                                       keep_checkpoint_max, tf_random_seed)
        estimator = _estimator(model_fn, params, model_dir, run_config)
        hooks = list(hooks) + [_NoSessionRecoveryHook(cluster)]
        tf.estimator.train_and_evaluate(
            estimator,
            tf.estimator.TrainSpec(input_fn=input_fn, max_steps=max_steps, hooks=hooks),
            tf.estimator.EvalSpec(input_fn=input_fn, steps=1))
    return tf.train.latest_checkpoint(model_dir)


# tf.compat.v1.train.global_step() and the schedules read the global step through the op
# cached under this collection (training_util.GLOBAL_STEP_READ_KEY, not public API): as the
# Estimator does, cache one cross-replica read so replicas do not each read the variable.
_GLOBAL_STEP_READ_KEY = 'global_step_read_op_cache'

# A CheckpointSaverHook with this period saves only when the session starts and at the end.
_NEVER = 2 ** 62


class _IteratorInitializerHook(tf.compat.v1.train.SessionRunHook):
    """Runs the input iterator's initializer once the session exists."""

    def __init__(self, initializer):
        self._initializer = initializer

    def after_create_session(self, session, coord):
        session.run(self._initializer)


def _first_replica(strategy, value):
    """The first replica's copy of a per-replica value (the primary device's hooks, scaffold)."""
    return strategy.experimental_local_results(value)[0]


def _build_train_graph(model_fn, input_fn, params, strategy):
    """(ModelSpec with cross-replica train_op and loss, input hooks) in the default graph."""
    if strategy is None:
        iterator = tf.compat.v1.data.make_initializable_iterator(input_fn())
        features, labels = iterator.get_next()
        tf.compat.v1.train.get_or_create_global_step()
        spec = model_fn(features, labels, ModeKeys.TRAIN, params)
        return spec, [_IteratorInitializerHook(iterator.initializer)]

    # As Estimator does: the v1 optimizer scales each replica's loss by 1/replicas only in
    # this context, so that summing the replica gradients averages them.
    with strategy._scale_loss_for_estimator_enabled():  # pylint: disable=protected-access
        iterator = strategy.make_input_fn_iterator(lambda input_context: input_fn())
        global_step = tf.compat.v1.train.get_or_create_global_step()
        tf.compat.v1.add_to_collection(_GLOBAL_STEP_READ_KEY,
                                       strategy.extended.read_var(global_step))
        features, labels = iterator.get_next()
        grouped = strategy.extended.call_for_each_replica(
            model_fn, args=(features, labels, ModeKeys.TRAIN, params))
        loss = strategy.reduce(tf.distribute.ReduceOp.MEAN, grouped.loss, axis=None)
        scaffold = _first_replica(strategy, grouped.scaffold)
        hooks = list(_first_replica(strategy, h) for h in (grouped.training_hooks or []))
        spec = ModelSpec(ModeKeys.TRAIN, loss=loss, train_op=strategy.group(grouped.train_op),
                         scaffold=scaffold, training_hooks=hooks)
        return spec, [_IteratorInitializerHook(iterator.initialize())]


class _NoSessionRecoveryHook(tf.compat.v1.train.SessionRunHook):
    """Multi-worker: the training session is created once, never recreated.

    MonitoredSession answers a connection error (Unavailable, Aborted) by recreating its
    session and retrying; with a worker gone each retry fails at once, forever. Here the
    second creation fails instead (CancelledError), naming the workers whose servers no
    longer accept connections. Rerunning every worker resumes from the chief's checkpoint.
    """

    def __init__(self, cluster):
        self._cluster = cluster
        self._created = 0

    def after_create_session(self, session, coord):
        self._created += 1
        if self._created > 1:
            lost = self._cluster.silent_peers()
            raise tf.errors.CancelledError(
                None, None, 'A step failed on a connection error between workers; a multi-worker '
                'session is not recreated. Not answering: %s.'
                % (', '.join(lost) or 'none (every worker still accepts connections)'))


def _worker_scratch_dir(model_dir, cluster):
    """Where a non-chief worker writes its own checkpoints (the Estimator's name for it)."""
    return os.path.join(model_dir, 'tmp_%s_%d' % (cluster.task_type, cluster.task_index))


def _start_server(cluster, session_config):
    """This worker's gRPC server, started before the graph is built so that the other workers
    reach it while this one still builds (a taken port fails here, at once)."""
    return tf.distribute.Server(
        tf.train.ClusterSpec(cluster.spec), job_name=cluster.task_type,
        task_index=cluster.task_index, protocol='grpc', config=session_config, start=True)


def _multi_worker_session(server, scaffold, hooks, model_dir, cluster, session_config,
                          save_checkpoints_secs, save_summary_steps):
    """A MonitoredSession on this worker's server for MultiWorkerMirroredStrategy.

    Every worker initializes (or restores) its own copy of the variables: under the strategy
    the initializers broadcast worker 0's initial values, and every worker restores the
    chief's latest checkpoint from `model_dir` (shared storage, or a copy of the chief's
    folder). The chief saves checkpoints and summaries into `model_dir`; the others save their
    checkpoints into `model_dir/tmp_<task>_<i>` (the same variables: a way to check them),
    never into the chief's files.
    """
    save_dir = model_dir if cluster.is_chief else _worker_scratch_dir(model_dir, cluster)
    all_hooks = list(hooks) + [_NoSessionRecoveryHook(cluster)]
    all_hooks.append(tf.compat.v1.train.CheckpointSaverHook(
        save_dir, save_secs=save_checkpoints_secs or None,
        save_steps=None if save_checkpoints_secs else _NEVER, scaffold=scaffold))
    if cluster.is_chief and save_summary_steps:
        all_hooks.append(tf.compat.v1.train.SummarySaverHook(
            save_steps=save_summary_steps, output_dir=model_dir, scaffold=scaffold))
    creator = tf.compat.v1.train.ChiefSessionCreator(
        scaffold=scaffold, master=server.target, config=session_config,
        checkpoint_dir=model_dir)
    return tf.compat.v1.train.MonitoredSession(session_creator=creator, hooks=all_hooks)


def _train_session(model_fn, input_fn, params, model_dir, max_steps, strategy, session_config,
                   save_checkpoints_secs, save_summary_steps, keep_checkpoint_max,
                   tf_random_seed, hooks, cluster=None):
    server = _start_server(cluster, session_config) if cluster is not None else None
    with tf.Graph().as_default():
        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with scope:
            if tf_random_seed is not None:
                tf.compat.v1.set_random_seed(tf_random_seed)
            spec, input_hooks = _build_train_graph(model_fn, input_fn, params, strategy)
            user_scaffold = spec.scaffold or tf.compat.v1.train.Scaffold()
            saver = tf.compat.v1.train.Saver(
                sharded=True, max_to_keep=keep_checkpoint_max, defer_build=True,
                save_relative_paths=True)
            scaffold = tf.compat.v1.train.Scaffold(
                init_fn=getattr(user_scaffold, '_user_init_fn', None), saver=saver)
            all_hooks = (input_hooks + [tf.compat.v1.train.StopAtStepHook(last_step=max_steps)]
                         + list(spec.training_hooks or []) + list(hooks))
            if cluster is not None:
                session = _multi_worker_session(
                    server, scaffold, all_hooks, model_dir, cluster, session_config,
                    save_checkpoints_secs, save_summary_steps)
            else:
                session = tf.compat.v1.train.MonitoredTrainingSession(
                    checkpoint_dir=model_dir, scaffold=scaffold, hooks=all_hooks,
                    save_checkpoint_secs=save_checkpoints_secs or None,
                    save_checkpoint_steps=None if save_checkpoints_secs else _NEVER,
                    save_summaries_steps=save_summary_steps, config=session_config,
                    log_step_count_steps=None)
            with session:
                while not session.should_stop():
                    session.run(spec.train_op)
    return tf.train.latest_checkpoint(model_dir)


# ----------------------------------------------------------------------------- prediction


def predict(driver, model_fn, input_fn, params, checkpoint, session_config=None):
    """Yields one dict of numpy values per example, from `checkpoint` (a prefix).

    `input_fn() -> tf.data.Dataset` of feature dicts (batched); each prediction tensor's
    first dimension is the batch.
    """
    if driver == ESTIMATOR:
        run_config = tf.estimator.RunConfig(session_config=session_config)
        estimator = _estimator(model_fn, params, os.path.dirname(checkpoint) or '.',
                               run_config)
        for prediction in estimator.predict(input_fn, checkpoint_path=checkpoint,
                                            yield_single_examples=True):
            yield prediction
        return
    with tf.Graph().as_default():
        features = tf.compat.v1.data.make_one_shot_iterator(input_fn()).get_next()
        spec = model_fn(features, None, ModeKeys.PREDICT, params)
        creator = tf.compat.v1.train.ChiefSessionCreator(
            checkpoint_filename_with_path=checkpoint,
            scaffold=spec.scaffold or tf.compat.v1.train.Scaffold(), config=session_config)
        with tf.compat.v1.train.MonitoredSession(session_creator=creator) as session:
            while not session.should_stop():
                try:
                    batch = session.run(spec.predictions)
                except tf.errors.OutOfRangeError:
                    break
                size = len(next(iter(batch.values())))
                for i in range(size):
                    yield {key: value[i] for key, value in batch.items()}


# ----------------------------------------------------------------------------- export


def restore_predict(session, spec, checkpoint):
    """Restores `checkpoint` into `session` for a PREDICT ModelSpec built in its graph: the
    spec's scaffold saver where it has one (as tf.estimator's exporter does), else a plain
    Saver. The SavedModel and TFLite exports both restore through here."""
    saver = (spec.scaffold.saver if spec.scaffold is not None and spec.scaffold.saver
             else tf.compat.v1.train.Saver(sharded=True))
    saver.restore(session, checkpoint)


def export_saved_model(driver, model_fn, serving_inputs_fn, params, checkpoint, export_base,
                       assets_extra=None):
    """Writes a SavedModel of the PREDICT graph into a new `export_base/<timestamp>` folder.

    Args:
      serving_inputs_fn: () -> (features dict, receiver tensors dict); the receivers are the
        signature's inputs, `ModelSpec.export_outputs` its outputs.
      assets_extra: {name in assets.extra/: source file path}.
    Returns:
      the export folder (str).
    """
    if driver == ESTIMATOR:
        def receiver_fn():
            features, receivers = serving_inputs_fn()
            return tf.estimator.export.ServingInputReceiver(features, receivers)
        estimator = _estimator(model_fn, params, os.path.dirname(checkpoint) or '.')
        path = estimator.export_saved_model(export_base, receiver_fn,
                                            assets_extra=assets_extra,
                                            checkpoint_path=checkpoint)
        return path.decode('utf-8') if isinstance(path, bytes) else path

    tf.io.gfile.makedirs(export_base)
    final = os.path.join(export_base, str(int(time.time())))
    while tf.io.gfile.exists(final):
        time.sleep(1)
        final = os.path.join(export_base, str(int(time.time())))
    scratch = os.path.join(export_base, 'temp-' + os.path.basename(final))
    with tf.Graph().as_default():
        features, receivers = serving_inputs_fn()
        spec = model_fn(features, None, ModeKeys.PREDICT, params)
        signature = tf.compat.v1.saved_model.predict_signature_def(receivers,
                                                                    spec.export_outputs)
        with tf.compat.v1.Session() as session:
            restore_predict(session, spec, checkpoint)
            builder = tf.compat.v1.saved_model.Builder(scratch)
            builder.add_meta_graph_and_variables(
                session, [tf.compat.v1.saved_model.tag_constants.SERVING],
                signature_def_map={'serving_default': signature, 'predict': signature},
                main_op=tf.compat.v1.tables_initializer(), strip_default_attrs=True)
            builder.save()
    if assets_extra:
        extra = os.path.join(scratch, 'assets.extra')
        tf.io.gfile.makedirs(extra)
        for name, source in assets_extra.items():
            tf.io.gfile.copy(source, os.path.join(extra, name), overwrite=True)
    shutil.move(scratch, final)
    return final
