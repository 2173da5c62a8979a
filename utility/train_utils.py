"""Training helpers shared by the model_fn and train_ssd.py.

Learning-rate schedule, the finite-loss guard, the progress-logging hook, and the
device / distribution set-up (GPUs or N logical CPU devices).
"""
import logging
import os
import re
import signal
import time

import tensorflow as tf

from common.console import parse_comma_list

# Marker put in the error raised when the loss is NaN or infinite, so the entry
# script can tell that failure from any other and report it in one sentence.
NON_FINITE_MARKER = 'SSD_NON_FINITE_LOSS_AT_STEP'


def parse_number_list(text, cast=float, name='value list'):
    """Parses '500, 80000, 100000' into [500, 80000, 100000]; clear error otherwise."""
    if isinstance(text, (list, tuple)):
        return [cast(v) for v in text]
    items = parse_comma_list(text)
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise ValueError('%s must be comma-separated numbers, got %r.' % (name, text)) from None


def learning_rate_schedule(global_step, base_lr, decay_boundaries, lr_decay_factors,
                           end_learning_rate):
    """Piecewise-constant learning rate, floored at `end_learning_rate`.

    lr = base_lr * lr_decay_factors[i] for decay_boundaries[i-1] < step <= decay_boundaries[i]
    (tf.compat.v1.train.piecewise_constant semantics, as the original);
    the original's defaults ('500, 80000, 100000' and '0.1, 1, 0.1, 0.01') give a warm-up at
    0.1x for 500 steps, then 1x, then two decays.

    Returns: a float32 scalar tensor.
    """
    boundaries = [int(b) for b in decay_boundaries]
    factors = [float(f) for f in lr_decay_factors]
    if len(factors) != len(boundaries) + 1:
        raise ValueError(
            'lr_decay_factors needs exactly one more entry than decay_boundaries '
            '(got %d factors for %d boundaries).' % (len(factors), len(boundaries)))
    if boundaries != sorted(boundaries):
        raise ValueError('decay_boundaries must be increasing, got %s.' % boundaries)
    values = [base_lr * f for f in factors]
    lr = tf.compat.v1.train.piecewise_constant(
        tf.cast(global_step, tf.int64), boundaries, values)
    return tf.maximum(tf.cast(lr, tf.float32), tf.constant(end_learning_rate, tf.float32),
                      name='learning_rate_value')  # the summary's tag is 'learning_rate'


def assert_finite_loss(loss, global_step):
    """Returns an op that fails the step, before any weight update, when `loss` is not finite.

    The error text carries NON_FINITE_MARKER and the global step, which
    `non_finite_loss_step` reads back.
    """
    return tf.debugging.Assert(
        tf.math.is_finite(loss), [NON_FINITE_MARKER, global_step, loss], summarize=3,
        name='finite_loss_check')


def non_finite_loss_step(error):
    """The global step of a NaN/Inf loss error from `assert_finite_loss` (-1 if unreadable),
    or None if `error` is another error."""
    text = str(error)
    if NON_FINITE_MARKER not in text:
        return None
    match = re.search(NON_FINITE_MARKER + r'\]\s*\[(\d+)\]', text)
    return int(match.group(1)) if match else -1


class TrainingLoggerHook(tf.compat.v1.train.SessionRunHook):
    """Logs step, losses, learning rate, accuracy and images/s every `every_n_steps`.

    Args:
      tensors: dict name -> scalar tensor (fetched only on logging steps).
      global_step: the global step tensor.
      images_per_step: global batch size (all replicas), for images/s.
      every_n_steps: logging period.
    """

    def __init__(self, tensors, global_step, images_per_step, every_n_steps):
        self._tensors = dict(tensors)
        self._global_step = global_step
        self._images_per_step = images_per_step
        self._every = max(1, int(every_n_steps))
        self._next_step = None   # global step the coming run will complete
        self._logged = None      # (step, time) of the previous log line

    def before_run(self, run_context):
        fetches = {'step': self._global_step}
        if self._next_step is None or self._next_step % self._every == 0:
            fetches['tensors'] = self._tensors
        return tf.compat.v1.train.SessionRunArgs(fetches)

    def after_run(self, run_context, run_values):
        results = run_values.results
        step = int(results['step']) + 1  # the global step this run completed
        self._next_step = step + 1
        if 'tensors' not in results:
            return
        now = time.time()
        parts = ['step %d' % step]
        parts += ['%s %s' % (k, _format_value(v)) for k, v in results['tensors'].items()]
        if self._logged is not None and step > self._logged[0]:
            rate = (step - self._logged[0]) * self._images_per_step / (now - self._logged[1])
            parts.append('%.2f images/s' % rate)
        tf.compat.v1.logging.info(', '.join(parts))
        self._logged = (step, now)


class StopOnSignalHook(tf.compat.v1.train.SessionRunHook):
    """Turns SIGTERM / SIGINT into a clean stop that keeps the work done.

    While installed (`with hook:`), the first signal lets the running step finish, then asks
    the session to stop: the drivers' checkpoint saver writes a checkpoint at that step as the
    session closes, and training returns normally. A second signal exits at once (status
    128 + signal number), for a stop that must not wait.

    Attributes:
      received: the first signal's name ('SIGTERM', 'SIGINT') or None.
    """

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self._signals = tuple(signals)
        self._previous = {}
        self.received = None

    def __enter__(self):
        for signum in self._signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        return False

    def _handle(self, signum, frame):
        del frame
        name = signal.Signals(signum).name
        if self.received is not None:
            print('%s again: exiting at once, without saving.' % name, flush=True)
            os._exit(128 + signum)
        self.received = name
        print('%s received: finishing this step, saving a checkpoint, then exiting (send it '
              'again to exit at once).' % name, flush=True)

    def after_run(self, run_context, run_values):
        if self.received is not None:
            run_context.request_stop()


class StartupWatchdog(tf.compat.v1.train.SessionRunHook):
    """Multi-worker start-up that always ends: a timeout and signals while workers gather.

    Until the training session exists, a worker may wait on its peers inside TensorFlow's C++
    runtime (gRPC retries), where Python runs no signal handler and no timeout. While
    installed (`with watchdog:`, from the main thread), a watcher thread ends the process
    (`os._exit`, nothing is trained or saved yet) with one line on stderr:

    * when a signal arrives (SIGTERM, Ctrl-C; seen through `signal.set_wakeup_fd`, which
      works while the main thread is blocked in C++): exit status 0, as a stop by a signal
      during training;
    * when, after the graph's completion (`begin`) and before the session's creation, some
      other worker has not answered as a TensorFlow worker (`Cluster.silent_peers`) for
      `timeout_secs` in a row: `utility.cluster.describe_startup_timeout` naming them, exit
      status 1. A peer whose server answers is waited for (it may still build its graph).
      0 or None: no timeout.

    After the session is created (`after_create_session`: every worker joined) it stands
    down; signals are then `StopOnSignalHook`'s, timeouts the collective ops'.
    """

    def __init__(self, cluster, timeout_secs, log=print, stream=None, exit_fn=os._exit):
        import threading
        self._cluster = cluster
        self._log = log
        self._timeout = float(timeout_secs or 0)
        self._stream = stream
        self._exit = exit_fn
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._armed_at = None
        self._pipe = None
        self._previous_fd = None
        self._thread = None

    def __enter__(self):
        import threading
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        self._pipe = (read_fd, write_fd)
        self._previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self._thread = threading.Thread(target=self._watch, name='startup-watchdog',
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stand_down()
        return False

    def begin(self):
        self._armed_at = time.time()
        others = self._cluster.num_workers - 1
        self._log('Waiting for the other %d worker(s) to join%s (Ctrl-C or SIGTERM stops).'
                  % (others, ' (at most %g s, --collective_timeout_secs)' % self._timeout
                     if self._timeout > 0 else ''))

    def after_create_session(self, session, coord):
        self._stand_down()

    def _stand_down(self):
        with self._lock:
            if self._done.is_set():
                return
            self._done.set()
        import threading
        if self._pipe is not None and threading.current_thread() is threading.main_thread():
            signal.set_wakeup_fd(self._previous_fd if self._previous_fd is not None else -1)
            self._thread.join(timeout=5)
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None

    def _watch(self):
        import select
        import sys
        read_fd = self._pipe[0]
        silent, silent_since, probed_at = [], None, 0.0
        while not self._done.is_set():
            try:
                ready = select.select([read_fd], [], [], 0.5)[0]
                data = os.read(read_fd, 64) if ready else b''
            except OSError:  # the pipe was closed: stood down
                return
            message = status = None
            if data:
                name = signal.Signals(data[-1]).name
                message = ('%s received while %s was starting (before its first step): '
                           'stopped; nothing was trained, nothing to save.'
                           % (name, self._cluster.describe_task(self._cluster.task_type,
                                                                self._cluster.task_index)))
                status, stream = 0, sys.stdout
            elif (self._timeout > 0 and self._armed_at is not None
                  and time.time() - probed_at >= 1.0):
                probed_at = time.time()
                silent = self._cluster.silent_peers()
                silent_since = (None if not silent else silent_since or probed_at)
                if silent and probed_at - silent_since >= self._timeout:
                    from utility import cluster as cluster_lib
                    message = 'error: ' + cluster_lib.describe_startup_timeout(
                        self._cluster, self._timeout, silent)
                    status, stream = 1, sys.stderr
            if message is None:
                continue
            with self._lock:
                if self._done.is_set():
                    return
                print(message, file=self._stream or stream, flush=True)
                sys.stdout.flush()
                self._exit(status)
                return


def _format_value(value):
    value = float(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return '%.3e' % value
    return '%.4f' % value


def _session_config(gpus, num_cpu_threads, gpu_memory_fraction):
    """Thread pools (0 = one per core) and, with GPUs, their memory share (1.0 = grow)."""
    config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
    config.intra_op_parallelism_threads = int(num_cpu_threads)
    config.inter_op_parallelism_threads = int(num_cpu_threads)
    if gpus:
        config.gpu_options.per_process_gpu_memory_fraction = float(gpu_memory_fraction)
        config.gpu_options.allow_growth = gpu_memory_fraction >= 1.0
    return config


def setup_replicas(multi_gpu=True, num_cpu_replicas=0, batch_size=None,
                   num_cpu_threads=0, gpu_memory_fraction=1.0, log=print):
    """Chooses the devices to train on and builds the matching strategy and session config.

    Must run before TensorFlow initializes its devices (i.e. before the first op runs).

    - GPUs visible and `multi_gpu`: MirroredStrategy over every visible GPU.
    - `num_cpu_replicas` >= 2 (and no GPU used): the CPU is split into that many logical
      devices and MirroredStrategy runs one replica on each. This exercises the multi-replica
      code path on a machine without GPUs (tests, CI).
    - Otherwise: no strategy, a single device (one GPU if present, else the CPU).

    `batch_size` is the global batch and must divide evenly over the replicas.

    Returns:
      (strategy or None, num_replicas, tf.compat.v1.ConfigProto)
    """
    gpus = tf.config.list_physical_devices('GPU')
    config = _session_config(gpus, num_cpu_threads, gpu_memory_fraction)

    strategy = None
    num_replicas = 1
    if gpus and multi_gpu:
        devices = ['/gpu:%d' % i for i in range(len(gpus))]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        num_replicas = len(devices)
        log('Training on %d GPU(s) with MirroredStrategy: %s' % (num_replicas, ', '.join(devices)))
    elif not gpus and num_cpu_replicas and int(num_cpu_replicas) >= 2:
        num_replicas = int(num_cpu_replicas)
        cpu = tf.config.list_physical_devices('CPU')[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * num_replicas)
        except RuntimeError as err:
            raise RuntimeError(
                'Could not split the CPU into %d logical devices because TensorFlow was '
                'already initialized (%s); call setup_replicas before running any op.'
                % (num_replicas, err)) from None
        devices = ['/cpu:%d' % i for i in range(num_replicas)]
        strategy = tf.distribute.MirroredStrategy(
            devices=devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
        config.device_count['CPU'] = num_replicas
        log('No GPU: training with MirroredStrategy on %d logical CPU devices: %s'
            % (num_replicas, ', '.join(devices)))
    elif gpus:
        log('Training on one GPU without a distribution strategy (--multi_gpu is off).')
    else:
        log('No GPU found: training on the CPU (one replica). Use --num_cpu_replicas=2 to '
            'exercise the MirroredStrategy path on logical CPU devices.')

    if batch_size is not None and int(batch_size) % num_replicas != 0:
        raise ValueError(
            '--batch_size=%d does not divide evenly over %d replicas; use a multiple of %d '
            '(it is the global batch, split equally over the replicas).'
            % (batch_size, num_replicas, num_replicas))
    return strategy, num_replicas, config


def setup_multi_worker(cluster, batch_size=None, num_cpu_threads=0, gpu_memory_fraction=1.0,
                       collective_timeout_secs=600, log=print):
    """MultiWorkerMirroredStrategy over the workers of `cluster` (a utility.cluster.Cluster).

    Each worker trains one replica per visible GPU (one CPU replica without GPUs); gradients
    are averaged over all replicas of all workers by collective all-reduce. The strategy is the
    graph-mode one (tf.compat.v1...MultiWorkerMirroredStrategy), built inside a scratch graph so
    that it starts no eager server: the driver starts the worker's server (see
    utility/drivers.py). Every collective op gives up after `collective_timeout_secs`, so a
    worker whose peer died stops instead of waiting forever.

    `batch_size` is the global batch over all workers and must divide over all replicas.

    Returns:
      (strategy, num_replicas over the whole cluster, tf.compat.v1.ConfigProto)
    """
    gpus = tf.config.list_physical_devices('GPU')
    config = _session_config(gpus, num_cpu_threads, gpu_memory_fraction)
    timeout = float(collective_timeout_secs or 0)
    if timeout > 0:
        # Every blocking call of a step (collectives included) fails after this long: the
        # backstop for a peer that stopped answering without closing its connections.
        config.operation_timeout_in_ms = int(timeout * 1000)
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster.spec), task_type=cluster.task_type,
        task_id=cluster.task_index, num_accelerators={'GPU': len(gpus)}, rpc_layer='grpc')
    with tf.Graph().as_default():
        strategy = tf.compat.v1.distribute.experimental.MultiWorkerMirroredStrategy(
            cluster_resolver=resolver)
        # The v1 constructor takes no CommunicationOptions; the drivers' configure() rebuilds
        # the all-reduce from this attribute, so the timeout reaches every collective op.
        strategy.extended._communication_options = (  # pylint: disable=protected-access
            tf.distribute.experimental.CommunicationOptions(
                timeout_seconds=timeout if timeout > 0 else None))
        strategy.configure(session_config=config, cluster_spec=cluster.spec,
                           task_type=cluster.task_type, task_id=cluster.task_index)
    num_replicas = int(strategy.num_replicas_in_sync)
    per_worker = num_replicas // cluster.num_workers
    log('Multi-worker training (TF_CONFIG): this is %s of %d, %d replica(s) here (%s), %d in '
        'all; the chief (worker 0, %s) writes checkpoints and summaries.'
        % (cluster.describe_task(cluster.task_type, cluster.task_index), cluster.num_workers,
           per_worker, '%d GPU(s)' % len(gpus) if gpus else 'CPU', num_replicas,
           cluster.tasks()[0][3]))
    if batch_size is not None and int(batch_size) % num_replicas != 0:
        raise ValueError(
            '--batch_size=%d does not divide evenly over %d replicas (%d workers x %d); use a '
            'multiple of %d (it is the global batch, split equally over all replicas of all '
            'workers).' % (batch_size, num_replicas, cluster.num_workers, per_worker,
                           num_replicas))
    return strategy, num_replicas, config


# TensorFlow's own INFO lines that stay without --verbose: when checkpoints are written and read.
_KEPT_TF_INFO = ('Saving checkpoints for', 'Restoring parameters from')


def quiet_tensorflow_logs(verbose=False):
    """Entry scripts only: INFO progress logs without TF's per-call deprecation notices and
    MirroredStrategy's per-variable 'Reduce to ...' lines, which drown the progress lines.

    Unless `verbose`, TensorFlow's own INFO lines go too (the Estimator's RunConfig dict,
    session set-up, collective all-reduce plans), but for `_KEPT_TF_INFO`; the project's
    INFO lines (progress, restore lists) and every warning stay.
    """
    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.INFO)

    class _DropNoise(logging.Filter):
        def filter(self, record):
            msg = record.getMessage()
            if msg.startswith('Reduce to ') or 'is deprecated' in msg or (
                    'Instructions for updating' in msg):
                return False
            if verbose or record.levelno != logging.INFO:
                return True
            return ('site-packages' not in record.pathname
                    and 'dist-packages' not in record.pathname) or msg.startswith(_KEPT_TF_INFO)

    tf.get_logger().addFilter(_DropNoise())


BF16_CPU_FLAGS = ('avx512_bf16', 'amx_bf16')
# --precision choices ('auto' = bf16 where the CPU has native bfloat16 and no GPU is visible,
# else fp32); the default is ssd_model.DEFAULT_PARAMS['precision'].
PRECISIONS = ('auto', 'fp32', 'bf16')
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


def resolve_precision(requested, has_gpu, cpu_bf16):
    """The precision a run trains in, and why: ('fp32' or 'bf16', reason).

    `requested` is one of PRECISIONS. bf16 is the CPU's oneDNN rewrite: never on a GPU (mixed
    precision there is --use_amp), never on a CPU without native bfloat16 (it would be
    emulated, slower than float32). An explicit bf16 that cannot apply says so in its reason.
    """
    if requested not in PRECISIONS:
        raise ValueError('--precision=%s is not one of %s.' % (requested, '|'.join(PRECISIONS)))
    if requested == 'fp32':
        return 'fp32', '--precision=fp32'
    prefix = 'auto' if requested == 'auto' else '--precision=bf16 ignored'
    if has_gpu:
        return 'fp32', '%s: a GPU is visible (mixed precision on a GPU is --use_amp)' % prefix
    if not cpu_bf16:
        return 'fp32', '%s: this CPU has neither AVX512-BF16 nor AMX-BF16' % prefix
    return 'bf16', ('auto: ' if requested == 'auto' else '') + 'this CPU has %s' % (
        'AVX512-BF16 or AMX-BF16')


def configure_precision(config_proto, requested, log=print, cpuinfo_path=None):
    """Driver helper for --precision: resolves it for this machine, applies `apply_bf16` to
    `config_proto` when the answer is bf16, and logs the choice in one line.

    Returns 'bf16' or 'fp32' (what params.json records).
    """
    has_gpu = bool(tf.config.list_physical_devices('GPU'))
    cpu_bf16 = False if has_gpu else cpu_supports_bf16(cpuinfo_path)
    precision, reason = resolve_precision(requested, has_gpu, cpu_bf16)
    if precision == 'bf16':
        apply_bf16(config_proto)
        log('Precision: bf16 (%s): convolutions and matmuls run in bfloat16 (oneDNN auto mixed '
            'precision); weights, loss and optimizer stay float32.' % reason)
    else:
        log('Precision: fp32 (%s).' % reason)
    return precision
