"""How the figures are taken: batches of a tf.data pipeline per second, interleaved rounds of
session fetches, one traced step (Chrome trace and the top op types), and a process's peak
resident memory."""
import collections
import os
import statistics
import time

import tensorflow as tf


def time_batches(dataset, batch_size, warmup, batches, repeats=1):
    """Iterates `dataset`: `warmup` batches untimed, then `repeats` timed runs of `batches`.

    Returns dict(images_per_s (median over the runs), runs (images/s of each run),
    seconds (all runs), images (per run)).
    """
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    rates, total = [], 0.
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        seconds = time.perf_counter() - start
        total += seconds
        rates.append(batches * batch_size / seconds)
    return {'images_per_s': statistics.median(rates), 'runs': rates, 'seconds': total,
            'images': batches * batch_size}


def time_runs(sess, fetches, warmup, steps):
    """Runs every fetch `warmup` times untimed, then `steps` rounds, one run of each fetch
    per round (interleaved, so a change of machine load hits all alike).

    Args: fetches: OrderedDict name -> fetch.  Returns dict name -> list of seconds.
    """
    for _ in range(warmup):
        for fetch in fetches.values():
            sess.run(fetch)
    seconds = {name: [] for name in fetches}
    for _ in range(steps):
        for name, fetch in fetches.items():
            start = time.perf_counter()
            sess.run(fetch)
            seconds[name].append(time.perf_counter() - start)
    return seconds


def trace(sess, fetch, path, top=12):
    """Runs `fetch` once with a full trace: writes a Chrome trace to `path` and returns
    the `top` op types by summed op time [(type, ms, share of the summed time)]."""
    from tensorflow.python.client import timeline
    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    metadata = tf.compat.v1.RunMetadata()
    sess.run(fetch, options=options, run_metadata=metadata)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write(timeline.Timeline(metadata.step_stats).generate_chrome_trace_format())
    by_type = collections.Counter()
    for device in metadata.step_stats.dev_stats:
        for node in device.node_stats:
            label = node.timeline_label
            op_type = label.split(' = ', 1)[1].split('(', 1)[0] if ' = ' in label else (
                node.node_name.split(':')[0])
            by_type[op_type] += node.op_end_rel_micros - node.op_start_rel_micros
    total = float(sum(by_type.values())) or 1.
    return [(name, round(micros / 1000., 1), round(micros / total, 3))
            for name, micros in by_type.most_common(top)]


def peak_memory():
    """Peak resident memory of this process: dict(peak_rss_gb, vm_hwm_gb) in 1e9 bytes."""
    import resource
    result = {'peak_rss_gb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                   * 1024 / 1e9, 3)}
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    result['vm_hwm_gb'] = round(int(line.split()[1]) * 1024 / 1e9, 3)
    except OSError:
        pass
    return result
