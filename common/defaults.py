"""Names and defaults, each stated once, with no TensorFlow: the model scope, the backbone and
anchor defaults, the choices of the data-format, driver and precision flags, the params file's
name, the default directories and DEFAULT_PARAMS, every key model_fn / input_fn read.

The entry scripts' flags take their defaults from here (so `--help` needs no TensorFlow), and
so do the library modules that own the behaviour behind each name (net/, utility/).
"""

# ----------------------------------------------------------------------------- names

# Variable scope of the whole SSD (checkpoint names start with it: ssd300/vgg_16/conv1/...).
MODEL_SCOPE = 'ssd300'
# The backbone registry's default (net/backbones.BACKBONES).
BACKBONE = 'vgg16'
# Scope of the backbone variables in the public reduced-fc VGG-16 checkpoint.
VGG16_CHECKPOINT_SCOPE = 'vgg_16'
# The resolved params of a run, written into its model directory (utility/checkpoints).
PARAMS_NAME = 'params.json'
# Where the entry scripts look by default: training output, converted records, backbone weights.
MODEL_DIR = './logs/'
DATA_DIR = './dataset/tfrecords'
BACKBONE_CHECKPOINT_DIR = './model'

# ----------------------------------------------------------------------------- choices

AUTO = 'auto'
# --data_format (net/ssd_net.resolve_data_format holds the rule).
DATA_FORMATS = (AUTO, 'channels_first', 'channels_last')
DATA_FORMAT_HELP = ("'auto': channels_first (NCHW, fastest on GPU) when a GPU is visible, else "
                    'channels_last (NHWC). channels_first without a GPU falls back to '
                    'channels_last, with a notice.')
# --driver: what runs model_fn (utility/drivers.py).
DRIVERS = (AUTO, 'estimator', 'session')
# --precision of training: 'auto' is bf16 where the CPU has it (utility/training/precision.py).
PRECISIONS = (AUTO, 'fp32', 'bf16')
# Eval and demo run in fp32 unless --precision says otherwise (docs/learning.md, "Inference in
# bf16": the detections are not all within a pixel in bf16).
INFERENCE_PRECISION = 'fp32'
# Anchor sizes (net/anchors.ANCHOR_PRESETS).
ANCHOR_PRESET = 'voc'
# Post-processing: which detections NMS keeps per image, and how it runs (net/postprocess).
KEEP_PER = ('image', 'class')
NMS_OPS = ('combined', 'per_class')

# ----------------------------------------------------------------------------- values

IMAGE_SIZE = 300
# ResNets: decay of the batch-norm moving averages. Their initial values fade as decay**step:
# 0.997 needs ~1000 steps; a short fit (a few images) wants ~0.9.
BATCH_NORM_DECAY = 0.997

# The post-processing settings (net/postprocess.postprocess's keyword defaults, the eval, demo
# and export flags).
POSTPROCESS = {
    'select_threshold': 0.01,
    'min_size': 0.03,
    'keep_topk': 400,
    'nms_threshold': 0.45,
    'nms_topk': 200,
    'keep_per': 'image',  # 'class': nms_topk per class, as the original's eval
}

# Every key model_fn / input_fn read, with its default (utility/ssd_model.make_params fills in
# the anchor spec and the backbone-dependent keys left at None). Entry scripts override from
# flags; train_ssd.py's flags take these as their defaults.
DEFAULT_PARAMS = {
    'num_classes': 21,
    # Class names, index = label id ('none' first), from the data's manifest.json; written to
    # params.json so that eval, demo and export know them. None: the VOC names.
    'class_names': None,
    'train_image_size': IMAGE_SIZE,
    # ANCHOR_PRESETS name ('voc' or 'coco'): train_ssd.py takes it from the data's manifest
    # unless --anchor_preset is given.
    'anchor_preset': ANCHOR_PRESET,
    # One of DATA_FORMATS; make_params resolves 'auto' for this machine.
    'data_format': AUTO,
    'model_scope': MODEL_SCOPE,
    # net/backbones.py name; the four keys below left at None follow it (make_params).
    'backbone': BACKBONE,
    'channel_order': None,         # VGG-16: 'bgr'; ResNets: 'rgb'
    'mean_rgb': None,              # subtracted on the 0-255 scale, (R, G, B)
    'freeze_batch_norm': False,    # ResNets: moving statistics in training too
    'head': None,                  # net/ssd_net.HEADS; None: the backbone's ('conv', SSDLite's)
    'batch_norm_decay': BATCH_NORM_DECAY,
    # data
    'data_dir': DATA_DIR,
    'batch_size': 16,              # global batch over all replicas
    'num_replicas': 1,             # all replicas of all workers
    'num_workers': 1,              # multi-worker training (TF_CONFIG): workers in the cluster
    'worker_index': 0,             # ... and this one's place (0 = chief): its data shard
    'num_readers': 8,
    'num_preprocessing_threads': 24,
    'train_epochs': None,
    # False: train on the eval preprocessing (resize + mean only; still shuffled and repeated),
    # e.g. to overfit a few fixed images.
    'augment': True,
    'tf_random_seed': 20180503,
    # targets and loss
    'match_threshold': 0.5,
    'neg_threshold': 0.5,
    'negative_ratio': 3.0,
    'weight_decay': 5e-4,
    # optimizer
    'momentum': 0.9,
    'learning_rate': 1e-3,
    'end_learning_rate': 1e-6,
    'decay_boundaries': [500, 80000, 100000],
    'lr_decay_factors': [0.1, 1.0, 0.1, 0.01],
    'use_amp': False,
    # One of PRECISIONS: 'auto' trains in bf16 (the oneDNN bfloat16 graph rewrite) where the
    # CPU has AVX512-BF16/AMX and no GPU is visible, else fp32 (docs/learning.md, "bf16
    # against fp32": held-out mAP within the run-to-run noise, 1.9x faster). utility/trainer.py
    # sets it in the session config (precision.configure_precision); params.json records the
    # resolved 'fp32' or 'bf16' so that it says how a run trained.
    'precision': AUTO,
    'log_every_n_steps': 10,
    # backbone restore
    'checkpoint_path': None,
    'checkpoint_model_scope': None,     # VGG-16: 'vgg_16'; ResNet-50: 'resnet_v1_50'
    'checkpoint_exclude_scopes': None,  # the SSD layers (ssd_net.default_exclude_scopes)
    'ignore_missing_vars': True,
    **POSTPROCESS,
    # How NMS runs (one of NMS_OPS): 'combined' (TF's combined op: eval, demo, SavedModel) or
    # 'per_class' (TFLite builtins; the TFLite export sets it).
    'nms_ops': 'combined',
}


def number_list_text(values):
    """The comma-separated flag text of a list of numbers: [0.1, 1.0] -> '0.1, 1'."""
    return ', '.join('%g' % value for value in values)
