"""The machine a benchmark ran on: cores, CPU model, TensorFlow and Python versions, whether
oneDNN is on, and the load average (other processes lower the figures, so every figure comes
with the load before and after)."""
import os
import platform

import tensorflow as tf


def cpu_count():
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def onednn_state():
    """'on' / 'off' and why: TF 2.15 x86 Linux builds use oneDNN unless
    TF_ENABLE_ONEDNN_OPTS=0."""
    value = os.environ.get('TF_ENABLE_ONEDNN_OPTS')
    try:
        from tensorflow.python.util import _pywrap_util_port
        enabled = _pywrap_util_port.IsMklEnabled()
    except (ImportError, AttributeError):
        enabled = value != '0'
    return '%s (TF_ENABLE_ONEDNN_OPTS=%s)' % ('on' if enabled else 'off',
                                             value if value is not None else 'unset')


def machine_info():
    return {
        'cores': cpu_count(),
        'cpu_model': cpu_model(),
        'tensorflow': tf.__version__,
        'python': platform.python_version(),
        'platform': platform.platform(),
        'gpus': len(tf.config.list_physical_devices('GPU')),
        'onednn': onednn_state(),
        'load_average_1_5_15min': load_average(),
    }
