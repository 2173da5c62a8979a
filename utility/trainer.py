"""What `python3 train_ssd.py` does, step by step: check the flags, take the model directory's
lock, prepare (replicas, precision, data checks, class names, resume or restore, params.json),
then run the driver and turn what can go wrong into one line and an exit status.

Every function takes the parsed flags (`values`, absl FlagValues of train_ssd.py, which defines
them) as its first argument; nothing here reads FLAGS.
"""
import contextlib
import errno
import os
import sys

from common import console, defaults
from common.console import log


def check_flags(values):
    """Flag values no training can use: a one-sentence ValueError naming the flag and the fix."""
    positive = ('batch_size', 'max_number_of_steps', 'log_every_n_steps', 'save_summary_steps',
                'keep_checkpoint_max', 'num_readers')
    for name in positive:
        if values[name].value is None or values[name].value < 1:
            raise ValueError('--%s=%s must be a positive integer.' % (name, values[name].value))
    if values.train_epochs is not None and values.train_epochs < 1:
        raise ValueError('--train_epochs=%d must be at least 1 (leave it unset for no epoch '
                         'limit).' % values.train_epochs)
    if values.save_checkpoints_secs < 0:
        raise ValueError('--save_checkpoints_secs=%d must be >= 0 (0: only when training '
                         'starts and ends).' % values.save_checkpoints_secs)
    if values.num_cpu_replicas < 0 or values.num_cpu_replicas == 1:
        raise ValueError('--num_cpu_replicas=%d: use N >= 2 logical CPU devices (one replica '
                         'on each), or 0 (the default) to train on one device.'
                         % values.num_cpu_replicas)
    if values.bf16 and values['precision'].present and values.precision != 'bf16':
        raise ValueError('--bf16 means --precision=bf16 and contradicts --precision=%s; drop '
                         'one of them.' % values.precision)
    if values.num_classes is not None and values.num_classes < 2:
        raise ValueError('--num_classes=%d must count the background and at least one class '
                         '(VOC: 21).' % values.num_classes)
    if values.train_image_size != 300:
        raise ValueError('--train_image_size=%d is not supported: the SSD300 anchor spec is for '
                         '300x300 inputs; use --train_image_size=300.' % values.train_image_size)
    for name in ('learning_rate', 'end_learning_rate', 'momentum', 'weight_decay'):
        if values[name].value < 0 or (name == 'learning_rate' and values[name].value == 0):
            raise ValueError('--%s=%g must be %s.' % (
                name, values[name].value, 'positive' if name == 'learning_rate' else '>= 0'))
    if not 0 <= values.batch_norm_decay < 1:
        raise ValueError('--batch_norm_decay=%g must be in [0, 1) (0.997 for long runs, about '
                         '0.9 to fit a few images).' % values.batch_norm_decay)
    from net import backbones
    backbones.get_backbone(values.backbone)  # an unknown name: ValueError listing the registry
    if values.anchor_preset:
        from net import anchors
        if anchors.is_preset_file(values.anchor_preset):  # fitted sizes (dataset.report)
            anchors.read_preset_file(values.anchor_preset)  # ValueError naming the file
        else:
            anchors.check_preset(values.anchor_preset)  # ValueError listing the presets
    if os.path.exists(values.model_dir) and not os.path.isdir(values.model_dir):
        raise ValueError('--model_dir=%s is a file, not a directory; pass a directory (it is '
                         'created if missing).' % values.model_dir)


def requested_precision(values):
    """--precision, with --bf16 as its alias for bf16."""
    return 'bf16' if values.bf16 else values.precision


def data_classes(values):
    """(class names, num_classes) for training on --data_dir.

    The names are the ones the converter recorded in <data_dir>/manifest.json; without a
    manifest, those the training records carry (image/object/bbox/label_text), the VOC
    names for records that carry none (dataset/class_names.class_names_of); num_classes is their
    count (background included) unless --num_classes is given, which must then agree.
    Raises:
      ValueError: one line naming both numbers and the manifest (or the records).
    """
    from dataset.class_names import class_names_of
    from dataset.manifest import MANIFEST_NAME
    recorded, source = class_names_of(values.data_dir, 'train', log=log)
    names = list(recorded)
    if source and source != os.path.join(values.data_dir, MANIFEST_NAME):
        log('%d classes (background included) from %s: %s.'
            % (len(names), source, ', '.join(names[1:])))
    if values.num_classes is None:
        return names, len(names)
    if source is not None and values.num_classes != len(names):
        raise ValueError('--num_classes=%d disagrees with the %d classes (background included) '
                         'that %s names; drop --num_classes or pass --num_classes=%d.'
                         % (values.num_classes, len(names), source, len(names)))
    return (names if len(names) == values.num_classes else None), values.num_classes


def fine_tune_settings(values, checkpoint):
    """Restore settings for a --checkpoint_path that holds a whole SSD (this project's or the
    original SSD.TensorFlow's), or None for a backbone checkpoint.

    A whole SSD of the same backbone restores every variable whose name and shape match
    (restore.build_restore_fn: its class heads are left out, and listed, when
    the class count differs): the checkpoint's model scope and no excluded scope, unless
    --checkpoint_model_scope / --checkpoint_exclude_scopes are given.
    Raises:
      ValueError: the SSD's backbone is not --backbone (one line naming both and the fix).
    """
    from utility.checkpoints import restore
    identity = restore.ssd_checkpoint_identity(checkpoint)
    if identity is None:
        return None
    if identity['backbone'] is not None and identity['backbone'] != values.backbone:
        raise ValueError('--checkpoint_path %s holds %s, but this run has --backbone %s; pass '
                         '--backbone %s to fine-tune from it, or a %s backbone checkpoint.'
                         % (checkpoint, restore.describe_identity(identity),
                            values.backbone, identity['backbone'], values.backbone))
    settings = {}
    if not values['checkpoint_model_scope'].present:  # (original layouts map their own scope)
        settings['checkpoint_model_scope'] = identity['model_scope']
    if not values['checkpoint_exclude_scopes'].present:
        settings['checkpoint_exclude_scopes'] = ''
    log('Fine-tuning from %s, %s: restoring every variable whose name and shape match.'
        % (checkpoint, restore.describe_identity(identity)))
    return settings


def anchor_preset(values):
    """--anchor_preset (a preset name, or the fitted sizes of a json file as a dict: params.json
    records them whole, so the model does not need the file), or the backbone's preset
    (mobilenet_v2: 'ssdlite'), or the preset
    <data_dir>/manifest.json suggests, or 'voc'."""
    from dataset.manifest import MANIFEST_NAME, source_from_manifest
    from net import anchors
    if values.anchor_preset and anchors.is_preset_file(values.anchor_preset):
        log('Anchor sizes from %s (recorded in params.json).' % values.anchor_preset)
        return anchors.read_preset_file(values.anchor_preset)
    if values.anchor_preset:
        return anchors.check_preset(values.anchor_preset)
    from net import backbones
    own = backbones.get_backbone(values.backbone).anchor_preset
    if own:
        return anchors.check_preset(own)
    suggested = source_from_manifest(values.data_dir)['anchor_preset']
    if suggested:
        log('Anchor preset %s (from %s).' % (suggested, os.path.join(
            values.data_dir, MANIFEST_NAME)))
        return anchors.check_preset(suggested)
    return defaults.ANCHOR_PRESET


# The training records read for the coverage line at start (boxes only, no image decoded).
COVERAGE_IMAGES = 5000


def anchor_coverage_line(params, train_files, class_names, limit=COVERAGE_IMAGES):
    """The one-line default-box coverage of the training boxes (net/anchor_coverage): each
    class's fraction of boxes that some anchor of params['anchor_spec'] overlaps at IoU >= 0.5,
    from the first `limit` records of `train_files` (crowd regions left out: never positives)."""
    import numpy as np
    from evaluation.ground_truth import scan_records
    from net import anchor_coverage
    records = scan_records(train_files, limit=limit)
    boxes = [r['boxes'][r['iscrowd'] == 0] for r in records]
    labels = [r['labels'][r['iscrowd'] == 0] for r in records]
    summary = anchor_coverage.box_coverage(
        np.concatenate(boxes + [np.zeros((0, 4), np.float32)]),
        np.concatenate(labels + [np.zeros(0, np.int64)]), params['anchor_spec'],
        num_classes=params['num_classes'])
    from dataset.labels import VOC_LABELS
    names = list(class_names) if class_names else list(VOC_LABELS)
    preset = params['anchor_preset']
    return ('Default-box coverage (IoU >= 0.5, anchors %s) of the boxes of %s%d training '
            'images: %s; details: python3 -m dataset.report --data_dir %s'
            % (preset if isinstance(preset, str) else 'fitted', 'the first ' if len(
                records) == limit else '', len(records),
               anchor_coverage.coverage_line(summary, names), params['data_dir']))


def build_params(values, num_replicas, data_format, use_amp, checkpoint_path, cluster=None,
                 precision=None, class_names=None, num_classes=None, checkpoint_model_scope=None,
                 checkpoint_exclude_scopes=None):
    """Turns the parsed flags into the model params (the only place flags are read);
    `checkpoint_model_scope` / `checkpoint_exclude_scopes` override those flags
    (fine_tune_settings)."""
    from utility import ssd_model
    return ssd_model.make_params(
        num_classes=num_classes or values.num_classes or 21,
        class_names=list(class_names) if class_names else None,
        train_image_size=values.train_image_size,
        anchor_preset=anchor_preset(values),
        data_format=data_format,
        model_scope=values.model_scope,
        backbone=values.backbone, freeze_batch_norm=values.freeze_batch_norm,
        batch_norm_decay=values.batch_norm_decay, head=getattr(values, 'head', None),
        data_dir=values.data_dir,
        batch_size=values.batch_size,
        num_replicas=num_replicas,
        num_workers=cluster.num_workers if cluster else 1,
        worker_index=cluster.worker_index if cluster else 0,
        num_readers=values.num_readers,
        num_preprocessing_threads=values.num_preprocessing_threads,
        train_epochs=values.train_epochs,
        tf_random_seed=values.tf_random_seed,
        match_threshold=values.match_threshold,
        neg_threshold=values.neg_threshold,
        negative_ratio=values.negative_ratio,
        weight_decay=values.weight_decay,
        momentum=values.momentum,
        learning_rate=values.learning_rate,
        end_learning_rate=values.end_learning_rate,
        decay_boundaries=console.parse_number_list(
            values.decay_boundaries, int, '--decay_boundaries'),
        lr_decay_factors=console.parse_number_list(
            values.lr_decay_factors, float, '--lr_decay_factors'),
        use_amp=use_amp,
        augment=values.augment,
        precision=precision or requested_precision(values),
        log_every_n_steps=values.log_every_n_steps,
        checkpoint_path=checkpoint_path,
        checkpoint_model_scope=(values.checkpoint_model_scope if checkpoint_model_scope is None
                                else checkpoint_model_scope),
        checkpoint_exclude_scopes=(values.checkpoint_exclude_scopes
                                   if checkpoint_exclude_scopes is None
                                   else checkpoint_exclude_scopes),
        ignore_missing_vars=values.ignore_missing_vars)


def prepare(values, cluster):
    """Checks the configuration and the model directory; builds what training needs.

    Runs while the caller holds the model directory's lock (the chief does, for a cluster).
    Order matters: everything that can refuse runs before params.json is (re)written.

    Args:
      cluster: `utility.training.cluster` description of a multi-worker TF_CONFIG, or None.

    Returns:
      dict with 'driver', 'params', 'strategy', 'session_config', 'num_replicas',
      'train_files' (the checked shards).
    Raises:
      ValueError with a one-sentence message for configuration problems: a batch that does
      not divide over the replicas, missing, empty or damaged shards, labels beyond
      --num_classes, a model directory trained with other settings, unreadable checkpoints,
      a missing --checkpoint_path, no Estimator.
    """
    import tensorflow as tf
    from dataset.shard_checks import check_labels_fit, check_shards
    from net import ssd_net
    from utility import drivers
    from utility.checkpoints import files as checkpoint_files, locate, params_file
    from utility.training import precision as precision_lib
    from utility.training import replicas

    driver = drivers.resolve_driver(values.driver)
    is_chief = cluster is None or cluster.is_chief
    if cluster is not None:
        if values.num_cpu_replicas:
            raise ValueError('--num_cpu_replicas does not combine with TF_CONFIG: a worker '
                             'trains one replica per GPU, or one on its CPU; drop the flag.')
        strategy, num_replicas, session_config = replicas.setup_multi_worker(
            cluster, batch_size=values.batch_size, num_cpu_threads=values.num_cpu_threads,
            gpu_memory_fraction=values.gpu_memory_fraction,
            collective_timeout_secs=values.collective_timeout_secs, log=log)
    else:
        strategy, num_replicas, session_config = replicas.setup_replicas(
            multi_gpu=values.multi_gpu, num_cpu_replicas=values.num_cpu_replicas,
            batch_size=values.batch_size, num_cpu_threads=values.num_cpu_threads,
            gpu_memory_fraction=values.gpu_memory_fraction, log=log)
    precision = precision_lib.configure_precision(session_config, requested_precision(values),
                                                  log=log, multi_worker=cluster is not None)
    has_gpu = bool(tf.config.list_physical_devices('GPU'))
    data_format = ssd_net.resolve_data_format(values.data_format)
    use_amp = values.use_amp and has_gpu
    if values.use_amp and not has_gpu:
        log('--use_amp ignored: mixed precision needs a GPU; training in float32.')

    train_files = check_shards(values.data_dir, 'train')
    if values.num_classes is not None:
        check_labels_fit(values.data_dir, values.num_classes)
    class_names, num_classes = data_classes(values)

    if is_chief:
        checkpoint_files.remove_stale_temp(values.model_dir, log)
    # Other workers of a cluster resume from the chief's checkpoint and leave its folder alone.
    latest = checkpoint_files.newest_readable_checkpoint(values.model_dir, log, repair=is_chief)
    checkpoint_path = values.checkpoint_path or None
    restore = {}
    if latest:
        log('Resuming from %s (found in --model_dir); --checkpoint_path is not used.' % latest)
        checkpoint_path = None
    elif checkpoint_path:
        checkpoint_path = locate.resolve_checkpoint(checkpoint_path)
        restore = fine_tune_settings(values, checkpoint_path)
        if restore is None:
            log('Initializing the backbone from %s.' % checkpoint_path)
            restore = {}
    else:
        log('No --checkpoint_path: training from scratch (random initialization).')

    params = build_params(values, num_replicas, data_format, use_amp, checkpoint_path, cluster,
                          precision=precision, class_names=class_names,
                          num_classes=num_classes, **restore)
    log(anchor_coverage_line(params, train_files, params['class_names']))
    new_params_file = None
    if is_chief:
        params_file.check_params_identity(values.model_dir, params,
                                          defaults=defaults.DEFAULT_PARAMS, checkpoint=latest)
        path = os.path.join(values.model_dir, defaults.PARAMS_NAME)
        if not latest and not os.path.exists(path):
            new_params_file = path
        log('Params written to %s' % params_file.save_params(params, values.model_dir))
    return {'driver': driver, 'params': params, 'strategy': strategy,
            'session_config': session_config, 'num_replicas': num_replicas,
            'train_files': train_files, 'cluster': cluster,
            'new_params_file': new_params_file}


def forget_new_params(values, setup):
    """Removes the params.json this run wrote into a model directory that had none, when the
    run ends before its first checkpoint (e.g. refused at restore): nothing is left that
    claims a model was trained there."""
    from utility.checkpoints import files as checkpoint_files
    path = setup.get('new_params_file')
    if path and not checkpoint_files.has_checkpoint(values.model_dir) and os.path.exists(path):
        os.remove(path)
        log('Removed %s: no checkpoint was written.' % path)


def train(values, setup):
    """Runs the driver; returns the exit status (0 done or stopped by a signal, 1 NaN stop)."""
    import tensorflow as tf
    from dataset.shard_checks import explain_data_loss
    from utility import ssd_model
    from utility import drivers
    from utility.checkpoints import files as checkpoint_files
    from utility.training import cluster as cluster_lib
    from utility.training import hooks
    from utility.training import schedule

    params = setup['params']
    log('Training to global step %d, global batch %d over %d replica(s), %s driver.'
        % (values.max_number_of_steps, values.batch_size, setup['num_replicas'],
           setup['driver']))
    stop = hooks.StopOnSignalHook()
    session_hooks = [stop]
    if setup['cluster'] is not None:  # start-up ends: on a signal, or at the timeout
        session_hooks.append(hooks.StartupWatchdog(setup['cluster'],
                                                   values.collective_timeout_secs, log=log))
    try:
        with contextlib.ExitStack() as installed:
            for hook in session_hooks:
                installed.enter_context(hook)
            latest = drivers.train(
                setup['driver'], ssd_model.model_fn,
                ssd_model.make_input_fn(params, is_training=True), params, values.model_dir,
                max_steps=values.max_number_of_steps, strategy=setup['strategy'],
                session_config=setup['session_config'],
                save_checkpoints_secs=values.save_checkpoints_secs,
                save_summary_steps=values.save_summary_steps,
                keep_checkpoint_max=values.keep_checkpoint_max,
                tf_random_seed=values.tf_random_seed, hooks=session_hooks,
                cluster=setup['cluster'])
    except ValueError:
        forget_new_params(values, setup)
        raise
    except tf.errors.DataLossError as err:
        raise explain_data_loss(setup['train_files'], err) or err
    except OSError as err:  # a Python-side write (the checkpoint state file, params.json)
        if err.errno != errno.ENOSPC or not _report_full_disk(
                values, setup, '%s; %s' % (err.filename, checkpoint_files.NO_SPACE)):
            raise
        return 1
    except tf.errors.OpError as err:
        if _report_full_disk(values, setup, err.message):
            return 1
        if setup['cluster'] is not None and cluster_lib.is_bind_failure(err):
            raise ValueError(cluster_lib.describe_bind_failure(setup['cluster'])) from None
        if setup['cluster'] is not None and cluster_lib.is_peer_failure(err):
            print('error: %s' % cluster_lib.describe_lost_worker(
                setup['cluster'], err.message, values.collective_timeout_secs),
                file=sys.stderr, flush=True)
            return 1
        step = (schedule.non_finite_loss_step(err)
                if isinstance(err, tf.errors.InvalidArgumentError) else None)
        if step is None:
            raise
        what = 'the chief worker sets the bad checkpoints aside.'
        if setup['cluster'] is None or setup['cluster'].is_chief:
            _, what = checkpoint_files.roll_back_to_finite(values.model_dir, log, nan_step=step)
        print('error: Training stopped: the loss became NaN or infinite at global step %d, '
              'before the weights were updated; %s Lower --learning_rate or check the input '
              'data, then run the same command again.' % (step, what),
              file=sys.stderr, flush=True)
        return 1
    if stop.received:
        log('Stopped by %s at global step %s; saved %s. Run the same command again to resume.'
            % (stop.received, checkpoint_step(latest), latest))
        return 0
    if checkpoint_step(latest) == 0 and values.max_number_of_steps > 0:
        raise ValueError('The input in %s ended before the first step (--train_epochs=%s '
                         'over too few images for --batch_size=%d?); nothing was trained.'
                         % (values.data_dir, values.train_epochs, values.batch_size))
    log('Training finished; latest checkpoint: %s' % latest)
    return 0


def _report_full_disk(values, setup, error_text):
    """Prints the one-line error of a save that hit ENOSPC on the chief; False otherwise."""
    from utility.checkpoints import files as checkpoint_files
    if setup['cluster'] is not None and not setup['cluster'].is_chief:
        return False
    message = checkpoint_files.describe_full_disk(values.model_dir, error_text)
    if message:
        print('error: %s' % message, file=sys.stderr, flush=True)
    return bool(message)


def main(values):
    """Trains as the parsed flags `values` say (absl FlagValues of train_ssd.py); returns the
    exit status (0 done or stopped by a signal, 1 a NaN stop, a full disk or a lost worker).
    Raises ValueError (one line naming the cause and the fix) for configuration problems."""
    from utility.checkpoints import lock as checkpoint_lock
    from utility.training import cluster as cluster_lib
    from utility import entry

    entry.quiet_tensorflow_logs(verbose=values.verbose)
    check_flags(values)
    cluster = cluster_lib.from_environment(os.environ)
    if cluster is not None and cluster.num_workers < 2:
        log('TF_CONFIG names a single worker: training on this machine alone.')
        cluster = None
    # One trainer per model directory; in a cluster the chief holds the lock.
    lock = (checkpoint_lock.ModelDirLock(values.model_dir, log=log)
            if cluster is None or cluster.is_chief else contextlib.nullcontext())
    with lock:
        return train(values, prepare(values, cluster))


def checkpoint_step(prefix):
    """The global step stored in checkpoint `prefix` (None if there is none)."""
    import tensorflow as tf
    return int(tf.train.load_checkpoint(prefix).get_tensor('global_step')) if prefix else None
