"""Train SSD300 (VGG-16 reduced-fc) on Pascal VOC TFRecords.

    python3 train_ssd.py --batch_size 16

The one model_fn runs under tf.estimator where TensorFlow has it (2.15 and older) and under a
plain MonitoredTrainingSession loop elsewhere (TF 2.16+): --driver, see utility/drivers.py.
Both give the same checkpoints, summaries and logs.

Trains on every visible GPU through MirroredStrategy (--multi_gpu, on by default), starting
from the reduced-fc VGG-16 checkpoint in ./model (see model/README.md; --checkpoint_path=
trains from scratch). Resumes from the latest checkpoint in --model_dir if there is one.
On a machine without GPUs, --num_cpu_replicas=N runs the same MirroredStrategy path on N
logical CPU devices. With TF_CONFIG naming several workers, every worker runs this same
command and they train together (MultiWorkerMirroredStrategy; docs/training.md, "Several machines").
"""
import contextlib
import errno
import os
import sys

from absl import app
from absl import flags

from dataset import helpers
from dataset.helpers import log

FLAGS = flags.FLAGS

# Data and input pipeline.
flags.DEFINE_integer('num_readers', 8, 'Number of TFRecord shards read in parallel.')
flags.DEFINE_integer('num_preprocessing_threads', 24,
                     'Parallel calls for decoding and augmentation (0 = let tf.data autotune).')
flags.DEFINE_integer('num_cpu_threads', 0,
                     'Threads TensorFlow uses for its CPU op pools (0 = one per core).')
flags.DEFINE_float('gpu_memory_fraction', 1.0,
                   'Fraction of each GPU\'s memory to reserve (1.0 = grow as needed).')
flags.DEFINE_string('data_dir', './dataset/tfrecords',
                    'Directory with the train-*-of-* TFRecord shards made by '
                    'dataset/convert_voc_sample_tfrecords.py or dataset/convert_tfrecords.py.')
flags.DEFINE_integer('num_classes', None,
                     'Number of classes, background included (VOC: 21). Default: the class '
                     'names the converter recorded in <data_dir>/manifest.json, plus the '
                     'background; a different value is an error.')
flags.DEFINE_string('model_dir', './logs/',
                    'Directory for checkpoints, summaries and params.json. Training resumes '
                    'from the latest checkpoint found here.')
flags.DEFINE_integer('log_every_n_steps', 10,
                     'Log step, losses, learning rate, accuracy and images/s every N steps.')
flags.DEFINE_integer('save_summary_steps', 500, 'Write TensorBoard summaries every N steps.')
flags.DEFINE_integer('save_checkpoints_secs', 7200,
                     'Save a checkpoint every N seconds; 0 = only when training starts and '
                     'ends. A checkpoint is always written at the end, also when SIGTERM or '
                     'Ctrl-C stops training (a second signal exits at once, unsaved).')
flags.DEFINE_integer('keep_checkpoint_max', 5, 'Number of recent checkpoints kept.')
flags.DEFINE_integer('train_image_size', 300, 'Input image size (SSD300: 300).')
flags.DEFINE_integer('train_epochs', None,
                     'Stop after this many passes over the data (default: no epoch limit; '
                     'training stops at --max_number_of_steps).')
flags.DEFINE_integer('max_number_of_steps', 120000, 'Global step at which training stops.')
flags.DEFINE_integer('batch_size', 16,
                     'Global batch size: images per step over all replicas; must divide '
                     'evenly over the replicas.')
# The model's default and choices (utility/ssd_model.DEFAULT_PARAMS['data_format'],
# net/ssd_net.DATA_FORMAT_CHOICES; written out here so that --help runs without TensorFlow;
# tests/test_train.py checks they agree).
flags.DEFINE_enum('data_format', 'auto', ['auto', 'channels_first', 'channels_last'],
                  "'auto': channels_first (NCHW, fastest on GPU) when a GPU is visible, else "
                  "channels_last (NHWC). channels_first without a GPU falls back to "
                  'channels_last, with a notice.')
# Targets and loss.
flags.DEFINE_float('negative_ratio', 3.0, 'Hard negatives per positive anchor in the loss.')
flags.DEFINE_float('match_threshold', 0.5, 'IoU at or above which an anchor is positive.')
flags.DEFINE_float('neg_threshold', 0.5,
                   'IoU below which an anchor is background; anchors between this and '
                   '--match_threshold are ignored.')
flags.DEFINE_integer('tf_random_seed', 20180503, 'Random seed for TensorFlow.')
flags.DEFINE_float('weight_decay', 5e-4, 'L2 weight decay.')
# Optimizer.
flags.DEFINE_float('momentum', 0.9, 'Momentum of the SGD optimizer.')
flags.DEFINE_float('learning_rate', 1e-3, 'Base learning rate.')
flags.DEFINE_float('end_learning_rate', 1e-6, 'The learning rate never goes below this.')
flags.DEFINE_string('decay_boundaries', '500, 80000, 100000',
                    'Global steps where the learning-rate factor changes (comma-separated).')
flags.DEFINE_string('lr_decay_factors', '0.1, 1, 0.1, 0.01',
                    'Learning-rate factor for each interval; one more than the boundaries. '
                    'The default warms up at 0.1x for 500 steps, then decays twice.')
# Restore.
flags.DEFINE_string('checkpoint_path', './model',
                    'Pretrained weights: a checkpoint directory or prefix (V1 or V2) of the '
                    'backbone (reduced-fc VGG-16, TF-slim resnet_v1_50/101) or of a whole SSD '
                    '(this project\'s or the original SSD.TensorFlow\'s, to fine-tune). Empty '
                    '(--checkpoint_path=) trains from scratch. Ignored when --model_dir already '
                    'holds a checkpoint (training resumes instead).')
flags.DEFINE_string('checkpoint_model_scope', None,
                    'Variable scope of the backbone inside the pretrained checkpoint '
                    '(default: the backbone\'s: vgg_16, resnet_v1_50, ...).')
flags.DEFINE_string('model_scope', 'ssd300', 'Variable scope of the model.')
flags.DEFINE_string('backbone', 'vgg16',
                    'Feature extractor: a name in the net/backbones.py registry (vgg16, the '
                    'ResNets resnet18/34/50/101, and any you register there); its input '
                    'convention and checkpoint scope come with it. ResNet weights: see '
                    'model/README.md.')
flags.DEFINE_string('anchor_preset', '',
                    'Anchor sizes (net/anchors.py ANCHOR_PRESETS): voc (SSD300 on VOC, first '
                    'scale 0.1) or coco (the caffe SSD300 COCO sizes, 21..315 pixels). Empty: '
                    'the preset the converter recorded in <data_dir>/manifest.json (coco for '
                    'COCO data), else voc. Recorded in params.json; resuming checks it.')
flags.DEFINE_boolean('freeze_batch_norm', False,
                     'ResNets: batch norm uses its moving statistics in training too and '
                     'gamma/beta stay fixed (for fine-tuning with few images per replica).')
flags.DEFINE_float('batch_norm_decay', 0.997,
                   'ResNets: decay of the batch-norm moving averages that eval, demo and export '
                   'use (their initial values fade as decay**step). Keep 0.997 for long runs; '
                   'fitting a few images in a few hundred steps wants about 0.9. Recorded in '
                   'params.json.')
flags.DEFINE_string('checkpoint_exclude_scopes', None,
                    'Comma-separated model scopes never restored from --checkpoint_path '
                    '(default: the layers no ImageNet checkpoint of --backbone has, under '
                    '--model_scope: net/ssd_net.default_exclude_scopes; empty '
                    '(--checkpoint_exclude_scopes=) restores every layer the checkpoint has).')
flags.DEFINE_boolean('ignore_missing_vars', True,
                     'Model variables absent from the checkpoint keep their initial values '
                     '(they are listed); if false, a missing variable is an error.')
# Devices.
flags.DEFINE_boolean('multi_gpu', True,
                     'Train on every visible GPU with MirroredStrategy.')
flags.DEFINE_integer('num_cpu_replicas', 0,
                     'Without GPUs: split the CPU into N logical devices and train one '
                     'MirroredStrategy replica on each (N >= 2; used to test the multi-replica '
                     'path; 0 = off).')
flags.DEFINE_enum('driver', 'auto', ['auto', 'estimator', 'session'],
                  'What runs the training loop: tf.estimator (TensorFlow <= 2.15) or a plain '
                  'MonitoredTrainingSession (any TensorFlow 2.x); auto = the Estimator where '
                  'TensorFlow has it. Checkpoints from either resume under the other.')
flags.DEFINE_integer('collective_timeout_secs', 600,
                     'Multi-worker training (TF_CONFIG set): a worker whose step (all-reduce '
                     'included) makes no progress for this long stops with a message naming '
                     'the lost worker; 0 = wait forever.')
flags.DEFINE_boolean('use_amp', False,
                     'Mixed precision (float16) via the graph rewrite; GPUs only, ignored with '
                     'a notice on the CPU.')
flags.DEFINE_boolean('augment', True,
                     'Photometric distortion, zoom-out, IoU crop and flip while training; '
                     '--noaugment trains on the eval preprocessing (resize only), e.g. to '
                     'overfit a few fixed images.')
flags.DEFINE_boolean(helpers.VERBOSE_FLAG, False, helpers.VERBOSE_HELP)
flags.DEFINE_enum('precision', 'fp32', ['auto', 'fp32', 'bf16'],
                  'Arithmetic of the convolutions and matmuls: bf16 = bfloat16 through the '
                  'oneDNN graph rewrite (CPUs with AVX512-BF16 or AMX; weights, loss and '
                  'optimizer stay float32), fp32 = float32 throughout; auto = bf16 where the '
                  'CPU has it and no GPU is visible, else fp32. Printed at start and written '
                  'to params.json. GPUs: --use_amp.')
flags.DEFINE_boolean('bf16', False, 'Same as --precision=bf16 (kept for older commands).')


def check_flags():
    """Flag values no training can use: a one-sentence ValueError naming the flag and the fix."""
    positive = ('batch_size', 'max_number_of_steps', 'log_every_n_steps', 'save_summary_steps',
                'keep_checkpoint_max', 'num_readers')
    for name in positive:
        if FLAGS[name].value is None or FLAGS[name].value < 1:
            raise ValueError('--%s=%s must be a positive integer.' % (name, FLAGS[name].value))
    if FLAGS.train_epochs is not None and FLAGS.train_epochs < 1:
        raise ValueError('--train_epochs=%d must be at least 1 (leave it unset for no epoch '
                         'limit).' % FLAGS.train_epochs)
    if FLAGS.save_checkpoints_secs < 0:
        raise ValueError('--save_checkpoints_secs=%d must be >= 0 (0: only when training '
                         'starts and ends).' % FLAGS.save_checkpoints_secs)
    if FLAGS.num_cpu_replicas < 0 or FLAGS.num_cpu_replicas == 1:
        raise ValueError('--num_cpu_replicas=%d: use N >= 2 logical CPU devices (one replica '
                         'on each), or 0 (the default) to train on one device.'
                         % FLAGS.num_cpu_replicas)
    if FLAGS.bf16 and FLAGS['precision'].present and FLAGS.precision != 'bf16':
        raise ValueError('--bf16 means --precision=bf16 and contradicts --precision=%s; drop '
                         'one of them.' % FLAGS.precision)
    if FLAGS.num_classes is not None and FLAGS.num_classes < 2:
        raise ValueError('--num_classes=%d must count the background and at least one class '
                         '(VOC: 21).' % FLAGS.num_classes)
    if FLAGS.train_image_size != 300:
        raise ValueError('--train_image_size=%d is not supported: the SSD300 anchor spec is for '
                         '300x300 inputs; use --train_image_size=300.' % FLAGS.train_image_size)
    for name in ('learning_rate', 'end_learning_rate', 'momentum', 'weight_decay'):
        if FLAGS[name].value < 0 or (name == 'learning_rate' and FLAGS[name].value == 0):
            raise ValueError('--%s=%g must be %s.' % (
                name, FLAGS[name].value, 'positive' if name == 'learning_rate' else '>= 0'))
    if not 0 <= FLAGS.batch_norm_decay < 1:
        raise ValueError('--batch_norm_decay=%g must be in [0, 1) (0.997 for long runs, about '
                         '0.9 to fit a few images).' % FLAGS.batch_norm_decay)
    from net import backbones
    backbones.get_backbone(FLAGS.backbone)  # an unknown name: ValueError listing the registry
    if FLAGS.anchor_preset:
        from net import anchors
        anchors.check_preset(FLAGS.anchor_preset)  # ValueError listing the presets
    if os.path.exists(FLAGS.model_dir) and not os.path.isdir(FLAGS.model_dir):
        raise ValueError('--model_dir=%s is a file, not a directory; pass a directory (it is '
                         'created if missing).' % FLAGS.model_dir)


def requested_precision():
    """--precision, with --bf16 as its alias for bf16."""
    return 'bf16' if FLAGS.bf16 else FLAGS.precision


def data_classes():
    """(class names, num_classes) for training on --data_dir.

    The names are the ones the converter recorded in <data_dir>/manifest.json; without a
    manifest, those the training records carry (image/object/bbox/label_text), the VOC
    names for records that carry none (dataset_common.class_names_of); num_classes is their
    count (background included) unless --num_classes is given, which must then agree.
    Raises:
      ValueError: one line naming both numbers and the manifest (or the records).
    """
    from dataset import dataset_common
    recorded, source = dataset_common.class_names_of(FLAGS.data_dir, 'train', log=log)
    names = list(recorded)
    if source and source != os.path.join(FLAGS.data_dir, dataset_common.MANIFEST_NAME):
        log('%d classes (background included) from %s: %s.'
            % (len(names), source, ', '.join(names[1:])))
    if FLAGS.num_classes is None:
        return names, len(names)
    if source is not None and FLAGS.num_classes != len(names):
        raise ValueError('--num_classes=%d disagrees with the %d classes (background included) '
                         'that %s names; drop --num_classes or pass --num_classes=%d.'
                         % (FLAGS.num_classes, len(names), source, len(names)))
    return (names if len(names) == FLAGS.num_classes else None), FLAGS.num_classes


def fine_tune_settings(checkpoint):
    """Restore settings for a --checkpoint_path that holds a whole SSD (this project's or the
    original SSD.TensorFlow's), or None for a backbone checkpoint.

    A whole SSD of the same backbone restores every variable whose name and shape match
    (restore.build_restore_fn: its class heads are left out, and listed, when the class count
    differs): the checkpoint's model scope and no excluded scope, unless
    --checkpoint_model_scope / --checkpoint_exclude_scopes are given.
    Raises:
      ValueError: the SSD's backbone is not --backbone (one line naming both and the fix).
    """
    from utility.checkpoints import restore
    identity = restore.ssd_checkpoint_identity(checkpoint)
    if identity is None:
        return None
    if identity['backbone'] is not None and identity['backbone'] != FLAGS.backbone:
        raise ValueError('--checkpoint_path %s holds %s, but this run has --backbone %s; pass '
                         '--backbone %s to fine-tune from it, or a %s backbone checkpoint.'
                         % (checkpoint, restore.describe_identity(identity),
                            FLAGS.backbone, identity['backbone'], FLAGS.backbone))
    settings = {}
    if not FLAGS['checkpoint_model_scope'].present:  # (original layouts map their own scope)
        settings['checkpoint_model_scope'] = identity['model_scope']
    if not FLAGS['checkpoint_exclude_scopes'].present:
        settings['checkpoint_exclude_scopes'] = ''
    log('Fine-tuning from %s, %s: restoring every variable whose name and shape match.'
        % (checkpoint, restore.describe_identity(identity)))
    return settings


def anchor_preset():
    """--anchor_preset, or the preset <data_dir>/manifest.json suggests, or 'voc'."""
    from dataset import dataset_common
    from net import anchors
    if FLAGS.anchor_preset:
        return anchors.check_preset(FLAGS.anchor_preset)
    suggested = dataset_common.source_from_manifest(FLAGS.data_dir)['anchor_preset']
    if suggested:
        log('Anchor preset %s (from %s).' % (suggested, os.path.join(
            FLAGS.data_dir, dataset_common.MANIFEST_NAME)))
        return anchors.check_preset(suggested)
    return anchors.DEFAULT_PRESET


def build_params(num_replicas, data_format, use_amp, checkpoint_path, cluster=None,
                 precision=None, class_names=None, num_classes=None, checkpoint_model_scope=None,
                 checkpoint_exclude_scopes=None):
    """Turns the parsed flags into the model params (the only place flags are read);
    `checkpoint_model_scope` / `checkpoint_exclude_scopes` override those flags
    (fine_tune_settings)."""
    from utility import ssd_model
    from utility import train_utils
    return ssd_model.make_params(
        num_classes=num_classes or FLAGS.num_classes or 21,
        class_names=list(class_names) if class_names else None,
        train_image_size=FLAGS.train_image_size,
        anchor_preset=anchor_preset(),
        data_format=data_format,
        model_scope=FLAGS.model_scope,
        backbone=FLAGS.backbone, freeze_batch_norm=FLAGS.freeze_batch_norm,
        batch_norm_decay=FLAGS.batch_norm_decay,
        data_dir=FLAGS.data_dir,
        batch_size=FLAGS.batch_size,
        num_replicas=num_replicas,
        num_workers=cluster.num_workers if cluster else 1,
        worker_index=cluster.worker_index if cluster else 0,
        num_readers=FLAGS.num_readers,
        num_preprocessing_threads=FLAGS.num_preprocessing_threads,
        train_epochs=FLAGS.train_epochs,
        tf_random_seed=FLAGS.tf_random_seed,
        match_threshold=FLAGS.match_threshold,
        neg_threshold=FLAGS.neg_threshold,
        negative_ratio=FLAGS.negative_ratio,
        weight_decay=FLAGS.weight_decay,
        momentum=FLAGS.momentum,
        learning_rate=FLAGS.learning_rate,
        end_learning_rate=FLAGS.end_learning_rate,
        decay_boundaries=train_utils.parse_number_list(
            FLAGS.decay_boundaries, int, '--decay_boundaries'),
        lr_decay_factors=train_utils.parse_number_list(
            FLAGS.lr_decay_factors, float, '--lr_decay_factors'),
        use_amp=use_amp,
        augment=FLAGS.augment,
        precision=precision or requested_precision(),
        log_every_n_steps=FLAGS.log_every_n_steps,
        checkpoint_path=checkpoint_path,
        checkpoint_model_scope=(FLAGS.checkpoint_model_scope if checkpoint_model_scope is None
                                else checkpoint_model_scope),
        checkpoint_exclude_scopes=(FLAGS.checkpoint_exclude_scopes
                                   if checkpoint_exclude_scopes is None
                                   else checkpoint_exclude_scopes),
        ignore_missing_vars=FLAGS.ignore_missing_vars)


def prepare(cluster):
    """Checks the configuration and the model directory; builds what training needs.

    Runs while the caller holds the model directory's lock (the chief does, for a cluster).
    Order matters: everything that can refuse runs before params.json is (re)written.

    Args:
      cluster: `utility.cluster` description of a multi-worker TF_CONFIG, or None.

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
    from dataset import dataset_common
    from utility import ssd_model
    from net import ssd_net
    from utility import drivers, train_utils
    from utility.checkpoints import files as checkpoint_files, locate, params_file

    driver = drivers.resolve_driver(FLAGS.driver)
    is_chief = cluster is None or cluster.is_chief
    if cluster is not None:
        if FLAGS.num_cpu_replicas:
            raise ValueError('--num_cpu_replicas does not combine with TF_CONFIG: a worker '
                             'trains one replica per GPU, or one on its CPU; drop the flag.')
        strategy, num_replicas, session_config = train_utils.setup_multi_worker(
            cluster, batch_size=FLAGS.batch_size, num_cpu_threads=FLAGS.num_cpu_threads,
            gpu_memory_fraction=FLAGS.gpu_memory_fraction,
            collective_timeout_secs=FLAGS.collective_timeout_secs, log=log)
    else:
        strategy, num_replicas, session_config = train_utils.setup_replicas(
            multi_gpu=FLAGS.multi_gpu, num_cpu_replicas=FLAGS.num_cpu_replicas,
            batch_size=FLAGS.batch_size, num_cpu_threads=FLAGS.num_cpu_threads,
            gpu_memory_fraction=FLAGS.gpu_memory_fraction, log=log)
    precision = train_utils.configure_precision(session_config, requested_precision(), log=log)
    has_gpu = bool(tf.config.list_physical_devices('GPU'))
    data_format = ssd_net.resolve_data_format(FLAGS.data_format)
    use_amp = FLAGS.use_amp and has_gpu
    if FLAGS.use_amp and not has_gpu:
        log('--use_amp ignored: mixed precision needs a GPU; training in float32.')

    train_files = dataset_common.check_shards(FLAGS.data_dir, 'train')
    if FLAGS.num_classes is not None:
        dataset_common.check_labels_fit(FLAGS.data_dir, FLAGS.num_classes)
    class_names, num_classes = data_classes()

    if is_chief:
        checkpoint_files.remove_stale_temp(FLAGS.model_dir, log)
    # Other workers of a cluster resume from the chief's checkpoint and leave its folder alone.
    latest = checkpoint_files.newest_readable_checkpoint(FLAGS.model_dir, log, repair=is_chief)
    checkpoint_path = FLAGS.checkpoint_path or None
    restore = {}
    if latest:
        log('Resuming from %s (found in --model_dir); --checkpoint_path is not used.' % latest)
        checkpoint_path = None
    elif checkpoint_path:
        checkpoint_path = locate.resolve_checkpoint(checkpoint_path)
        restore = fine_tune_settings(checkpoint_path)
        if restore is None:
            log('Initializing the backbone from %s.' % checkpoint_path)
            restore = {}
    else:
        log('No --checkpoint_path: training from scratch (random initialization).')

    params = build_params(num_replicas, data_format, use_amp, checkpoint_path, cluster,
                          precision=precision, class_names=class_names,
                          num_classes=num_classes, **restore)
    new_params_file = None
    if is_chief:
        params_file.check_params_identity(FLAGS.model_dir, params,
                                          defaults=ssd_model.DEFAULT_PARAMS, checkpoint=latest)
        path = os.path.join(FLAGS.model_dir, params_file.PARAMS_NAME)
        if not latest and not os.path.exists(path):
            new_params_file = path
        log('Params written to %s' % params_file.save_params(params, FLAGS.model_dir))
    return {'driver': driver, 'params': params, 'strategy': strategy,
            'session_config': session_config, 'num_replicas': num_replicas,
            'train_files': train_files, 'cluster': cluster,
            'new_params_file': new_params_file}


def forget_new_params(setup):
    """Removes the params.json this run wrote into a model directory that had none, when the
    run ends before its first checkpoint (e.g. refused at restore): nothing is left that
    claims a model was trained there."""
    from utility.checkpoints import files as checkpoint_files
    path = setup.get('new_params_file')
    if path and not checkpoint_files.has_checkpoint(FLAGS.model_dir) and os.path.exists(path):
        os.remove(path)
        log('Removed %s: no checkpoint was written.' % path)


def train(setup):
    """Runs the driver; returns the exit status (0 done or stopped by a signal, 1 NaN stop)."""
    import tensorflow as tf
    from dataset import dataset_common
    from utility import ssd_model
    from utility import cluster as cluster_lib, drivers, train_utils
    from utility.checkpoints import files as checkpoint_files

    params = setup['params']
    log('Training to global step %d, global batch %d over %d replica(s), %s driver.'
        % (FLAGS.max_number_of_steps, FLAGS.batch_size, setup['num_replicas'],
           setup['driver']))
    stop = train_utils.StopOnSignalHook()
    hooks = [stop]
    if setup['cluster'] is not None:  # start-up ends: on a signal, or at the timeout
        hooks.append(train_utils.StartupWatchdog(setup['cluster'],
                                                 FLAGS.collective_timeout_secs, log=log))
    try:
        with contextlib.ExitStack() as installed:
            for hook in hooks:
                installed.enter_context(hook)
            latest = drivers.train(
                setup['driver'], ssd_model.model_fn,
                ssd_model.make_input_fn(params, is_training=True), params, FLAGS.model_dir,
                max_steps=FLAGS.max_number_of_steps, strategy=setup['strategy'],
                session_config=setup['session_config'],
                save_checkpoints_secs=FLAGS.save_checkpoints_secs,
                save_summary_steps=FLAGS.save_summary_steps,
                keep_checkpoint_max=FLAGS.keep_checkpoint_max,
                tf_random_seed=FLAGS.tf_random_seed, hooks=hooks, cluster=setup['cluster'])
    except ValueError:
        forget_new_params(setup)
        raise
    except tf.errors.DataLossError as err:
        raise dataset_common.explain_data_loss(setup['train_files'], err) or err
    except OSError as err:  # a Python-side write (the checkpoint state file, params.json)
        if err.errno != errno.ENOSPC or not _report_full_disk(
                setup, '%s; %s' % (err.filename, checkpoint_files.NO_SPACE)):
            raise
        return 1
    except tf.errors.OpError as err:
        if _report_full_disk(setup, err.message):
            return 1
        if setup['cluster'] is not None and cluster_lib.is_bind_failure(err):
            raise ValueError(cluster_lib.describe_bind_failure(setup['cluster'])) from None
        if setup['cluster'] is not None and cluster_lib.is_peer_failure(err):
            print('error: %s' % cluster_lib.describe_lost_worker(
                setup['cluster'], err.message, FLAGS.collective_timeout_secs),
                file=sys.stderr, flush=True)
            return 1
        step = (train_utils.non_finite_loss_step(err)
                if isinstance(err, tf.errors.InvalidArgumentError) else None)
        if step is None:
            raise
        what = 'the chief worker sets the bad checkpoints aside.'
        if setup['cluster'] is None or setup['cluster'].is_chief:
            _, what = checkpoint_files.roll_back_to_finite(FLAGS.model_dir, log, nan_step=step)
        print('error: Training stopped: the loss became NaN or infinite at global step %d, '
              'before the weights were updated; %s Lower --learning_rate or check the input '
              'data, then run the same command again.' % (step, what),
              file=sys.stderr, flush=True)
        return 1
    if stop.received:
        log('Stopped by %s at global step %s; saved %s. Run the same command again to resume.'
            % (stop.received, checkpoint_step(latest), latest))
        return 0
    if checkpoint_step(latest) == 0 and FLAGS.max_number_of_steps > 0:
        raise ValueError('The input in %s ended before the first step (--train_epochs=%s '
                         'over too few images for --batch_size=%d?); nothing was trained.'
                         % (FLAGS.data_dir, FLAGS.train_epochs, FLAGS.batch_size))
    log('Training finished; latest checkpoint: %s' % latest)
    return 0


def _report_full_disk(setup, error_text):
    """Prints the one-line error of a save that hit ENOSPC on the chief; False otherwise."""
    from utility.checkpoints import files as checkpoint_files
    if setup['cluster'] is not None and not setup['cluster'].is_chief:
        return False
    message = checkpoint_files.describe_full_disk(FLAGS.model_dir, error_text)
    if message:
        print('error: %s' % message, file=sys.stderr, flush=True)
    return bool(message)


def main(_):
    from utility import cluster as cluster_lib, train_utils
    from utility.checkpoints import lock as checkpoint_lock

    train_utils.quiet_tensorflow_logs(verbose=FLAGS.verbose)
    try:
        check_flags()
        cluster = cluster_lib.from_environment(os.environ)
        if cluster is not None and cluster.num_workers < 2:
            log('TF_CONFIG names a single worker: training on this machine alone.')
            cluster = None
        # One trainer per model directory; in a cluster the chief holds the lock.
        lock = (checkpoint_lock.ModelDirLock(FLAGS.model_dir, log=log)
                if cluster is None or cluster.is_chief else contextlib.nullcontext())
        with lock:
            return train(prepare(cluster))
    except ValueError as err:
        print('error: %s' % err, file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before training started: nothing to save
        print('Interrupted before training started; nothing was trained.', flush=True)
        return 130


def checkpoint_step(prefix):
    """The global step stored in checkpoint `prefix` (None if there is none)."""
    import tensorflow as tf
    return int(tf.train.load_checkpoint(prefix).get_tensor('global_step')) if prefix else None


def run():
    helpers.quiet_logs()  # before TensorFlow is imported (main imports it); --verbose keeps them
    app.run(lambda argv: sys.exit(main(argv)))


if __name__ == '__main__':
    run()
