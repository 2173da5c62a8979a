"""The benchmark's report: a table of every stage's figures under the machine line, and a
summary of the headline figures with their targets."""
import collections

from common.console import parse_number_list


def _flatten(prefix, value, rows):
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten('%s.%s' % (prefix, k) if prefix else k, v, rows)
    else:
        rows.append((prefix, value))


def summarize(report):
    """The headline figures of the stages that ran, with their targets: a flat dict
    figure -> value, or (value, 'target ...', met) where the issue sets a target."""
    stages = report['stages']
    summary = collections.OrderedDict()
    if 'input' in stages:
        s = stages['input']
        summary['input pipeline images/s (total, per core)'] = (
            '%.1f, %.1f' % (s['pipeline']['images_per_s'],
                            s['pipeline']['images_per_s_per_core']),
            '>= %g' % s['target_images_per_s'], s['meets_target'])
    if 'train' in stages:
        s = stages['train']
        summary['large conv 3x3 (fwd+bwd) / matmul GFLOP/s'] = '%.1f (%.1f) / %.1f' % (
            s['conv3x3_gflop_per_s'], s['conv3x3_fwd_bwd_gflop_per_s'],
            s['matmul_gflop_per_s'])
        for key, entry in s.items():
            if key.startswith('batch_'):
                summary['training %s images/s, GFLOP/s, ratio to conv (fwd+bwd)' % key] = (
                    '%.3f, %.1f, %.3f (%.3f)' % (
                        entry['images_per_s'], entry['gflop_per_s'],
                        entry['ratio_to_conv3x3'], entry['ratio_to_conv3x3_fwd_bwd']))
                if 'speedup_over_fp32' in entry:
                    summary['training %s speed-up over fp32' % key] = entry['speedup_over_fp32']
        if 'meets_ratio_target' in s:
            batch = 'batch_%d' % report['settings']['target_batch']
            summary['training %s ratio to conv' % batch] = (
                s[batch]['ratio_to_conv3x3'], '>= %g' % s['target_ratio_to_conv3x3'],
                s['meets_ratio_target'])
            summary['training %s peak resident GB' % batch] = (
                s[batch]['peak_rss_gb'], '<= %g' % s['target_peak_rss_gb'],
                s['meets_memory_target'])
    if 'infer' in stages:
        s = stages['infer']
        summary['inference images/s (network + post-processing, batch %d)'
                % s['batch_size']] = s['images_per_s']
        summary['inference share after the network: post-processing alone '
                '(difference net+post - net)'] = (
            '%.3f (%.3f)' % (s['share_postprocess_alone'], s['share_after_network']),
            '< %g' % s['target_share_after_network'], s['meets_target'])
    if 'backbones' in stages:
        s = stages['backbones']
        for name, entry in s.items():
            if isinstance(entry, dict):
                summary['%s: training GFLOP/image, images/s (batch %d), GFLOP/s' % (
                    name, s['batch_size'])] = '%.1f, %.3f, %.1f' % (
                        entry['train_gflop_per_image'], entry['images_per_s'],
                        entry['gflop_per_s'])
    if 'metric' in stages:
        s = stages['metric']
        summary['VOC metric seconds, %d images' % s['images']] = (
            s['seconds_best'], '< %g' % s['target_seconds'], s['meets_target'])
    if 'coco_metric' in stages:
        s = stages['coco_metric']
        summary['COCO metric seconds (pycocotools), %d images' % s['images']] = s[
            'pycocotools_seconds']
        if 'faster_speedup' in s:
            summary['faster-coco-eval speed-up, max difference'] = '%.2fx, %.2g' % (
                s['faster_speedup'], s['faster_max_abs_difference'])
    for stage in ('tflite', 'export'):
        if stage not in stages:
            continue
        s = stages[stage]
        threads = parse_number_list(report['settings']['tflite_threads'], int,
                                    '--tflite_threads')
        for name in ('saved_model_fp32', 'tflite_fp32', 'tflite_int8', 'onnx',
                     'openvino_fp32'):
            if isinstance(s.get(name), str):  # not measured: why
                summary[name] = s[name]
            elif name in s and 'map_voc07' in s[name]:
                summary['%s: MB, ms per image at %s thread(s), mAP VOC07 / 2010+' % (
                    name, ', '.join(map(str, threads)))] = '%.1f, %s, %.4f / %.4f' % (
                        s[name]['size_mb'], ', '.join('%.1f' % s[name]['ms_%d_threads' % n]
                                                      for n in threads),
                        s[name]['map_voc07'], s[name]['map_voc2010'])
            elif name in s:
                summary['%s: MB, ms per image at %s thread(s)' % (
                    name, ', '.join(map(str, threads)))] = '%.1f, %s' % (
                        s[name]['size_mb'], ', '.join('%.1f' % s[name]['ms_%d_threads' % n]
                                                      for n in threads))
        if 'meets_targets' in s:
            summary['int8 speed-up over SavedModel / TFLite fp32, size share'] = (
                '%.2fx / %.2fx, %.2f' % (s['int8_speedup_over_saved_model'],
                                         s['int8_speedup_over_tflite_fp32'],
                                         s['int8_size_share_of_tflite_fp32']),
                '>= 2x / 1.5x, <= 0.3', s['meets_targets'])
    if 'convert' in stages:
        s = stages['convert']
        summary['conversion images/s (total, per core)'] = '%.1f, %.1f' % (
            s['images_per_s'], s['images_per_s_per_core'])
    return summary


def format_summary(summary):
    rows = []
    for name, value in summary.items():
        if isinstance(value, tuple):
            value, target, met = value
            rows.append((name, str(value), '%s: %s' % (target, 'met' if met else 'NOT met')))
        else:
            rows.append((name, str(value), ''))
    if not rows:
        return ''
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    fmt = '%%-%ds  %%%ds  %%s' % tuple(widths[:2])
    return '\n'.join(['summary:'] + [fmt % r for r in rows])


def format_table(report):
    machine = report['machine']
    lines = ['machine: %d cores, %s, TensorFlow %s (oneDNN %s), Python %s, load average '
             '(1, 5, 15 min) %s -> %s'
             % (machine['cores'], machine['cpu_model'], machine['tensorflow'],
                machine['onednn'], machine['python'], machine['load_average_1_5_15min'],
                report['load_average_after'])]
    rows = []
    for stage, result in report['stages'].items():
        flat = []
        _flatten('', result, flat)
        rows.extend((stage, k, v) for k, v in flat)
    widths = [max(len(str(r[i])) for r in rows + [('stage', 'metric', 'value')])
              for i in range(3)]
    fmt = '%%-%ds  %%-%ds  %%%ds' % tuple(widths)
    lines.append(fmt % ('stage', 'metric', 'value'))
    lines.append(fmt % tuple('-' * w for w in widths))
    lines.extend(fmt % (s, k, v) for s, k, v in rows)
    summary = format_summary(summarize(report))
    if summary:
        lines += ['', summary]
    return '\n'.join(lines)
