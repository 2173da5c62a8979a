"""The console helpers every layer may use (the bottom floor: no project import, no TensorFlow).

* `log(message)`: the entry scripts' progress line (stdout, flushed at once);
* `notify(log, message)`: calls an optional `log` callable (library functions take `log=None`);
* `parse_comma_list(text)`, `parse_number_list(text, cast, name)`: the one parser of
  comma-separated flag values (and of numbers);
* `quiet_logs(argv)`: the entry scripts' terminal without TensorFlow's native log lines and
  UserWarnings, unless `--verbose` is given.
"""
import os
import sys
import warnings

VERBOSE_FLAG = 'verbose'
VERBOSE_HELP = ('Also show TensorFlow\'s own log lines (its native INFO/WARNING lines, '
                'UserWarnings, the Estimator\'s RunConfig and session set-up); by default the '
                'terminal keeps progress, results, and warnings about your data.')


def quiet_logs(argv=None):
    """Entry scripts call this first, BEFORE TensorFlow is imported (its native logging reads
    TF_CPP_MIN_LOG_LEVEL once): unless `argv` has --verbose, hides TensorFlow's native INFO and
    WARNING lines (errors stay; a TF_CPP_MIN_LOG_LEVEL the user set wins) and the UserWarnings
    raised inside TensorFlow and Keras. Returns True when it quieted them."""
    argv = sys.argv if argv is None else argv
    if any(a in ('--' + VERBOSE_FLAG, '--%s=true' % VERBOSE_FLAG, '--%s=1' % VERBOSE_FLAG)
           for a in (str(x).lower() for x in argv[1:])):
        return False
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    warnings.filterwarnings('ignore', category=UserWarning,
                            module=r'(tensorflow|keras|tf_keras)(\.|$)')
    return True


def log(message):
    """Prints `message` on stdout and flushes (progress lines of the entry scripts)."""
    print(message, flush=True)


def notify(log_fn, message):
    """Passes `message` to `log_fn` unless it is None (the `log=None` argument of a library
    function)."""
    if log_fn is not None:
        log_fn(message)


def parse_comma_list(text):
    """'VOC2007, VOC2012' -> ['VOC2007', 'VOC2012'] (items stripped, empty items removed).

    A list or tuple comes back as a list of its stripped, non-empty str items; None or ''
    gives [].
    """
    if isinstance(text, (list, tuple)):
        items = text
    else:
        items = str(text or '').split(',')
    return [str(item).strip() for item in items if str(item).strip()]


def parse_number_list(text, cast=float, name='value list'):
    """Parses '500, 80000, 100000' into [500, 80000, 100000]; clear error otherwise."""
    if isinstance(text, (list, tuple)):
        return [cast(v) for v in text]
    items = parse_comma_list(text)
    try:
        return [cast(t) for t in items]
    except ValueError:
        raise ValueError('%s must be comma-separated numbers, got %r.' % (name, text)) from None
