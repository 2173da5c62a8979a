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
from absl import flags

from common import console, defaults

FLAGS = flags.FLAGS
# Every flag that is also a model param takes the model's default.
DEFAULTS = defaults.DEFAULT_PARAMS

# Data and input pipeline.
flags.DEFINE_integer('num_readers', DEFAULTS['num_readers'],
                     'Number of TFRecord shards read in parallel.')
flags.DEFINE_integer('num_preprocessing_threads', DEFAULTS['num_preprocessing_threads'],
                     'Parallel calls for decoding and augmentation (0 = let tf.data autotune).')
flags.DEFINE_integer('num_cpu_threads', 0,
                     'Threads TensorFlow uses for its CPU op pools (0 = one per core).')
flags.DEFINE_float('gpu_memory_fraction', 1.0,
                   'Fraction of each GPU\'s memory to reserve (1.0 = grow as needed).')
flags.DEFINE_string('data_dir', DEFAULTS['data_dir'],
                    'Directory with the train-*-of-* TFRecord shards made by '
                    'dataset/convert_voc_sample_tfrecords.py or dataset/convert_tfrecords.py.')
flags.DEFINE_integer('num_classes', None,
                     'Number of classes, background included (VOC: 21). Default: the class '
                     'names the converter recorded in <data_dir>/manifest.json, plus the '
                     'background; a different value is an error.')
flags.DEFINE_string('model_dir', defaults.MODEL_DIR,
                    'Directory for checkpoints, summaries and params.json. Training resumes '
                    'from the latest checkpoint found here.')
flags.DEFINE_integer('log_every_n_steps', DEFAULTS['log_every_n_steps'],
                     'Log step, losses, learning rate, accuracy and images/s every N steps.')
flags.DEFINE_integer('save_summary_steps', 500, 'Write TensorBoard summaries every N steps.')
flags.DEFINE_integer('save_checkpoints_secs', 7200,
                     'Save a checkpoint every N seconds; 0 = only when training starts and '
                     'ends. A checkpoint is always written at the end, also when SIGTERM or '
                     'Ctrl-C stops training (a second signal exits at once, unsaved).')
flags.DEFINE_integer('keep_checkpoint_max', 5, 'Number of recent checkpoints kept.')
flags.DEFINE_integer('train_image_size', DEFAULTS['train_image_size'],
                     'Input image size (SSD300: 300).')
flags.DEFINE_integer('train_epochs', DEFAULTS['train_epochs'],
                     'Stop after this many passes over the data (default: no epoch limit; '
                     'training stops at --max_number_of_steps).')
flags.DEFINE_integer('max_number_of_steps', 120000, 'Global step at which training stops.')
flags.DEFINE_integer('batch_size', DEFAULTS['batch_size'],
                     'Global batch size: images per step over all replicas; must divide '
                     'evenly over the replicas.')
flags.DEFINE_enum('data_format', DEFAULTS['data_format'], list(defaults.DATA_FORMATS),
                  defaults.DATA_FORMAT_HELP)
# Targets and loss.
flags.DEFINE_float('negative_ratio', DEFAULTS['negative_ratio'],
                   'Hard negatives per positive anchor in the loss.')
flags.DEFINE_float('match_threshold', DEFAULTS['match_threshold'],
                   'IoU at or above which an anchor is positive.')
flags.DEFINE_float('neg_threshold', DEFAULTS['neg_threshold'],
                   'IoU below which an anchor is background; anchors between this and '
                   '--match_threshold are ignored.')
flags.DEFINE_integer('tf_random_seed', DEFAULTS['tf_random_seed'], 'Random seed for TensorFlow.')
flags.DEFINE_float('weight_decay', DEFAULTS['weight_decay'], 'L2 weight decay.')
# Optimizer.
flags.DEFINE_float('momentum', DEFAULTS['momentum'], 'Momentum of the SGD optimizer.')
flags.DEFINE_float('learning_rate', DEFAULTS['learning_rate'], 'Base learning rate.')
flags.DEFINE_float('end_learning_rate', DEFAULTS['end_learning_rate'],
                   'The learning rate never goes below this.')
flags.DEFINE_string('decay_boundaries', defaults.number_list_text(DEFAULTS['decay_boundaries']),
                    'Global steps where the learning-rate factor changes (comma-separated).')
flags.DEFINE_string('lr_decay_factors', defaults.number_list_text(DEFAULTS['lr_decay_factors']),
                    'Learning-rate factor for each interval; one more than the boundaries. '
                    'The default warms up at 0.1x for 500 steps, then decays twice.')
# Restore.
flags.DEFINE_string('checkpoint_path', defaults.BACKBONE_CHECKPOINT_DIR,
                    'Pretrained weights: a checkpoint directory or prefix (V1 or V2) of the '
                    'backbone (reduced-fc VGG-16, TF-slim resnet_v1_50/101) or of a whole SSD '
                    '(this project\'s or the original SSD.TensorFlow\'s, to fine-tune). Empty '
                    '(--checkpoint_path=) trains from scratch. Ignored when --model_dir already '
                    'holds a checkpoint (training resumes instead).')
flags.DEFINE_string('checkpoint_model_scope', DEFAULTS['checkpoint_model_scope'],
                    'Variable scope of the backbone inside the pretrained checkpoint '
                    '(default: the backbone\'s: vgg_16, resnet_v1_50, ...).')
flags.DEFINE_string('model_scope', DEFAULTS['model_scope'], 'Variable scope of the model.')
flags.DEFINE_string('backbone', DEFAULTS['backbone'],
                    'Feature extractor: a name in the net/backbones.py registry (vgg16, the '
                    'ResNets resnet18/34/50/101, and any you register there); its input '
                    'convention and checkpoint scope come with it. ResNet weights: see '
                    'model/README.md.')
flags.DEFINE_string('anchor_preset', '',
                    'Anchor sizes (net/anchors.py ANCHOR_PRESETS): voc (SSD300 on VOC, first '
                    'scale 0.1) or coco (the caffe SSD300 COCO sizes, 21..315 pixels), ssdlite '
                    '(0.2..0.95, SSDLite\'s). Empty: the backbone\'s own preset if it has one '
                    '(mobilenet_v2: ssdlite), else the preset the converter recorded in '
                    '<data_dir>/manifest.json (coco for COCO data), else voc. Or a json file of '
                    'default-box sizes fitted to the data (python3 -m dataset.report '
                    '--fit_anchors FILE.json), recorded whole. Recorded in params.json; resuming '
                    'checks it.')
flags.DEFINE_enum('head', None, ['conv', 'ssdlite'],
                  'Multibox heads: conv (SSD\'s 3x3 convolutions) or ssdlite (3x3 depthwise + '
                  'batch norm + ReLU6, then 1x1). Default: the backbone\'s (mobilenet_v2: '
                  'ssdlite; the others: conv). Recorded in params.json; resuming checks it.')
flags.DEFINE_boolean('freeze_batch_norm', DEFAULTS['freeze_batch_norm'],
                     'ResNets: batch norm uses its moving statistics in training too and '
                     'gamma/beta stay fixed (for fine-tuning with few images per replica).')
flags.DEFINE_float('batch_norm_decay', DEFAULTS['batch_norm_decay'],
                   'ResNets: decay of the batch-norm moving averages that eval, demo and export '
                   'use (their initial values fade as decay**step). Keep 0.997 for long runs; '
                   'fitting a few images in a few hundred steps wants about 0.9. Recorded in '
                   'params.json.')
flags.DEFINE_string('checkpoint_exclude_scopes', DEFAULTS['checkpoint_exclude_scopes'],
                    'Comma-separated model scopes never restored from --checkpoint_path '
                    '(default: the layers no ImageNet checkpoint of --backbone has, under '
                    '--model_scope: net/ssd_net.default_exclude_scopes; empty '
                    '(--checkpoint_exclude_scopes=) restores every layer the checkpoint has).')
flags.DEFINE_boolean('ignore_missing_vars', DEFAULTS['ignore_missing_vars'],
                     'Model variables absent from the checkpoint keep their initial values '
                     '(they are listed); if false, a missing variable is an error.')
# Devices.
flags.DEFINE_boolean('multi_gpu', True,
                     'Train on every visible GPU with MirroredStrategy.')
flags.DEFINE_integer('num_cpu_replicas', 0,
                     'Without GPUs: split the CPU into N logical devices and train one '
                     'MirroredStrategy replica on each (N >= 2; used to test the multi-replica '
                     'path; 0 = off).')
flags.DEFINE_enum('driver', defaults.AUTO, list(defaults.DRIVERS),
                  'What runs the training loop: tf.estimator (TensorFlow <= 2.15) or a plain '
                  'MonitoredTrainingSession (any TensorFlow 2.x); auto = the Estimator where '
                  'TensorFlow has it. Checkpoints from either resume under the other.')
flags.DEFINE_integer('collective_timeout_secs', 600,
                     'Multi-worker training (TF_CONFIG set): a worker whose step (all-reduce '
                     'included) makes no progress for this long stops with a message naming '
                     'the lost worker; 0 = wait forever.')
flags.DEFINE_boolean('use_amp', DEFAULTS['use_amp'],
                     'Mixed precision (float16) via the graph rewrite; GPUs only, ignored with '
                     'a notice on the CPU.')
flags.DEFINE_boolean('augment', DEFAULTS['augment'],
                     'Photometric distortion, zoom-out, IoU crop and flip while training; '
                     '--noaugment trains on the eval preprocessing (resize only), e.g. to '
                     'overfit a few fixed images.')
flags.DEFINE_boolean(console.VERBOSE_FLAG, False, console.VERBOSE_HELP)
flags.DEFINE_enum('precision', DEFAULTS['precision'], list(defaults.PRECISIONS),
                  'Arithmetic of the convolutions and matmuls: bf16 = bfloat16 through the '
                  'oneDNN graph rewrite (CPUs with AVX512-BF16 or AMX; weights, loss and '
                  'optimizer stay float32), fp32 = float32 throughout; auto = bf16 where the '
                  'CPU has it and no GPU is visible, else fp32. Printed at start and written '
                  'to params.json. GPUs: --use_amp.')
flags.DEFINE_boolean('bf16', False, 'Same as --precision=bf16 (kept for older commands).')


def main(_):
    from utility import trainer
    return trainer.main(FLAGS)


if __name__ == '__main__':
    console.quiet_logs()  # before TensorFlow is imported (main imports it); --verbose keeps them
    from utility import entry
    entry.run(main, interrupted='Interrupted before training started; nothing was trained.')
