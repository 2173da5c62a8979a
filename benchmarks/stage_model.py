"""The model stages: model_fn's TRAIN and PREDICT graphs timed in TF sessions, each measurement
in its own worker process (benchmarks/workers.py).

  train      model_fn's TRAIN graph (net, loss, momentum update), built directly in a
             tf.compat.v1 Session (the same graph tf.estimator runs), timed as
             sess.run(train_op) on ONE fixed batch drawn from the real training input
             pipeline and held in variables (so the input pipeline is not counted).  For each
             --train_batch_sizes (8,16) and each --train_precisions (fp32,bf16: float32, and
             bfloat16 through the oneDNN rewrite that train_ssd.py --precision=bf16 applies, on
             CPUs that have it) in its own subprocess: images/s (median step after
             --train_warmup steps), achieved GFLOP/s (benchmarks/flops.py), the peak resident
             memory of that process, and bf16's speed-up over fp32.  Beside it, in the same
             run: GFLOP/s of a large 3x3 convolution and of a large matmul, and the ratio
             training / convolution.
  kernels    only the convolution and matmul GFLOP/s (train reports them too).
  backbones  each of --backbones side by side: GFLOP per training image and training
             images/s at --backbones_batch_size (the train stage's worker, one subprocess
             each).
  infer      model_fn's PREDICT graph on a fixed eval batch (--infer_batch_size), interleaved
             runs of: network only, network + post-processing (decode, top-k, NMS) and
             post-processing alone on the network's output; images/s and the share of time
             after the network, both as (fastest net+post - fastest net) / net+post and,
             directly, post alone / net+post (the target is checked on the direct one).  The
             weights are untrained, so every anchor passes the 0.01 score threshold for every
             class: the worst case for NMS.
"""
import argparse
import collections

import tensorflow as tf

from benchmarks import machine
from benchmarks.flops import backbone_train_gflop
from benchmarks.workers import run_worker
from common.console import parse_comma_list
from common.console import parse_number_list


def bench_kernels(args, context):
    """Large 3x3 convolution and matmul GFLOP/s: what this machine's TF can do at best."""
    return collections.OrderedDict(context.kernels())


def bench_train(args, context):
    """Training images/s and GFLOP/s at each --train_batch_sizes, peak memory, and the
    ratio to the large convolution's GFLOP/s measured in the same run."""
    forward_gmac, train_gflop = backbone_train_gflop(args.backbone)
    kernels = context.kernels()
    conv_rate = kernels['conv3x3']['gflop_per_s']
    result = collections.OrderedDict()
    result['method'] = 'sess.run(train_op), one fixed real batch in variables'
    result['backbone'] = args.backbone
    result['forward_gmac_per_image'] = round(forward_gmac, 2)
    result['train_gflop_per_image'] = round(train_gflop, 1)
    result['conv3x3_gflop_per_s'] = conv_rate
    result['conv3x3_fwd_bwd_gflop_per_s'] = kernels['conv3x3_fwd_bwd']['gflop_per_s']
    result['matmul_gflop_per_s'] = kernels['matmul']['gflop_per_s']
    cores = machine.cpu_count()
    precisions = parse_comma_list(args.train_precisions)
    unknown = sorted(set(precisions) - {'fp32', 'bf16'})
    if unknown:
        raise ValueError('--train_precisions: unknown %s; use fp32 and/or bf16.'
                         % ', '.join(unknown))
    if 'bf16' in precisions and not _bf16_available():
        precisions.remove('bf16')
        result['bf16'] = 'not measured: this CPU has neither AVX512-BF16 nor AMX-BF16'
    for batch in parse_number_list(args.train_batch_sizes, int, '--train_batch_sizes'):
        for precision in precisions:
            worker = run_worker('train', argparse.Namespace(**dict(
                vars(args), bf16=precision == 'bf16')), data_dir=context.data_dir(),
                batch_size=batch)
            rate = worker['images_per_s']
            entry = collections.OrderedDict()
            entry['precision'] = precision
            entry['images_per_s'] = rate
            entry['images_per_s_per_core'] = round(rate / cores, 3)
            entry['step_seconds'] = worker['step_seconds']
            entry['gflop_per_s'] = round(rate * train_gflop, 1)
            entry['ratio_to_conv3x3'] = round(rate * train_gflop / conv_rate, 3)
            # The fairer ceiling: the same convolution forward + both gradients, as training
            # runs (both ratios are to the float32 kernels).
            entry['ratio_to_conv3x3_fwd_bwd'] = round(
                rate * train_gflop / kernels['conv3x3_fwd_bwd']['gflop_per_s'], 3)
            entry['peak_rss_gb'] = worker['peak_rss_gb']
            entry['loss_after'] = worker['loss_after']
            if 'trace_top_ops_ms' in worker:
                entry['trace_top_ops_ms'] = worker['trace_top_ops_ms']
            key = 'batch_%d' % batch + ('' if precision == 'fp32' else '_' + precision)
            if precision != 'fp32' and 'batch_%d' % batch in result:
                entry['speedup_over_fp32'] = round(
                    rate / result['batch_%d' % batch]['images_per_s'], 2)
            result[key] = entry
    check = result.get('batch_%d' % args.target_batch)
    if check:
        result['target_ratio_to_conv3x3'] = args.train_target_ratio
        result['meets_ratio_target'] = check['ratio_to_conv3x3'] >= args.train_target_ratio
        result['target_peak_rss_gb'] = args.memory_target_gb
        result['meets_memory_target'] = check['peak_rss_gb'] <= args.memory_target_gb
    return result


def _bf16_available():
    """True when the train stage can measure bf16 here (train_ssd.py's --precision=auto rule)."""
    from utility.training import precision as precision_lib
    return precision_lib.resolve_precision(
        'auto', bool(tf.config.list_physical_devices('GPU')),
        precision_lib.cpu_supports_bf16())[0] == 'bf16'


def bench_backbones(args, context):
    """Each of --backbones side by side: counted GFLOP per training image, training
    images/s at --backbones_batch_size and the GFLOP/s that makes."""
    result = collections.OrderedDict()
    result['batch_size'] = args.backbones_batch_size
    for name in parse_comma_list(args.backbones):
        forward_gmac, train_gflop = backbone_train_gflop(name)
        worker = run_worker('train', argparse.Namespace(**dict(vars(args), backbone=name)),
                            data_dir=context.data_dir(), batch_size=args.backbones_batch_size)
        entry = collections.OrderedDict()
        entry['forward_gmac_per_image'] = round(forward_gmac, 2)
        entry['train_gflop_per_image'] = round(train_gflop, 1)
        entry['images_per_s'] = worker['images_per_s']
        entry['step_seconds'] = worker['step_seconds']
        entry['gflop_per_s'] = round(worker['images_per_s'] * train_gflop, 1)
        entry['peak_rss_gb'] = worker['peak_rss_gb']
        entry['loss_after'] = worker['loss_after']
        result[name] = entry
    return result


def bench_infer(args, context):
    """PREDICT graph images/s and the share of time spent after the network."""
    worker = run_worker('infer', args, data_dir=context.data_dir())
    result = collections.OrderedDict(worker)
    result['gflop_per_s_network'] = round(
        worker['network_only_images_per_s'] * 2 * context.forward_gmac(), 1)
    result['target_share_after_network'] = args.postprocess_target_share
    # Checked on the direct measurement (post-processing alone / network + post-processing).
    result['meets_target'] = worker['share_postprocess_alone'] < args.postprocess_target_share
    return result
