"""The optimizer's learning-rate schedule (piecewise constant with a floor) and the loss's
finite check that stops training before a NaN step is applied (model_fn calls both)."""
import re

import tensorflow as tf



# Marker put in the error raised when the loss is NaN or infinite, so the entry
# script can tell that failure from any other and report it in one sentence.
NON_FINITE_MARKER = 'SSD_NON_FINITE_LOSS_AT_STEP'


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
