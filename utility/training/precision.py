"""Training and inference precision on the CPU: does it have native bfloat16
(AVX512-BF16/AMX), what --precision auto|fp32|bf16 resolves to, and the oneDNN bfloat16
graph rewrite in a session config."""
import os

import tensorflow as tf

from common import defaults

BF16_CPU_FLAGS = ('avx512_bf16', 'amx_bf16')
# Read instead of /proc/cpuinfo when set: lets tests (and users) see what a CPU without (or
# with) bfloat16 would get.
CPUINFO_ENV = 'SSD_CPUINFO'


def cpu_supports_bf16(cpuinfo_path=None):
    """True when the CPU advertises native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16).

    Reads the 'flags' lines of `cpuinfo_path` (default: $SSD_CPUINFO, else /proc/cpuinfo);
    False when the file is missing or unreadable (other systems), so callers fall back to
    float32.
    """
    path = cpuinfo_path or os.environ.get(CPUINFO_ENV) or '/proc/cpuinfo'
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith('flags') and ':' in line:
            flags = set(line.split(':', 1)[1].split())
            if flags.intersection(BF16_CPU_FLAGS):
                return True
    return False


def apply_bf16(config_proto):
    """Turns on grappler's oneDNN bfloat16 auto-mixed-precision rewrite in `config_proto`.

    Convolutions, matmuls and their gradients then run in bfloat16 on the CPU while the
    variables, the loss and the optimizer stay float32 (the rewrite inserts the casts). Pass
    the tf.compat.v1.ConfigProto used for the training session (RunConfig.session_config or
    MonitoredTrainingSession's config). Modifies it in place and returns it.
    """
    from tensorflow.core.protobuf import rewriter_config_pb2
    config_proto.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 = (
        rewriter_config_pb2.RewriterConfig.ON)
    return config_proto


# Why a multi-worker run trains in fp32 (the rewrite's bfloat16 convolutions reach the
# workers' graphs fused, and the fused kernel they get there has no bfloat16 type).
MULTI_WORKER_REASON = ('multi-worker training (TF_CONFIG) runs in fp32: the workers\' '
                       'sessions have no bfloat16 kernel for the fused convolutions the oneDNN '
                       'rewrite makes')


def resolve_precision(requested, has_gpu, cpu_bf16, multi_worker=False):
    """The precision a run trains in, and why: ('fp32' or 'bf16', reason).

    `requested` is one of defaults.PRECISIONS. bf16 is the CPU's oneDNN rewrite: never on a GPU
    (mixed precision there is --use_amp), never on a CPU without native bfloat16 (it would be
    emulated, slower than float32), never in a multi-worker cluster (`multi_worker`: on a CPU
    with bfloat16 every worker failed at its first step with "Value for attr 'T' of bfloat16 is
    not in the list of allowed values ... _FusedConv2D", on TF 2.15 and 2.21, both drivers).
    An explicit bf16 that cannot apply says so in its reason.
    """
    if requested not in defaults.PRECISIONS:
        raise ValueError('--precision=%s is not one of %s.'
                         % (requested, '|'.join(defaults.PRECISIONS)))
    if requested == 'fp32':
        return 'fp32', '--precision=fp32'
    prefix = 'auto' if requested == 'auto' else '--precision=bf16 ignored'
    if multi_worker:
        return 'fp32', '%s: %s' % (prefix, MULTI_WORKER_REASON)
    if has_gpu:
        return 'fp32', '%s: a GPU is visible (mixed precision on a GPU is --use_amp)' % prefix
    if not cpu_bf16:
        return 'fp32', '%s: this CPU has neither AVX512-BF16 nor AMX-BF16' % prefix
    return 'bf16', ('auto: ' if requested == 'auto' else '') + 'this CPU has %s' % (
        'AVX512-BF16 or AMX-BF16')


def configure_precision(config_proto, requested, log=print, cpuinfo_path=None,
                        multi_worker=False):
    """Driver helper for --precision: resolves it for this machine (and `multi_worker`: a
    TF_CONFIG cluster), applies `apply_bf16` to `config_proto` when the answer is bf16, and
    logs the choice in one line.

    Returns 'bf16' or 'fp32' (what params.json records).
    """
    has_gpu = bool(tf.config.list_physical_devices('GPU'))
    cpu_bf16 = False if has_gpu else cpu_supports_bf16(cpuinfo_path)
    precision, reason = resolve_precision(requested, has_gpu, cpu_bf16, multi_worker)
    if precision == 'bf16':
        apply_bf16(config_proto)
        log('Precision: bf16 (%s): convolutions and matmuls run in bfloat16 (oneDNN auto mixed '
            'precision); weights, loss and optimizer stay float32.' % reason)
    else:
        log('Precision: fp32 (%s).' % reason)
    return precision
