"""How every entry script runs (train_ssd.py, eval_ssd.py, simple_ssd_demo.py, export_ssd.py):
the one error runner and the terminal's TensorFlow log settings.

An entry script calls `common.console.quiet_logs()` before TensorFlow is imported, defines its
flags, and ends with `entry.run(main)`.
"""
import logging
import sys


def run(main, interrupted=None):
    """Runs `main(argv)` under absl.app (flags parsed first) and exits with its status.

    TensorFlow's Python logging is set to ERROR first (train_ssd.py's main turns its progress
    lines back on with `quiet_tensorflow_logs`). A ValueError is a configuration problem whose
    message names the cause and the fix: it is printed as 'error: <message>' on stderr, without
    a traceback, and the exit status is 2. With `interrupted` (a sentence), Ctrl-C that reaches
    here prints it and exits with 130; without, it propagates.
    """
    from absl import app

    def checked_main(argv):
        import tensorflow as tf
        tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
        try:
            return main(argv)
        except ValueError as err:
            print('error: %s' % err, file=sys.stderr, flush=True)
            return 2
        except KeyboardInterrupt:
            if interrupted is None:
                raise
            print(interrupted, flush=True)
            return 130
    app.run(checked_main)


# TensorFlow's own INFO lines that stay without --verbose: when checkpoints are written and read.
_KEPT_TF_INFO = ('Saving checkpoints for', 'Restoring parameters from')


def quiet_tensorflow_logs(verbose=False):
    """Entry scripts only: INFO progress logs without TF's per-call deprecation notices and
    MirroredStrategy's per-variable 'Reduce to ...' lines, which drown the progress lines.

    Unless `verbose`, TensorFlow's own INFO lines go too (the Estimator's RunConfig dict,
    session set-up, collective all-reduce plans), but for `_KEPT_TF_INFO`; the project's
    INFO lines (progress, restore lists) and every warning stay.
    """
    import tensorflow as tf
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
