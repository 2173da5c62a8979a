"""Train SSD300 (VGG-16 reduced-fc) on Pascal VOC TFRecords with tf.estimator.

    python3 train_ssd.py --batch_size 16

Trains on every visible GPU through MirroredStrategy (--multi_gpu, on by default), starting
from the reduced-fc VGG-16 checkpoint in ./model (see model/README.md; --checkpoint_path=
trains from scratch). Resumes from the latest checkpoint in --model_dir if there is one.
On a machine without GPUs, --num_cpu_replicas=N runs the same MirroredStrategy path on N
logical CPU devices.
"""
import os
import sys

from absl import app
from absl import flags

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
flags.DEFINE_integer('num_classes', 21, 'Number of classes, background included (VOC: 21).')
flags.DEFINE_string('model_dir', './logs/',
                    'Directory for checkpoints, summaries and params.json. Training resumes '
                    'from the latest checkpoint found here.')
flags.DEFINE_integer('log_every_n_steps', 10,
                     'Log step, losses, learning rate, accuracy and images/s every N steps.')
flags.DEFINE_integer('save_summary_steps', 500, 'Write TensorBoard summaries every N steps.')
flags.DEFINE_integer('save_checkpoints_secs', 7200,
                     'Save a checkpoint every N seconds (and always at the end).')
flags.DEFINE_integer('keep_checkpoint_max', 5, 'Number of recent checkpoints kept.')
flags.DEFINE_integer('train_image_size', 300, 'Input image size (SSD300: 300).')
flags.DEFINE_integer('train_epochs', None,
                     'Stop after this many passes over the data (default: no epoch limit; '
                     'training stops at --max_number_of_steps).')
flags.DEFINE_integer('max_number_of_steps', 120000, 'Global step at which training stops.')
flags.DEFINE_integer('batch_size', 16,
                     'Global batch size: images per step over all replicas; must divide '
                     'evenly over the replicas.')
flags.DEFINE_string('data_format', 'channels_first',
                    "'channels_first' (NCHW, fastest on GPU) or 'channels_last' (NHWC). "
                    'Without a GPU channels_last is used, with a notice.')
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
                    'Pretrained reduced-fc VGG-16: a checkpoint directory or prefix (V1 or '
                    'V2). Empty (--checkpoint_path=) trains from scratch. Ignored when '
                    '--model_dir already holds a checkpoint (training resumes instead).')
flags.DEFINE_string('checkpoint_model_scope', 'vgg_16',
                    'Variable scope of the backbone inside the pretrained checkpoint.')
flags.DEFINE_string('model_scope', 'ssd300', 'Variable scope of the model.')
flags.DEFINE_string('checkpoint_exclude_scopes',
                    'ssd300/multibox_head, ssd300/additional_layers, ssd300/conv4_3_scale',
                    'Comma-separated model scopes never restored from --checkpoint_path.')
flags.DEFINE_boolean('ignore_missing_vars', True,
                     'Model variables absent from the checkpoint keep their initial values '
                     '(they are listed); if false, a missing variable is an error.')
# Devices.
flags.DEFINE_boolean('multi_gpu', True,
                     'Train on every visible GPU with MirroredStrategy.')
flags.DEFINE_integer('num_cpu_replicas', 0,
                     'Without GPUs: split the CPU into N logical devices and train one '
                     'MirroredStrategy replica on each (N >= 2; used to test the multi-replica '
                     'path).')
flags.DEFINE_boolean('use_amp', False,
                     'Mixed precision (float16) via the graph rewrite; GPUs only, ignored with '
                     'a notice on the CPU.')
flags.DEFINE_boolean('augment', True,
                     'Photometric distortion, zoom-out, IoU crop and flip while training; '
                     '--noaugment trains on the eval preprocessing (resize only), e.g. to '
                     'overfit a few fixed images.')
flags.DEFINE_boolean('bf16', False,
                     'CPU only: bfloat16 convolutions/matmuls via the oneDNN graph rewrite '
                     '(needs AVX512-BF16 or AMX; ignored with a notice elsewhere).')


def log(message):
    print(message, flush=True)


def build_params(num_replicas, data_format, use_amp, checkpoint_path):
    """Turns the parsed flags into the model params (the only place flags are read)."""
    from net import ssd_model
    from utility import train_utils
    return ssd_model.make_params(
        num_classes=FLAGS.num_classes,
        train_image_size=FLAGS.train_image_size,
        data_format=data_format,
        model_scope=FLAGS.model_scope,
        data_dir=FLAGS.data_dir,
        batch_size=FLAGS.batch_size,
        num_replicas=num_replicas,
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
        bf16=FLAGS.bf16,
        log_every_n_steps=FLAGS.log_every_n_steps,
        checkpoint_path=checkpoint_path,
        checkpoint_model_scope=FLAGS.checkpoint_model_scope,
        checkpoint_exclude_scopes=FLAGS.checkpoint_exclude_scopes,
        ignore_missing_vars=FLAGS.ignore_missing_vars)


def prepare():
    """Checks the configuration and builds (estimator, params, num_replicas).

    Raises ValueError with a one-sentence message for configuration problems: a batch that
    does not divide over the replicas, no training shards, a missing checkpoint.
    """
    import tensorflow as tf
    from dataset import dataset_common
    from net import ssd_model, ssd_net
    from utility import checkpoint_utils, train_utils

    strategy, num_replicas, session_config = train_utils.setup_replicas(
        multi_gpu=FLAGS.multi_gpu, num_cpu_replicas=FLAGS.num_cpu_replicas,
        batch_size=FLAGS.batch_size, num_cpu_threads=FLAGS.num_cpu_threads,
        gpu_memory_fraction=FLAGS.gpu_memory_fraction, log=log)
    train_utils.configure_bf16(session_config, FLAGS.bf16, log=log)
    has_gpu = bool(tf.config.list_physical_devices('GPU'))
    data_format = ssd_net.resolve_data_format(FLAGS.data_format)
    use_amp = FLAGS.use_amp and has_gpu
    if FLAGS.use_amp and not has_gpu:
        log('--use_amp ignored: mixed precision needs a GPU; training in float32.')

    dataset_common.list_shards(os.path.join(FLAGS.data_dir, 'train-*'))

    latest = tf.train.latest_checkpoint(FLAGS.model_dir)
    checkpoint_path = FLAGS.checkpoint_path or None
    if latest:
        log('Resuming from %s (found in --model_dir); --checkpoint_path is not used.' % latest)
        checkpoint_path = None
    elif checkpoint_path:
        checkpoint_path = checkpoint_utils.resolve_checkpoint(checkpoint_path)
        log('Initializing the backbone from %s.' % checkpoint_path)
    else:
        log('No --checkpoint_path: training from scratch (random initialization).')

    params = build_params(num_replicas, data_format, use_amp, checkpoint_path)
    log('Params written to %s' % ssd_model.save_params(params, FLAGS.model_dir))

    run_config = tf.estimator.RunConfig(
        model_dir=FLAGS.model_dir,
        tf_random_seed=FLAGS.tf_random_seed,
        save_summary_steps=FLAGS.save_summary_steps,
        save_checkpoints_secs=FLAGS.save_checkpoints_secs,
        keep_checkpoint_max=FLAGS.keep_checkpoint_max,
        log_step_count_steps=None,
        session_config=session_config,
        train_distribute=strategy)
    estimator = tf.estimator.Estimator(
        model_fn=ssd_model.model_fn, model_dir=FLAGS.model_dir, config=run_config,
        params=params)
    return estimator, params, num_replicas


def main(_):
    import tensorflow as tf
    from net import ssd_model
    from utility import train_utils

    train_utils.quiet_tensorflow_logs()
    try:
        estimator, params, num_replicas = prepare()
    except ValueError as err:
        print('error: %s' % err, file=sys.stderr, flush=True)
        return 2
    log('Training to global step %d, global batch %d over %d replica(s).'
        % (FLAGS.max_number_of_steps, FLAGS.batch_size, num_replicas))
    try:
        estimator.train(input_fn=ssd_model.make_input_fn(params, is_training=True),
                        max_steps=FLAGS.max_number_of_steps)
    except tf.errors.InvalidArgumentError as err:
        message = train_utils.describe_non_finite_error(err, FLAGS.model_dir)
        if message is None:
            raise
        print('error: %s' % message, file=sys.stderr, flush=True)
        return 1
    log('Training finished; latest checkpoint: %s'
        % tf.train.latest_checkpoint(FLAGS.model_dir))
    return 0


def run():
    app.run(lambda argv: sys.exit(main(argv)))


if __name__ == '__main__':
    run()
