"""Three small helpers every layer may use (dataset/ is the bottom of the import tree).

* `log(message)`: the entry scripts' progress line (stdout, flushed at once);
* `notify(log, message)`: calls an optional `log` callable (library functions take `log=None`);
* `parse_comma_list(text)`: the one parser of comma-separated flag values.
"""


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
