"""Session hooks of a training run: the progress line, a clean stop on SIGTERM / Ctrl-C (a
checkpoint is written), and the multi-worker start-up watchdog."""
import os
import signal
import time

import tensorflow as tf


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
      `timeout_secs` in a row: `utility.training.cluster.describe_startup_timeout` naming them, exit
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
                    from utility.training import cluster as cluster_lib
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
